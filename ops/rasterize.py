"""``rasterize_gaussians``: validates its input and dispatches to the compiled op or the pure-PyTorch path."""
import contextlib
import math
import warnings
from typing import Iterator, Optional, Sequence, Tuple

import torch

from ._compiled import compiled_op, load_error
from ._ext_impl import rasterize_gaussians_ext
from ._torch_impl import DEFAULT_CUTOFF, RasterMode, rasterize_gaussians_torch

__all__ = ['rasterize_gaussians', 'cuda_op_available', 'cpu_op_available', 'use_backend', 'DEFAULT_CUTOFF',
           'MODES', 'BACKENDS', 'RENDER_OPTIONS']

MODES = ('sum', 'gsplat_sum')
# The keywords of rasterize_gaussians that are rendering options rather than the Gaussians' tensors (what a
# network's rasterizer options may set).
RENDER_OPTIONS = ('cutoff', 'box_half_size', 'mode')
BACKENDS = ('auto', 'compiled', 'torch')

_warned = set()
_backend = 'auto'


def cpu_op_available() -> bool:
    """Whether the compiled rasterizer (its CPU kernel) is here: installed, or built on this first call where a
    C++ compiler is (``_compiled.py``)."""
    return compiled_op() is not None


def cuda_op_available() -> bool:
    """Whether the compiled rasterizer is here and has its CUDA kernel."""
    module = compiled_op()
    return module is not None and bool(module.has_cuda())


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Within the block, ``rasterize_gaussians`` uses ``'compiled'`` (the compiled op; an error where it is not
    built for the tensors' device), ``'torch'`` (the pure-PyTorch path) or ``'auto'`` (the default: compiled
    where available). For tests and benchmarks; not thread-safe."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {name!r}')
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def _warn_once(device_type: str) -> None:
    if device_type in _warned:
        return
    _warned.add(device_type)
    if device_type == 'cuda':
        how = 'GSASR_BUILD_CUDA=1 pip install --no-build-isolation -e .'
    else:
        how = 'pip install --no-build-isolation -e . with a C++ compiler present'
    reason = load_error() or 'built without CUDA'
    warnings.warn(f'gsasr_plugin.ops: the compiled rasterizer is not available for {device_type} tensors ({reason}); '
                  f'using the slower pure-PyTorch path. Rebuild with {how}', RuntimeWarning, stacklevel=4)


def _compiled_for(device: torch.device) -> bool:
    """Whether the compiled op serves tensors on ``device`` (warns once per device type when it should but
    cannot; raises under ``use_backend('compiled')``)."""
    if _backend == 'torch' or device.type not in ('cpu', 'cuda'):
        return False
    ok = cuda_op_available() if device.type == 'cuda' else cpu_op_available()
    if not ok:
        if _backend == 'compiled':
            raise RuntimeError(f'gsasr_plugin.ops: the compiled rasterizer is not built for {device.type} tensors '
                               f'({load_error() or "built without CUDA"})')
        _warn_once(device.type)
    return ok


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


def _check_tensor(name: str, t, shape: Tuple[int, ...], device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(t).__name__}')
    if not t.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got {t.dtype}')
    if tuple(t.shape) != shape:
        raise ValueError(f'{name} must have shape {shape}, got {tuple(t.shape)}')
    if t.device != device:
        raise ValueError(f'{name} is on {t.device} but means is on {device}: all tensors must share one device')


def _check_half_size(value) -> Tuple[float, float]:
    if isinstance(value, torch.Size) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f'box_half_size must be a pair (half_h, half_w) of numbers, got {value!r}')
    out = []
    for v in value:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f'box_half_size must be a pair (half_h, half_w) of numbers, got {value!r}')
        if not math.isfinite(v) or v < 0:
            raise ValueError(f'box_half_size must be finite and >= 0, got {value!r}')
        out.append(float(v))
    return out[0], out[1]


