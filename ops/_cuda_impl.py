"""Autograd wrapper around the compiled CUDA rasterizer ``gsasr_plugin.ops._C`` (float32 compute)."""
from typing import Tuple

import torch

__all__ = ['rasterize_gaussians_cuda']


class _RasterizeCUDA(torch.autograd.Function):

    @staticmethod
    def forward(ctx, means, sigmas, rhos, colors, lr_size, out_size, cutoff):
        from . import _C
        out = _C.forward(means, sigmas, rhos, colors, lr_size[0], lr_size[1], out_size[0], out_size[1], cutoff)
        ctx.save_for_backward(means, sigmas, rhos, colors)
        ctx.sizes = (lr_size, cutoff)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        from . import _C
        means, sigmas, rhos, colors = ctx.saved_tensors
        (height, width), cutoff = ctx.sizes
        grads = _C.backward(means, sigmas, rhos, colors, grad_out.float().contiguous(), height, width, cutoff)
        return (*grads, None, None, None)


def rasterize_gaussians_cuda(means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor, colors: torch.Tensor,
                             lr_size: Tuple[int, int], out_size: Tuple[int, int], cutoff: float) -> torch.Tensor:
    """CUDA rasterization (inputs already validated): casts to float32, returns ``colors.dtype``."""
    with torch.autocast(device_type='cuda', enabled=False):
        out = _RasterizeCUDA.apply(*(t.float().contiguous() for t in (means, sigmas, rhos, colors)),
                                   lr_size, out_size, cutoff)
    return out.to(colors.dtype)
