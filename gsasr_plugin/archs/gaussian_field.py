"""A batch of predicted 2D Gaussians: what the networks hand to the rasterizer.

Separating "predict the Gaussians" from "render them at a size" lets callers render one prediction at
many output sizes (encode once, render many), merge the Gaussians of LR tiles into one canvas (tiled
inference), and draw the Gaussians for inspection.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

__all__ = ['GaussianField']


@dataclass
class GaussianField:
    """Gaussians in LR pixel units, in the layout ``gsasr_plugin.ops.rasterize_gaussians`` takes.

    Attributes:
        means: (B, N, 2) centres (x, y); the LR image covers [0, W] x [0, H].
        sigmas: (B, N, 2) standard deviations (sigma_x, sigma_y), > 0.
        rhos: (B, N) correlations in (-1, 1).
        colors: (B, N, C) amplitudes with opacity multiplied in.
        lr_size: (H, W) of the LR image the coordinates refer to.
        opacities: optional (B, N) opacities, kept for visualisation only.
    """
    means: torch.Tensor
    sigmas: torch.Tensor
    rhos: torch.Tensor
    colors: torch.Tensor
    lr_size: Tuple[int, int]
    opacities: Optional[torch.Tensor] = None

    def render(self, out_size: Sequence[int], cutoff: Optional[float] = None, **rasterizer_options) -> torch.Tensor:
        """Rasterize to (B, C, Ho, Wo) at ``out_size = (Ho, Wo)``; other keywords go to ``rasterize_gaussians``."""
        from gsasr_plugin.ops import rasterize_gaussians
        kwargs = dict(rasterizer_options)
        if cutoff is not None:
            kwargs['cutoff'] = cutoff
        return rasterize_gaussians(self.means, self.sigmas, self.rhos, self.colors, tuple(self.lr_size),
                                   (int(out_size[0]), int(out_size[1])), **kwargs)

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]
