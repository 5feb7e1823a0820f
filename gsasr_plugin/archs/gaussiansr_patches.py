"""GaussianSR's splatting as its official code does it (``splatting: patches``) and LIIF's query coordinates.

The official GaussianSR code (tljxyys/GaussianSR, ``models/gaussian.py``) does not render Gaussians
analytically. For each output it:

1. resamples the splatted feature channels and the kernel-choice weights bicubically to the next multiple
   of the patch size (7 x 7) and cuts them into patches;
2. gives each of the 49 positions of a patch one Gaussian whose (sigma_x, sigma_y, rho, opacity) is the
   choice-weighted kernel bank *averaged over every patch of every image of the batch*
   (``kernel_sharing: patch_mean``);
3. samples each Gaussian on a ``kernel_size`` x ``kernel_size`` grid of output pixels at offsets
   ``linspace(-5, 5, kernel_size)`` (sigma is in those units, not in pixels), divides by its peak, pads it
   to the patch's output size ``(round(7 s_h), round(7 s_w))`` and moves it by a bilinear ``grid_sample``
   to the position its ``generate_meshgrid`` / ``fetching_features_from_tensor`` coordinates give: the
   Gaussian of patch pixel (i, j) peaks at output row ``i (kh - 1) / 7``, column ``j (kw - 1) / 7``
   (half a pixel less when ``kh - kernel_size`` / ``kw - kernel_size`` is odd), not at the pixel's centre;
4. weights every Gaussian by its pixel's feature times opacity, sums them, clamps to [0, 1], tiles the
   patches back together and resizes that map bicubically to the output size.

The functions here compute the same numbers with plain PyTorch ops. The kernel images are shared by all
patches of a group, so the sum over a patch's Gaussians is one matrix product instead of the official
(patches x 49 x channels x kh x kw) tensor.

Sign and axis conventions: their ``sigma_x`` is the spread along image *rows* (the first axis of their
kernel grid) and ``sigma_y`` along columns; here ``sigma_x`` is horizontal (columns) as everywhere else in
this package, so the converter (:mod:`gsasr_plugin.official.gaussiansr`) swaps the two.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ['KERNEL_EXTENT', 'patch_grid', 'resample_to_patch_grid', 'to_patches', 'from_patches',
           'patch_parameters', 'patch_kernel_images', 'place_kernels', 'splat_patches', 'patch_output_size',
           'liif_coordinates', 'liif_offsets_and_cell']

# Half-width of the official kernel's sampling grid: offsets linspace(-5, 5, kernel_size), in sigma's units.
KERNEL_EXTENT = 5.0
# Added to the covariance diagonal by the official code.
COVARIANCE_EPS = 1e-5


def patch_grid(lr_size: Sequence[int], patch_size: Sequence[int]) -> Tuple[int, int]:
    """(rows, columns) of patches covering ``lr_size``: ceil(h / ph), ceil(w / pw)."""
    return math.ceil(lr_size[0] / patch_size[0]), math.ceil(lr_size[1] / patch_size[1])


def resample_to_patch_grid(x: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, rows * ph, cols * pw) by bicubic resampling (identity when h, w are multiples)."""
    rows, cols = patch_grid(x.shape[-2:], patch_size)
    return F.interpolate(x, size=(rows * patch_size[0], cols * patch_size[1]), mode='bicubic', align_corners=False)


