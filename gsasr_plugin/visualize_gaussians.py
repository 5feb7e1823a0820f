"""Draw predicted 2D Gaussians over the LR image (centres and 1-sigma ellipses, coloured by opacity).

As in Figures 6 and 9 of the GSASR paper: a crop of a few LR pixels, where each Gaussian's footprint
can be seen, beside the same crop rendered from the Gaussians.
"""
import os
from typing import Optional, Tuple

import numpy as np
import torch

from gsasr_plugin.archs.gaussian_field import GaussianField, crop_field
from gsasr_plugin.utils.atomic_io import atomic_write

__all__ = ['ellipse_axes', 'draw_gaussians']


def ellipse_axes(sigmas: np.ndarray, rhos: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-sigma ellipse (width, height, angle in degrees) of each Gaussian from (N, 2) sigmas, (N,) rhos.

    The covariance is [[sx^2, rho sx sy], [rho sx sy, sy^2]]; the ellipse axes are twice the square
    roots of its eigenvalues, the angle that of the major eigenvector (x towards y, image axes).
    """
    sx, sy = sigmas[:, 0].astype(np.float64), sigmas[:, 1].astype(np.float64)
    cov = np.empty((len(sx), 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = sx**2, sy**2
    cov[:, 0, 1] = cov[:, 1, 0] = rhos * sx * sy
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
    major = eigenvectors[:, :, 1]
    angle = np.degrees(np.arctan2(major[:, 1], major[:, 0]))
    return 2 * np.sqrt(eigenvalues[:, 1]), 2 * np.sqrt(np.clip(eigenvalues[:, 0], 0, None)), angle


def draw_gaussians(field: GaussianField, lr_image: np.ndarray, out_path: str, crop: Optional[int] = 12,
                   centre: Optional[Tuple[int, int]] = None, render_scale: int = 8, max_gaussians: int = 20000) -> str:
    """Save a two-panel PNG: the LR crop with the Gaussians drawn on it, and the crop rendered.

    Args:
        field: the image's Gaussians (batch 0 is drawn), LR pixel units.
        lr_image: (h, w, 3) RGB in [0, 1] (or uint8) that the field was predicted from.
        out_path: PNG path to write.
        crop: side of the LR crop in pixels; None draws the whole image (many Gaussians: slow).
        centre: (y, x) LR centre of the crop; default the image centre.
        render_scale: upscaling of the rendered panel.
        max_gaussians: drawing more ellipses than this is refused (ValueError): choose a smaller crop.

    Returns:
        out_path.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.collections import EllipseCollection

    image = np.asarray(lr_image)
    image = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    height, width = image.shape[:2]
    crop_h, crop_w = (height, width) if crop is None else (min(crop, height), min(crop, width))
    cy, cx = centre if centre is not None else (height // 2, width // 2)
    top = int(np.clip(cy - crop_h // 2, 0, height - crop_h))
    left = int(np.clip(cx - crop_w // 2, 0, width - crop_w))
    local = crop_field(field, top, left, (crop_h, crop_w))
    if local.num_gaussians > max_gaussians:
        raise ValueError(f'{local.num_gaussians} Gaussians in the {crop_h}x{crop_w} crop: more than '
                         f'max_gaussians={max_gaussians}; use a smaller crop')
    with torch.no_grad():
        rendered = local.render((crop_h * render_scale, crop_w * render_scale))[0].float().clamp(0, 1)
    rendered = rendered.permute(1, 2, 0).cpu().numpy()

    means = local.means[0].cpu().float().numpy()
    sigmas = local.sigmas[0].cpu().float().numpy()
    rhos = local.rhos[0].cpu().float().numpy()
    opacity = (local.opacities[0] if local.opacities is not None else local.colors[0].amax(-1)).cpu().float().numpy()
    widths, heights, angles = ellipse_axes(sigmas, rhos)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), dpi=110)
    ax = axes[0]
    ax.imshow(image[top:top + crop_h, left:left + crop_w], extent=(0, crop_w, crop_h, 0), interpolation='nearest',
              alpha=0.55)
    cmap = plt.get_cmap('viridis')
    ellipses = EllipseCollection(widths, heights, angles, units='xy', offsets=means, offset_transform=ax.transData,
                                 facecolors='none', edgecolors=cmap(np.clip(opacity, 0, 1)), linewidths=0.6)
    ax.add_collection(ellipses)
    points = ax.scatter(means[:, 0], means[:, 1], c=opacity, cmap=cmap, vmin=0, vmax=1, s=3)
    ax.set_xlim(0, crop_w)
    ax.set_ylim(crop_h, 0)
    ax.set_title(f'{local.num_gaussians} Gaussians (1-sigma ellipses), LR crop at y={top}, x={left}')
    fig.colorbar(points, ax=ax, fraction=0.046, pad=0.04, label='opacity')
    axes[1].imshow(rendered, extent=(0, crop_w, crop_h, 0), interpolation='nearest')
    axes[1].set_title(f'rendered x{render_scale}')
    for axis in axes:
        axis.set_xlabel('x (LR pixels)')
        axis.set_ylabel('y (LR pixels)')
    fig.tight_layout()
    try:
        with atomic_write(out_path) as handle:
            fig.savefig(handle, format=os.path.splitext(str(out_path))[1].lstrip('.').lower() or 'png')
    finally:
        plt.close(fig)
    return out_path
