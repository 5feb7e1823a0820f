"""A batch of predicted 2D Gaussians: what the networks hand to the rasterizer.

Separating "predict the Gaussians" from "render them at a size" lets callers render one prediction at
many output sizes (encode once, render many), merge the Gaussians of LR tiles into one canvas (tiled
inference), and draw the Gaussians for inspection.
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

__all__ = ['GaussianField', 'box_half_size', 'NonFiniteGaussiansError']


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
        canvas_size: optional (Hc, Wc): the field is rendered on this canvas over the whole ``lr_size``
            and the top-left ``out_size`` of it is returned (GSASR's official inference renders the padded
            image and crops; a larger ``out_size`` enlarges the canvas). None: ``out_size`` is the canvas.
        box_cutoff: optional official cut-off ``dmax``: each Gaussian touches the canvas pixels within
            ``box_cutoff * (canvas - 1) / 2`` output pixels of its centre along each axis (a square box,
            no ellipse test). None: the ellipse ``cutoff`` of :meth:`render`.
    """
    means: torch.Tensor
    sigmas: torch.Tensor
    rhos: torch.Tensor
    colors: torch.Tensor
    lr_size: Tuple[int, int]
    opacities: Optional[torch.Tensor] = None
    canvas_size: Optional[Tuple[int, int]] = None
    box_cutoff: Optional[float] = None

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteGaussiansError` naming the parameters that hold NaN or inf (one device sync)."""
        named = (('means', self.means), ('sigmas', self.sigmas), ('rhos', self.rhos), ('colors', self.colors))
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
        bad = [name for (name, _), ok in zip(named, finite) if not ok]
        if bad:
            raise NonFiniteGaussiansError(f"the network produced non-finite (NaN/inf) Gaussian {', '.join(bad)} "
                                          '(diverged weights, or a non-finite input)')

    def render(self, out_size: Sequence[int], cutoff: Optional[float] = None, **rasterizer_options) -> torch.Tensor:
        """Rasterize to (B, C, Ho, Wo) at ``out_size = (Ho, Wo)`` (the top-left of ``canvas_size`` when set).

        Other keywords (e.g. ``mode='gsplat_sum'``) go to ``rasterize_gaussians``.

        Raises:
            NonFiniteGaussiansError: when a parameter holds NaN or inf (checked before the rasterizer).
        """
        from gsasr_plugin.ops import rasterize_gaussians
        self.check_finite()
        out_size = (int(out_size[0]), int(out_size[1]))
        size = out_size
        if self.canvas_size is not None:
            size = (max(int(self.canvas_size[0]), out_size[0]), max(int(self.canvas_size[1]), out_size[1]))
        kwargs = dict(rasterizer_options)
        if cutoff is not None:
            kwargs['cutoff'] = cutoff
        if self.box_cutoff is not None:
            kwargs = {'box_half_size': box_half_size(self.box_cutoff, tuple(self.lr_size), size)}
        image = rasterize_gaussians(self.means, self.sigmas, self.rhos, self.colors, tuple(self.lr_size), size,
                                    **kwargs)
        return image if size == out_size else image[..., :out_size[0], :out_size[1]]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]


def box_half_size(box_cutoff: float, lr_size: Tuple[int, int], canvas_size: Tuple[int, int]) -> Tuple[float, float]:
    """(half_h, half_w) in LR pixels of the official square cut-off ``dmax`` on a canvas.

    The official rasterizer places canvas pixel ``i`` at ``2 i / (n - 1) - 1`` and skips the pixels farther
    than ``dmax`` from the Gaussian's centre along an axis: ``dmax * (n - 1) / 2`` output pixels, that is
    ``dmax * (n - 1) / 2 * lr / n`` LR pixels of an axis of ``lr`` LR and ``n`` canvas pixels.
    """
    return tuple(box_cutoff * (n - 1) / 2 * lr / n for lr, n in zip(lr_size, canvas_size))

