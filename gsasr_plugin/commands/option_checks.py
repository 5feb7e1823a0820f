"""The checks ``basicsr train`` and ``basicsr test`` run on an option file before anything is created.

:func:`check_options` finds what would otherwise fail later with a traceback (unknown types, missing or malformed
values, ``num_gpu`` without GPUs, networks whose options do not build, pretrained weights that do not fit). Unknown
keys are an error where nothing can read them (sections whose readers are all known, see
:func:`gsasr_plugin.utils.option_keys.known_keys`) and a warning elsewhere. Errors are
:class:`~gsasr_plugin.utils.options.OptionError` (one line naming the file, line and key).

:class:`_Report` says where a key is and checks single values; each ``_check_*`` function checks one part of
the file; models and datasets check their own sections with a ``check_options`` class method.
"""
import contextlib
import copy
import inspect
import logging
import os
import re
from typing import Any, Callable, List, Mapping, Optional, Sequence, Set

import torch

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.archs import build_network
from basicsr.models import lr_scheduler
from basicsr.utils import logger as basicsr_logger
from basicsr.utils import registry as basicsr_registry
from gsasr_plugin.checkpoint import NetworkTooLargeError, check_network_memory, check_weights_fit
from gsasr_plugin.official.hub import WeightsUnavailableError
from gsasr_plugin.utils.option_keys import is_known, known_keys, model_keys, suggestion
from gsasr_plugin.utils.options import OptionError, key_text, option_number

__all__ = ['check_options', 'CheckResult']

