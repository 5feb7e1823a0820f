"""Arbitrary-scale SR model for BasicSR: scale-aware training, per-scale validation, warm-up schedule.

Works with any network whose forward is ``net(lq, scale=(s_h, s_w), out_size=(Ho, Wo))``: the plugin's SR
networks (:class:`gsasr_plugin.archs.sr_network.SRNetwork`: GSASR, GaussianSR, ContinuousSR, which also take
``pixel_index`` and can be evaluated in tiles) and plain networks; fed by ``ArbitraryScaleTrainDataset`` /
``ArbitraryScaleTestDataset``.
"""
import bisect
import math
import sys
from collections import OrderedDict
from copy import deepcopy
from os import path as osp
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch.optim.lr_scheduler import LRScheduler

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.registry import MODEL_REGISTRY
from gsasr_plugin.archs.gaussian_field import NonFiniteGaussiansError
from gsasr_plugin.archs.sr_network import SRNetwork
from gsasr_plugin.inference import TiledEncodingUnsupported, super_resolve
from gsasr_plugin.utils.atomic_io import write_image_file
from gsasr_plugin.utils.resize import matlab_bicubic_resize
from gsasr_plugin.utils.results_table import update_results_table
from gsasr_plugin.utils.sampled_pixels import gather_pixels
from gsasr_plugin.utils.scale import lr_size_of, resolve_scale_and_size, scale_tag, to_scale_pair
from gsasr_plugin.models.resilient_training import ResilientTrainingMixin

__all__ = ['ArbitraryScaleSRModel', 'WarmupMultiStepLR', 'tile_options']

Pair = Tuple[float, float]


