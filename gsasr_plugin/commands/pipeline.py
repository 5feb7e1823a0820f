"""The run pipeline that ``basicsr train`` and ``basicsr test`` share: BasicSR's own pipelines from the current
directory, with the options checked first and BasicSR patched for the run.

Takes BasicSR's own flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--local_rank``,
``--force_yml``) and runs ``basicsr.train.train_pipeline`` / ``basicsr.test.test_pipeline`` with the current
directory as root, so ``experiments/``, ``tb_logger/`` and ``results/`` land there. Before anything is created,
the option file (read safely: no Python objects), the ``--force_yml`` keys, every option value BasicSR would trip
over later (:func:`gsasr_plugin.commands.option_checks.check_options`), the dataset folders and the
pretrained/resume files are checked, with one-line errors naming the file, line and key. The run itself is wrapped in
:func:`gsasr_plugin.basicsr_patches.patched_basicsr`. Errors during the run (a file that cannot be written, a
bad checkpoint, a bad image) are one line too; ``GSASR_TRACEBACK=1`` shows the traceback.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
import basicsr.test
import basicsr.train
from basicsr.utils.registry import DATASET_REGISTRY
from gsasr_plugin.basicsr_patches import patched_basicsr
from gsasr_plugin.checkpoint import describe_weights, network_options_for
from gsasr_plugin.commands.option_checks import check_options
from gsasr_plugin.official import hub
from gsasr_plugin.utils import preemption
from gsasr_plugin.utils.cpu_tuning import keep_freed_memory, training_threads
from gsasr_plugin.utils.option_keys import apply_overrides
from gsasr_plugin.utils.options import LoadedOptions, load_option_file
from gsasr_plugin.utils.run_lock import FolderInUseError, RunFolderLock
from gsasr_plugin.utils.scale import scale_tag

__all__ = ['run_pipeline', 'check_option_paths', 'check_dataset_files', 'check_weights_available',
           'networks_from_weights', 'basicsr_argv']


def basicsr_argv(args: argparse.Namespace, force_yml: Optional[List[str]] = None) -> List[str]:
    """The command line BasicSR's ``parse_options`` reads (from ``sys.argv``) for the parsed ``args``, with the
    ``--force_yml`` entries ``force_yml`` (default: all of ``args.force_yml``)."""
    argv = ['-opt', args.opt, '--launcher', args.launcher, '--local_rank', str(args.local_rank)]
    argv += ['--auto_resume'] * bool(args.auto_resume) + ['--debug'] * bool(args.debug)
    force_yml = args.force_yml if force_yml is None else force_yml
    return argv + (['--force_yml', *force_yml] if force_yml else [])


def _load_options(path: str, force_yml: Optional[List[str]]) -> Tuple[LoadedOptions, List[str], List[str]]:
    """The option file read safely with the ``--force_yml`` entries applied: (options, notes for the user, the
    entries left for later: those inside a ``network_<label>`` the file lacks, which the weights bring)."""
    opt = load_option_file(path)
    now, later = [], []
    for entry in force_yml or []:
        top = entry.split('=', 1)[0].split(':')[0].strip()
        (later if top.startswith('network_') and top not in opt else now).append(entry)
    return opt, apply_overrides(opt, now), later


def _scale_tags(dataset_opt: Dict[str, Any]) -> List[str]:
    scales = dataset_opt.get('scales') or []
    try:
        return [scale_tag(s) for s in scales]
    except ValueError:
        return []  # the dataset reports bad scales itself


def check_option_paths(opt: Dict[str, Any], is_train: bool) -> None:
    """Raise FileNotFoundError naming the option and path of a missing dataset folder or weight file.

    Sections that are not mappings are left to ``gsasr_plugin.utils.options.check_options``.
    """
    datasets = opt.get('datasets')
    for phase, dataset_opt in (datasets.items() if isinstance(datasets, dict) else ()):
        if not isinstance(dataset_opt, dict):
            continue
        for key in ('dataroot_gt', 'dataroot_lq', 'gt_files'):
            root = dataset_opt.get(key)
            if root is None:
                continue
            roots = [str(r) for r in root] if isinstance(root, (list, tuple)) else [str(root)]  # gt_files: a list
            if '{scale}' in str(root):
                roots = [str(root).replace('{scale}', tag) for tag in _scale_tags(dataset_opt)]
            for folder in roots:
                folder = osp.expanduser(folder)
                if not osp.exists(folder):
                    raise FileNotFoundError(
                        f"datasets:{phase}:{key}: '{folder}' does not exist (relative to {os.getcwd()}); put the "
                        f"{dataset_opt.get('name', phase)} images there or point '{key}' at them "
                        "(see the README: Train on DIV2K / Evaluate)")
    path_opt = opt.get('path') if isinstance(opt.get('path'), dict) else {}
    for key, value in path_opt.items():
        if value is None or not (key.startswith('pretrain_network') or (key == 'resume_state' and is_train)):
            continue
        if key.startswith('pretrain_network'):
            check_weights_available(str(value), f'path:{key}')
        elif not osp.isfile(osp.expanduser(str(value))):
            raise FileNotFoundError(f"path:{key}: file '{value}' does not exist")


def check_dataset_files(opt: Dict[str, Any]) -> None:
    """Each dataset's own check of its files before anything is created (a dataset class's ``check_files(opt)``,
    e.g. the training images' headers: readable, at least the largest crop); a ValueError names the dataset."""
    for phase, dataset_opt in (opt.get('datasets') or {}).items():
        check = getattr(DATASET_REGISTRY.get(dataset_opt['type']), 'check_files', None)
        if check is None:
            continue
        try:
            check(dict(dataset_opt, phase=str(phase).split('_')[0]))
        except (OSError, ValueError) as error:
            raise ValueError(f'datasets:{phase}: {error}') from None