# BasicSR 1.4.2: BaseModel.get_optimizer knows Adam only; setup_schedulers builds these (a model may add its own,
# with a ``scheduler_class(scheduler_opt)`` class method, e.g. ArbitraryScaleSRModel's warm-up)
_OPTIMIZERS = {'Adam'}
_BASICSR_SCHEDULERS = {'MultiStepLR': lr_scheduler.MultiStepRestartLR,
                       'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
                       'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
_SCHEDULERS = set(_BASICSR_SCHEDULERS) | {'WarmupMultiStepLR'}


class CheckResult:
    """What :func:`check_options` found: ``warnings`` (lines to show) and ``notes``."""

    def __init__(self):
        self.warnings: List[str] = []
        self.notes: List[str] = []


class _Report:
    """One option file being checked: where a key is (file, line or ``--force_yml`` entry), the errors and
    warnings that say so, and the checks of single values and sections."""

    def __init__(self, opt: Mapping[str, Any], command: str, source: str):
        self.opt = opt
        self.command = command
        self.source = source
        self.lines = getattr(opt, 'lines', {}) or {}
        self.label = getattr(opt, 'label', None) or f"option file '{source}'"
        self.result = CheckResult()

    def where(self, path: Sequence[str]) -> str:
        path = tuple(str(p) for p in path)
        overrides = getattr(self.opt, 'overrides', None) or {}
        for depth in range(len(path), 0, -1):
            if path[:depth] in overrides:
                return f'{self.label} with {overrides[path[:depth]]}'
        line = self.lines.get(path)
        return self.label + (f' line {line}' if line else '')

    def error(self, path: Sequence[str], message: str) -> OptionError:
        key = key_text(path)
        return OptionError(f'{self.where(path)}: {key}: {message}' if key else f'{self.where(path)}: {message}')

    def warn(self, path: Sequence[str], message: str) -> None:
        self.result.warnings.append(f'{self.where(path)}: {key_text(path)}: {message}')

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
            if is_known(str(key), known, prefixes):
                continue
            if known is None:
                continue  # readers not all known (another plugin's model or dataset): cannot tell
            raise self.error(list(path) + [key], f'unknown key{suggestion(key, known)}: nothing reads it here')

    def warn_unknown_keys(self, section: Mapping[str, Any], path: Sequence[str]) -> None:
        known, prefixes = known_keys(self.opt, path)
        for key in section:
            if not is_known(str(key), known, prefixes):
                hint = suggestion(key, known or ())
                self.warn(list(path) + [key], f'unknown key{hint}; BasicSR and the plugin do not read it')

    def registered(self, registry: str, type_name: Any, path: Sequence[str], what: str):
        reg = getattr(basicsr_registry, registry)
        if not isinstance(type_name, str) or not type_name:
            raise self.error(path, f'must name a registered {what}, got {type_name!r}')
        if type_name not in reg:
            names = sorted(reg.keys())
            raise self.error(path, f"'{type_name}' is not a registered {what}{suggestion(type_name, names)}")
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
            hint = suggestion(key, named - skip)
            if takes_any:
                self.warn(list(path) + [key], f'not a named option of {what}{hint}; it may be ignored')
            else:
                raise self.error(list(path) + [key], f'{what} takes no option {key!r}{hint}')


# ------------------------------------------------------------------------------------------ the checks
def _check_top_level(report: _Report):
    """``name``, ``model_type`` (returned: the model class), ``num_gpu``, ``manual_seed``, ``path``,
    ``dist_params``."""
    opt = report.opt
    report.warn_unknown_keys(opt, ())
    name = opt.get('name')
    if not isinstance(name, str) or not name.strip():
        raise report.error(['name'], f'is required: the run name (a text), got {name!r}')
    if re.search(r'[\\/]|^\.+$', name):
        raise report.error(['name'], f'{name!r} must not contain / or \\ (it names a folder)')
    model_cls = report.registered('MODEL_REGISTRY', opt.get('model_type'), ['model_type'], 'model type')
    _check_model_options(report, model_cls)
    _check_num_gpu(report)
    if opt.get('manual_seed') is not None:
        report.number(opt, ['manual_seed'], integer=True, minimum=0)
    report.unknown_keys(report.section(['path'], required=True), ['path'])
    if report.section(['dist_params'], required=False) is not None:
        report.unknown_keys(opt['dist_params'], ['dist_params'])
    return model_cls


def _check_model_options(report: _Report, model_cls) -> None:
    """The model's own ``check_options(opt)`` (e.g. ``ArbitraryScaleSRModel``'s top-level ``tile:``)."""
    check = getattr(model_cls, 'check_options', None)
    if check is None:
        return
    try:
        check(report.opt)
    except (ValueError, TypeError) as error:
        first = re.match(r'[A-Za-z_][\w]*', str(error))  # messages start with the key they are about
        line_of = [first.group(0)] if first and first.group(0) in report.opt else []
        raise OptionError(f'{report.where(line_of)}: {error}') from None


def _check_num_gpu(report: _Report) -> None:
    if 'num_gpu' not in report.opt:
        raise report.error(['num_gpu'], 'is required: the number of GPUs, 0 for the CPU, or auto')
    value = report.opt['num_gpu']
    if value == 'auto':
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise report.error(['num_gpu'], f'must be an integer >= 0 or auto, got {value!r}')
    if value > 0 and not torch.cuda.is_available():
        raise report.error(['num_gpu'], f'{value} GPU(s) asked for, but no CUDA GPU is available here; use '
                           'num_gpu: 0 (CPU) or auto')
    if value > 0 and value > torch.cuda.device_count():
        report.warn(['num_gpu'], f'{value} GPU(s) asked for, this machine has {torch.cuda.device_count()}')


def _check_datasets(report: _Report) -> None:
    datasets = report.section(['datasets'], required=True)
    if not datasets:
        raise report.error(['datasets'], 'has no dataset')
    training = report.command == 'train'
    for phase, dataset_opt in datasets.items():
        path = ['datasets', phase]
        if not isinstance(dataset_opt, Mapping):
            raise report.error(path, f'must be a section (a dataset), got {dataset_opt!r}')
        kind = str(phase).split('_')[0]
        if training and kind not in ('train', 'val'):
            raise report.error(path, "basicsr train takes the phases 'train' and 'val*' only")
        if training and kind == 'train' and phase != 'train':
            raise report.error(path, "the training dataset must be called 'train'")
        dataset_cls = report.registered('DATASET_REGISTRY', dataset_opt.get('type'), path + ['type'], 'dataset type')
        report.unknown_keys(dataset_opt, path)
        if 'name' not in dataset_opt:
            raise report.error(path + ['name'], 'is required (the dataset name used in logs and result folders)')
        if kind == 'train':
            for key in ('batch_size_per_gpu', 'num_worker_per_gpu'):
                report.number(dataset_opt, path + [key], integer=True, minimum=1 if key.startswith('batch') else 0)
        check = getattr(dataset_cls, 'check_options', None)
        if check is not None:
            try:
                check(dict(dataset_opt, phase=kind))
            except (ValueError, TypeError) as error:
                quoted = re.search(r"'([^']+)'", str(error))  # the key the dataset names, for its line
                line_of = path + [quoted.group(1)] if quoted and quoted.group(1) in dataset_opt else path
                raise OptionError(f'{report.where(line_of)}: {key_text(path)}: {error}') from None
    if training and 'train' not in datasets:
        raise report.error(['datasets', 'train'], 'is required by basicsr train (the training dataset)')


def _check_train(report: _Report, model_cls) -> None:
    """``train``: iterations, optimizer, scheduler (the class the model builds, see ``scheduler_class``), losses."""
    train = report.section(['train'], required=True)
    report.unknown_keys(train, ['train'])
    report.number(train, ['train', 'total_iter'], integer=True, minimum=1)
    for key in ('warmup_iter', 'max_nonfinite_steps', 'divergence_patience'):
        if train.get(key) is not None:
            report.number(train, ['train', key], integer=True,
                          minimum={'warmup_iter': -1, 'divergence_patience': 1}.get(key, 0))
    for key in ('ema_decay', 'grad_clip_norm', 'divergence_factor'):
        if train.get(key) is not None:
            report.number(train, ['train', key], minimum=0)
    optim = report.section(['train', 'optim_g'], required=True)
    optim_type = optim.get('type')
    if optim_type not in _OPTIMIZERS:
        raise report.error(['train', 'optim_g', 'type'], f'{optim_type!r} is not supported by BasicSR 1.4.2 '
                           f"(optimizers: {', '.join(sorted(_OPTIMIZERS))})")
    report.number(optim, ['train', 'optim_g', 'lr'], above=0)
    report.kwargs_fit(getattr(torch.optim, optim_type), optim, ['train', 'optim_g'], {'type', 'params'},
                      f'torch.optim.{optim_type}')
    scheduler = report.section(['train', 'scheduler'], required=True)
    scheduler_type = scheduler.get('type')
    if scheduler_type not in _SCHEDULERS:
        raise report.error(['train', 'scheduler', 'type'], f'{scheduler_type!r} is not a scheduler BasicSR '
                           f"1.4.2 sets up{suggestion(scheduler_type, _SCHEDULERS)} "
                           f"(schedulers: {', '.join(sorted(_SCHEDULERS))})")
    model_rule = getattr(model_cls, 'scheduler_class', None)
    scheduler_cls = (model_rule(scheduler) if model_rule else None) or \
        _BASICSR_SCHEDULERS.get(scheduler_type, lr_scheduler.MultiStepRestartLR)
    report.kwargs_fit(scheduler_cls, scheduler, ['train', 'scheduler'], {'type', 'optimizer'},
                      f'scheduler {scheduler_type}')
    for key in ('pixel_opt', 'perceptual_opt'):
        loss = train.get(key)
        if loss is None:
            continue
        if not isinstance(loss, Mapping):
            raise report.error(['train', key], f'must be a section (a loss), got {loss!r}')
        loss_cls = report.registered('LOSS_REGISTRY', loss.get('type'), ['train', key, 'type'], 'loss')
        report.kwargs_fit(loss_cls, loss, ['train', key], {'type'}, f'loss {loss.get("type")}')


def _check_logger(report: _Report) -> None:
    logger = report.section(['logger'], required=True)
    report.unknown_keys(logger, ['logger'])
    for key in ('print_freq', 'save_checkpoint_freq'):
        report.number(logger, ['logger', key], integer=True, minimum=1)
    if 'use_tb_logger' not in logger:
        raise report.error(['logger', 'use_tb_logger'], 'is required by basicsr train (true or false)')
    if isinstance(logger.get('wandb'), Mapping):
        report.unknown_keys(logger['wandb'], ['logger', 'wandb'])


def _check_val(report: _Report) -> None:
    val = report.section(['val'], required=report.command == 'test')
    if val is None:
        return
    report.unknown_keys(val, ['val'])
    if 'save_img' not in val:
        raise report.error(['val', 'save_img'], f'is required by basicsr {report.command} (true or false)')
    if report.command == 'train':
        report.number(val, ['val', 'val_freq'], integer=True, minimum=1)
    metrics = val.get('metrics')
    if metrics is None:
        return
    if not isinstance(metrics, Mapping):
        raise report.error(['val', 'metrics'], f'must be a section of metrics, got {metrics!r}')
    metric_keys = set((model_keys(report.opt) or {}).get('metric', ()))
    for metric, metric_opt in metrics.items():
        path = ['val', 'metrics', metric]
        if not isinstance(metric_opt, Mapping):
            raise report.error(path, f'must be a section (a metric with a type), got {metric_opt!r}')
        function = report.registered('METRIC_REGISTRY', metric_opt.get('type'), path + ['type'], 'metric')
        report.kwargs_fit(function, metric_opt, path, {'type', 'img', 'img2'} | metric_keys,
                          f'metric {metric_opt.get("type")}')


def _check_networks(report: _Report) -> None:
    """Every ``network_*`` builds from its options (on the meta device: no memory, no time) and fits in the memory
    free here (:func:`gsasr_plugin.checkpoint.check_network_memory`; training on the CPU: 4 parameter-sized
    copies), and the pretrained
    weights named in ``path`` (a checkpoint, ``official:<name>``, a folder or comma list of official files) are
    read by the one loader, :func:`gsasr_plugin.checkpoint.check_weights_fit` (weights only, NaN/inf refused),
    and fit it: exactly for released weights and with ``strict_load_*``."""
    if 'network_g' not in report.opt:
        raise report.error(['network_g'], 'is required: the network to build (it may come from the weights instead: '
                           'name a checkpoint of basicsr train or convert, or official:<name>, in '
                           'path:pretrain_network_g)')
    path_opt = report.opt.get('path') or {}
    for key, net_opt in report.opt.items():
        if not str(key).startswith('network_'):
            continue
        if not isinstance(net_opt, Mapping):
            raise report.error([key], f'must be a section (a network with a type), got {net_opt!r}')
        report.registered('ARCH_REGISTRY', net_opt.get('type'), [key, 'type'], 'network')
        network = _build_network(report, key, net_opt)
        on_cpu = report.opt.get('num_gpu') == 0 or not torch.cuda.is_available()
        try:  # built on the host; CPU training also holds the gradients and Adam's two moments there
            check_network_memory(network, key, copies=4 if report.command == 'train' and on_cpu else 1)
        except NetworkTooLargeError as error:
            raise report.error([key], str(error)[len(key) + 1:].lstrip()) from None
        label = key[len('network_'):]
        weights = path_opt.get(f'pretrain_network_{label}')
        if weights is None:
            continue
        weights = os.path.expanduser(str(weights))
        strict = path_opt.get(f'strict_load_{label}', True)
        param_key = path_opt.get(f'param_key_{label}', 'params')
        try:  # one loader for all: checkpoints, official:<name>, folders and lists of official files
            # a non-strict partial fit is reported (loudly) by the model when it loads the weights
            check_weights_fit(network, weights, net_opt, (param_key, 'params') if param_key else None,
                              strict=strict is not False, network_label=key)
        except (OSError, ValueError, WeightsUnavailableError) as error:
            raise report.error(['path', f'pretrain_network_{label}'], str(error)) from None


def _build_network(report: _Report, key: str, net_opt: Mapping[str, Any]):
    try:
        with torch.device('meta'):
            return build_network(copy.deepcopy(dict(net_opt)))
    except Exception:  # noqa: BLE001  (the meta device is an optimisation: the CPU build decides)
        pass
    try:
        return build_network(copy.deepcopy(dict(net_opt)))
    except (TypeError, ValueError, KeyError, AssertionError, NotImplementedError, OSError) as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise report.error([key], f'does not build: {text}') from None


@contextlib.contextmanager
def _basicsr_logger_untouched():
    """Undo an initialisation of BasicSR's root logger inside the block (building a network logs): BasicSR's
    pipeline must be the first to initialise it, with its log file, or the run has no log file and no INFO."""
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
    report = _Report(opt, command, source or getattr(opt, 'source', '') or '<options>')
    with _basicsr_logger_untouched():
        model_cls = _check_top_level(report)
        _check_datasets(report)
        if command == 'train':
            _check_train(report, model_cls)
            _check_logger(report)
        _check_val(report)
        _check_networks(report)
    report.result.warnings = list(getattr(opt, 'warnings', []) or []) + report.result.warnings
    return report.result