def _validate(means, sigmas, rhos, colors, lr_size, out_size, cutoff, box_half_size, mode, opacities):
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
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if cutoff is not None:
        if box_half_size is not None:
            raise ValueError('cutoff and box_half_size exclude each other: the box replaces the cutoff ellipse')
        if mode == 'gsplat_sum':
            raise ValueError("cutoff does not apply with mode='gsplat_sum' (gsplat's own radius and 1/255 "
                             'threshold decide the footprint)')
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not math.isfinite(cutoff) \
                or cutoff <= 0:
            raise ValueError(f'cutoff must be a finite positive number, got {cutoff!r}')
    if box_half_size is not None:
        if mode != 'sum':
            raise ValueError(f"box_half_size applies to mode='sum' only, got mode={mode!r}")
        box_half_size = _check_half_size(box_half_size)
    if opacities is not None:
        if mode != 'gsplat_sum':
            raise ValueError(f"opacities apply to mode='gsplat_sum' only (fold them into colors for mode={mode!r})")
        _check_tensor('opacities', opacities, (bsz, num), means.device)
    if num > 0:
        # one device sync for all value checks
        checks = [~torch.isfinite(means).all(),
                  (sigmas <= 0).any() | ~torch.isfinite(sigmas).all(),
                  (rhos.abs() >= 1).any() | rhos.isnan().any()]
        if opacities is not None:
            checks.append(~torch.isfinite(opacities).all())
        bad = torch.stack(checks).tolist()
        if bad[0]:
            raise ValueError('means must be finite everywhere')
        if bad[1]:
            raise ValueError('sigmas must be finite and > 0 everywhere')
        if bad[2]:
            raise ValueError('rhos must lie in (-1, 1) everywhere')
        if opacities is not None and bad[3]:
            raise ValueError('opacities must be finite everywhere')
    return lr_size, out_size, cutoff, box_half_size


