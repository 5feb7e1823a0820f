"""A batch of predicted 2D Gaussians (what the networks hand to the rasterizer) and the operations on it.

Separating "predict the Gaussians" from "render them at a size" lets callers render one prediction at
many output sizes (encode once, render many), merge the Gaussians of LR tiles into one canvas (tiled
inference), zoom into a window and draw the Gaussians for inspection. Every such operation lives here,
as a small pure function, so that networks, tiling (``gsasr_plugin.inference``), zoom
(``gsasr_plugin.zoom``) and drawing (``gsasr_plugin.visualize_gaussians``) share one of each:
:func:`reference_grid`, :func:`select_gaussians`, :func:`shift_field`, :func:`concat_fields`,
:func:`float_field`, :func:`check_window`, :func:`window_field`, :func:`cull_to_window`, :func:`crop_field`.
This module imports nothing of the plugin but the rasterizer.
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from gsasr_plugin.ops import rasterize_gaussians

__all__ = ['GaussianField', 'NonFiniteGaussiansError', 'Window', 'reference_grid',
           'select_gaussians', 'shift_field', 'concat_fields', 'float_field', 'check_window', 'whole_window',
           'window_field', 'cull_to_window', 'crop_field']

# A view of the LR image plane: (top, left, bottom, right) in LR pixels (the image is [0, H] x [0, W]).
Window = Tuple[float, float, float, float]


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
            and the top-left ``out_size`` of it is returned (for a network that renders a padded image and
            crops it; a larger ``out_size`` enlarges the canvas). None: ``out_size`` is the canvas.
    """
    means: torch.Tensor
    sigmas: torch.Tensor
    rhos: torch.Tensor
    colors: torch.Tensor
    lr_size: Tuple[int, int]
    opacities: Optional[torch.Tensor] = None
    canvas_size: Optional[Tuple[int, int]] = None

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteGaussiansError` naming the parameters that hold NaN or inf (one device sync)."""
        named = (('means', self.means), ('sigmas', self.sigmas), ('rhos', self.rhos), ('colors', self.colors))
        finite = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
        bad = [name for (name, _), ok in zip(named, finite) if not ok]
        if bad:
            raise NonFiniteGaussiansError(f"the network produced non-finite (NaN/inf) Gaussian {', '.join(bad)} "
                                          '(diverged weights, or a non-finite input)')

    def render(self, out_size: Sequence[int], cutoff: Optional[float] = None, **rasterizer_options) -> torch.Tensor:
        """Rasterize to (B, C, Ho, Wo) at ``out_size = (Ho, Wo)`` (the top-left of :meth:`render_size` when the
        field has a canvas).

        ``cutoff`` and every other keyword (e.g. ``mode='gsplat_sum'``, ``box_half_size``) go to
        ``rasterize_gaussians`` as they are; it refuses combinations it does not implement.

        Raises:
            NonFiniteGaussiansError: when a parameter holds NaN or inf (checked before the rasterizer).
        """
        self.check_finite()
        out_size = (int(out_size[0]), int(out_size[1]))
        size = self.render_size(out_size)
        if cutoff is not None:
            rasterizer_options['cutoff'] = cutoff
        image = rasterize_gaussians(self.means, self.sigmas, self.rhos, self.colors, tuple(self.lr_size), size,
                                    **rasterizer_options)
        return image if size == out_size else image[..., :out_size[0], :out_size[1]]

    def render_size(self, out_size: Sequence[int]) -> Tuple[int, int]:
        """The size a render at ``out_size`` rasterizes: ``canvas_size``, grown to ``out_size`` where smaller
        (``out_size`` when the field has no canvas)."""
        if self.canvas_size is None:
            return int(out_size[0]), int(out_size[1])
        return max(int(self.canvas_size[0]), int(out_size[0])), max(int(self.canvas_size[1]), int(out_size[1]))

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]


# ----------------------------------------------------------------------------------------- the grid
def reference_grid(rows: int, cols: int, per_side: int = 1, offset: float = 0.5, device=None,
                   dtype=None) -> torch.Tensor:
    """(1, rows * cols, 2) points (x, y) in LR pixels, row-major: ``((j + offset) / per_side, (i + offset) /
    per_side)`` for row i, column j, i.e. the centres (``offset`` 0.5) or top-left corners (0) of a
    ``per_side`` x ``per_side`` sub-grid of every LR pixel. Where a network puts its undrifted Gaussians, and
    what decides which tile owns a Gaussian."""
    ys = (torch.arange(rows, device=device, dtype=dtype) + offset) / per_side
    xs = (torch.arange(cols, device=device, dtype=dtype) + offset) / per_side
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack((grid_x, grid_y), dim=-1).view(1, rows * cols, 2)


# ------------------------------------------------------------------------------- subsets and merges
def select_gaussians(field: GaussianField, index: torch.Tensor) -> GaussianField:
    """The Gaussians ``index`` (1-D, over N) of every image of the batch; everything else kept."""
    return dataclasses.replace(field, means=field.means[:, index], sigmas=field.sigmas[:, index],
                               rhos=field.rhos[:, index], colors=field.colors[:, index],
                               opacities=None if field.opacities is None else field.opacities[:, index])


def shift_field(field: GaussianField, offset: Sequence[float], lr_size: Tuple[int, int]) -> GaussianField:
    """``field`` moved by ``offset`` = (x, y) LR pixels onto an LR plane of ``lr_size`` (a tile's Gaussians in
    the whole image); a canvas of the old plane does not carry over."""
    shift = field.means.new_tensor([float(offset[0]), float(offset[1])])
    return dataclasses.replace(field, means=field.means + shift, lr_size=(int(lr_size[0]), int(lr_size[1])),
                               canvas_size=None)


def concat_fields(fields: Sequence[GaussianField], lr_size: Tuple[int, int]) -> GaussianField:
    """One field over an LR plane of ``lr_size`` holding all Gaussians of ``fields`` (in order); canvases do not
    carry over."""
    if not fields:
        raise ValueError('concat_fields needs at least one field')
    opacities = None
    if all(f.opacities is not None for f in fields):
        opacities = torch.cat([f.opacities for f in fields], dim=1)
    return GaussianField(means=torch.cat([f.means for f in fields], dim=1),
                         sigmas=torch.cat([f.sigmas for f in fields], dim=1),
                         rhos=torch.cat([f.rhos for f in fields], dim=1),
                         colors=torch.cat([f.colors for f in fields], dim=1),
                         lr_size=(int(lr_size[0]), int(lr_size[1])), opacities=opacities)


def float_field(field: GaussianField) -> GaussianField:
    """``field`` in float32 (rendering precision, whatever the network ran in); its canvas kept."""
    return dataclasses.replace(field, means=field.means.float(), sigmas=field.sigmas.float(),
                               rhos=field.rhos.float(), colors=field.colors.float(),
                               opacities=None if field.opacities is None else field.opacities.float())


# ------------------------------------------------------------------------------------------ windows
def whole_window(lr_size: Tuple[int, int]) -> Window:
    """The window of the whole LR image."""
    return 0.0, 0.0, float(lr_size[0]), float(lr_size[1])


def check_window(window: Optional[Sequence[float]], lr_size: Tuple[int, int]) -> Window:
    """The whole image for None, else the window as floats with top < bottom and left < right.

    Raises:
        ValueError: naming ``window`` for anything else.
    """
    if window is None:
        return whole_window(lr_size)
    if not isinstance(window, (tuple, list)) or len(window) != 4:
        raise ValueError(f'window must be (top, left, bottom, right) in LR pixels, got {window!r}')
    top, left, bottom, right = (float(v) for v in window)
    if not (math.isfinite(top + left + bottom + right) and bottom > top and right > left):
        raise ValueError(f'window must have bottom > top and right > left, got {window!r}')
    return top, left, bottom, right


def window_field(field: GaussianField, window: Window) -> GaussianField:
    """The Gaussians seen through ``window`` (a checked :data:`Window`), mapped onto the whole LR plane
    [0, H] x [0, W].

    Rendering the result at (Ho, Wo) samples the window at Ho x Wo points: a zoom without re-encoding.
    An axis-wise affine map leaves each Gaussian's correlation unchanged.
    """
    height, width = field.lr_size
    top, left, bottom, right = window
    if tuple(window) == whole_window((height, width)):
        return field
    stretch = field.means.new_tensor([width / (right - left), height / (bottom - top)])
    origin = field.means.new_tensor([left, top])
    return GaussianField(means=(field.means - origin) * stretch, sigmas=field.sigmas * stretch, rhos=field.rhos,
                         colors=field.colors, lr_size=(height, width), opacities=field.opacities)


def cull_to_window(field: GaussianField, window: Window, cutoff: float) -> GaussianField:
    """Drop the Gaussians whose ``cutoff`` bounding box misses ``window`` in every image of the batch (exact:
    they add nothing to a render of the window)."""
    top, left, bottom, right = window
    reach = cutoff * field.sigmas
    x, y = field.means[..., 0], field.means[..., 1]
    keep = ((x + reach[..., 0] >= left) & (x - reach[..., 0] <= right) & (y + reach[..., 1] >= top) &
            (y - reach[..., 1] <= bottom)).any(dim=0)
    if bool(keep.all()):
        return field
    if not bool(keep.any()):
        keep[0] = True  # an empty field is not a valid rasterizer input; one far Gaussian renders as zero
    return select_gaussians(field, keep.nonzero().squeeze(1))


def crop_field(field: GaussianField, top: int, left: int, size: Tuple[int, int], reach: float = 3.0) -> GaussianField:
    """The Gaussians of image 0 whose means lie within ``reach`` LR pixels of the window of ``size`` at
    (``top``, ``left``), in the window's coordinates (an LR plane of ``size``; no canvas)."""
    means = field.means[0]
    x, y = means[:, 0] - left, means[:, 1] - top
    keep = (x > -reach) & (x < size[1] + reach) & (y > -reach) & (y < size[0] + reach)
    image = dataclasses.replace(field, means=field.means[:1], sigmas=field.sigmas[:1], rhos=field.rhos[:1],
                                colors=field.colors[:1],
                                opacities=None if field.opacities is None else field.opacities[:1],
                                canvas_size=None)
    return shift_field(select_gaussians(image, keep.nonzero().squeeze(1)), (-left, -top), size)
