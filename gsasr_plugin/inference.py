"""Inference helpers behind ``basicsr infer``: image IO, checkpoint loading and tiled super-resolution.

* Images: PNG, JPEG, TIFF, WebP (anything OpenCV reads), 8- or 16-bit (or float TIFF), grayscale, RGB
  or RGBA. The network sees RGB in [0, 1]; grayscale is replicated to RGB and averaged back; the alpha
  channel is super-resolved separately as a grayscale image. Outputs keep the input's bit depth and
  channel layout.
* Networks: see :mod:`gsasr_plugin.api` (``load_model``: a self-describing checkpoint, a BasicSR one
  with an option file, or a released model, all read by :func:`gsasr_plugin.checkpoint.load_weights`);
  :func:`load_network` is its older, option-file-first form.
* Tiles: overlapping LR tiles are encoded to Gaussians; each tile keeps the Gaussians that belong to
  its core (non-overlapping) region, shifted to full-image coordinates; all tiles' Gaussians are
  rendered once into one canvas, so there are no seams to blend.
"""
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from gsasr_plugin.archs.gaussian_field import GaussianField
# 'S' / 'SH,SW' and 'WxH' command-line values (kept under these names for library users)
from gsasr_plugin.utils.scale import ScaleLike, resolve_scale_and_size
from gsasr_plugin.utils.scale import parse_scale_text as parse_scale
from gsasr_plugin.utils.scale import parse_size_text as parse_size

__all__ = [
    'IMAGE_EXTENSIONS', 'OUTPUT_FORMATS', 'ImageMeta', 'read_image', 'write_image', 'decode_image_array',
    'encode_image_array', 'output_layout', 'parse_scale', 'parse_size', 'load_network',
    'load_state_dict_from_checkpoint', 'tile_alignment', 'plan_tiles', 'auto_tile_size', 'encode_tiled',
    'super_resolve', 'Tile', 'TiledEncodingUnsupported', 'NonFiniteOutputError'
]

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.webp', '.bmp')


# ---------------------------------------------------------------------------------------------- image IO
# What each output format holds with OpenCV's encoders: the deepest pixel type and whether it keeps alpha.
OUTPUT_FORMATS: Dict[str, Tuple[np.dtype, bool]] = {
    '.png': (np.dtype(np.uint16), True),
    '.tif': (np.dtype(np.float32), True),
    '.tiff': (np.dtype(np.float32), True),
    '.jpg': (np.dtype(np.uint8), False),
    '.jpeg': (np.dtype(np.uint8), False),
    '.webp': (np.dtype(np.uint8), True),
    '.bmp': (np.dtype(np.uint8), True),
}
_DEPTH = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}


@dataclass
class ImageMeta:
    """What ``write_image`` needs to give the output the input's layout."""
    dtype: np.dtype  # uint8, uint16 or float32
    grayscale: bool
    alpha: Optional[np.ndarray]  # (H, W) float in [0, 1], or None


def decode_image_array(image: np.ndarray, name: str = 'image', bgr: bool = False) -> Tuple[np.ndarray, ImageMeta]:
    """An (H, W) or (H, W, C) array, C in 1..4 (gray, gray + alpha, colour, colour + alpha), uint8, uint16 or
    float in [0, 1] -> (H, W, 3) float32 RGB in [0, 1] and its ``ImageMeta``.

    ``bgr``: the colour channels are in OpenCV's B, G, R order. Float values are clipped to [0, 1].

    Raises:
        TypeError: for another pixel type.
        ValueError: for another shape (the message names ``name`` and the shape).
    """
    dtype = np.dtype(image.dtype)
    if dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif dtype == np.uint16:
        image = image.astype(np.float32) / 65535.0
    elif dtype.kind == 'f':
        image = np.clip(image.astype(np.float32), 0, 1)
        dtype = np.dtype(np.float32)
    else:
        raise TypeError(f'{name}: unsupported pixel type {dtype} (use uint8, uint16 or float in [0, 1])')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        grayscale, rgb, alpha = True, np.repeat(image[..., None], 3, axis=2), None
    elif image.ndim == 3 and image.shape[2] in (2, 3, 4):
        grayscale = image.shape[2] == 2  # gray + alpha
        alpha = image[..., -1].copy() if image.shape[2] in (2, 4) else None
        if grayscale:
            rgb = np.repeat(image[..., :1], 3, axis=2)
        else:
            rgb = image[..., 2::-1] if bgr else image[..., :3]
    else:
        raise ValueError(f'{name}: unsupported image layout {image.shape}: expected (H, W) or (H, W, C) with C '
                         'channels last, C in 1..4' + (' (a (C, H, W) array? transpose it to (H, W, C))'
                                                       if image.ndim == 3 and image.shape[0] in (1, 3, 4) else ''))
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f'{name}: empty image {image.shape}')
    return np.ascontiguousarray(rgb), ImageMeta(dtype, grayscale, alpha)


