"""BasicSR option files: safe loading, ``--force_yml``, and the checks ``basicsr train/test`` run first.

* :class:`OrderedSafeLoader` reads YAML like BasicSR's ``ordered_yaml()`` loader (mappings become
  ``OrderedDict``) but builds no Python objects: ``!!python/...`` tags are an error, not code that runs.
  ``gsasr_plugin.compat`` makes BasicSR's own ``parse_options`` use it, and parse ``--force_yml`` values
  with :func:`parse_override_value` (YAML) instead of ``eval``.
* :func:`load_option_file` reads an option file with one-line errors (file, line, problem).
* :func:`apply_overrides` applies ``--force_yml key:subkey=value`` entries: the keys must exist in the file
  or be options that something reads there (:func:`known_keys`); a misspelt key is an error.
* :func:`check_options` finds what would otherwise fail later with a traceback (unknown types, missing or
  malformed values, ``num_gpu`` without GPUs, networks whose options do not build, pretrained weights that
  do not fit) before anything is created. Unknown keys are an error where nothing can read them (sections
  whose readers are all known: ``train``/``val`` of the plugin's models, the plugin's datasets, ``path``,
  ``logger``, ...) and a warning elsewhere. Errors are :class:`OptionError` (one line naming the key).

Models and datasets declare the keys they read in a class attribute ``option_keys`` (a dict from section
name to key names; for datasets the dataset's own keys); BasicSR's keys are listed here.
"""
import contextlib
import difflib
import inspect
import logging
import math
import numbers
import re
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

__all__ = [
    'OptionError', 'OrderedSafeLoader', 'load_option_file', 'parse_override_value', 'apply_overrides',
    'known_keys', 'check_options', 'option_number', 'CheckResult'
]

# ------------------------------------------------------------------------------------------- loading
_SafeBase = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


class OptionError(ValueError):
    """A bad option file, key or value; the message is one line naming the file and key."""


def _ordered_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> 'OrderedDict[Any, Any]':
    loader.flatten_mapping(node)
    return OrderedDict(loader.construct_pairs(node))


class OrderedSafeLoader(_SafeBase):
    """``yaml.SafeLoader`` whose mappings are ``OrderedDict`` (as BasicSR's ``ordered_yaml()`` gives).

    Only YAML's standard tags build values (``!!float 1e-4`` works); ``!!python/object/apply:...`` and the
    other Python tags raise ``yaml.constructor.ConstructorError`` instead of running code.
    """


OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _ordered_mapping)