def rasterize_gaussians(means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor, colors: torch.Tensor,
                        lr_size: Sequence[int], out_size: Sequence[int], cutoff: Optional[float] = None, *,
                        box_half_size: Optional[Sequence[float]] = None, mode: str = 'sum',
                        opacities: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Render 2D Gaussians, summed (no alpha compositing), at any output size.

    Output pixel (u, v) samples the LR point ``x = (v + 0.5) * W / Wo``, ``y = (u + 0.5) * H / Ho``. With
    ``dx = (x - mu_x) / sigma_x``, ``dy = (y - mu_y) / sigma_y`` and ``q = (dx^2 - 2 rho dx dy + dy^2) / (1 -
    rho^2)``, a Gaussian adds ``colors[b, n, :] * w`` to the pixel, where the footprint and weight ``w`` are:

    * ``mode='sum'`` (default): ``w = exp(-q / 2)`` where ``q <= cutoff**2`` (peak-normalised Gaussians cut
      at a Mahalanobis radius), else 0.
    * ``mode='sum'`` with ``box_half_size=(half_h, half_w)`` (LR pixels): ``w = exp(-q / 2)`` wherever
      ``|x - mu_x| <= half_w`` and ``|y - mu_y| <= half_h`` (inclusive), no ellipse test: GSASR's official
      renderer (``gs_cuda_dmax``), which cuts each Gaussian at a ``+-dmax`` square of its [-1, 1] canvas
      whose pixel j sits at ``2 j / (Wo - 1) - 1``; with its coordinate remap that is
      ``half_w = dmax * (Wo - 1) / 2 * W / Wo`` LR pixels (``dmax * (Wo - 1) / 2`` output pixels), likewise
      ``half_h`` with H, Ho.
    * ``mode='gsplat_sum'``: ContinuousSR's renderer, the gsplat fork's ``project_gaussians_2d`` followed by
      ``rasterize_gaussians_sum``, for means given in OUR convention: gsplat pixel j is our output pixel j,
      i.e. gsplat's centre is ``mu_x * Wo / W - 0.5`` (gsplat samples pixel j at coordinate j) and its
      covariance that of ``sigma_x * Wo / W``, ``sigma_y * Ho / H``, rho (output pixels).
      ``w = min(1, opacity * exp(-q / 2))``, skipped when below 1/255, on the 16x16 pixel tiles of gsplat's
      box: radius ``r = ceil(3 sqrt(b + sqrt(max(0.1, b^2 - det))))`` (b half the covariance's trace), tiles
      ``trunc(c / 16 - r / 16)`` to ``trunc(c / 16 + r / 16 + 1)`` (exclusive, clipped) per axis around the
      centre c. Like gsplat's 3-channel kernel, each tile takes only the first 256 Gaussians of its list,
      in index order within each image (gsplat reads one 16 x 16 batch and stops). Gradients are gsplat's:
      the colours' follow ``w``, the geometry's and the opacities' follow ``opacity * exp(-q / 2)`` without
      the ``min(1, .)`` clamp; skipped pixels give none. ``opacities`` (B, N) default to ones (what
      ContinuousSR passes).

    Differentiable in means, sigmas, rhos, colors (and opacities).

    CPU and CUDA tensors use the compiled op ``gsasr_plugin.ops._C`` when it is built (its CPU kernel, and its
    CUDA kernel when built with CUDA; the same arithmetic from ``ops/csrc/rasterize_math.h``), otherwise the
    pure-PyTorch path, with a one-time warning per device type. CUDA computes in float32; the CPU kernel and the
    pure path in float64 when any input is float64, else float32; half/bf16 inputs are cast up.

    Args:
        means: (B, N, 2) centres (x, y) in LR pixel units; the LR image covers [0, W] x [0, H] and LR
            pixel (i, j) has its centre at (j + 0.5, i + 0.5). Finite.
        sigmas: (B, N, 2) standard deviations (sigma_x, sigma_y) in LR pixels, finite and > 0.
        rhos: (B, N) correlations in (-1, 1).
        colors: (B, N, C) amplitudes (with opacity multiplied in, except in ``'gsplat_sum'``), any C >= 1.
        lr_size: (H, W) of the LR image.
        out_size: (Ho, Wo) of the output; the scale is Ho / H, Wo / W (any, per axis).
        cutoff: Mahalanobis radius of ``mode='sum'``'s ellipse; None means ``DEFAULT_CUTOFF`` = 3.5, which
            leaves out exp(-3.5^2 / 2) = 0.22% of each Gaussian's mass. Not allowed with ``box_half_size``
            or ``'gsplat_sum'``.
        box_half_size: (half_h, half_w) >= 0 in LR pixels: the box footprint above instead of the ellipse.
        mode: ``'sum'`` or ``'gsplat_sum'``.
        opacities: (B, N) finite opacities, ``'gsplat_sum'`` only.

    Returns:
        (B, C, Ho, Wo) tensor of ``colors.dtype``.
    """
    lr_size, out_size, cutoff, box_half_size = _validate(means, sigmas, rhos, colors, lr_size, out_size, cutoff,
                                                         box_half_size, mode, opacities)
    if _compiled_for(means.device):
        return rasterize_gaussians_ext(means, sigmas, rhos, colors, opacities, lr_size, out_size,
                                       RasterMode.of(cutoff, box_half_size, mode))
    kwargs = dict(box_half_size=box_half_size, mode=mode, opacities=opacities)
    if any(t.dtype in (torch.float16, torch.bfloat16) for t in (means, colors)):
        # the pure path computes in float32 at least; autocast must not re-cast its internals
        with torch.autocast(device_type=means.device.type, enabled=False):
            return rasterize_gaussians_torch(means, sigmas, rhos, colors, lr_size, out_size, cutoff, **kwargs)
    return rasterize_gaussians_torch(means, sigmas, rhos, colors, lr_size, out_size, cutoff, **kwargs)
