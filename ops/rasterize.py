"""``rasterize_gaussians``: validates its input and dispatches to the CUDA op or the pure-PyTorch path."""
import math
import warnings
from typing import Optional, Sequence, Tuple

import torch

from ._torch_impl import rasterize_gaussians_torch

__all__ = ['rasterize_gaussians', 'cuda_op_available', 'DEFAULT_CUTOFF']

# GSASR's Gaussians are small (sigma of a fraction of an LR pixel to a few pixels). A peak-normalised
# Gaussian has value exp(-c^2/2) on its cutoff ellipse and the same fraction of its 2D mass lies beyond it:
# 0.22% at c = 3.5 (1.1% at c = 3.0), below half an 8-bit grey level for unit amplitudes, while the cost
# grows as c^2.
DEFAULT_CUTOFF = 3.5

_cuda_module = None
_cuda_import_error: Optional[BaseException] = None
_cuda_imported = False
_fallback_warned = False


def _load_cuda_op():
    """The compiled ``gsasr_plugin.ops._C`` module, or None when it is absent or cannot be loaded."""
    global _cuda_module, _cuda_import_error, _cuda_imported
    if not _cuda_imported:
        _cuda_imported = True
        try:
            from . import _C  # noqa: F401
            _cuda_module = _C
        except (ImportError, OSError) as err:  # not built, or built for a CUDA this machine lacks
            _cuda_import_error = err
    return _cuda_module


def cuda_op_available() -> bool:
    """Whether the compiled CUDA rasterizer imports here."""
    return _load_cuda_op() is not None


def _check_size(name: str, value) -> Tuple[int, int]:
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f'{name} must be a pair (H, W) of ints, got {value!r}')
    out = []
    for v in value:
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f'{name} must be a pair (H, W) of ints, got {value!r}')
        if v <= 0:
            raise ValueError(f'{name} must be positive, got {value!r}')
        out.append(int(v))
    return out[0], out[1]


def _validate(means, sigmas, rhos, colors, lr_size, out_size, cutoff):
    for name, t in (('means', means), ('sigmas', sigmas), ('rhos', rhos), ('colors', colors)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f'{name} must be a torch.Tensor, got {type(t).__name__}')
        if not t.is_floating_point():
            raise TypeError(f'{name} must be a floating-point tensor, got {t.dtype}')
    if means.dim() != 3 or means.shape[-1] != 2:
        raise ValueError(f'means must have shape (B, N, 2), got {tuple(means.shape)}')
    bsz, num = means.shape[:2]
    if tuple(sigmas.shape) != (bsz, num, 2):
        raise ValueError(f'sigmas must have shape (B, N, 2) = {(bsz, num, 2)}, got {tuple(sigmas.shape)}')
    if tuple(rhos.shape) != (bsz, num):
        raise ValueError(f'rhos must have shape (B, N) = {(bsz, num)}, got {tuple(rhos.shape)}')
    if colors.dim() != 3 or tuple(colors.shape[:2]) != (bsz, num) or colors.shape[2] < 1:
        raise ValueError(f'colors must have shape (B, N, C) with B, N = {(bsz, num)} and C >= 1, '
                         f'got {tuple(colors.shape)}')
    for name, t in (('sigmas', sigmas), ('rhos', rhos), ('colors', colors)):
        if t.device != means.device:
            raise ValueError(f'{name} is on {t.device} but means is on {means.device}: all tensors must '
                             'share one device')
    lr_size = _check_size('lr_size', lr_size)
    out_size = _check_size('out_size', out_size)
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not math.isfinite(cutoff) \
            or cutoff <= 0:
        raise ValueError(f'cutoff must be a finite positive number, got {cutoff!r}')
    if num > 0:
        # one device sync for both value checks
        bad = torch.stack([(sigmas <= 0).any() | sigmas.isnan().any(),
                           (rhos.abs() >= 1).any() | rhos.isnan().any()]).tolist()
        if bad[0]:
            raise ValueError('sigmas must be > 0 everywhere')
        if bad[1]:
            raise ValueError('rhos must lie in (-1, 1) everywhere')
    return lr_size, out_size, float(cutoff)


def rasterize_gaussians(means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor, colors: torch.Tensor,
                        lr_size: Sequence[int], out_size: Sequence[int],
                        cutoff: float = DEFAULT_CUTOFF) -> torch.Tensor:
    """Render peak-normalised 2D Gaussians, summed (no alpha compositing), at any output size.

    ``out[b, c, u, v] = sum_n colors[b, n, c] * exp(-q / 2)`` over the Gaussians with ``q <= cutoff**2``,
    where output pixel (u, v) samples the LR point ``x = (v + 0.5) * W / Wo``, ``y = (u + 0.5) * H / Ho``,
    ``dx = (x - mu_x) / sigma_x``, ``dy = (y - mu_y) / sigma_y`` and
    ``q = (dx^2 - 2 rho dx dy + dy^2) / (1 - rho^2)``. Differentiable in means, sigmas, rhos and colors.

    CUDA tensors use the compiled op ``gsasr_plugin.ops._C`` when it imports (float32 compute and
    accumulation; half/bf16 inputs are cast), otherwise the pure-PyTorch path with a one-time warning.
    Other devices use the pure-PyTorch path (float32, or float64 when any input is float64).

    Args:
        means: (B, N, 2) centres (x, y) in LR pixel units; the LR image covers [0, W] x [0, H] and LR
            pixel (i, j) has its centre at (j + 0.5, i + 0.5).
        sigmas: (B, N, 2) standard deviations (sigma_x, sigma_y) in LR pixels, > 0.
        rhos: (B, N) correlations in (-1, 1).
        colors: (B, N, C) amplitudes with opacity multiplied in, any C >= 1.
        lr_size: (H, W) of the LR image.
        out_size: (Ho, Wo) of the output; the scale is Ho / H, Wo / W (any, per axis).
        cutoff: Mahalanobis radius beyond which a Gaussian contributes nothing. The default 3.5 leaves out
            exp(-3.5^2 / 2) = 0.22% of each Gaussian's mass.

    Returns:
        (B, C, Ho, Wo) tensor of ``colors.dtype``.
    """
    global _fallback_warned
    lr_size, out_size, cutoff = _validate(means, sigmas, rhos, colors, lr_size, out_size, cutoff)
    if means.is_cuda:
        module = _load_cuda_op()
        if module is not None:
            from ._cuda_impl import rasterize_gaussians_cuda
            return rasterize_gaussians_cuda(means, sigmas, rhos, colors, lr_size, out_size, cutoff)
        if not _fallback_warned:
            _fallback_warned = True
            warnings.warn('gsasr_plugin.ops: the compiled CUDA rasterizer is not available '
                          f'({_cuda_import_error}); CUDA tensors use the slower pure-PyTorch path. Rebuild with '
                          'GSASR_BUILD_CUDA=1 pip install --no-build-isolation -e .', RuntimeWarning,
                          stacklevel=2)
    if means.dtype in (torch.float16, torch.bfloat16) or colors.dtype in (torch.float16, torch.bfloat16):
        # the pure path computes in float32 at least; autocast must not re-cast its internals
        with torch.autocast(device_type=means.device.type, enabled=False):
            return rasterize_gaussians_torch(means, sigmas, rhos, colors, lr_size, out_size, cutoff)
    return rasterize_gaussians_torch(means, sigmas, rhos, colors, lr_size, out_size, cutoff)
