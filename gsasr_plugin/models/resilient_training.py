"""Training-step machinery shared by the plugin's models: DDP on the CPU, bf16 autocast, gradient
clipping, non-finite-step skipping, stop-and-save on signals, exactly resumable training states, and
safe, whole model files: ``save_network`` writes self-describing ``net_g_*.pth`` atomically, ``load_network``
reads ``path: pretrain_network_g`` through the one loader of weights (``gsasr_plugin.checkpoint.load_weights`` and
``load_into``:
weights-only, one-line errors, NaN/inf refused; loud non-strict loading).

Options (``train:`` unless noted):

* ``bf16`` (bool): bf16 autocast for the forward pass and loss (the rasterizer computes in float32).
  ``val: bf16`` does the same for validation. Default: false.
* ``grad_clip_norm`` (float): clip the gradients' global L2 norm to this value; null/0 disables.
* ``max_nonfinite_steps`` (int): a step whose input batch, predicted Gaussians, loss (or gradient norm)
  is NaN/inf is skipped with a warning naming the batch's files, and counted; this many in a row save a
  resumable state and stop the run. Default: 10; 0 never stops.
* ``divergence_factor`` (float), ``divergence_patience`` (int): a warning in the log when the smoothed training
  loss has stayed over ``divergence_factor`` times its lowest value for ``divergence_patience`` iterations (a
  diverged run, e.g. a learning rate far too high), repeated every ten times that while it lasts. Defaults: 10
  and 100; a factor of 0 never warns.

A run stopped by a signal (or by non-finite steps) logs the losses of its last iteration, which BasicSR's
logger would have printed after it, before it saves and stops.

Under ``--launcher pytorch|slurm`` the ranks agree on skipping and stopping with one all-reduce of two
flags per iteration, so they never disagree on whether a step (and its gradient all-reduce) happens.
"""
import contextlib
import math
import os
from collections import OrderedDict
from typing import Dict, Mapping, Optional

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from gsasr_plugin.archs.gaussian_field import NonFiniteGaussiansError
from gsasr_plugin.checkpoint import describe_weights, is_released_weights, load_into, load_weights, write_checkpoint
from gsasr_plugin.utils import dist as dist_utils
from gsasr_plugin.utils import preemption
from gsasr_plugin.utils.atomic_io import atomic_save
from gsasr_plugin.utils.resume import PROGRESS

__all__ = ['ResilientTrainingMixin', 'DivergenceWatch']

DEFAULT_MAX_NONFINITE_STEPS = 10
DEFAULT_DIVERGENCE_FACTOR = 10.0
DEFAULT_DIVERGENCE_PATIENCE = 100


class DivergenceWatch:
    """Watches a training loss for a run that has diverged: the loss, smoothed (exponential moving average
    over about ``1 / (1 - smoothing)`` iterations), staying over ``factor`` times its lowest smoothed value for
    ``patience`` iterations in a row.

    :meth:`update` returns a warning the first time, and again every ``10 * patience`` iterations while it
    lasts; None otherwise. Non-finite losses are left to the non-finite step handling.
    """

    def __init__(self, factor: float = DEFAULT_DIVERGENCE_FACTOR, patience: int = DEFAULT_DIVERGENCE_PATIENCE,
                 smoothing: float = 0.9):
        self.factor, self.patience, self.smoothing = float(factor), int(patience), float(smoothing)
        self.smoothed: Optional[float] = None
        self.best, self.best_iter = math.inf, 0
        self.streak = 0

    def update(self, loss: float, current_iter: int) -> Optional[str]:
        if not self.factor > 0 or not math.isfinite(loss):
            return None
        self.smoothed = loss if self.smoothed is None else self.smoothing * self.smoothed + (1 - self.smoothing) * loss
        if self.smoothed < self.best:
            self.best, self.best_iter = self.smoothed, current_iter
        if self.smoothed <= self.factor * self.best:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.patience or (self.streak - self.patience) % (10 * self.patience):
            return None
        return (f'iter {current_iter}: the training loss has stayed over {self.factor:g} times its lowest for '
                f'{self.streak} iterations (smoothed {self.smoothed:.4g}, lowest {self.best:.4g} at iter '
                f'{self.best_iter}): the run has diverged; lower train: optim_g: lr (or set train: grad_clip_norm) '
                f'and start again from a checkpoint before iter {self.best_iter} '
                '(train: divergence_factor: 0 turns this warning off)')


