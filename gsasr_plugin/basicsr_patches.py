"""Every change the plugin makes to BasicSR 1.4.2 during a run, in one table (:data:`PATCHES`), installed and
undone by one context manager (:func:`patched_basicsr`) around ``basicsr train`` / ``basicsr test``.

We depend on basicsr from PyPI and never fork it; where its pipeline must behave otherwise, the run replaces a
module attribute that the pipeline looks up at call time, and puts the original back afterwards, so importing
the plugin changes nothing in BasicSR (but the torchvision alias of :mod:`gsasr_plugin.compat`, without which
basicsr does not import at all).

=========================================  ============  =========================================================
BasicSR attribute                          runs          replaced by, and why
=========================================  ============  =========================================================
``basicsr.utils.options.ordered_yaml``     train, test   a loader that builds no Python objects
                                                         (``utils.options.OrderedSafeLoader``, same OrderedDicts)
``basicsr.utils.options                    train, test   ``utils.options.parse_override_value``: ``--force_yml``
._postprocess_yml_value``                                values parsed as YAML instead of ``eval``
``basicsr.utils.options.init_dist``        train, test   ``utils.dist.init_dist``: gloo on the CPU, NCCL on GPUs,
                                                         the launcher's environment checked (BasicSR: NCCL only)
``basicsr.train.parse_options``,           train, test   BasicSR's own, then the options the command line set
``basicsr.test.parse_options``                           that the file does not hold (``-m``, ``network_g`` from
                                                         the weights: ``LoadedOptions.from_command``)
``basicsr.train.load_resume_state``        train         weights-only states on any device (BasicSR maps them to
                                                         CUDA), falling back past damaged states
                                                         (``models.training_states``), recording where
                                                         the data stream stood (``resume.PROGRESS``)
``basicsr.train.EnlargedSampler``          train         ``utils.resume.ResumableSampler``: exact resumption
``basicsr.data.worker_init_fn``            train         ``utils.preemption.worker_init_fn``: DataLoader workers
                                                         ignore SIGINT/SIGTERM (the main process saves and stops)
``basicsr.train.make_exp_dirs``,           train, test   archive-and-create serialised with other runs, never of
``basicsr.test.make_exp_dirs``                           a live run's folder; the run's folder lock moves into
                                                         the new folder (``utils.run_lock``)
``basicsr.train.get_root_logger``,         train, test   a log file that cannot be written (disk full, size
``basicsr.test.get_root_logger``                         limit) stops the run with one line (``LogWriteError``),
                                                         not a logging traceback per line
=========================================  ============  =========================================================

Besides attributes, a training run routes SIGTERM/SIGINT to the stop flag (``utils.preemption``) and starts a
fresh data position; every run leaves the process group it made. All of it is undone when the block exits.
"""
import contextlib
import copy
import importlib
import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Mapping, Tuple

import torch
import torch.distributed as torch_dist

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.utils import check_resume
from gsasr_plugin.models.training_states import choose_resume_state
from gsasr_plugin.utils import preemption
from gsasr_plugin.utils.atomic_io import describe_os_error
from gsasr_plugin.utils.dist import init_dist
from gsasr_plugin.utils.options import OrderedSafeLoader, parse_override_value
from gsasr_plugin.utils.preemption import worker_init_fn
from gsasr_plugin.utils.resume import PROGRESS, ResumableSampler

__all__ = ['Patch', 'PATCHES', 'patched_basicsr', 'LogWriteError']


@dataclass(frozen=True)
class Patch:
    """One BasicSR attribute a run replaces.

    Attributes:
        module: the BasicSR module holding it.
        name: the attribute.
        commands: the runs that replace it (``'train'``, ``'test'``).
        make: ``make(original, opt) -> replacement`` (the run's parsed options).
    """
    module: str
    name: str
    commands: Tuple[str, ...]
    make: Callable[[Any, Mapping[str, Any]], Any]


def _safe_ordered_yaml(original: Callable, opt: Mapping[str, Any]) -> Callable:
    def ordered_yaml():
        return OrderedSafeLoader, original()[1]  # BasicSR's dumper: writing builds nothing

    return ordered_yaml


def _yaml_values(original: Callable, opt: Mapping[str, Any]) -> Callable:
    return parse_override_value


def _init_dist(original: Callable, opt: Mapping[str, Any]) -> Callable:
    return partial(init_dist, num_gpu=opt.get('num_gpu'))


def _parse_options(original: Callable, opt: Mapping[str, Any]) -> Callable:
    from_command = dict(getattr(opt, 'from_command', None) or {})

    def parse_options(*args, **kwargs):
        """BasicSR's ``parse_options``, plus the options the command line set (``opt.from_command``)."""
        run_opt, parsed_args = original(*args, **kwargs)
        for path, value in from_command.items():
            node = run_opt
            for key in path[:-1]:
                node = node.setdefault(key, OrderedDict())
            node[path[-1]] = copy.deepcopy(value)
        return run_opt, parsed_args

    return parse_options


