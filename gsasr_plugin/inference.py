"""Super-resolving one image with any SR network (:class:`gsasr_plugin.archs.sr_network.SRNetwork`), whole or
in tiles: the core of the Python API (:mod:`gsasr_plugin.api`), ``basicsr infer`` and the model's ``tile:`` option.

Tiles: overlapping LR tiles (starting on the network's ``alignment`` grid) are encoded to Gaussians with
the whole image's scale; each tile keeps the Gaussians that its core (non-overlapping) region owns (by the
network's ``reference_points``), shifted to full-image coordinates; all tiles' Gaussians are rendered once
into one canvas, so there are no seams to blend. :func:`auto_tile_size` picks tiles from free memory.
"""
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from gsasr_plugin.archs.gaussian_field import (GaussianField, concat_fields, float_field, select_gaussians,
                                               shift_field)
from gsasr_plugin.archs.sr_network import SRNetwork
from gsasr_plugin.utils.memory import available_memory
from gsasr_plugin.utils.scale import (ScaleLike, ScalePair, Size, Target, check_size_rule, resolve_scale_and_size,
                                      scaled_size)

__all__ = ['plan_tiles', 'auto_tile_size', 'available_memory', 'encode_tiled', 'super_resolve',
           'super_resolve_many', 'resolve_requests', 'Tile', 'TiledEncodingUnsupported', 'NonFiniteOutputError']


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


