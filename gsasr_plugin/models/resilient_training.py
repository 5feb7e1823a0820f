"""Training-step machinery shared by the plugin's models: DDP on the CPU, bf16 autocast, gradient
clipping, non-finite-loss skipping, stop-and-save on signals, exactly resumable training states.

Options (``train:`` unless noted):

* ``bf16`` (bool): bf16 autocast for the forward pass and loss (the rasterizer computes in float32).
  ``val: bf16`` does the same for validation. Default: false.
* ``grad_clip_norm`` (float): clip the gradients' global L2 norm to this value; null/0 disables.
* ``max_nonfinite_steps`` (int): a step whose loss (or gradient norm) is NaN/inf is skipped with a
  warning and counted; this many in a row save a resumable state and stop the run. Default: 10;
  0 never stops.

Under ``--launcher pytorch|slurm`` the ranks agree on skipping and stopping with one all-reduce of two
flags per iteration, so they never disagree on whether a step (and its gradient all-reduce) happens.
"""
import contextlib
import math
import os
from typing import Dict

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from gsasr_plugin.utils import dist as dist_utils
from gsasr_plugin.utils import preemption
from gsasr_plugin.utils.resume import PROGRESS, atomic_save

__all__ = ['ResilientTrainingMixin']

DEFAULT_MAX_NONFINITE_STEPS = 10


class ResilientTrainingMixin:
    """Mix into a BasicSR ``SRModel`` subclass (before ``SRModel`` in the bases).

    The subclass's ``optimize_parameters`` uses :meth:`_train_autocast` around the forward and loss,
    :meth:`_agree_on_step` before ``backward``, :meth:`_step_optimizer` instead of ``optimizer.step()``
    and :meth:`_end_iteration` last.
    """

    # ------------------------------------------------------------------------------- placement
    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        """BasicSR's placement, plus DistributedDataParallel on the CPU (gloo; no ``device_ids``)."""
        if self.opt.get('dist') and self.device.type != 'cuda':
            net = net.to(self.device)
            return DistributedDataParallel(net, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return super().model_to_device(net)

    def _plain_net(self, net: torch.nn.Module) -> torch.nn.Module:
        """``net`` without its DDP/DP wrapper: rank 0 validates alone, and a wrapped eval forward could
        issue a collective (buffer broadcast) the other ranks never join."""
        return net.module if isinstance(net, (DataParallel, DistributedDataParallel)) else net

    # -------------------------------------------------------------------------------- autocast
    def _autocast(self, phase: str):
        section = self.opt.get(phase) or {}
        if not section.get('bf16', False):
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _train_autocast(self):
        return self._autocast('train')

    def _val_autocast(self):
        return self._autocast('val')

    # ------------------------------------------------------------------------- step agreement
    def _agree_on_step(self, loss: torch.Tensor) -> bool:
        """True when this iteration's step must be skipped (a non-finite loss on any rank).

        Also shares the stop request of any rank (SIGTERM/SIGINT), read by :meth:`_end_iteration`.
        """
        flags = torch.tensor([0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0,
                              1.0 if preemption.requested_signal() is not None else 0.0], device=loss.device)
        flags = dist_utils.all_reduce_max(flags).tolist()
        self._stop_requested = flags[1] > 0
        return flags[0] > 0

    def _step_optimizer(self, optimizer: torch.optim.Optimizer) -> bool:
        """Clip (``train: grad_clip_norm``) and step; False (no step) when the gradient norm is not finite."""
        max_norm = self.opt['train'].get('grad_clip_norm')
        if max_norm:
            params = [p for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
            total = torch.nn.utils.clip_grad_norm_(params, float(max_norm))
            # DDP has averaged the gradients, so every rank sees the same norm and makes the same choice
            if not math.isfinite(float(total)):
                optimizer.zero_grad()
                return False
        optimizer.step()
        return True

    def _count_nonfinite(self, skipped: bool, loss_dict: Dict[str, torch.Tensor], current_iter: int) -> None:
        if not hasattr(self, 'nonfinite_steps'):
            self.nonfinite_steps, self._nonfinite_streak = 0, 0
        if not skipped:
            self._nonfinite_streak = 0
            return
        self.nonfinite_steps += 1
        self._nonfinite_streak += 1
        values = ', '.join(f'{k}={float(v.detach()):.4g}' for k, v in loss_dict.items())
        get_root_logger().warning(f'iter {current_iter}: non-finite loss or gradient ({values}); step skipped '
                                  f'({self._nonfinite_streak} in a row, {self.nonfinite_steps} in this run)')

    # -------------------------------------------------------------------------- end of an iteration
    def _end_iteration(self, current_iter: int, batch_size: int) -> None:
        """Count the batch; save and stop on a signal or too many non-finite steps in a row."""
        PROGRESS.add_batch(batch_size)
        if getattr(self, 'nonfinite_steps', 0):
            self.log_dict['nonfinite_steps'] = float(self.nonfinite_steps)
        limit = self.opt['train'].get('max_nonfinite_steps', DEFAULT_MAX_NONFINITE_STEPS)
        streak = getattr(self, '_nonfinite_streak', 0)
        epoch = PROGRESS.epoch if PROGRESS.epoch is not None else 0
        if limit and streak >= int(limit):
            self.save(epoch, current_iter)
            raise preemption.NonFiniteLossError(
                f'the loss (or gradient norm) was NaN/inf for {streak} iterations in a row (up to iter {current_iter}; '
                f"train: max_nonfinite_steps = {limit}); state saved to {self._state_path(current_iter)}. Lower "
                'train: optim_g: lr, set train: grad_clip_norm, or check the training images, then continue '
                'with --auto_resume')
        if getattr(self, '_stop_requested', False):
            signum = preemption.requested_signal() or 15
            self.save(epoch, current_iter)
            raise preemption.TrainingInterrupted(
                f'stopped by signal {signum} after iter {current_iter}; state saved to '
                f'{self._state_path(current_iter)}; continue with the same command plus --auto_resume', signum)

    def _state_path(self, current_iter: int) -> str:
        return os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')

    # ------------------------------------------------------------------------------- checkpoints
    def save(self, epoch: int, current_iter: int) -> None:
        """Networks and training state (rank 0), after checking that all replicas hold the same weights."""
        if self.opt.get('dist'):
            sums = dist_utils.replica_checksums(self._plain_net(self.net_g))
            if self.opt.get('rank', 0) == 0:
                logger = get_root_logger()
                same = all(s == sums[0] for s in sums)
                text = f'replica parameter checksums (sum, abs sum) per rank at iter {current_iter}: {sums}'
                logger.info(text) if same else logger.warning(text + ' -- the replicas have diverged')
        super().save(epoch, current_iter)

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's state (epoch, iter, optimizers, schedulers) plus the position in the data stream,
        written atomically."""
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'nonfinite_steps': getattr(self, 'nonfinite_steps', 0),
        }
        state.update(PROGRESS.state(self.opt.get('world_size', 1)))
        os.makedirs(self.opt['path']['training_states'], exist_ok=True)
        atomic_save(state, self._state_path(current_iter))

    def resume_training(self, resume_state: Dict) -> None:
        super().resume_training(resume_state)
        self.nonfinite_steps = int(resume_state.get('nonfinite_steps', 0))
        self._nonfinite_streak = 0