def _load_resume_state(original: Callable, opt: Mapping[str, Any]) -> Callable:
    def load_resume_state(run_opt):
        """``basicsr.train.load_resume_state``: safe, on any device, falling back past damaged states."""
        if torch.cuda.is_available() and run_opt.get('num_gpu', 0) != 0:
            device_id = torch.cuda.current_device()
            map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
        else:
            map_location = 'cpu'
        state = choose_resume_state(run_opt, map_location)
        if state is not None:
            check_resume(run_opt, state['iter'])
        PROGRESS.set_resume(state)
        return state

    return load_resume_state


def _sampler(original: Any, opt: Mapping[str, Any]) -> Any:
    return ResumableSampler


def _locked_make_exp_dirs(original: Callable, opt: Mapping[str, Any]) -> Callable:
    def make_exp_dirs(run_opt):
        """``make_exp_dirs``: BasicSR's archive-and-create, serialised with other runs, never of a live run's
        folder, and the run's folder lock moved into the new folder (``utils.run_lock``)."""
        lock = _RUN.get('folder_lock')
        if lock is None:
            return original(run_opt)
        with lock.creating():
            return original(run_opt)

    return make_exp_dirs


class LogWriteError(OSError):
    """The run's log file cannot be written (disk full, file size limit, ...): the run stops, in one line."""

    def __str__(self) -> str:
        return self.strerror


def _failing_log_files(original: Callable, opt: Mapping[str, Any]) -> Callable:
    def get_root_logger(*args, **kwargs):
        """``get_root_logger`` whose log-file handlers stop the run with one :class:`LogWriteError` when a write
        fails, instead of logging's ``--- Logging error ---`` traceback for every later line."""
        logger = original(*args, **kwargs)
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler) and 'handleError' not in vars(handler):
                handler.handleError = partial(_stop_on_log_error, handler)
                _RUN.setdefault('log_handlers', []).append(handler)
        return logger

    return get_root_logger


def _stop_on_log_error(handler: Any, record: Any) -> None:
    error = sys.exc_info()[1]
    if not isinstance(error, OSError):  # a bad record (a formatting bug), not the file: logging's own report
        type(handler).handleError(handler, record)
        return
    handler.handleError = lambda record: None  # nothing more to this file while the run stops
    raise LogWriteError(error.errno, f'cannot write the log {handler.baseFilename}: {describe_os_error(error)}; '
                        'the run stops (the checkpoints and states written so far are kept)') from None


def _worker_init_fn(original: Callable, opt: Mapping[str, Any]) -> Callable:
    return partial(worker_init_fn, basicsr_init=original)


PATCHES: Tuple[Patch, ...] = (
    Patch('basicsr.utils.options', 'ordered_yaml', ('train', 'test'), _safe_ordered_yaml),
    Patch('basicsr.utils.options', '_postprocess_yml_value', ('train', 'test'), _yaml_values),
    Patch('basicsr.utils.options', 'init_dist', ('train', 'test'), _init_dist),
    Patch('basicsr.train', 'parse_options', ('train', ), _parse_options),
    Patch('basicsr.test', 'parse_options', ('test', ), _parse_options),
    Patch('basicsr.train', 'load_resume_state', ('train', ), _load_resume_state),
    Patch('basicsr.train', 'EnlargedSampler', ('train', ), _sampler),
    Patch('basicsr.data', 'worker_init_fn', ('train', ), _worker_init_fn),
    Patch('basicsr.train', 'make_exp_dirs', ('train', ), _locked_make_exp_dirs),
    Patch('basicsr.test', 'make_exp_dirs', ('test', ), _locked_make_exp_dirs),
    Patch('basicsr.train', 'get_root_logger', ('train', ), _failing_log_files),
    Patch('basicsr.test', 'get_root_logger', ('test', ), _failing_log_files),
)
_RUN: Dict[str, Any] = {}  # what the patches of the current run share (its folder lock)


@contextlib.contextmanager
def patched_basicsr(command: str, opt: Mapping[str, Any], folder_lock: Any = None) -> Iterator[None]:
    """BasicSR patched for one ``basicsr <command>`` run with options ``opt`` (the parsed YAML): every entry of
    :data:`PATCHES` for ``command`` (and, for training, the signal handlers and a fresh data position); all of
    it undone on exit, and the process group the run made left. ``folder_lock``: the run's
    ``utils.run_lock.RunFolderLock``, which ``make_exp_dirs`` moves into the folder it creates."""
    if command not in ('train', 'test'):
        raise ValueError(f"command must be 'train' or 'test', got {command!r}")
    saved: List[Tuple[Any, str, Any]] = []
    _RUN['folder_lock'] = folder_lock
    try:
        for patch in PATCHES:
            if command in patch.commands:
                module = importlib.import_module(patch.module)
                original = getattr(module, patch.name)
                saved.append((module, patch.name, original))
                setattr(module, patch.name, patch.make(original, opt))
        if command == 'train':
            PROGRESS.__init__()
            preemption.install_handlers()
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)
        for handler in _RUN.get('log_handlers', ()):
            vars(handler).pop('handleError', None)
        _RUN.clear()
        preemption.restore_handlers()
        _leave_process_group()


def _leave_process_group() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()

