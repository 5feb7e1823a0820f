"""A batch of predicted 2D Gaussians: what the networks hand to the rasterizer.

Separating "predict the Gaussians" from "render them at a size" lets callers render one prediction at
many output sizes (encode once, render many), merge the Gaussians of LR tiles into one canvas (tiled
inference), and draw the Gaussians for inspection.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

__all__ = ['GaussianField', 'NonFiniteGaussiansError']


class NonFiniteGaussiansError(ValueError):
    """The network predicted NaN or infinite Gaussian parameters (diverged weights, or a non-finite input).

    Raised before the rasterizer sees them; training counts it as a non-finite step (``max_nonfinite_steps``).
    """


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

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteGaussiansError` naming the parameters that hold NaN or inf (one device sync)."""
        named = (('means', self.means), ('sigmas', self.sigmas), ('rhos', self.rhos), ('colors', self.colors))
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
        bad = [name for (name, _), ok in zip(named, finite) if not ok]
        if bad:
            raise NonFiniteGaussiansError(f"the network produced non-finite (NaN/inf) Gaussian {', '.join(bad)} "
                                          '(diverged weights, or a non-finite input)')

    def render(self, out_size: Sequence[int], cutoff: Optional[float] = None) -> torch.Tensor:
        """Rasterize to (B, C, Ho, Wo) at ``out_size = (Ho, Wo)``.

        Raises:
            NonFiniteGaussiansError: when a parameter holds NaN or inf (checked before the rasterizer).
        """
        from gsasr_plugin.ops import rasterize_gaussians
        self.check_finite()
        kwargs = {} if cutoff is None else {'cutoff': cutoff}
        return rasterize_gaussians(self.means, self.sigmas, self.rhos, self.colors, tuple(self.lr_size),
                                   (int(out_size[0]), int(out_size[1])), **kwargs)

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]