def check_weights_available(spec: str, option: str) -> None:
    """Fail early, in one line, on weights that cannot be had: a missing file or folder, an unknown
    ``official:`` name, or a released model's files that are neither cached nor downloadable (they are
    downloaded here when the machine is online)."""
    if spec.startswith(hub.OFFICIAL_PREFIX):
        try:
            hub.fetch_files(hub.released_model(spec))
        except ValueError as error:
            raise ValueError(f'{option}: {error}') from None
        return
    for part in (p.strip() for p in spec.split(',')) if ',' in spec else [spec]:
        if not osp.exists(osp.expanduser(part)):
            raise FileNotFoundError(f"{option}: '{part}' does not exist")


def networks_from_weights(opt: LoadedOptions) -> List[str]:
    """Give each ``network_<label>`` that the options lack the options its weights come with (``path:
    pretrain_network_<label>``: a checkpoint of ``basicsr train`` / ``convert``, a released model); returns a
    note per network.

    Raises:
        ValueError: naming the option, for weights that cannot be read or do not say which network they hold.
    """
    notes = []
    path_opt = opt.get('path') if isinstance(opt.get('path'), dict) else {}
    for key, spec in path_opt.items():
        if not str(key).startswith('pretrain_network_') or spec is None:
            continue
        label = key[len('pretrain_network_'):]
        if f'network_{label}' in opt:
            continue
        param_key = path_opt.get(f'param_key_{label}', 'params')
        what = describe_weights(spec)
        try:
            options = network_options_for(osp.expanduser(str(spec)), (param_key, 'params') if param_key else None)
        except (OSError, ValueError) as error:
            raise ValueError(f'path:{key}: {error}') from None
        if not options:
            where = opt.label or f"option file '{opt.source}'"
            raise ValueError(f'no network_{label} in {where}, and {what} (path:{key}) does not say which network '
                             f'it holds (a BasicSR checkpoint or a bare state dict): add network_{label} to the '
                             'option file')
        opt.set_from_command([f'network_{label}'], options, f'network_{label} from {what}')
        notes.append(f"network_{label}: {options.get('type')} as {what} describes it")
    return notes