def _axis_plan(length: int, tile_size: int, tile_pad: int, align: int) -> List[Tuple[int, int, int, int]]:
    """(start, stop, core_start, core_stop) along one axis; cores partition [0, length)."""
    core = max(align, (tile_size // align) * align)
    plans = []
    for core_start in range(0, length, core):
        core_stop = min(length, core_start + core)
        start = max(0, ((core_start - tile_pad) // align) * align)  # floor to the window grid
        stop = min(length, core_stop + tile_pad)
        plans.append((start, stop, core_start, core_stop))
    return plans


def plan_tiles(lr_size: Tuple[int, int], tile_size: int, tile_pad: int, align: int = 1) -> List[Tile]:
    """Tiles of core side ``tile_size`` (rounded down to ``align``) with ``tile_pad`` LR pixels of context."""
    if tile_size < 1:
        raise ValueError(f'tile_size must be >= 1 LR pixel, got {tile_size}')
    rows = _axis_plan(lr_size[0], tile_size, tile_pad, align)
    cols = _axis_plan(lr_size[1], tile_size, tile_pad, align)
    return [Tile(y0, y1, x0, x1, cy0, cy1, cx0, cx1) for (y0, y1, cy0, cy1) in rows for (x0, x1, cx0, cx1) in cols]


def encode_tiled(network: SRNetwork, lq: torch.Tensor, scale: ScalePair, tile_size: int,
                 tile_pad: Optional[int] = None, progress: bool = False, bf16: bool = False,
                 on_tile: Optional[Callable[[int, int], None]] = None) -> GaussianField:
    """Encode ``lq`` (1, C, h, w) tile by tile into one ``GaussianField`` over the whole image.

    Every tile is encoded with the whole image's ``scale`` (a validated pair; GSASR's field depends on it), with
    ``tile_pad`` LR pixels of context on each side (default: two alignment units, at least 8), and keeps the
    Gaussians whose reference point (``network.reference_points``) lies in its core, shifted by the tile's LR
    offset. ``on_tile(done, total)`` is called after each tile (a progress bar, or a stop button: what it
    raises ends the encoding).

    Raises:
        TiledEncodingUnsupported: the network's field is not a ``GaussianField`` (GaussianSR's).
    """
    if lq.shape[0] != 1:
        raise ValueError(f'tiled encoding takes one image at a time, got a batch of {lq.shape[0]}')
    height, width = lq.shape[-2:]
    align = network.alignment
    if tile_pad is None:
        tile_pad = max(8, 2 * align)
    tiles = plan_tiles((height, width), tile_size, tile_pad, align)
    iterator: Iterable[Tile] = tiles
    if progress and len(tiles) > 1:
        from tqdm import tqdm
        iterator = tqdm(tiles, desc='tiles', unit='tile', leave=False)
    parts = []
    for t in iterator:
        tile_lq = lq[..., t.y0:t.y1, t.x0:t.x1]
        target = Target(scale, scaled_size(tile_lq.shape[-2:], scale))
        field = _encode(network, tile_lq, target, bf16)
        if not isinstance(field, GaussianField):
            raise TiledEncodingUnsupported(
                f'{type(network).__name__}.encode returns a {type(field).__name__}, not a GaussianField: tiled '
                'inference merges Gaussians only (use --tile-size 0)')
        ref = network.reference_points(field)
        inf = float('inf')
        # cores at the image border reach to infinity, so Gaussians pushed outside the image still belong
        low_x = t.cx0 - t.x0 if t.cx0 > 0 else -inf
        high_x = t.cx1 - t.x0 if t.cx1 < width else inf
        low_y = t.cy0 - t.y0 if t.cy0 > 0 else -inf
        high_y = t.cy1 - t.y0 if t.cy1 < height else inf
        keep = ((ref[0, :, 0] >= low_x) & (ref[0, :, 0] < high_x) & (ref[0, :, 1] >= low_y) &
                (ref[0, :, 1] < high_y))
        parts.append(shift_field(select_gaussians(field, keep.nonzero().squeeze(1)), (t.x0, t.y0), (height, width)))
        if on_tile is not None:
            on_tile(len(parts), len(tiles))
    return concat_fields(parts, (height, width))


class TiledEncodingUnsupported(ValueError):
    """The network's field is not a plain ``GaussianField`` (e.g. GaussianSR's), so tiles cannot be merged."""


def _encode(network: SRNetwork, lq: torch.Tensor, target: Target, bf16: bool):
    """``network``'s field of ``lq`` for a validated ``target`` (float32 Gaussians whatever the autocast)."""
    return _decode(network, _encode_features(network, lq, bf16), target, bf16, lq.device.type)


def _encode_features(network: SRNetwork, lq: torch.Tensor, bf16: bool):
    with torch.no_grad(), torch.autocast(device_type=lq.device.type, dtype=torch.bfloat16, enabled=bf16):
        return network.encode_features(lq)


def _decode(network: SRNetwork, features, target: Target, bf16: bool, device_type: str):
    """The field of ``features`` (``encode_features``'s) for ``target``: float32 Gaussians whatever the autocast."""
    with torch.no_grad(), torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=bf16):
        field = network.decode_field(features, target)
    return float_field(field) if isinstance(field, GaussianField) else field


def auto_tile_size(network: SRNetwork, lr_size: Tuple[int, int], device: torch.device,
                   fraction: float = 0.5) -> Optional[int]:
    """Core tile side that fits ``fraction`` of free memory, or None when the whole image fits."""
    budget = available_memory(device) * fraction
    per_pixel = network.bytes_per_lr_pixel()
    if lr_size[0] * lr_size[1] * per_pixel <= budget:
        return None
    align = network.alignment
    side = int(math.sqrt(budget / per_pixel)) // 2  # the margins roughly double a tile's area
    return max(align, (side // align) * align, 16)


def super_resolve(network: SRNetwork, lq: torch.Tensor, scale: Optional[ScaleLike] = None,
                  out_size: Optional[Tuple[int, int]] = None, tile_size: Optional[int] = None,
                  tile_pad: Optional[int] = None, bf16: bool = False, progress: bool = False,
                  size_rule: Optional[str] = None) -> Tuple[torch.Tensor, GaussianField]:
    """Super-resolve ``lq`` (1, 3, h, w) float in [0, 1] -> ((1, 3, Ho, Wo) in [0, 1], the Gaussian field).

    ``scale`` is a number or a pair (s_h, s_w); ``out_size`` (Ho, Wo) wins over it for the size, and the
    conditioning scale is then ``scale`` or (Ho / h, Wo / w). Without ``out_size`` the size is
    ``utils.scale.scaled_size`` under ``size_rule`` (None: the network's own, ``network.size_rule``).
    ``tile_size=None`` picks tiles from free memory (none if the image fits), ``tile_size=0`` never tiles,
    ``tile_size=N`` uses N x N LR cores with ``tile_pad`` LR pixels of context (default: two alignment units, at
    least 8). For numpy images, other dtypes, gray or alpha, use :class:`gsasr_plugin.api.Upscaler`.
    """
    _check_inputs(network, lq)
    targets = resolve_requests(network, lq.shape[-2:], [(scale, out_size)], size_rule)
    return next(super_resolve_many(network, lq, targets, tile_size, tile_pad, bf16, progress))


def resolve_requests(network: SRNetwork, lr_size: Sequence[int], requests: Sequence[Tuple[Optional[ScaleLike],
                                                                                      Optional[Size]]],
                     size_rule: Optional[str] = None) -> List[Target]:
    """Validated targets of ``(scale, out_size)`` requests for an image of ``lr_size`` (``size_rule`` None: the
    network's)."""
    rule = network.size_rule if size_rule is None else check_size_rule(size_rule)
    return [resolve_scale_and_size((int(lr_size[0]), int(lr_size[1])), scale, size, rule) for scale, size in requests]


def super_resolve_many(network: SRNetwork, lq: torch.Tensor, targets: Sequence[Target],
                       tile_size: Optional[int] = None, tile_pad: Optional[int] = None, bf16: bool = False,
                       progress: bool = False) -> Iterator[Tuple[torch.Tensor, GaussianField]]:
    """:func:`super_resolve` of one image for several validated ``targets`` (:func:`resolve_requests`), one
    (output, field) at a time: the encoder runs once when the image is not tiled (a scale-conditioned
    decoder once per target), and every output is what :func:`super_resolve` gives for its target alone."""
    _check_inputs(network, lq)
    height, width = lq.shape[-2:]
    automatic = tile_size is None
    if automatic:
        tile_size = auto_tile_size(network, (height, width), lq.device) or 0
    tiled = bool(tile_size and (tile_size < height or tile_size < width))
    features = None
    for target in targets:
        field = None
        if tiled:
            try:
                field = encode_tiled(network, lq, target.scale, tile_size, tile_pad, progress=progress, bf16=bf16)
            except TiledEncodingUnsupported:
                if not automatic:
                    raise
                tiled = False
        if field is None:
            if features is None:
                features = _encode_features(network, lq, bf16)
            field = _decode(network, features, target, bf16, lq.device.type)
        with torch.no_grad():
            output = network.render(field, target.size)
        if not bool(torch.isfinite(output).all()):
            raise NonFiniteOutputError('the model produced non-finite values (NaN/inf) for this image: its weights '
                                       'are broken (a diverged run?) or overflow on this input')
        yield output.float().clamp_(0, 1), field


def _check_inputs(network: SRNetwork, lq: torch.Tensor) -> None:
    if not isinstance(lq, torch.Tensor) or lq.ndim != 4 or lq.shape[1] != 3 or not lq.dtype.is_floating_point:
        shown = (f'a {lq.dtype} tensor of shape {tuple(lq.shape)}' if isinstance(lq, torch.Tensor)
                 else f'a {type(lq).__name__}')
        raise TypeError(f'lq must be a (1, 3, h, w) float tensor in [0, 1], got {shown}; for numpy arrays, '
                        'integer images, gray or alpha use gsasr_plugin.load_model(...).upscale(image, scale)')
    if not isinstance(network, SRNetwork):
        raise TypeError(f'network {type(network).__name__} is not an SR network (gsasr_plugin.archs.sr_network.'
                        'SRNetwork: encode_features / decode_field / render)')


class NonFiniteOutputError(ValueError):
    """The network's output holds NaN or inf (non-finite Gaussians raise ``NonFiniteGaussiansError`` earlier)."""