class WarmupMultiStepLR(LRScheduler):
    """MultiStepLR with a linear warm-up, in closed form (so resuming from ``last_epoch`` is exact).

    With BasicSR's loop (``scheduler.step()`` before every iteration but the first), iteration ``k``
    trains at ``base_lr * min(1, k / warmup_iter) * gamma ** (number of milestones < k)``.

    Args:
        optimizer: the optimizer.
        milestones: iterations after which the lr is multiplied by ``gamma``.
        gamma: decay factor. Default: 0.5.
        warmup_iter: warm-up length in iterations; <= 0 disables it. Default: 0.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float = 0.5,
                 warmup_iter: int = 0, last_epoch: int = -1):
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_iter = int(warmup_iter)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_iter) if self.warmup_iter > 0 else 1.0
        return warm * self.gamma**bisect.bisect_right(self.milestones, step)

    def get_lr(self):
        return [base_lr * self.factor(self.last_epoch) for base_lr in self.base_lrs]


def _crop_border(value: Any, scale: Pair, metric: str, largest: Optional[int] = None) -> Any:
    """A metric's ``crop_border`` at ``scale``: ~ / 'scale' -> ceil(scale), 'scale+N' -> ceil(scale) + N, at
    most ``largest`` (``crop_border_max``) when given; a number stays as it is."""
    if value is None or value == 'scale':
        border = int(math.ceil(max(scale)))
    elif isinstance(value, str):
        text = value.replace(' ', '')
        if not (text.startswith('scale+') and text[len('scale+'):].isdigit()):
            raise ValueError(f"val: metrics: {metric}: crop_border must be a number, ~, 'scale' or 'scale+N', "
                             f'got {value!r}')
        border = int(math.ceil(max(scale))) + int(text[len('scale+'):])
    else:
        return value
    return border if largest is None else min(border, int(largest))


def tile_options(opt: Dict[str, Any]) -> Optional[Tuple[int, Optional[int]]]:
    """The top-level ``tile: {tile_size, tile_pad}`` option as (tile_size, tile_pad or None), or None without it.

    Raises:
        ValueError: naming the key, for a value that is not such a mapping.
    """
    tile_opt = opt.get('tile')
    if not tile_opt:
        return None
    if not isinstance(tile_opt, dict):
        raise ValueError(f'tile: must be a mapping like {{tile_size: 256, tile_pad: 32}}, got {tile_opt!r}')
    unknown = sorted(set(tile_opt) - {'tile_size', 'tile_pad'})
    if unknown:
        raise ValueError(f'tile: unknown key(s) {unknown}; the keys are tile_size and tile_pad')
    size, pad = tile_opt.get('tile_size'), tile_opt.get('tile_pad')
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'tile:tile_size must be an integer >= 1 (LR pixels), got {size!r}')
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or pad < 0):
        raise ValueError(f'tile:tile_pad must be an integer >= 0 (LR pixels of context), got {pad!r}')
    return size, pad


@MODEL_REGISTRY.register()
class ArbitraryScaleSRModel(ResilientTrainingMixin, SRModel):
    """SRModel that passes each batch's scale and output size to the network.

    Training: L1 (``pixel_opt``), Adam (``optim_g``) and ``scheduler`` as in BasicSR; ``train: warmup_iter``
    with a ``MultiStepLR`` scheduler gives a linear warm-up followed by the step decay
    (:class:`WarmupMultiStepLR`). Validation groups images by scale: metrics are reported per scale as
    ``<metric>_x<scale>`` (e.g. ``psnr_x3.5``) with ``crop_border: ~`` meaning ``ceil(scale)``, next to a
    MATLAB-bicubic baseline; the best value is tracked per scale; images are saved as
    ``<name>_x<scale>.png``.

    Testing: a top-level ``tile: {tile_size: N, tile_pad: M}`` (HAT's option names) encodes N x N LR
    tiles with M LR pixels of context and renders all their Gaussians at once (``inference.encode_tiled``),
    for images that do not fit in memory; ``val: pbar`` shows a progress bar per dataset and scale (default:
    on for ``basicsr test`` on a terminal). ``basicsr test`` also writes each image's metrics into the
    results files. Checkpoints (``net_g_*.pth``) carry the ``network_g`` options beside the weights
    (:mod:`gsasr_plugin.checkpoint`), so ``basicsr infer -m net_g_latest.pth`` needs no option file.

    Hooks for extensions: :meth:`_test_at` (one forward at a scale/size, eval mode, EMA net when present),
    :meth:`_metric_values` (metrics of one image), :meth:`_bicubic_baseline`.

    ``option_keys`` lists the ``train:`` and ``val:`` keys something reads for this model (BasicSR's
    SRModel, :class:`ResilientTrainingMixin` and this class), the top-level keys it adds (``''``) and the
    keys of a ``val: metrics`` entry it consumes (``metric``); ``basicsr train/test`` reject other keys there
    (``gsasr_plugin.utils.option_keys``). Add a key here when the model starts reading it.
    """
    option_keys = {
        '': {'tile'},  # top-level keys this model reads besides BasicSR's
        'train': {'ema_decay', 'optim_g', 'scheduler', 'warmup_iter', 'total_iter', 'pixel_opt', 'perceptual_opt',
                  'bf16', 'grad_clip_norm', 'max_nonfinite_steps', 'divergence_factor', 'divergence_patience'},
        'val': {'val_freq', 'save_img', 'suffix', 'metrics', 'pbar', 'bicubic_baseline', 'results_table', 'bf16'},
        'metric': {'better', 'crop_border_max'},  # taken from each val: metrics: entry before the metric is called
    }

    @classmethod
    def check_options(cls, opt: Dict[str, Any]) -> None:
        """The model's own top-level options, validated before anything is created (``basicsr train/test``
        call this through ``gsasr_plugin.commands.option_checks.check_options``); a ValueError names the key."""
        tile_options(opt)

    def __init__(self, opt: Dict[str, Any]):
        super().__init__(opt)
        if not self.is_train and self.opt['path'].get('pretrain_network_g') is None:
            get_root_logger().warning(
                'TESTING AN UNTRAINED NETWORK: path: pretrain_network_g is not set, so network_g keeps its random '
                'initial weights; the metrics below say nothing about a trained model')

    # ----------------------------------------------------------------------------------- networks
    # save_network (self-describing, atomic) and load_network (the one loader of weights, safe, loud when
    # non-strict) come from ResilientTrainingMixin.
    def print_network(self, net: torch.nn.Module) -> None:
        """One line (class and parameter count); BasicSR's full module tree buries the log."""
        bare = self.get_bare_model(net)
        count = sum(p.numel() for p in bare.parameters())
        wrapper = f'{type(net).__name__} - ' if bare is not net else ''
        get_root_logger().info(f'Network: {wrapper}{type(bare).__name__}, with parameters: {count:,d}')

    # ----------------------------------------------------------------------------------------- data
    def feed_data(self, data: Dict[str, Any]) -> None:
        """The batch's boundary: ``scale`` (the batch's single (s_h, s_w), all rows alike) and the output size
        (the GT's, else round(h * s)) are validated here, once, and travel as ``self.scale`` / ``self.out_size``."""
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)
        elif hasattr(self, 'gt'):
            del self.gt  # SRModel's visuals test hasattr(self, 'gt')
        if 'scale' not in data and 'gt' not in data:
            raise ValueError("a batch needs 'scale' (B, 2) or 'gt' to know the output size")
        scale = None
        if 'scale' in data:
            scale = to_scale_pair(torch.as_tensor(data['scale'], dtype=torch.float64), "'scale'")
        gt_size = lr_size_of(data['gt'], "'gt'") if 'gt' in data else None
        self.scale, self.out_size = resolve_scale_and_size(lr_size_of(self.lq, "'lq'"), scale, gt_size)
        self.img_paths = data.get('lq_path')
        # sampled-pixel training (dataset option sample_q): the GT becomes (B, 3, Q), the loss is on those pixels
        self.pixel_index = data['sample_index'].to(self.device) if 'sample_index' in data else None
        if self.pixel_index is not None and hasattr(self, 'gt'):
            if getattr(self, 'cri_perceptual', None):
                raise ValueError("dataset option 'sample_q' gives the loss single pixels: it cannot be used with "
                                 "'perceptual_opt', which needs whole images")
            self.gt = gather_pixels(self.gt, self.pixel_index)

    # ------------------------------------------------------------------------------------- training
    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        """BasicSR's Adam, run by PyTorch's fused kernel unless ``optim_g`` sets ``fused`` or ``foreach``.

        The fused step updates every parameter in one pass instead of about ten small operations per tensor
        (0.5 ms instead of 2.7 ms per step of the demo's 151 tensors on one CPU core); the update is the same
        up to float rounding. ``fused: false`` in ``optim_g`` gives PyTorch's default implementation.
        """
        if optim_type == 'Adam' and 'fused' not in kwargs and 'foreach' not in kwargs:
            params = list(params)
            if params and all(p.device.type in ('cpu', 'cuda') and p.is_floating_point() for p in params):
                kwargs['fused'] = True
        return super().get_optimizer(optim_type, params, lr, **kwargs)

    @staticmethod
    def scheduler_class(scheduler_opt: Mapping[str, Any]) -> Optional[type]:
        """:class:`WarmupMultiStepLR` when ``train: scheduler`` is a MultiStepLR this model warms up itself, else
        None (BasicSR's own scheduler): the one rule, read by :meth:`setup_schedulers` and the option checks."""
        if scheduler_opt.get('type') in ('MultiStepLR', 'WarmupMultiStepLR') and set(scheduler_opt) <= {
                'type', 'milestones', 'gamma', 'warmup_iter'}:
            return WarmupMultiStepLR
        return None

    def setup_schedulers(self) -> None:
        """BasicSR's schedulers, plus warm-up for MultiStepLR from ``train: warmup_iter``."""
        train_opt = self.opt['train']
        scheduler_opt = train_opt['scheduler']
        warmup_iter = int(train_opt.get('warmup_iter', -1) or -1)
        if self.scheduler_class(scheduler_opt) is WarmupMultiStepLR:
            opts = {k: v for k, v in scheduler_opt.items() if k != 'type'}
            opts.setdefault('warmup_iter', max(warmup_iter, 0))
            for optimizer in self.optimizers:
                self.schedulers.append(WarmupMultiStepLR(optimizer, **opts))
            self._scheduler_warms_up = True
        else:
            super().setup_schedulers()
            self._scheduler_warms_up = False

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        # WarmupMultiStepLR already warms up; BasicSR's own warm-up would freeze the lr at
        # (warmup_iter - 1) / warmup_iter of its value after warm-up with a MultiStepLR.
        if getattr(self, '_scheduler_warms_up', False):
            warmup_iter = -1
        super().update_learning_rate(current_iter, warmup_iter)

    def forward_train(self) -> torch.Tensor:
        """The batch's scale and output size go to the network; with sampled training pixels only those."""
        if getattr(self, 'pixel_index', None) is None:
            return self.net_g(self.lq, scale=self.scale, out_size=self.out_size)
        if isinstance(self._plain_net(self.net_g), SRNetwork):  # GaussianSR decodes the sampled pixels only
            return self.net_g(self.lq, scale=self.scale, out_size=self.out_size, pixel_index=self.pixel_index)
        return gather_pixels(self.net_g(self.lq, scale=self.scale, out_size=self.out_size), self.pixel_index)

    # -------------------------------------------------------------------------------------- testing
    @torch.no_grad()
    def _test_at(self, lq: torch.Tensor, scale: Optional[Pair] = None,
                 out_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Super-resolve ``lq`` at ``scale`` / ``out_size`` with the EMA net if any, in eval mode (tiled
        with the ``tile:`` option)."""
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self._plain_net(self.net_g)
        was_training = net.training
        net.eval()
        try:
            tile = self._tile_options()
            if tile is not None:
                return self._test_tiled(net, lq, scale, out_size, *tile)
            with self._val_autocast():
                return net(lq, scale=scale, out_size=out_size).float()
        finally:
            net.train(was_training)

    def _tile_options(self) -> Optional[Tuple[int, Optional[int]]]:
        """``tile: {tile_size, tile_pad}`` as (tile_size, tile_pad or None), or None without the option."""
        return tile_options(self.opt)

    def _test_tiled(self, net: torch.nn.Module, lq: torch.Tensor, scale: Optional[Pair],
                    out_size: Optional[Tuple[int, int]], tile_size: int, tile_pad: Optional[int]) -> torch.Tensor:
        """Encode ``tile_size`` LR tiles with ``tile_pad`` pixels of context, render all Gaussians at once."""
        if not isinstance(net, SRNetwork):
            raise ValueError(f'tile: {type(net).__name__} has no encode(), so it cannot be evaluated in tiles; '
                             'remove the tile: option')
        bf16 = bool((self.opt.get('val') or {}).get('bf16', False))
        outputs = []
        for index in range(lq.shape[0]):
            try:
                outputs.append(super_resolve(net, lq[index:index + 1], scale, out_size, tile_size=tile_size,
                                             tile_pad=tile_pad, bf16=bf16)[0])
            except TiledEncodingUnsupported:
                raise ValueError(f'tile: {type(net).__name__} predicts more than Gaussians (its field is not a '
                                 'GaussianField), so its tiles cannot be merged; remove the tile: option') from None
        return torch.cat(outputs)

    def test(self) -> None:
        self.output = self._test_at(self.lq, self.scale, self.out_size)

    def _metric_values(self, metric_data: Dict[str, Any], scale: Pair) -> Dict[str, float]:
        """All ``val: metrics`` of one image; ``crop_border: ~`` (or ``scale``) becomes ceil(scale),
        ``'scale+N'`` ceil(scale) + N (LIIF's DIV2K protocol crops scale + 6); a border from the scale is at most
        ``crop_border_max`` when given (the GSASR paper crops min(scale, 8) pixels)."""
        values = {}
        for name, metric_opt in self.opt['val']['metrics'].items():
            metric_opt = deepcopy(metric_opt)
            metric_opt.pop('better', None)
            largest = metric_opt.pop('crop_border_max', None)
            if 'crop_border' in metric_opt:
                metric_opt['crop_border'] = _crop_border(metric_opt['crop_border'], scale, name, largest)
            values[name] = float(calculate_metric(metric_data, metric_opt))
        return values

    def _bicubic_baseline(self, lq: torch.Tensor, out_size: Tuple[int, int]):
        """MATLAB-bicubic upsampling of one LR (1, 3, h, w) as a uint8 image like ``tensor2img``'s."""
        up = matlab_bicubic_resize(lq[0].detach().cpu().permute(1, 2, 0).numpy(), out_size)
        return tensor2img([torch.from_numpy(up).permute(2, 0, 1)])

    def _save_path(self, dataset_name: str, img_name: str, tag: str, current_iter) -> str:
        root = self.opt['path']['visualization']
        if self.opt['is_train']:
            return osp.join(root, img_name, f'{img_name}_x{tag}_{current_iter}.png')
        suffix = self.opt['val'].get('suffix')
        name = f'{img_name}_x{tag}' + (f'_{suffix}' if suffix else '')
        return osp.join(root, dataset_name, f'{name}.png')

    def _progress_bar(self, dataloader, dataset_name: str, tag: str):
        """A tqdm bar for one dataset at one scale, or None (``val: pbar``; default: ``basicsr test`` on a
        terminal)."""
        use_pbar = self.opt['val'].get('pbar')
        if use_pbar is None:
            use_pbar = not self.opt['is_train'] and sys.stderr.isatty()
        if not use_pbar:
            return None
        from tqdm import tqdm
        dataset = dataloader.dataset
        per_scale = len(getattr(dataset, 'gt_paths', ()) or ()) or None
        return tqdm(total=per_scale or len(dataloader), desc=f'{dataset_name} x{tag}', unit='img', file=sys.stderr)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        dataset_name = dataloader.dataset.opt['name']
        val_opt = self.opt['val']
        metric_opts = val_opt.get('metrics') or {}
        with_bicubic = bool(val_opt.get('bicubic_baseline', True)) and bool(metric_opts)
        sums: Dict[str, Dict[str, float]] = OrderedDict()  # tag -> metric -> sum
        bic_sums: Dict[str, Dict[str, float]] = OrderedDict()
        counts: Dict[str, int] = OrderedDict()
        per_image: Dict[str, Dict[str, Dict[str, Any]]] = OrderedDict()  # tag -> image -> {model, bicubic}
        if not hasattr(self, '_bicubic_cache'):
            self._bicubic_cache = {}
        bar, bar_tag = None, None

        try:
            for val_data in dataloader:
                self.feed_data(val_data)
                if self.lq.shape[0] != 1:
                    raise ValueError(
                        f"dataset '{dataset_name}' gives batches of {self.lq.shape[0]} images, but validation and "
                        'testing take one image at a time: is it a training dataset? Evaluate a test dataset '
                        '(e.g. ArbitraryScaleTestDataset, as in options/test_*.yml)')
                tag = scale_tag(self.scale)
                if tag != bar_tag:
                    if bar is not None:
                        bar.close()
                    bar, bar_tag = self._progress_bar(dataloader, dataset_name, tag), tag
                img_name = osp.splitext(osp.basename(val_data['lq_path'][0]))[0]
                try:
                    self.test()
                except NonFiniteGaussiansError as error:  # name the image; during training skip it (and say so)
                    if not self.opt['is_train']:
                        raise NonFiniteGaussiansError(f"{val_data['lq_path'][0]}: {error}") from None
                    get_root_logger().warning(f"validation at iter {current_iter}: {val_data['lq_path'][0]}: "
                                              f'{error}; image left out of the metrics')
                    if bar is not None:
                        bar.update(1)
                    continue
                sr_img = tensor2img([self.output.detach().cpu()])
                if save_img:
                    write_image_file(self._save_path(dataset_name, img_name, tag, current_iter), sr_img)
                if metric_opts and hasattr(self, 'gt'):
                    gt_img = tensor2img([self.gt.detach().cpu()])
                    values = self._metric_values({'img': sr_img, 'img2': gt_img}, self.scale)
                    acc = sums.setdefault(tag, OrderedDict((k, 0.0) for k in values))
                    for k, v in values.items():
                        acc[k] += v
                    counts[tag] = counts.get(tag, 0) + 1
                    record = per_image.setdefault(tag, OrderedDict())[img_name] = {'model': values}
                    if with_bicubic:
                        key = (dataset_name, val_data['gt_path'][0], tag)
                        if key not in self._bicubic_cache:
                            bic_img = self._bicubic_baseline(self.lq, self.out_size)
                            self._bicubic_cache[key] = self._metric_values({'img': bic_img, 'img2': gt_img},
                                                                           self.scale)
                        bic = bic_sums.setdefault(tag, OrderedDict((k, 0.0) for k in values))
                        for k, v in self._bicubic_cache[key].items():
                            bic[k] += v
                        record['bicubic'] = dict(self._bicubic_cache[key])
                del self.lq, self.output
                if hasattr(self, 'gt'):
                    del self.gt
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

        if not counts:
            return
        self.metric_results = OrderedDict()
        self.bicubic_results = OrderedDict()
        self.per_image_results = per_image
        for tag, acc in sums.items():
            for metric, total in acc.items():
                self.metric_results[f'{metric}_x{tag}'] = total / counts[tag]
                if tag in bic_sums:
                    self.bicubic_results[f'{metric}_x{tag}'] = bic_sums[tag][metric] / counts[tag]
        self._update_best_per_scale(dataset_name, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
        if not self.opt['is_train'] and val_opt.get('results_table', True) and self.opt['path'].get('results_root'):
            # results.md / .csv / _per_image.csv / psnr_vs_scale.png in results/<name>/, all datasets so far
            update_results_table(self.opt['path']['results_root'], dataset_name, self.metric_results,
                                 self.bicubic_results, metric_opts, title=self.opt.get('name'), per_image=per_image)

    def _update_best_per_scale(self, dataset_name: str, current_iter) -> None:
        """BasicSR's best-metric records, one per ``<metric>_x<scale>`` key."""
        if not hasattr(self, 'best_metric_results'):
            self.best_metric_results = {}
        record = self.best_metric_results.setdefault(dataset_name, {})
        for key, value in self.metric_results.items():
            if key not in record:
                metric = key.rsplit('_x', 1)[0]
                better = self.opt['val']['metrics'][metric].get('better', 'higher')
                record[key] = dict(better=better, val=float('-inf') if better == 'higher' else float('inf'), iter=-1)
            self._update_best_metric_result(dataset_name, key, value, current_iter)

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger) -> None:
        lines = [f'Validation {dataset_name} (iter {current_iter}): model [bicubic], best']
        for key, value in self.metric_results.items():
            bic = self.bicubic_results.get(key)
            best = self.best_metric_results[dataset_name][key]
            bic_str = f' [{bic:.4f}]' if bic is not None else ''
            lines.append(f'\t # {key}: {value:.4f}{bic_str}\tBest: {best["val"]:.4f} @ {best["iter"]} iter')
        get_root_logger().info('\n'.join(lines))
        if tb_logger:
            for key, value in self.metric_results.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/{key}', value, current_iter)
