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

Which training state a run resumes from is :mod:`gsasr_plugin.models.training_states`.
"""
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch

__all__ = ['SampleKey', 'ResumableSampler', 'batch_entropy', 'PROGRESS', 'DataProgress']


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