def to_patches(x: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """(B, C, rows * ph, cols * pw) -> (B, L, C, ph, pw), patches in row-major order (``nn.Unfold``'s)."""
    batch, channels, height, width = x.shape
    ph, pw = patch_size
    rows, cols = height // ph, width // pw
    x = x.view(batch, channels, rows, ph, cols, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(batch, rows * cols, channels, ph, pw)


def from_patches(x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """(B, L, C, kh, kw) -> (B, C, rows * kh, cols * kw): the inverse of :func:`to_patches` (``nn.Fold``'s)."""
    batch, _, channels, kh, kw = x.shape
    rows, cols = grid
    x = x.view(batch, rows, cols, channels, kh, kw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, channels, rows * kh, cols * kw)


def patch_parameters(weights: torch.Tensor, bank: torch.Tensor, patch_size: Sequence[int],
                     sharing: str = 'patch_mean', group_images: int = 0) -> torch.Tensor:
    """Gaussian parameters of every patch position from kernel-choice weights on the patch grid.

    Args:
        weights: (B, K, rows * ph, cols * pw) choice weights (already resampled to the patch grid).
        bank: (K, P) kernel parameters (sigma_x, sigma_y, rho, opacity, ...).
        patch_size: (ph, pw).
        sharing: ``'patch_mean'``: the weighted parameters averaged over all patches of a group of images
            (the official code: one Gaussian per patch position); ``'pixel'``: every pixel keeps its own.
        group_images: images per group for ``'patch_mean'`` (consecutive; the last group may be smaller);
            0 means the whole batch (the official code on one GPU; with DataParallel each GPU's share).

    Returns:
        (B, 1, ph * pw, P) for ``'patch_mean'`` (each image carries its group's mean) or (B, L, ph * pw, P)
        for ``'pixel'``.
    """
    patches = to_patches(weights, patch_size)  # (B, L, K, ph, pw)
    batch, num_patches, num_kernels = patches.shape[:3]
    per_pixel = torch.einsum('blkn,kp->blnp', patches.flatten(3), bank.to(patches.dtype))  # (B, L, N, P)
    if sharing == 'pixel':
        return per_pixel
    if sharing != 'patch_mean':
        raise ValueError(f"kernel_sharing must be 'pixel' or 'patch_mean', got {sharing!r}")
    size = batch if group_images <= 0 else group_images
    means = [chunk.flatten(0, 1).mean(dim=0, keepdim=True).expand(chunk.shape[0], -1, -1)
             for chunk in torch.split(per_pixel, size, dim=0)]
    return torch.cat(means, dim=0).unsqueeze(1)


def patch_kernel_images(params: torch.Tensor, kernel_size: int, extent: float = KERNEL_EXTENT) -> torch.Tensor:
    """(..., 4) parameters (sigma_x, sigma_y, rho, opacity) -> (..., kernel_size, kernel_size) kernels.

    The Gaussian with covariance [[sigma_y^2 + eps, r], [r, sigma_x^2 + eps]] (rows first; r = rho sigma_x
    sigma_y) sampled at offsets ``linspace(-extent, extent, kernel_size)`` along rows and columns, divided
    by its largest sample. sigma_x spreads along columns (x), sigma_y along rows (y).
    """
    sigma_x, sigma_y, rho = params[..., 0], params[..., 1], params[..., 2]
    cross = rho * sigma_x * sigma_y
    covariance = torch.stack((torch.stack((sigma_y**2 + COVARIANCE_EPS, cross), dim=-1),
                              torch.stack((cross, sigma_x**2 + COVARIANCE_EPS), dim=-1)), dim=-2)
    inverse = torch.linalg.inv(covariance)
    steps = torch.linspace(0, 1, steps=kernel_size, device=params.device, dtype=params.dtype)
    offsets = -extent + (2 * extent) * steps
    rows, cols = torch.meshgrid(offsets, offsets, indexing='ij')
    points = torch.stack((rows, cols), dim=-1)  # (ks, ks, 2): (row offset, column offset)
    exponent = torch.einsum('uvi,...ij,uvj->...uv', points, -0.5 * inverse, points)
    kernel = torch.exp(exponent)
    return kernel / kernel.amax(dim=(-2, -1), keepdim=True)


def patch_output_size(patch_size: Sequence[int], scale: Sequence[float]) -> Tuple[int, int]:
    """Output pixels of one patch: (round(ph * s_h), round(pw * s_w)) with Python's round, as the official code."""
    return round(patch_size[0] * float(scale[0])), round(patch_size[1] * float(scale[1]))


def place_kernels(kernels: torch.Tensor, patch_size: Sequence[int], out_patch: Tuple[int, int]) -> torch.Tensor:
    """(G, N, ks, ks) kernels of the N = ph * pw patch positions -> (G, N, kh, kw) images of one output patch.

    Each kernel is zero-padded to (kh, kw) (the extra row/column on the bottom/right when odd) and shifted by
    a bilinear resampling (``affine_grid`` / ``grid_sample`` with ``align_corners=True``, zeros outside) by
    the official translation of patch pixel (i, j): ``t_x = 2 (0.5 - j / ph)``, ``t_y = 2 (0.5 - i / pw)``
    (normalised units; the official ``fetching_features_from_tensor`` divides x by the patch height and y by
    its width).
    """
    groups, positions, size = kernels.shape[0], kernels.shape[1], kernels.shape[-1]
    ph, pw = patch_size
    kh, kw = out_patch
    pad_h, pad_w = kh - size, kw - size
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f'kernel_size {size} is larger than the output patch {kh}x{kw} (patch_size {ph}x{pw} '
                         'times the scale): use a larger scale or a smaller kernel_size')
    padded = F.pad(kernels.reshape(groups * positions, 1, size, size),
                   (pad_w // 2, pad_w // 2 + pad_w % 2, pad_h // 2, pad_h // 2 + pad_h % 2))
    yy, xx = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing='ij')
    pixel_xy = torch.stack((xx.flatten(), yy.flatten()), dim=1)  # (N, 2): (x, y) = (j, i)
    normalised = pixel_xy / torch.tensor([ph, pw]).float()
    translation = (torch.tensor([0.5, 0.5]) - normalised) * 2.0
    theta = torch.zeros(positions, 2, 3)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = translation
    theta = theta.to(device=kernels.device, dtype=kernels.dtype)
    grid = F.affine_grid(theta, [positions, 1, kh, kw], align_corners=True)
    grid = grid.unsqueeze(0).expand(groups, -1, -1, -1, -1).reshape(groups * positions, kh, kw, 2)
    moved = F.grid_sample(padded, grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    return moved.view(groups, positions, kh, kw)


def splat_patches(features: torch.Tensor, params: torch.Tensor, patch_size: Sequence[int], kernel_size: int,
                  scale: Sequence[float], out_size: Tuple[int, int],
                  clamp: Optional[Sequence[float]] = (0.0, 1.0)) -> torch.Tensor:
    """The official patch-wise feature splatting.

    Args:
        features: (B, C, rows * ph, cols * pw) features on the patch grid (see :func:`resample_to_patch_grid`).
        params: (B, 1 or L, ph * pw, 4) (sigma_x, sigma_y, rho, opacity) from :func:`patch_parameters`.
        patch_size: (ph, pw).
        kernel_size: side of the sampled kernel, in output pixels.
        scale: (s_h, s_w): each patch renders to (round(ph s_h), round(pw s_w)) pixels.
        out_size: (Ho, Wo) the tiled patches are resized to (bicubic).
        clamp: (low, high) applied to the splatted patches before tiling; None for no clamp.

    Returns:
        (B, C, Ho, Wo) the splatted features.
    """
    batch, channels, height, width = features.shape
    grid = (height // patch_size[0], width // patch_size[1])
    out_patch = patch_output_size(patch_size, scale)
    kernels = patch_kernel_images(params.flatten(0, 1), kernel_size)  # (B * (1 | L), N, ks, ks)
    images = place_kernels(kernels, patch_size, out_patch).view(batch, params.shape[1], params.shape[2], -1)
    colors = to_patches(features, patch_size).flatten(3) * params[..., 3].unsqueeze(2)  # (B, L, C, N)
    splat = torch.matmul(colors, images).view(batch, -1, channels, *out_patch)  # sum over the N Gaussians
    if clamp is not None:
        splat = torch.clamp(splat, float(clamp[0]), float(clamp[1]))
    tiled = from_patches(splat, grid)
    return F.interpolate(tiled, size=tuple(out_size), mode='bicubic', align_corners=False)


def liif_coordinates(length: int) -> torch.Tensor:
    """LIIF's ``make_coord`` along one axis: pixel centres of ``length`` pixels in [-1, 1], float32."""
    radius = 1 / length
    return -1 + radius + (2 * radius) * torch.arange(length).float()


def liif_offsets_and_cell(lr_size: Sequence[int], out_size: Sequence[int],
                          device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """LIIF/LTE's query geometry for a whole (Ho, Wo) output of an (h, w) input.

    Each output pixel's nearest LR pixel is found as LIIF does (``grid_sample(..., mode='nearest')`` on the
    LR coordinate map, so ties between two LR pixels go to the even index), and its offset is
    ``(coord - nearest) * (h, w)``: half-LR-pixel units in [-1, 1]. As in LIIF, the coordinates are made on
    the CPU and the lookup runs on ``device``.

    Returns:
        rel: (2, Ho, Wo) offsets (x, y); cell: (2,) the output pixel size (x, y) in the same units.
    """
    height, width = int(lr_size[0]), int(lr_size[1])
    out_h, out_w = int(out_size[0]), int(out_size[1])
    rows, cols = torch.meshgrid(liif_coordinates(out_h), liif_coordinates(out_w), indexing='ij')
    coord = torch.stack((rows, cols), dim=-1).to(device)  # (Ho, Wo, 2): (y, x) as make_coord
    lr_rows, lr_cols = torch.meshgrid(liif_coordinates(height), liif_coordinates(width), indexing='ij')
    lr_coord = torch.stack((lr_rows, lr_cols), dim=0).unsqueeze(0).to(device)  # (1, 2, h, w)
    nearest = F.grid_sample(lr_coord, coord.flip(-1).unsqueeze(0), mode='nearest', align_corners=False)[0]
    rel = coord.permute(2, 0, 1) - nearest  # (2, Ho, Wo): (y, x)
    rel[0] *= height
    rel[1] *= width
    cell = torch.stack((torch.ones(()) * (2 / out_w) * width, torch.ones(()) * (2 / out_h) * height))
    return rel.flip(0), cell.to(device)
