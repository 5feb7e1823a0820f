"""Which option keys something reads where, and ``--force_yml`` entries checked against them.

* :func:`known_keys` answers, for a section of an option file, the keys that BasicSR or the plugin reads
  there. Models and datasets declare the keys they read in a class attribute ``option_keys`` (a dict from
  section name to key names; for datasets the dataset's own keys); BasicSR's keys are listed here. The
  registries are BasicSR's, filled when the plugin is imported.
* :func:`apply_overrides` applies ``--force_yml key:subkey=value`` entries: the keys must exist in the file
  or be options that something reads there; a misspelt key is an error.
"""
import difflib
import inspect
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.utils import registry as basicsr_registry
from gsasr_plugin.utils.options import OptionError, key_text, parse_override_value

__all__ = ['known_keys', 'model_keys', 'dataset_keys', 'network_keys', 'is_known', 'suggestion', 'registered', 'apply_overrides',
           'DATASET_LOADER_KEYS', 'SRMODEL_KEYS']

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


def registered(name: str, type_name: Any) -> Optional[Any]:
    """What BasicSR's registry ``name`` (``'MODEL_REGISTRY'``, ...) holds under ``type_name``, or None."""
    reg = getattr(basicsr_registry, name)
    return reg.get(type_name) if isinstance(type_name, str) and type_name in reg else None


def model_keys(opt: Mapping[str, Any]) -> Optional[Dict[str, Set[str]]]:
    """``train``/``val`` keys that the options' model reads, or None when they are not known."""
    model = registered('MODEL_REGISTRY', opt.get('model_type'))
    if model is None:
        return None
    declared = getattr(model, 'option_keys', None)
    if declared is not None:
        return {section: set(keys) for section, keys in declared.items()}
    if model.__name__ == 'SRModel':
        return {section: set(keys) for section, keys in SRMODEL_KEYS.items()}
    return None


def dataset_keys(dataset_opt: Any) -> Optional[Set[str]]:
    """The keys a dataset section's type reads (with the loader's), or None when they are not known."""
    if not isinstance(dataset_opt, Mapping):
        return None
    dataset = registered('DATASET_REGISTRY', dataset_opt.get('type'))
    declared = getattr(dataset, 'option_keys', None) if dataset is not None else None
    return None if declared is None else set(declared) | DATASET_LOADER_KEYS


def known_keys(opt: Mapping[str, Any], path: Sequence[str]) -> Tuple[Optional[Set[str]], Tuple[str, ...]]:
    """(keys, key prefixes) that something reads in the section at ``path`` of ``opt``; keys is None when
    the section's readers are not all known (then unknown keys there are only warned about)."""
    path = tuple(path)
    if path == ():
        model_top = (model_keys(opt) or {}).get('', set())  # e.g. ArbitraryScaleSRModel's tile
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
        return dataset_keys((opt.get('datasets') or {}).get(path[1])), ()
    if len(path) == 1 and path[0] in ('train', 'val'):
        keys = model_keys(opt)
        return (None if keys is None else keys.get(path[0])), ()
    if len(path) == 1 and str(path[0]).startswith('network_'):
        return network_keys(opt.get(path[0])), ()
    return None, ()


def network_keys(net_opt: Any) -> Optional[Set[str]]:
    """The options a ``network_*`` section's registered architecture takes (its constructor's named
    arguments, and ``type``), or None when they are not known."""
    arch = registered('ARCH_REGISTRY', net_opt.get('type')) if isinstance(net_opt, Mapping) else None
    try:
        params = inspect.signature(arch).parameters if arch is not None else None
    except (TypeError, ValueError):
        params = None
    if params is None or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return {'type'} | {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def is_known(key: str, keys: Optional[Set[str]], prefixes: Tuple[str, ...]) -> bool:
    """Whether ``key`` is one of :func:`known_keys`' answer (False when the readers are not known)."""
    return keys is not None and (key in keys or any(key.startswith(p) for p in prefixes))


def suggestion(key: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or an empty text."""
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
                where = key_text(keys[:depth]) or 'the top level'
                hint = suggestion(key, node) if isinstance(node, Mapping) else ''
                raise OptionError(f"--force_yml '{entry}': no section '{key}' in {where} of the option file{hint}")
            node = node[key]
        if not isinstance(node, Mapping):
            raise OptionError(f"--force_yml '{entry}': {key_text(keys[:-1])} is not a section (it is "
                              f'{node!r}), so it has no key {keys[-1]!r}')
        last = keys[-1]
        if last not in node:
            known, prefixes = known_keys(opt, keys[:-1])
            if not is_known(last, known, prefixes):
                candidates = set(node) | (known or set())
                raise OptionError(f"--force_yml '{entry}': {keys_text}: no such key in the option file and not an "
                                  f'option read there{suggestion(last, candidates)}')
            notes.append(f'--force_yml {keys_text}: added (not in the option file)')
        node[last] = parse_override_value(value_text)
        if isinstance(getattr(opt, 'overrides', None), dict):
            opt.overrides[tuple(keys)] = f"--force_yml '{entry}'"
    return notes