class ResilientTrainingMixin:
    """Mix into a BasicSR ``SRModel`` subclass (before ``SRModel`` in the bases).

    The mixin owns the training step, :meth:`optimize_parameters`, and runs every resilient part of it there, in
    order. A model changes what is trained by overriding :meth:`forward_train` (the network's output for the
    batch) or :meth:`training_losses` (the named losses of that output); nothing else.
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

    # ------------------------------------------------------------------------------ the training step
    def forward_train(self) -> torch.Tensor:
        """The network's output for the batch (``self.lq``), compared with ``self.gt`` by the losses."""
        return self.net_g(self.lq)

    def training_losses(self, output: torch.Tensor) -> 'OrderedDict[str, torch.Tensor]':
        """The named losses of ``output`` against ``self.gt``, summed in order: BasicSR's ``pixel_opt`` and
        ``perceptual_opt`` (perceptual and style parts) as ``SRModel`` computes them."""
        losses: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
        if self.cri_pix:
            losses['l_pix'] = self.cri_pix(output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            for name, value in (('l_percep', l_percep), ('l_style', l_style)):
                if value is not None:
                    losses[name] = value
        return losses

    def optimize_parameters(self, current_iter: int) -> None:
        """One training step: the forward in bf16 autocast (``train: bf16``) with non-finite inputs or Gaussians
        turned into a skipped step; the ranks agree on skipping and stopping; backward, clipping and the
        optimizer step; the skipped steps counted; EMA; the batch counted and, on a signal or too many
        non-finite steps, a resumable state saved and the run stopped."""
        self.optimizer_g.zero_grad()
        with self._train_autocast():
            self.output = self._guarded_forward(self.forward_train, self.gt)
        self.output = self.output.float()
        loss_dict = self.training_losses(self.output)
        l_total = 0
        for value in loss_dict.values():
            l_total += value
        skipped = self._agree_on_step(l_total)
        if not skipped:
            l_total.backward()
            skipped = not self._step_optimizer(self.optimizer_g)
        self._count_nonfinite(skipped, loss_dict, current_iter)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0 and not skipped:
            self.model_ema(decay=self.ema_decay)
        self._end_iteration(current_iter, self.lq.shape[0])

    # --------------------------------------------------------------------- non-finite values
    def _batch_files(self, limit: int = 3) -> str:
        paths = getattr(self, 'img_paths', None) or []
        if isinstance(paths, str):
            paths = [paths]
        names = [str(p) for p in paths]
        return ', '.join(names[:limit]) + (f' (+{len(names) - limit} more)' if len(names) > limit else '')

    def _guarded_forward(self, forward, target: torch.Tensor) -> torch.Tensor:
        """``forward()``, or a NaN image shaped like ``target`` when the network predicts non-finite Gaussians
        (caught before the rasterizer) or the input batch is not finite. The NaN output makes the loss NaN, so
        the step is skipped and counted like any non-finite step, with the same loss keys on every rank.

        The forward always runs, even on a bad batch: under DDP it holds collectives (buffer broadcasts) that
        every rank must join.
        """
        self._nonfinite_reason = None
        output = None
        try:
            output = forward()
        except NonFiniteGaussiansError as error:
            self._nonfinite_reason = str(error)
        inputs = [('lq', self.lq)] + ([('gt', self.gt)] if hasattr(self, 'gt') else [])
        finite = torch.stack([torch.isfinite(t).all() for _, t in inputs]).tolist()
        bad = [name for (name, _), ok in zip(inputs, finite) if not ok]
        if bad:
            self._nonfinite_reason = f"non-finite values in the input batch ({', '.join(bad)})"
        return torch.full_like(target, float('nan')) if output is None or bad else output

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
        reason = getattr(self, '_nonfinite_reason', None)
        self._last_nonfinite = f"{reason or 'non-finite loss or gradient'}; batch: {self._batch_files() or '?'}"
        get_root_logger().warning(f'iter {current_iter}: non-finite loss or gradient ({values}); step skipped '
                                  f'({self._nonfinite_streak} in a row, {self.nonfinite_steps} in this run): '
                                  f'{self._last_nonfinite}')

    # -------------------------------------------------------------------------- end of an iteration
    def _watch_divergence(self, current_iter: int) -> None:
        """Warn (in the log) when the training loss stays far above its lowest (:class:`DivergenceWatch`)."""
        if not hasattr(self, '_divergence'):
            train = self.opt['train']
            self._divergence = DivergenceWatch(train.get('divergence_factor', DEFAULT_DIVERGENCE_FACTOR) or 0,
                                               train.get('divergence_patience', DEFAULT_DIVERGENCE_PATIENCE))
        total = sum(float(v) for k, v in self.log_dict.items() if k.startswith('l_'))
        warning = self._divergence.update(total, current_iter)
        if warning:
            get_root_logger().warning(warning)

    def _log_last_iteration(self, current_iter: int) -> None:
        """The losses of the iteration a stop ends on, in BasicSR's format (its logger prints them only after
        the iteration, which the stop interrupts)."""
        epoch = PROGRESS.epoch if PROGRESS.epoch is not None else 0
        rates = ','.join(f'{lr:.3e}' for lr in self.get_current_learning_rate())
        losses = ' '.join(f'{k}: {float(v):.4e}' for k, v in self.log_dict.items())
        get_root_logger().info(f"[{self.opt['name'][:5]}..][epoch:{epoch:3d}, iter:{current_iter:8,d}, lr:({rates},)] "
                               f'{losses} (the last iteration before the stop)')

    def _end_iteration(self, current_iter: int, batch_size: int) -> None:
        """Count the batch; watch for divergence; save and stop on a signal or too many non-finite steps in a
        row (logging the last iteration's losses first)."""
        PROGRESS.add_batch(batch_size)
        if getattr(self, 'nonfinite_steps', 0):
            self.log_dict['nonfinite_steps'] = float(self.nonfinite_steps)
        self._watch_divergence(current_iter)
        limit = self.opt['train'].get('max_nonfinite_steps', DEFAULT_MAX_NONFINITE_STEPS)
        streak = getattr(self, '_nonfinite_streak', 0)
        epoch = PROGRESS.epoch if PROGRESS.epoch is not None else 0
        if limit and streak >= int(limit):
            self._log_last_iteration(current_iter)
            self.save(epoch, current_iter)
            raise preemption.NonFiniteLossError(
                f'the loss (or gradient norm) was NaN/inf for {streak} iterations in a row (up to iter {current_iter}; '
                f"train: max_nonfinite_steps = {limit}); last: {getattr(self, '_last_nonfinite', '?')}; state saved "
                f'to {self._state_path(current_iter)}. Lower train: optim_g: lr, set train: grad_clip_norm, or check '
                'the training images, then continue with --auto_resume')
        if getattr(self, '_stop_requested', False):
            signum = preemption.requested_signal() or 15
            self._log_last_iteration(current_iter)
            self.save(epoch, current_iter)
            raise preemption.TrainingInterrupted(
                f'stopped by signal {signum} after iter {current_iter}; state saved to '
                f'{self._state_path(current_iter)}; continue with the same command plus --auto_resume', signum)

    def _state_path(self, current_iter: int) -> str:
        return os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')

    # ------------------------------------------------------------------------------- checkpoints
    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """BasicSR's ``save_network`` (same file name, ``params`` / ``params_ema`` as BasicSR lays them out),
        written atomically; ``net_g`` files also carry the ``network_g`` options and the plugin version
        (self-describing, :func:`gsasr_plugin.checkpoint.write_checkpoint`), so ``basicsr infer -m
        net_g_latest.pth`` and ``load_model`` need no option file.

        BasicSR retries three times, then logs "Still cannot save ... Just ignore it" and goes on with a
        truncated file; here a failed write raises :class:`~gsasr_plugin.utils.atomic_io.WriteError` naming
        the file and the reason (e.g. the disk is full) at once (waiting does not free a full disk), the
        previous file stays, and the run stops.
        """
        label = 'latest' if current_iter == -1 else current_iter
        path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
        weights = {key: self.get_bare_model(one_net).state_dict() for one_net, key in zip(nets, keys)}
        network_opt = self.opt.get('network_g')
        if net_label == 'net_g' and isinstance(network_opt, Mapping) and 'type' in network_opt:
            write_checkpoint(path, weights, network_opt, source=f"basicsr train {self.opt.get('name')}, iter {label}")
            return
        atomic_save({key: {(k[7:] if k.startswith('module.') else k): v.detach().cpu() for k, v in state.items()}
                     for key, state in weights.items()}, path)

    def load_network(self, net, load_path: str, strict: bool = True, param_key: Optional[str] = 'params') -> None:
        """``path: pretrain_network_g`` through the plugin's one loader of weights,
        :func:`gsasr_plugin.checkpoint.load_weights`: a checkpoint (ours, self-describing, or BasicSR's:
        ``param_key``, else ``params``, as BasicSR reads it), ``official:<name>``, a folder of a released model's
        official files, those files joined by commas, or a released model's single official file. The option
        file's ``network_g`` is what is built. Beyond BasicSR's ``load_network``:

        * weights-only loading (a file cannot run code), and one-line errors naming the file: missing, empty,
          truncated, not a checkpoint, no weights under the key, NaN/inf weights;
        * released weights always load strictly; checkpoints follow ``strict_load_g``: weights that do not fit
          the network (another architecture, other shapes) are a one-line error, and with ``strict_load_g:
          false`` a loud warning says how many tensors keep their initial values (mismatched shapes skipped).
        """
        logger = get_root_logger()
        bare = self.get_bare_model(net)
        spec = os.fspath(load_path) if isinstance(load_path, os.PathLike) else str(load_path)
        network_g = self.opt.get('network_g')
        if is_released_weights(spec):
            cache = self.__dict__.setdefault('_released_weights', {})
            if spec not in cache:  # net_g and its EMA copy load the same files
                cache[spec] = load_weights(spec, network_g)
            weights = cache[spec]
        else:
            weights = load_weights(spec, network_g, (param_key, 'params') if param_key else None)
            if param_key and weights.param_key != param_key:
                logger.info(f'Loading: {param_key} does not exist, use {weights.param_key}.')
        warning = load_into(bare, weights, f'{describe_weights(spec)} (path:pretrain_network_g)', strict,
                            strict_option=True)
        if warning:
            logger.warning(warning)
        key = f', with param key [{weights.param_key}]' if weights.param_key else ''
        logger.info(f'Loaded {type(bare).__name__} from {weights.meta.get("source", spec)}{key}.')

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