def run_pipeline(command: str, args: argparse.Namespace, check: Optional[Callable[[Dict[str, Any], str], None]] = None,
                 source: Optional[str] = None) -> int:
    """Check the options, then run BasicSR's ``train_pipeline`` or ``test_pipeline`` from the cwd.

    ``args`` are the parsed flags (:func:`gsasr_plugin_cli.parsers.pipeline_parser`); ``args.model`` (``basicsr
    test -m``), when set, names the weights. A missing ``network_<label>`` comes from the weights
    (:func:`networks_from_weights`). ``check(opt, option_path)``, when given, runs before the path checks;
    its FileNotFoundError or ValueError stops the command with one line, before anything is created.
    ``source``: how messages name options that the command made (default: the option file).
    """
    prog = f'basicsr {command}'
    if not osp.isfile(args.opt):
        print(f"{prog}: error: option file '{args.opt}' does not exist", file=sys.stderr)
        return 2
    show_traceback = os.environ.get('GSASR_TRACEBACK', '') not in ('', '0')
    if getattr(args, 'name', None):  # basicsr test --name: as --force_yml name=... (BasicSR names folders by it)
        args.force_yml = [f'name={args.name}'] + list(args.force_yml or [])
    notes = []
    try:
        opt, warnings, later = _load_options(args.opt, args.force_yml)
        opt.label = source
        if getattr(args, 'model', None) and isinstance(opt.get('path'), dict):  # else the checks say path: is bad
            opt.set_from_command(['path', 'pretrain_network_g'], osp.expanduser(args.model), f'-m {args.model}')
        if check is not None:
            check(opt, source or args.opt)
        check_option_paths(opt, is_train=command == 'train')
        notes += networks_from_weights(opt)
        warnings += apply_overrides(opt, later)  # e.g. network_g:kernel_choice_eval=gumbel on the weights' network_g
        warnings += check_options(opt, command, args.opt).warnings
        check_dataset_files(opt)
    except (FileNotFoundError, ValueError, hub.WeightsUnavailableError) as exc:
        if show_traceback:
            raise
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return 1
    folder_lock = None
    if _is_main_process():  # rank 0 creates and owns the folder (BasicSR's make_exp_dirs is master-only)
        folder_lock = RunFolderLock(_run_folder(opt, command, args.debug), prog)
        try:
            folder_lock.check()  # a live run of the same name: refuse before anything is touched
        except FolderInUseError as exc:
            print(f'{prog}: error: {exc}', file=sys.stderr)
            return 1
    for line in warnings:
        print(f'{prog}: warning: {line}', file=sys.stderr)
    for line in notes:
        print(f'{prog}: note: {line}', file=sys.stderr)

    pipeline = basicsr.train.train_pipeline if command == 'train' else basicsr.test.test_pipeline
    keep_freed_memory()  # a training step reuses its freed buffers instead of faulting in fresh pages
    default_threads = torch.get_num_threads()
    threads = training_threads(opt) if command == 'train' else None
    if threads is not None:  # the data workers keep the other cores busy
        print(f'{prog}: note: training on the CPU with {threads} thread(s) of {default_threads}, the rest left to '
              'the data workers (num_worker_per_gpu); OMP_NUM_THREADS chooses', file=sys.stderr)
        torch.set_num_threads(threads)
    saved_argv = sys.argv
    # BasicSR's parse_options reads sys.argv; the entries applied later reach it through opt.from_command
    sys.argv = [prog] + basicsr_argv(args, [e for e in args.force_yml or [] if e not in later])
    try:
        # safe YAML, gloo on the CPU, exact resume, save-and-exit on signals, one live run per folder
        with patched_basicsr(command, opt, folder_lock):
            pipeline(os.getcwd())
    except preemption.TrainingStopped as exc:  # a resumable state was saved
        print(f'{prog}: {exc}', file=sys.stderr)
        return exc.exit_code
    except FolderInUseError as exc:  # a run of the same name started at the same moment
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError) as exc:  # WriteError (disk full, ...), bad checkpoints, bad images
        if show_traceback:
            raise
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f'{prog}: error: {text} (set GSASR_TRACEBACK=1 for the traceback)', file=sys.stderr)
        return 1
    finally:
        sys.argv = saved_argv
        torch.set_num_threads(default_threads)
        if folder_lock is not None:
            folder_lock.release()
    return 0


def _is_main_process() -> bool:
    """Rank 0 of a launched job (torchrun's RANK, slurm's SLURM_PROCID), or a single process."""
    for variable in ('RANK', 'SLURM_PROCID'):
        value = os.environ.get(variable)
        if value is not None and value.strip().isdigit():
            return int(value) == 0
    return True


def _run_folder(opt: Dict[str, Any], command: str, debug: bool) -> str:
    """The folder BasicSR gives the run: experiments/<name> (train) or results/<name> (test), from the cwd."""
    name = str(opt.get('name'))
    if debug and not name.startswith('debug'):
        name = 'debug_' + name
    return osp.join(os.getcwd(), 'experiments' if command == 'train' else 'results', name)
