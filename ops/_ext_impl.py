"""Autograd wrapper around the compiled rasterizer ``gsasr_plugin.ops._C`` (CPU kernel, and CUDA kernel when built).

CUDA tensors compute in float32; CPU tensors in float64 when any input is float64, else float32 (as the
pure-PyTorch path does). Half and bfloat16 inputs are cast up, and the output has ``colors``' dtype.
"""
from typing import Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from ._compiled import compiled_op
from ._torch_impl import RasterMode

__all__ = ['rasterize_gaussians_ext', 'FOOTPRINT_CODES']

# rasterize_math.h's Footprint enum
FOOTPRINT_CODES = {'ellipse': 0, 'box': 1, 'gsplat': 2}


class _RasterizeExt(torch.autograd.Function):

    @staticmethod
    def forward(ctx, means, sigmas, rhos, colors, opacities, lr_size, out_size, mode):
        code = FOOTPRINT_CODES[mode.footprint]
        out, boxes, slot_starts, allowed, stats = compiled_op().forward(
            means, sigmas, rhos, colors, opacities, lr_size[0], lr_size[1], out_size[0], out_size[1], code,
            mode.cutoff, mode.half_h, mode.half_w)
        ctx.save_for_backward(means, sigmas, rhos, colors, opacities, boxes, slot_starts, allowed)
        num = max(1, means.shape[0] * means.shape[1])
        ctx.args = (lr_size, code, mode, float(stats[1]) / num)
        ctx.has_opacity = mode.footprint == 'gsplat'
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        means, sigmas, rhos, colors, opacities, boxes, slot_starts, allowed = ctx.saved_tensors
        (height, width), code, mode, mean_area = ctx.args
        g_means, g_sigmas, g_rhos, g_colors, g_opacities = compiled_op().backward(
            means, sigmas, rhos, colors, opacities, grad_out.to(means.dtype).contiguous(), boxes, slot_starts,
            allowed, height, width, code, mode.cutoff, mode.half_h, mode.half_w, mean_area)
        return (g_means, g_sigmas, g_rhos, g_colors, g_opacities if ctx.has_opacity else None, None, None, None)


def rasterize_gaussians_ext(means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor, colors: torch.Tensor,
                            opacities: Optional[torch.Tensor], lr_size: Tuple[int, int], out_size: Tuple[int, int],
                            mode: RasterMode) -> torch.Tensor:
    """Compiled rasterization (inputs already validated); returns ``colors.dtype``."""
    tensors = [means, sigmas, rhos, colors] + ([opacities] if opacities is not None else [])
    if means.is_cuda or not any(t.dtype == torch.float64 for t in tensors):
        compute = torch.float32
    else:
        compute = torch.float64
    if mode.footprint == 'gsplat' and opacities is None:
        opacities = torch.ones(means.shape[:2], dtype=compute, device=means.device)
    if opacities is None or mode.footprint != 'gsplat':
        opacities = torch.empty(0, dtype=compute, device=means.device)
    with torch.autocast(device_type=means.device.type, enabled=False):
        out = _RasterizeExt.apply(*(t.to(compute).contiguous() for t in (means, sigmas, rhos, colors, opacities)),
                                  lr_size, out_size, mode)
    return out.to(colors.dtype)