def _key_lines(node: yaml.Node, prefix: Tuple[str, ...] = ()) -> Dict[Tuple[str, ...], int]:
    """(key path) -> 1-based line of every mapping key of a composed YAML document."""
    lines: Dict[Tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = prefix + (str(key_node.value), )
                lines.setdefault(path, key_node.start_mark.line + 1)
                lines.update(_key_lines(value_node, path))
    return lines


def _duplicate_keys(node: yaml.Node, prefix: Tuple[str, ...] = ()) -> List[Tuple[Tuple[str, ...], int]]:
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: Set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = prefix + (str(key_node.value), )
                if key_node.value in seen:
                    found.append((path, key_node.start_mark.line + 1))
                seen.add(key_node.value)
                found += _duplicate_keys(value_node, path)
    return found


class LoadedOptions(OrderedDict):
    """The options of one file, with ``source`` (the file), ``lines`` (key path -> line) and ``overrides``
    (key path -> the ``--force_yml`` entry that set it) for messages."""
    source: str = ''
    lines: Dict[Tuple[str, ...], int] = {}
    overrides: Dict[Tuple[str, ...], str] = {}
    warnings: List[str] = []


def load_option_file(path: str) -> LoadedOptions:
    """Read a BasicSR option file safely.

    Raises:
        OptionError: naming the file (and line) when it is not readable, not YAML, holds Python tags or
            is not a mapping.
    """
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise OptionError(f"option file '{path}': cannot read it ({error})") from None
    loader = OrderedSafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        raise OptionError(f"option file '{path}': {_yaml_error_text(error)}") from None
    finally:
        loader.dispose()
    if not isinstance(data, Mapping):
        raise OptionError(f"option file '{path}' is not a YAML mapping of options (got {type(data).__name__})")
    opt = LoadedOptions(data)
    opt.source = str(path)
    opt.lines = _key_lines(node)
    opt.overrides = {}
    opt.warnings = [f"option file '{path}' line {line}: key {_key_text(key)} appears twice; the last value is used"
                    for key, line in _duplicate_keys(node)]
    return opt


def _yaml_error_text(error: yaml.YAMLError) -> str:
    mark = getattr(error, 'problem_mark', None) or getattr(error, 'context_mark', None)
    where = f'line {mark.line + 1}, column {mark.column + 1}: ' if mark is not None else ''
    problem = getattr(error, 'problem', None) or str(error).splitlines()[0]
    if isinstance(error, yaml.constructor.ConstructorError) and 'tag' in str(problem):
        tag = re.search(r"tag '([^']+)'", str(problem))
        name = tag.group(1).replace('tag:yaml.org,2002:', '!!') if tag else 'used here'
        return (f'{where}the tag {name} is not allowed: option files hold plain values (numbers, text, lists, '
                'mappings) and build no Python objects')
    context = getattr(error, 'context', None)
    return f"{where}not valid YAML ({problem}{'; ' + context if context else ''})"


def _key_text(path: Sequence[str]) -> str:
    return ':'.join(str(p) for p in path)


# ------------------------------------------------------------------------------- --force_yml values
_NUMBER = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')


def parse_override_value(text: str) -> Any:
    """A ``--force_yml`` value as YAML would read it (never ``eval``): ``~``/``none`` -> None, ``true``,
    numbers (``1e-4`` too), ``[1, 2]`` lists, ``!!float 2e-4``; anything else stays text."""
    text = text.strip()
    if text.lower() == 'none':  # BasicSR's spelling of null
        return None
    try:
        value = yaml.load(text, Loader=OrderedSafeLoader)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _NUMBER.match(value):  # YAML 1.1 reads 1e-4 as text
        value = float(value)
    return value


# ----------------------------------------------------------------------------------- known keys
_TOP_LEVEL = {
    'name', 'model_type', 'num_gpu', 'manual_seed', 'scale', 'datasets', 'path', 'train', 'val', 'logger',
    'dist_params', 'find_unused_parameters', 'is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path'
}
_TOP_LEVEL_PREFIXES = ('network_', )
_PATH = {'resume_state', 'ignore_resume_networks', 'experiments_root', 'models', 'training_states', 'log',
         'visualization', 'results_root'}
_PATH_PREFIXES = ('pretrain_network_', 'param_key_', 'strict_load_')
_LOGGER = {'print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'}
_WANDB = {'project', 'resume_id'}
_DIST_PARAMS = {'backend', 'port'}
# read by basicsr.data.build_dataloader / basicsr.train for every dataset
DATASET_LOADER_KEYS = {'name', 'type', 'phase', 'scale', 'batch_size_per_gpu', 'num_worker_per_gpu',
                       'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers',
                       'num_prefetch_queue'}
# BasicSR's SRModel (what the plugin's models add is in their own option_keys)
SRMODEL_KEYS = {
    'train': {'ema_decay', 'optim_g', 'scheduler', 'warmup_iter', 'total_iter', 'pixel_opt', 'perceptual_opt'},
    'val': {'val_freq', 'save_img', 'suffix', 'metrics', 'pbar'},
}
# BasicSR 1.4.2: BaseModel.get_optimizer knows Adam only; setup_schedulers these (plus the plugin's warm-up)
_OPTIMIZERS = {'Adam'}
_SCHEDULERS = {'MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR', 'WarmupMultiStepLR'}


def _registry(name: str):
    from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
    from basicsr.utils import registry
    return getattr(registry, name)


def _registered(name: str, type_name: Any) -> Optional[Any]:
    reg = _registry(name)
    return reg.get(type_name) if isinstance(type_name, str) and type_name in reg else None


def _model_keys(opt: Mapping[str, Any]) -> Optional[Dict[str, Set[str]]]:
    """``train``/``val`` keys that the options' model reads, or None when they are not known."""
    model = _registered('MODEL_REGISTRY', opt.get('model_type'))
    if model is None:
        return None
    declared = getattr(model, 'option_keys', None)
    if declared is not None:
        return {section: set(keys) for section, keys in declared.items()}
    if model.__name__ == 'SRModel':
        return {section: set(keys) for section, keys in SRMODEL_KEYS.items()}
    return None


def _dataset_keys(dataset_opt: Any) -> Optional[Set[str]]:
    if not isinstance(dataset_opt, Mapping):
        return None
    dataset = _registered('DATASET_REGISTRY', dataset_opt.get('type'))
    declared = getattr(dataset, 'option_keys', None) if dataset is not None else None
    return None if declared is None else set(declared) | DATASET_LOADER_KEYS


def known_keys(opt: Mapping[str, Any], path: Sequence[str]) -> Tuple[Optional[Set[str]], Tuple[str, ...]]:
    """(keys, key prefixes) that something reads in the section at ``path`` of ``opt``; keys is None when
    the section's readers are not all known (then unknown keys there are only warned about)."""
    path = tuple(path)
    if path == ():
        model_top = (_model_keys(opt) or {}).get('', set())  # e.g. ArbitraryScaleSRModel's tile
        return set(_TOP_LEVEL) | set(model_top), _TOP_LEVEL_PREFIXES
    if path == ('path', ):
        return set(_PATH), _PATH_PREFIXES
    if path == ('logger', ):
        return set(_LOGGER), ()
    if path == ('logger', 'wandb'):
        return set(_WANDB), ()
    if path == ('dist_params', ):
        return set(_DIST_PARAMS), ()
    if len(path) == 2 and path[0] == 'datasets':
        return _dataset_keys((opt.get('datasets') or {}).get(path[1])), ()
    if len(path) == 1 and path[0] in ('train', 'val'):
        keys = _model_keys(opt)
        return (None if keys is None else keys.get(path[0])), ()
    return None, ()


def _is_known(key: str, keys: Optional[Set[str]], prefixes: Tuple[str, ...]) -> bool:
    return keys is not None and (key in keys or any(key.startswith(p) for p in prefixes))


def _suggestion(key: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ''


# ------------------------------------------------------------------------------------- --force_yml
_SAFE_KEY = re.compile(r'^[A-Za-z0-9_.\-]+$')


def apply_overrides(opt: Dict[str, Any], entries: Optional[Sequence[str]]) -> List[str]:
    """Apply ``--force_yml`` entries (``key:subkey=value``) to ``opt`` in place; returns notes for the user.

    A key must exist in the file or be one that something reads at that place (e.g. ``train:grad_clip_norm``
    on a file without it); its parents must exist and be mappings.

    Raises:
        OptionError: naming the entry for a malformed entry, a missing parent or an unknown (misspelt) key.
    """
    notes = []
    for entry in entries or []:
        if '=' not in entry:
            raise OptionError(f"--force_yml '{entry}': must look like key:subkey=value")
        keys_text, value_text = (part.strip() for part in entry.split('=', 1))
        keys = keys_text.split(':')
        bad = next((k for k in keys if not _SAFE_KEY.match(k)), None)
        if bad is not None:
            raise OptionError(f"--force_yml '{entry}': '{bad}' is not an option key (letters, digits, _ . - only)")
        node: Any = opt
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node, Mapping) or key not in node:
                where = _key_text(keys[:depth]) or 'the top level'
                hint = _suggestion(key, node) if isinstance(node, Mapping) else ''
                raise OptionError(f"--force_yml '{entry}': no section '{key}' in {where} of the option file{hint}")
            node = node[key]
        if not isinstance(node, Mapping):
            raise OptionError(f"--force_yml '{entry}': {_key_text(keys[:-1])} is not a section (it is "
                              f'{node!r}), so it has no key {keys[-1]!r}')
        last = keys[-1]
        if last not in node:
            known, prefixes = known_keys(opt, keys[:-1])
            if not _is_known(last, known, prefixes):
                candidates = set(node) | (known or set())
                raise OptionError(f"--force_yml '{entry}': {keys_text}: no such key in the option file and not an "
                                  f'option read there{_suggestion(last, candidates)}')
            notes.append(f'--force_yml {keys_text}: added (not in the option file)')
        node[last] = parse_override_value(value_text)
        if isinstance(getattr(opt, 'overrides', None), dict):
            opt.overrides[tuple(keys)] = entry
    return notes


# ----------------------------------------------------------------------------------- value checks
def option_number(opt: Mapping[str, Any], key: str, default: Any = None, *, integer: bool = False,
                  minimum: Optional[float] = None, above: Optional[float] = None, name: Optional[str] = None) -> Any:
    """``opt[key]`` (or ``default``) as a finite number, with a ValueError naming the key otherwise.

    Args:
        integer: require an integer (a float with an integral value is accepted and converted).
        minimum: the value must be >= this. above: the value must be > this.
        name: how the message calls the key (default ``key``).
    """
    label = name or key
    value = opt.get(key, default) if isinstance(opt, Mapping) else default
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = ''
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            hint = f' (YAML reads {value} as text: write !!float {value})'
        raise ValueError(f"'{label}' must be a number, got {value!r}{hint}")
    if not math.isfinite(float(value)):
        raise ValueError(f"'{label}' must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"'{label}' must be an integer, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"'{label}' must be >= {minimum:g}, got {value!r}")
    if above is not None and value <= above:
        raise ValueError(f"'{label}' must be > {above:g}, got {value!r}")
    return value


class CheckResult:
    """What :func:`check_options` found: ``warnings`` (lines to show) and ``notes``."""

    def __init__(self):
        self.warnings: List[str] = []
        self.notes: List[str] = []


class _Checker:

    def __init__(self, opt: Mapping[str, Any], command: str, source: str):
        self.opt = opt
        self.command = command
        self.source = source
        self.lines = getattr(opt, 'lines', {}) or {}
        self.result = CheckResult()

    # messages -------------------------------------------------------------------------------
    def where(self, path: Sequence[str]) -> str:
        path = tuple(str(p) for p in path)
        overrides = getattr(self.opt, 'overrides', None) or {}
        for depth in range(len(path), 0, -1):
            if path[:depth] in overrides:
                return f"option file '{self.source}' with --force_yml '{overrides[path[:depth]]}'"
        line = self.lines.get(path)
        return f"option file '{self.source}'" + (f' line {line}' if line else '')

    def error(self, path: Sequence[str], message: str) -> OptionError:
        key = _key_text(path)
        return OptionError(f'{self.where(path)}: {key}: {message}' if key else f'{self.where(path)}: {message}')

    def warn(self, path: Sequence[str], message: str) -> None:
        self.result.warnings.append(f'{self.where(path)}: {_key_text(path)}: {message}')

    # helpers ---------------------------------------------------------------------------------
    def section(self, path: Sequence[str], required: bool) -> Optional[Mapping[str, Any]]:
        node: Any = self.opt
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            if required:
                raise self.error(path, f'is required by basicsr {self.command} (a section of options)')
            return None
        if not isinstance(node, Mapping):
            raise self.error(path, f'must be a section (a mapping of options), got {node!r}')
        return node

    def number(self, section: Mapping[str, Any], path: Sequence[str], required: bool = True, **kwargs) -> Any:
        key = path[-1]
        if key not in section or section[key] is None:
            if required:
                raise self.error(path, f'is required by basicsr {self.command}')
            return None
        try:
            return option_number(section, key, **kwargs)
        except ValueError as error:
            raise self.error(path, str(error).replace(f"'{key}' ", '', 1)) from None

    def unknown_keys(self, section: Mapping[str, Any], path: Sequence[str]) -> None:
        known, prefixes = known_keys(self.opt, path)
        for key in section:
            if _is_known(str(key), known, prefixes):
                continue
            if known is None:
                continue  # readers not all known (another plugin's model or dataset): cannot tell
            hint = _suggestion(key, known)
            raise self.error(list(path) + [key], f'unknown key{hint}: nothing reads it here')

    def warn_unknown_keys(self, section: Mapping[str, Any], path: Sequence[str]) -> None:
        known, prefixes = known_keys(self.opt, path)
        for key in section:
            if not _is_known(str(key), known, prefixes):
                hint = _suggestion(key, known or ())
                self.warn(list(path) + [key], f'unknown key{hint}; BasicSR and the plugin do not read it')

    def registered(self, registry: str, type_name: Any, path: Sequence[str], what: str):
        reg = _registry(registry)
        if not isinstance(type_name, str) or not type_name:
            raise self.error(path, f'must name a registered {what}, got {type_name!r}')
        if type_name not in reg:
            names = sorted(reg.keys())
            raise self.error(path, f"'{type_name}' is not a registered {what}{_suggestion(type_name, names)}")
        return reg.get(type_name)

    def kwargs_fit(self, target: Callable, options: Mapping[str, Any], path: Sequence[str], skip: Set[str],
                   what: str) -> None:
        """Unknown keyword options of ``target`` (a class or function): error, or warning with ``**kwargs``."""
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            return
        params = signature.parameters
        named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        for key in options:
            if key in skip or key in named:
                continue
            hint = _suggestion(key, named - skip)
            if takes_any:
                self.warn(list(path) + [key], f'not a named option of {what}{hint}; it may be ignored')
            else:
                raise self.error(list(path) + [key], f'{what} takes no option {key!r}{hint}')

    # the checks ------------------------------------------------------------------------------
    def run(self) -> CheckResult:
        opt = self.opt
        self.warn_unknown_keys(opt, ())
        name = opt.get('name')
        if not isinstance(name, str) or not name.strip():
            raise self.error(['name'], f'is required: the run name (a text), got {name!r}')
        if re.search(r'[\\/]|^\.+$', name):
            raise self.error(['name'], f'{name!r} must not contain / or \\ (it names a folder)')
        model_cls = self.registered('MODEL_REGISTRY', opt.get('model_type'), ['model_type'], 'model type')
        self.check_model_options(model_cls)
        self.check_num_gpu()
        if opt.get('manual_seed') is not None:
            self.number(opt, ['manual_seed'], integer=True, minimum=0)
        path_opt = self.section(['path'], required=True)
        self.unknown_keys(path_opt, ['path'])
        if self.section(['dist_params'], required=False) is not None:
            self.unknown_keys(opt['dist_params'], ['dist_params'])
        self.check_datasets()
        if self.command == 'train':
            self.check_train()
            logger = self.section(['logger'], required=True)
            self.unknown_keys(logger, ['logger'])
            for key in ('print_freq', 'save_checkpoint_freq'):
                self.number(logger, ['logger', key], integer=True, minimum=1)
            if 'use_tb_logger' not in logger:
                raise self.error(['logger', 'use_tb_logger'], 'is required by basicsr train (true or false)')
            if isinstance(logger.get('wandb'), Mapping):
                self.unknown_keys(logger['wandb'], ['logger', 'wandb'])
        self.check_val()
        self.check_networks()
        return self.result

    def check_model_options(self, model_cls) -> None:
        """The model's own ``check_options(opt)`` (e.g. ``ArbitraryScaleSRModel``'s top-level ``tile:``)."""
        check = getattr(model_cls, 'check_options', None)
        if check is None:
            return
        try:
            check(self.opt)
        except (ValueError, TypeError) as error:
            first = re.match(r'[A-Za-z_][\w]*', str(error))  # messages start with the key they are about
            line_of = [first.group(0)] if first and first.group(0) in self.opt else []
            raise OptionError(f'{self.where(line_of)}: {error}') from None

    def check_networks(self) -> None:
        """Every ``network_*`` builds from its options (on the meta device: no memory, no time), and the
        pretrained weights named in ``path`` (a checkpoint, ``official:<name>``, a folder or comma list of
        official files) are read by the one loader, :func:`gsasr_plugin.checkpoint.check_weights_fit` (weights
        only, NaN/inf refused), and fit it: exactly for released weights and with ``strict_load_*``."""
        for key, net_opt in self.opt.items():
            if not str(key).startswith('network_'):
                continue
            if not isinstance(net_opt, Mapping):
                raise self.error([key], f'must be a section (a network with a type), got {net_opt!r}')
            self.registered('ARCH_REGISTRY', net_opt.get('type'), [key, 'type'], 'network')
            network = self.build_network(key, net_opt)
            label = key[len('network_'):]
            path_opt = self.opt.get('path') or {}
            weights = path_opt.get(f'pretrain_network_{label}')
            if weights is None:
                continue
            import os

            from gsasr_plugin.checkpoint import check_weights_fit
            from gsasr_plugin.official.hub import WeightsUnavailableError
            weights = os.path.expanduser(str(weights))
            strict = path_opt.get(f'strict_load_{label}', True)
            param_key = path_opt.get(f'param_key_{label}', 'params')
            try:  # one loader for all: checkpoints, official:<name>, folders and lists of official files
                # a non-strict partial fit is reported (loudly) by the model when it loads the weights
                check_weights_fit(network, weights, net_opt, (param_key, 'params') if param_key else None,
                                  strict=strict is not False, network_label=key)
            except (OSError, ValueError, WeightsUnavailableError) as error:
                raise self.error(['path', f'pretrain_network_{label}'], str(error)) from None

    def build_network(self, key: str, net_opt: Mapping[str, Any]):
        import copy

        import torch
        from basicsr.archs import build_network
        try:
            with torch.device('meta'):
                return build_network(copy.deepcopy(dict(net_opt)))
        except Exception:  # noqa: BLE001  (the meta device is an optimisation: the CPU build decides)
            pass
        try:
            return build_network(copy.deepcopy(dict(net_opt)))
        except (TypeError, ValueError, KeyError, AssertionError, NotImplementedError, OSError) as error:
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise self.error([key], f'does not build: {text}') from None

    def check_num_gpu(self) -> None:
        if 'num_gpu' not in self.opt:
            raise self.error(['num_gpu'], 'is required: the number of GPUs, 0 for the CPU, or auto')
        value = self.opt['num_gpu']
        if value == 'auto':
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(['num_gpu'], f'must be an integer >= 0 or auto, got {value!r}')
        import torch
        if value > 0 and not torch.cuda.is_available():
            raise self.error(['num_gpu'], f'{value} GPU(s) asked for, but no CUDA GPU is available here; use '
                             'num_gpu: 0 (CPU) or auto')
        if value > 0 and value > torch.cuda.device_count():
            self.warn(['num_gpu'], f'{value} GPU(s) asked for, this machine has {torch.cuda.device_count()}')

    def check_datasets(self) -> None:
        datasets = self.section(['datasets'], required=True)
        if not datasets:
            raise self.error(['datasets'], 'has no dataset')
        for phase, dataset_opt in datasets.items():
            path = ['datasets', phase]
            if not isinstance(dataset_opt, Mapping):
                raise self.error(path, f'must be a section (a dataset), got {dataset_opt!r}')
            kind = str(phase).split('_')[0]
            if self.command == 'train' and kind not in ('train', 'val'):
                raise self.error(path, "basicsr train takes the phases 'train' and 'val*' only")
            if self.command == 'train' and kind == 'train' and phase != 'train':
                raise self.error(path, "the training dataset must be called 'train'")
            dataset_cls = self.registered('DATASET_REGISTRY', dataset_opt.get('type'), path + ['type'], 'dataset type')
            self.unknown_keys(dataset_opt, path)
            if 'name' not in dataset_opt:
                raise self.error(path + ['name'], 'is required (the dataset name used in logs and result folders)')
            if kind == 'train':
                for key in ('batch_size_per_gpu', 'num_worker_per_gpu'):
                    self.number(dataset_opt, path + [key], integer=True, minimum=1 if key.startswith('batch') else 0)
            check = getattr(dataset_cls, 'check_options', None)
            if check is not None:
                try:
                    check(dict(dataset_opt, phase=kind))
                except (ValueError, TypeError) as error:
                    quoted = re.search(r"'([^']+)'", str(error))  # the key the dataset names, for its line
                    line_of = path + [quoted.group(1)] if quoted and quoted.group(1) in dataset_opt else path
                    raise OptionError(f'{self.where(line_of)}: {_key_text(path)}: {error}') from None
        if self.command == 'train' and 'train' not in datasets:
            raise self.error(['datasets', 'train'], 'is required by basicsr train (the training dataset)')

    def check_train(self) -> None:
        train = self.section(['train'], required=True)
        self.unknown_keys(train, ['train'])
        self.number(train, ['train', 'total_iter'], integer=True, minimum=1)
        for key in ('warmup_iter', 'max_nonfinite_steps'):
            if train.get(key) is not None:
                self.number(train, ['train', key], integer=True, minimum=-1 if key == 'warmup_iter' else 0)
        for key in ('ema_decay', 'grad_clip_norm'):
            if train.get(key) is not None:
                self.number(train, ['train', key], minimum=0)
        optim = self.section(['train', 'optim_g'], required=True)
        optim_type = optim.get('type')
        if optim_type not in _OPTIMIZERS:
            raise self.error(['train', 'optim_g', 'type'], f'{optim_type!r} is not supported by BasicSR 1.4.2 '
                             f"(optimizers: {', '.join(sorted(_OPTIMIZERS))})")
        self.number(optim, ['train', 'optim_g', 'lr'], above=0)
        import torch
        self.kwargs_fit(getattr(torch.optim, optim_type), optim, ['train', 'optim_g'], {'type', 'params'},
                        f'torch.optim.{optim_type}')
        scheduler = self.section(['train', 'scheduler'], required=True)
        scheduler_type = scheduler.get('type')
        if scheduler_type not in _SCHEDULERS:
            raise self.error(['train', 'scheduler', 'type'], f'{scheduler_type!r} is not a scheduler BasicSR '
                             f"1.4.2 sets up{_suggestion(scheduler_type, _SCHEDULERS)} "
                             f"(schedulers: {', '.join(sorted(_SCHEDULERS))})")
        self.kwargs_fit(self.scheduler_class(scheduler), scheduler, ['train', 'scheduler'], {'type', 'optimizer'},
                        f'scheduler {scheduler_type}')
        for key in ('pixel_opt', 'perceptual_opt'):
            loss = train.get(key)
            if loss is None:
                continue
            if not isinstance(loss, Mapping):
                raise self.error(['train', key], f'must be a section (a loss), got {loss!r}')
            loss_cls = self.registered('LOSS_REGISTRY', loss.get('type'), ['train', key, 'type'], 'loss')
            self.kwargs_fit(loss_cls, loss, ['train', key], {'type'}, f'loss {loss.get("type")}')

    def scheduler_class(self, scheduler: Mapping[str, Any]):
        from basicsr.models import lr_scheduler
        kind = scheduler.get('type')
        model = _registered('MODEL_REGISTRY', self.opt.get('model_type'))
        plugin_warmup = model is not None and hasattr(model, 'update_learning_rate') and any(
            getattr(c, '__module__', '').startswith('gsasr_plugin') for c in model.__mro__)
        if kind in ('MultiStepLR', 'WarmupMultiStepLR') and plugin_warmup and set(scheduler) <= {
                'type', 'milestones', 'gamma', 'warmup_iter'}:
            from gsasr_plugin.models.arbitrary_scale_model import WarmupMultiStepLR
            return WarmupMultiStepLR
        if kind == 'CosineAnnealingRestartLR':
            return lr_scheduler.CosineAnnealingRestartLR
        return lr_scheduler.MultiStepRestartLR

    def check_val(self) -> None:
        val = self.section(['val'], required=self.command == 'test')
        if val is None:
            return
        self.unknown_keys(val, ['val'])
        if 'save_img' not in val:
            raise self.error(['val', 'save_img'], f'is required by basicsr {self.command} (true or false)')
        if self.command == 'train':
            self.number(val, ['val', 'val_freq'], integer=True, minimum=1)
        metrics = val.get('metrics')
        if metrics is None:
            return
        if not isinstance(metrics, Mapping):
            raise self.error(['val', 'metrics'], f'must be a section of metrics, got {metrics!r}')
        for metric, metric_opt in metrics.items():
            path = ['val', 'metrics', metric]
            if not isinstance(metric_opt, Mapping):
                raise self.error(path, f'must be a section (a metric with a type), got {metric_opt!r}')
            function = self.registered('METRIC_REGISTRY', metric_opt.get('type'), path + ['type'], 'metric')
            model_keys = _model_keys(self.opt) or {}
            self.kwargs_fit(function, metric_opt, path, {'type', 'img', 'img2'} | set(model_keys.get('metric', ())),
                            f'metric {metric_opt.get("type")}')


@contextlib.contextmanager
def _basicsr_logger_untouched():
    """Undo an initialisation of BasicSR's root logger inside the block (building a network logs): BasicSR's
    pipeline must be the first to initialise it, with its log file, or the run has no log file and no INFO."""
    from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
    from basicsr.utils import logger as basicsr_logger
    before = set(basicsr_logger.initialized_logger)
    states = {name: (logging.getLogger(name), list(logging.getLogger(name).handlers), logging.getLogger(name).propagate,
                     logging.getLogger(name).level) for name in ('basicsr', )}
    try:
        yield
    finally:
        for name in set(basicsr_logger.initialized_logger) - before:
            basicsr_logger.initialized_logger.pop(name, None)
            if name in states:
                logger, handlers, propagate, level = states[name]
                for handler in [h for h in logger.handlers if h not in handlers]:
                    logger.removeHandler(handler)
                    handler.close()
                logger.propagate, logger.level = propagate, level


def check_options(opt: Mapping[str, Any], command: str, source: Optional[str] = None) -> CheckResult:
    """Check the options of ``basicsr <command>`` (``'train'`` or ``'test'``) before anything runs.

    Returns:
        The warnings (unknown keys where readers are not all known, ...) to show.

    Raises:
        OptionError: one line naming the file, line and key, for the first problem found.
    """
    source = source or getattr(opt, 'source', '') or '<options>'
    with _basicsr_logger_untouched():
        result = _Checker(opt, command, source).run()
    result.warnings = list(getattr(opt, 'warnings', []) or []) + result.warnings
    return result