def encode_image_array(rgb: np.ndarray, meta: ImageMeta, alpha: Optional[np.ndarray] = None,
                       dtype: Optional[np.dtype] = None, bgr: bool = False) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] (and optional (H, W) alpha) -> an array in the layout ``meta`` describes:
    (H, W) gray, (H, W, 2) gray + alpha, (H, W, 3) colour or (H, W, 4) colour + alpha, of ``dtype``
    (default ``meta.dtype``); colour in B, G, R order when ``bgr``."""
    dtype = np.dtype(dtype if dtype is not None else meta.dtype)
    if meta.grayscale:
        image = rgb.mean(axis=2, keepdims=True)
    else:
        image = rgb[..., ::-1] if bgr else rgb
    if alpha is not None:
        image = np.concatenate([image, alpha[..., None]], axis=2)
    image = np.clip(image, 0, 1)
    if dtype == np.uint8:
        image = (image * 255.0).round().astype(np.uint8)
    elif dtype == np.uint16:
        image = (image * 65535.0).round().astype(np.uint16)
    else:
        image = image.astype(dtype)
    return image[..., 0] if image.shape[2] == 1 else image


def output_layout(suffix: str, meta: ImageMeta) -> Tuple[np.dtype, bool]:
    """(pixel type, keeps alpha) of an image with ``meta`` written as ``suffix`` ('.png', '.jpg', ...)."""
    deepest, holds_alpha = OUTPUT_FORMATS.get(suffix.lower(), (np.dtype(np.uint8), False))
    dtype = meta.dtype if _DEPTH.get(np.dtype(meta.dtype), 8) <= _DEPTH[deepest] else deepest
    return np.dtype(dtype), holds_alpha and meta.alpha is not None


def read_image(path: str) -> Tuple[np.ndarray, ImageMeta]:
    """``path`` -> (H, W, 3) float32 RGB in [0, 1] and its ``ImageMeta``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if OpenCV cannot decode it, it is cut off (JPEG/PNG without their end marker), it holds
            NaN/inf pixels, or its layout is unsupported.
    """
    import cv2

    from gsasr_plugin.utils.bad_data import check_finite_pixels, check_not_truncated
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such file')
    with open(path, 'rb') as handle:
        content = handle.read()
    check_not_truncated(content, str(path))
    image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED) if content else None
    if image is None:
        raise ValueError(f'{path}: not a readable image (supported: {", ".join(IMAGE_EXTENSIONS)})')
    check_finite_pixels(image, str(path))
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    try:
        return decode_image_array(image, str(path), bgr=True)
    except TypeError as error:
        raise ValueError(f'{error} (use 8- or 16-bit images)') from None


def write_image(path: str, rgb: np.ndarray, meta: ImageMeta, alpha: Optional[np.ndarray] = None) -> None:
    """Write (H, W, 3) RGB in [0, 1] (and optional (H, W) alpha) with the input's depth and channels, as far
    as the format holds them (:func:`output_layout`: JPEG, WebP and BMP hold 8 bits, JPEG no alpha).

    The file is written atomically (``gsasr_plugin.utils.atomic_io``): a complete image or none.

    Raises:
        ValueError: when the format cannot hold this image (named with the file).
        WriteError: when the file cannot be written (read-only folder, disk full, ...), saying which.
    """
    from gsasr_plugin.utils.atomic_io import write_image_file
    dtype, keep_alpha = output_layout(Path(path).suffix, ImageMeta(meta.dtype, meta.grayscale, alpha))
    alpha = alpha if keep_alpha else None
    if meta.grayscale and alpha is not None:  # no encoder writes gray + alpha: write it as BGRA
        rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
        meta = ImageMeta(meta.dtype, False, meta.alpha)
    image = encode_image_array(rgb, meta, alpha, dtype, bgr=True)
    write_image_file(str(path), np.ascontiguousarray(image))


# ------------------------------------------------------------------------------------- network loading
def load_state_dict_from_checkpoint(path: str, param_key: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """A state dict from a checkpoint (``params_ema`` preferred, then ``params``) or a bare one
    (:func:`gsasr_plugin.checkpoint.load_checkpoint`'s weights).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a checkpoint or its layout is unknown (the message lists the keys found).
    """
    from gsasr_plugin.checkpoint import load_checkpoint
    return load_checkpoint(path, param_key).state_dict


def load_network(opt_path: Optional[str], checkpoint_path: Optional[str], device: torch.device,
                 param_key: Optional[str] = None) -> nn.Module:
    """Build ``network_g`` (from the option file ``opt_path``, else from the weights) and load the weights
    strictly; without ``checkpoint_path`` the weights stay random. ``checkpoint_path`` is anything
    :func:`gsasr_plugin.checkpoint.load_weights` reads (a checkpoint file, ``official:<name>``, a folder of
    official files, files joined by commas). See :func:`gsasr_plugin.api.load_model`."""
    from gsasr_plugin import api
    if checkpoint_path is None:
        if opt_path is None:
            raise ValueError('load_network needs an option file or a checkpoint')
        return api.build_network_from_options(api.network_options_from(opt_path)).to(device).eval()
    return api.load_model(checkpoint_path, opt=opt_path, device=device, param_key=param_key).network


# ---------------------------------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class Tile:
    """An LR tile: the encoded window [y0, y1) x [x0, x1) and its core [cy0, cy1) x [cx0, cx1)."""
    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def tile_alignment(network: nn.Module) -> int:
    """The least common multiple of every int ``window_size`` in the network (1 if none).

    Tiles start at multiples of it, so window attention partitions a tile as it does the whole image.
    """
    align = 1
    for module in network.modules():
        size = getattr(module, 'window_size', None)
        if isinstance(size, (tuple, list)) and size and all(isinstance(s, int) for s in size):
            size = max(size)
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            align = align * size // math.gcd(align, size)
    return align


def _axis_plan(length: int, tile: int, margin: int, align: int) -> List[Tuple[int, int, int, int]]:
    """(start, stop, core_start, core_stop) along one axis; cores partition [0, length)."""
    core = max(align, (tile // align) * align)
    plans = []
    for core_start in range(0, length, core):
        core_stop = min(length, core_start + core)
        start = max(0, ((core_start - margin) // align) * align)  # floor to the window grid
        stop = min(length, core_stop + margin)
        plans.append((start, stop, core_start, core_stop))
    return plans


def plan_tiles(lr_size: Tuple[int, int], tile: int, margin: int, align: int = 1) -> List[Tile]:
    """Tiles of core side ``tile`` (rounded down to ``align``) with ``margin`` LR pixels of context."""
    if tile < 1:
        raise ValueError(f'tile must be >= 1 LR pixel, got {tile}')
    rows = _axis_plan(lr_size[0], tile, margin, align)
    cols = _axis_plan(lr_size[1], tile, margin, align)
    return [Tile(y0, y1, x0, x1, cy0, cy1, cx0, cx1) for (y0, y1, cy0, cy1) in rows for (x0, x1, cx0, cx1) in cols]


def _reference_points(network: nn.Module, field: GaussianField) -> torch.Tensor:
    """(B, N, 2) point that decides which tile owns each Gaussian.

    GSASR-style fields (m = r * r Gaussians per LR pixel, row-major over the (h * r, w * r) grid) use the
    Gaussian's reference point, which cannot move; other fields use the means.
    """
    side = getattr(network, 'gaussians_per_side', None)
    height, width = field.lr_size
    if isinstance(side, int) and field.num_gaussians == height * width * side * side:
        ys = (torch.arange(height * side, device=field.means.device, dtype=field.means.dtype) + 0.5) / side
        xs = (torch.arange(width * side, device=field.means.device, dtype=field.means.dtype) + 0.5) / side
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        return torch.stack((grid_x, grid_y), dim=-1).view(1, -1, 2).expand_as(field.means)
    return field.means


def _concat_fields(fields: Sequence[GaussianField], lr_size: Tuple[int, int]) -> GaussianField:
    """One field over the whole image from the tiles' fields (a tile's own canvas does not carry over; the
    official box cut-off, the same for every tile, does)."""
    opacities = None
    if all(f.opacities is not None for f in fields):
        opacities = torch.cat([f.opacities for f in fields], dim=1)
    return GaussianField(means=torch.cat([f.means for f in fields], dim=1),
                         sigmas=torch.cat([f.sigmas for f in fields], dim=1),
                         rhos=torch.cat([f.rhos for f in fields], dim=1),
                         colors=torch.cat([f.colors for f in fields], dim=1), lr_size=tuple(lr_size),
                         opacities=opacities, box_cutoff=fields[0].box_cutoff if fields else None)


def _float_field(field: GaussianField) -> GaussianField:
    """Render in float32 whatever precision the decoder ran in (the field's canvas and cut-off kept)."""
    return dataclasses.replace(field, means=field.means.float(), sigmas=field.sigmas.float(),
                               rhos=field.rhos.float(), colors=field.colors.float(),
                               opacities=None if field.opacities is None else field.opacities.float())


def encode_tiled(network: nn.Module, lq: torch.Tensor, scale: Tuple[float, float], tile: int,
                 margin: Optional[int] = None, progress: bool = False, bf16: bool = False) -> GaussianField:
    """Encode ``lq`` (1, C, h, w) tile by tile into one ``GaussianField`` over the whole image.

    Every tile is encoded with the whole image's ``scale`` (GSASR's field depends on it), with ``margin``
    LR pixels of context on each side (default: two alignment units, at least 8), and keeps the
    Gaussians whose reference point lies in its core, shifted by the tile's LR offset.
    """
    if lq.shape[0] != 1:
        raise ValueError(f'tiled encoding takes one image at a time, got a batch of {lq.shape[0]}')
    height, width = lq.shape[-2:]
    align = tile_alignment(network)
    if margin is None:
        margin = max(8, 2 * align)
    tiles = plan_tiles((height, width), tile, margin, align)
    iterator: Iterable[Tile] = tiles
    if progress and len(tiles) > 1:
        from tqdm import tqdm
        iterator = tqdm(tiles, desc='tiles', unit='tile', leave=False)
    parts = []
    for t in iterator:
        field = _encode(network, lq[..., t.y0:t.y1, t.x0:t.x1], scale, bf16)
        if not isinstance(field, GaussianField):
            raise TiledEncodingUnsupported(
                f'{type(network).__name__}.encode returns a {type(field).__name__}, not a GaussianField: tiled '
                'inference merges Gaussians only (use --tile 0)')
        ref = _reference_points(network, field)
        inf = float('inf')
        # cores at the image border reach to infinity, so Gaussians pushed outside the image still belong
        low_x = t.cx0 - t.x0 if t.cx0 > 0 else -inf
        high_x = t.cx1 - t.x0 if t.cx1 < width else inf
        low_y = t.cy0 - t.y0 if t.cy0 > 0 else -inf
        high_y = t.cy1 - t.y0 if t.cy1 < height else inf
        keep = ((ref[0, :, 0] >= low_x) & (ref[0, :, 0] < high_x) & (ref[0, :, 1] >= low_y) &
                (ref[0, :, 1] < high_y))
        index = keep.nonzero().squeeze(1)
        offset = torch.tensor([t.x0, t.y0], device=field.means.device, dtype=field.means.dtype)
        parts.append(
            GaussianField(means=field.means[:, index] + offset, sigmas=field.sigmas[:, index],
                          rhos=field.rhos[:, index], colors=field.colors[:, index], lr_size=(height, width),
                          opacities=None if field.opacities is None else field.opacities[:, index]))
    return _concat_fields(parts, (height, width))


class TiledEncodingUnsupported(ValueError):
    """The network's field is not a plain ``GaussianField`` (e.g. GaussianSR's), so tiles cannot be merged."""


def _encode(network: nn.Module, lq: torch.Tensor, scale: Tuple[float, float], bf16: bool):
    with torch.no_grad(), torch.autocast(device_type=lq.device.type, dtype=torch.bfloat16, enabled=bf16):
        field = network.encode(lq, scale)
    return _float_field(field) if isinstance(field, GaussianField) else field


def _bytes_per_lr_pixel(network: nn.Module) -> float:
    """A rough activation footprint of encoding one LR pixel, from the decoder's width and density."""
    width = getattr(network, 'embed_dim', 64)
    side = getattr(network, 'gaussians_per_side', 4)
    return 4.0 * width * side * side * 12 + 4.0 * 64 * 40  # decoder tokens x live copies + encoder maps


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (CUDA: free memory; CPU: MemAvailable, or 4 GiB if unknown)."""
    if device.type == 'cuda':
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open('/proc/meminfo', encoding='ascii') as handle:
            for line in handle:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def auto_tile_size(network: nn.Module, lr_size: Tuple[int, int], device: torch.device,
                   fraction: float = 0.5) -> Optional[int]:
    """Core tile side that fits ``fraction`` of free memory, or None when the whole image fits."""
    budget = available_memory(device) * fraction
    per_pixel = _bytes_per_lr_pixel(network)
    if lr_size[0] * lr_size[1] * per_pixel <= budget:
        return None
    align = tile_alignment(network)
    side = int(math.sqrt(budget / per_pixel)) // 2  # the margins roughly double a tile's area
    return max(align, (side // align) * align, 16)


def super_resolve(network: nn.Module, lq: torch.Tensor, scale: Optional[ScaleLike] = None,
                  out_size: Optional[Tuple[int, int]] = None, tile: Optional[int] = None,
                  margin: Optional[int] = None, bf16: bool = False,
                  progress: bool = False) -> Tuple[torch.Tensor, GaussianField]:
    """Super-resolve ``lq`` (1, 3, h, w) float in [0, 1] -> ((1, 3, Ho, Wo) in [0, 1], the Gaussian field).

    ``scale`` is a number or a pair (s_h, s_w); ``out_size`` (Ho, Wo) wins over it for the size, and the
    conditioning scale is then ``scale`` or (Ho / h, Wo / w). ``tile=None`` picks tiles from free memory
    (none if the image fits), ``tile=0`` never tiles, ``tile=N`` uses N x N LR cores. For numpy images,
    other dtypes, gray or alpha, use :class:`gsasr_plugin.api.Upscaler`.
    """
    if not isinstance(lq, torch.Tensor) or lq.ndim != 4 or lq.shape[1] != 3 or not lq.dtype.is_floating_point:
        shown = (f'a {lq.dtype} tensor of shape {tuple(lq.shape)}' if isinstance(lq, torch.Tensor)
                 else f'a {type(lq).__name__}')
        raise TypeError(f'lq must be a (1, 3, h, w) float tensor in [0, 1], got {shown}; for numpy arrays, '
                        'integer images, gray or alpha use gsasr_plugin.load_model(...).upscale(image, scale)')
    height, width = lq.shape[-2:]
    scale, out_size = resolve_scale_and_size((height, width), scale, out_size)
    automatic = tile is None
    if automatic:
        tile = auto_tile_size(network, (height, width), lq.device) or 0
    field = None
    if tile and (tile < height or tile < width):
        try:
            field = encode_tiled(network, lq, scale, tile, margin, progress=progress, bf16=bf16)
        except TiledEncodingUnsupported:
            if not automatic:
                raise
    if field is None:
        field = _encode(network, lq, scale, bf16)
    with torch.no_grad():
        output = network.render(field, out_size) if hasattr(network, 'render') else field.render(out_size)
    if not bool(torch.isfinite(output).all()):
        raise NonFiniteOutputError('the model produced non-finite values (NaN/inf) for this image: its weights '
                                   'are broken (a diverged run?) or overflow on this input')
    return output.float().clamp_(0, 1), field


class NonFiniteOutputError(ValueError):
    """The network's output holds NaN or inf (non-finite Gaussians raise ``NonFiniteGaussiansError`` earlier)."""
