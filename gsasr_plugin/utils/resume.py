"""Exact resumption of BasicSR training: where the data stream stood, and draws that do not depend on history.

BasicSR 1.4.2 resumes at the *beginning* of the saved epoch and does not save any data RNG state, so a
resumed run sees other batches than the uninterrupted one would have. Here:

* :class:`ResumableSampler` (installed in place of BasicSR's ``EnlargedSampler``) yields :class:`SampleKey`
  indices: plain ints that also carry the run's seed, the epoch and the position in this rank's epoch
  stream. Datasets derive each batch's random draws (scale, crops, flips) from :func:`batch_entropy`, a
  function of (seed + rank, epoch, position) only, so draws differ epoch after epoch (BasicSR's
  ``worker_init_fn`` re-seeds workers identically every epoch) and do not depend on workers or restarts.
* :data:`PROGRESS` counts the samples trained on in the current epoch; the training state stores it
  (``epoch_samples_done``, for all ranks together) and a resumed sampler skips that many, so the run
  continues with exactly the batches the uninterrupted run would have drawn (with a different number of
  processes: the nearest whole number of samples per rank).
* :func:`atomic_save` (from :mod:`gsasr_plugin.utils.atomic_io`) writes states and models through a
  temporary file, so a kill or a full disk during the write never leaves a truncated file behind.
* :func:`choose_resume_state` is what ``--auto_resume`` loads: the newest state that loads safely
  (``weights_only=True``) whose model files load too, skipping (with a line saying why) the ones that do not.
"""
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

from gsasr_plugin.utils.atomic_io import atomic_save  # noqa: F401  (re-exported: the one atomic torch.save)

__all__ = ['SampleKey', 'ResumableSampler', 'batch_entropy', 'PROGRESS', 'DataProgress', 'atomic_save',
           'install', 'choose_resume_state', 'load_training_state', 'state_model_files', 'NoUsableStateError']


class SampleKey(int):
    """A dataset index that also says where it was drawn (``int(key)`` is the index)."""

    def __new__(cls, index: int, seed: int, epoch: int, position: int):
        key = super().__new__(cls, index)
        key.seed, key.epoch, key.position = int(seed), int(epoch), int(position)
        return key

    def __reduce__(self):  # DataLoader workers receive the keys pickled
        return SampleKey, (int(self), self.seed, self.epoch, self.position)

    def __repr__(self) -> str:
        return f'SampleKey({int(self)}, seed={self.seed}, epoch={self.epoch}, position={self.position})'


def batch_entropy(indices: Sequence[Any]) -> Optional[List[int]]:
    """Seed material of a batch drawn by :class:`ResumableSampler`, or None for plain indices.

    It is (seed, epoch, position of the batch's first sample): unique per batch and rank, independent
    of DataLoader workers, epochs already run and restarts.
    """
    if not indices or not isinstance(indices[0], SampleKey):
        return None
    first = indices[0]
    return [first.seed % (2**63), first.epoch, first.position]


@dataclass
class DataProgress:
    """Where this process's training stream stands: the epoch and the samples trained on in it."""
    epoch: Optional[int] = None
    samples_done: int = 0  # this rank, in the current epoch, including skipped ones
    resume_epoch: Optional[int] = None
    resume_samples: int = 0  # all ranks together, from the resumed state

    def start_epoch(self, epoch: int, skipped: int) -> None:
        self.epoch, self.samples_done = int(epoch), int(skipped)

    def add_batch(self, batch_size: int) -> None:
        if self.epoch is not None:
            self.samples_done += int(batch_size)

    def state(self, world_size: int) -> Dict[str, int]:
        """Entries for the training state (empty when no :class:`ResumableSampler` ran)."""
        if self.epoch is None:
            return {}
        return {'epoch_samples_done': self.samples_done * int(world_size), 'data_epoch': self.epoch}

    def set_resume(self, resume_state: Optional[Dict[str, Any]]) -> None:
        self.resume_epoch, self.resume_samples = None, 0
        if resume_state and 'epoch_samples_done' in resume_state:
            self.resume_epoch = int(resume_state.get('data_epoch', resume_state['epoch']))
            self.resume_samples = int(resume_state['epoch_samples_done'])


PROGRESS = DataProgress()


class ResumableSampler(torch.utils.data.Sampler):
    """BasicSR's ``EnlargedSampler`` (same order: a permutation seeded by the epoch, rank-strided) that
    yields :class:`SampleKey` indices and, after a resume, skips the samples the saved run had consumed.

    Args:
        dataset: the training dataset.
        num_replicas: world size.
        rank: this process's rank.
        ratio: BasicSR's ``dataset_enlarge_ratio``. Default: 1.
        seed: stream seed; default ``torch.initial_seed()``, i.e. ``manual_seed + rank`` as BasicSR sets it.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, ratio: int = 1, seed: Optional[int] = None):
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.num_samples = -(-len(dataset) * int(ratio) // self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.seed = int(torch.initial_seed() if seed is None else seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        skip = 0
        if PROGRESS.resume_epoch is not None and PROGRESS.resume_epoch == self.epoch:
            skip = min(PROGRESS.resume_samples // self.num_replicas, self.num_samples)
            PROGRESS.resume_epoch = None  # only the first epoch after a resume is partial
        self._skip = skip
        PROGRESS.start_epoch(self.epoch, skip)

    def __iter__(self) -> Iterator[SampleKey]:
        generator = torch.Generator()
        generator.manual_seed(self.epoch)
        order = torch.randperm(self.total_size, generator=generator).tolist()
        mine = order[self.rank:self.total_size:self.num_replicas]
        size = len(self.dataset)
        skip = getattr(self, '_skip', 0)
        return iter([SampleKey(v % size, self.seed, self.epoch, pos) for pos, v in enumerate(mine) if pos >= skip])

    def __len__(self) -> int:
        return self.num_samples - getattr(self, '_skip', 0)


def _wrap_load_resume_state(load):
    def load_resume_state(opt):
        state = load(opt)
        PROGRESS.set_resume(state)
        return state

    load_resume_state.__wrapped__ = load
    return load_resume_state


def install() -> None:
    """Use :class:`ResumableSampler` in ``basicsr.train`` and record where a resumed state stood."""
    import basicsr.train as basicsr_train
    basicsr_train.EnlargedSampler = ResumableSampler
    if not hasattr(basicsr_train.load_resume_state, '__wrapped__'):
        basicsr_train.load_resume_state = _wrap_load_resume_state(basicsr_train.load_resume_state)
    PROGRESS.__init__()


# ------------------------------------------------------------------------------------------- resuming
class NoUsableStateError(ValueError):
    """``--auto_resume`` found training states, but none that loads with its model files."""


_STATE_KEYS = {'epoch': int, 'iter': int, 'optimizers': list, 'schedulers': list}


def load_training_state(path: str, map_location: Any = 'cpu') -> Dict[str, Any]:
    """A training state loaded safely (``weights_only=True``) with its layout checked.

    Raises:
        FileNotFoundError, ValueError: naming the file: empty, truncated, not a state, holding Python objects.
    """
    from gsasr_plugin.utils.safe_load import load_torch_file
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
    from gsasr_plugin.checkpoint import load_checkpoint
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
    import sys

    from gsasr_plugin.utils.atomic_io import remove_partial_files
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
