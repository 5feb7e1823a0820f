"""Which BasicSR training state a run resumes from (``--auto_resume`` or ``path: resume_state``).

:func:`choose_resume_state` is what ``basicsr train`` loads in place of BasicSR's ``load_resume_state``
(:mod:`gsasr_plugin.basicsr_patches`): the newest state that loads safely (``weights_only=True``) whose model
files load too (the one checkpoint reader, :func:`gsasr_plugin.checkpoint.load_checkpoint`), skipping (with a line
saying why) the ones that do not. Where the data stream stood is :mod:`gsasr_plugin.utils.resume`.
"""
import os
import sys
from typing import Any, Dict, List, Optional

from gsasr_plugin.checkpoint import load_checkpoint
from gsasr_plugin.utils.atomic_io import remove_partial_files
from gsasr_plugin.utils.safe_load import load_torch_file

__all__ = ['choose_resume_state', 'load_training_state', 'state_model_files', 'NoUsableStateError']


class NoUsableStateError(ValueError):
    """``--auto_resume`` found training states, but none that loads with its model files."""


_STATE_KEYS = {'epoch': int, 'iter': int, 'optimizers': list, 'schedulers': list}


def load_training_state(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    """A training state loaded safely (``weights_only=True``) with its layout checked.

    Raises:
        FileNotFoundError, ValueError: naming the file: empty, truncated, not a state, holding Python objects.
    """
    state = load_torch_file(path, 'training state', map_location=map_location)
    if not isinstance(state, dict):
        raise ValueError(f'training state {path}: holds a {type(state).__name__}, not a training state')
    for key, kind in _STATE_KEYS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise ValueError(f"training state {path}: no '{key}' ({kind.__name__}); not a BasicSR training state")
    return state


def state_model_files(opt: Dict[str, Any], iteration: int) -> List[str]:
    """The model files BasicSR loads when resuming at ``iteration`` (``check_resume``'s rule)."""
    ignored = (opt.get('path') or {}).get('ignore_resume_networks') or []
    return [os.path.join(opt['path']['models'], f"net_{key[len('network_'):]}_{iteration}.pth")
            for key in opt if str(key).startswith('network_') and key not in ignored]


def _check_model_file(path: str) -> None:
    """The model file loads (the one checkpoint reader: weights-only, NaN/inf refused), or a one-line error."""
    load_checkpoint(path, 'params', what='model file')


def _state_iteration(name: str) -> Optional[int]:
    stem = name[:-len('.state')]
    return int(stem) if stem.isdigit() else None


def choose_resume_state(opt: Dict[str, Any], map_location: Any = 'cpu',
                        report=None) -> Optional[Dict[str, Any]]:
    """The training state to resume from, loaded, or None to start afresh; sets ``opt['path']['resume_state']``.

    With ``--auto_resume`` (``opt['auto_resume']``): the newest ``<iter>.state`` in the run's
    ``training_states`` folder that loads safely and whose model files (``net_g_<iter>.pth``, ...) load too;
    each newer one that does not is skipped with a line saying why (``report``, default: stderr). Temporary
    files of writes that a kill interrupted are removed first. Without it: ``path: resume_state`` if set,
    which must be usable.

    Raises:
        NoUsableStateError: states exist but none is usable (one line listing them and why).
        ValueError / FileNotFoundError: an explicit ``resume_state`` that is not usable.
    """
    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    paths = opt['path']
    if not opt.get('auto_resume'):
        explicit = paths.get('resume_state')
        if not explicit:
            return None
        state = load_training_state(explicit, map_location)
        for model_file in state_model_files(opt, state['iter']):
            _check_model_file(model_file)
        return state
    folder = paths.get('training_states') or os.path.join('experiments', opt['name'], 'training_states')
    for debris in remove_partial_files(folder) + remove_partial_files(paths.get('models', '')):
        say(f'--auto_resume: removed {debris} (left by a write that was interrupted)')
    if not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder) if n.endswith('.state'))
    if not names:
        return None
    skipped = []
    numbered = []
    for name in names:
        iteration = _state_iteration(name)
        if iteration is None:
            skipped.append(f'{name} (not named <iteration>.state)')
            say(f'--auto_resume: ignoring {os.path.join(folder, name)}: not named <iteration>.state')
        else:
            numbered.append((iteration, name))
    for iteration, name in sorted(numbered, reverse=True):
        path = os.path.join(folder, name)
        try:
            state = load_training_state(path, map_location)
            if state['iter'] != iteration:
                raise ValueError(f"training state {path}: holds iteration {state['iter']}, not {iteration}")
            for model_file in state_model_files(opt, iteration):
                _check_model_file(model_file)
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0].replace(f'training state {path}: ', '')
            skipped.append(f'{name} ({reason})')
            say(f'--auto_resume: skipping {path}: {reason}')
            continue
        if skipped:
            say(f'--auto_resume: resuming from {path}, the newest complete state')
        paths['resume_state'] = path
        return state
    raise NoUsableStateError(f'--auto_resume: no usable training state in {folder}: ' + '; '.join(skipped) +
                             '. Move them away to start afresh, or point path: resume_state at a good one')
