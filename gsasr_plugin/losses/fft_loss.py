"""Frequency-domain losses (registered in BasicSR's LOSS_REGISTRY): L1 between FFT amplitudes.

ContinuousSR trains with L1 plus an FFT-amplitude L1 term. ``ArbitraryScaleSRModel`` (like BasicSR's
SRModel) builds one ``pixel_opt`` loss, so :class:`L1FFTLoss` offers the sum as one loss; the amplitude
term alone is :class:`FFTAmplitudeLoss`.
"""
import torch
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import LOSS_REGISTRY

__all__ = ['FFTAmplitudeLoss', 'L1FFTLoss', 'fft_amplitude']

_REDUCTIONS = ('none', 'mean', 'sum')


def fft_amplitude(image: torch.Tensor) -> torch.Tensor:
    """|rfft2| of (..., H, W) over the last two axes, orthonormal (Parseval: same scale as the image).

    Computed in float32 at least: half-precision FFTs need power-of-two sizes on CUDA.
    """
    if image.dtype in (torch.float16, torch.bfloat16):
        image = image.float()
    return torch.fft.rfft2(image, norm='ortho').abs()


def _check(loss_weight: float, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if isinstance(loss_weight, bool) or not isinstance(loss_weight, (int, float)):
        raise TypeError(f'loss_weight must be a number, got {loss_weight!r}')


def _reduce(value: torch.Tensor, reduction: str) -> torch.Tensor:
    return value.mean() if reduction == 'mean' else value.sum() if reduction == 'sum' else value


@LOSS_REGISTRY.register()
class FFTAmplitudeLoss(nn.Module):
    """L1 distance between the 2D FFT amplitudes of prediction and target.

    Args:
        loss_weight: Multiplies the loss. Default: 1.
        reduction: 'mean' | 'sum' | 'none' over the (N, C, H, W // 2 + 1) amplitude differences. Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        _check(loss_weight, reduction)
        self.loss_weight = float(loss_weight)
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f'pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}')
        diff = (fft_amplitude(pred) - fft_amplitude(target)).abs()
        return self.loss_weight * _reduce(diff, self.reduction)


@LOSS_REGISTRY.register()
class L1FFTLoss(nn.Module):
    """``loss_weight * (L1(pred, target) + fft_weight * FFTAmplitudeLoss(pred, target))``, both 'mean'/'sum'.

    Args:
        loss_weight: Multiplies the whole loss. Default: 1.
        fft_weight: Weight of the FFT-amplitude term relative to the pixel L1. Default: 0.05.
        reduction: 'mean' or 'sum' (the two terms have different shapes, so no 'none'). Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, fft_weight: float = 0.05, reduction: str = 'mean'):
        super().__init__()
        _check(loss_weight, reduction)
        if reduction == 'none':
            raise ValueError("L1FFTLoss: reduction must be 'mean' or 'sum' (the terms have different shapes)")
        if isinstance(fft_weight, bool) or not isinstance(fft_weight, (int, float)) or fft_weight < 0:
            raise ValueError(f'fft_weight must be a number >= 0, got {fft_weight!r}')
        self.loss_weight = float(loss_weight)
        self.fft_weight = float(fft_weight)
        self.reduction = reduction
        self.fft = FFTAmplitudeLoss(1.0, reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f'pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}')
        pixel = _reduce((pred - target).abs(), self.reduction)
        return self.loss_weight * (pixel + self.fft_weight * self.fft(pred, target))
