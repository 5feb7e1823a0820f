"""Several scales of one image and continuous-zoom sequences: encode once, render many; and their writers.

Works with every SR network (:class:`gsasr_plugin.archs.sr_network.SRNetwork`) through its contract:
``encode_features`` runs once; ContinuousSR's and GaussianSR's fields do not depend on the scale
(``field_depends_on_scale = False``), so one ``decode_field`` serves every output size and every zoom frame,
each costing one render (the rasterizer; for GaussianSR also its bicubic stream and texture decoder at the
output size). GSASR conditions its Gaussians on the scale, so for it the decoder is re-run for every distinct
scale (the encoder features are computed once).

A zoom frame shows a window of the LR image plane (top, left, bottom, right in LR pixels) at a fixed
frame size: the network's ``render(field, size, window)``. Gaussians whose cutoff box misses the window are
dropped first (``cull_to_window``, exact: they add nothing).

Used by ``basicsr infer --scales`` / ``--zoom`` (``gsasr_plugin.commands.infer``); usable as a library::

    from gsasr_plugin.zoom import ZoomRenderer, zoom_windows, save_gif
    renderer = ZoomRenderer(net, lq)                 # encodes once (per scale for GSASR)
    outputs = renderer.render_scales([2, 3.5, (2, 4)])
    frames = renderer.render_windows(zoom_windows(lq.shape[-2:], 48, max_zoom=6), frame_size=(256, 256))
    save_gif(frames, 'zoom.gif')
"""
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from gsasr_plugin.archs.gaussian_field import GaussianField, Window, check_window, cull_to_window, whole_window
from gsasr_plugin.archs.sr_network import SRNetwork
from gsasr_plugin.inference import TiledEncodingUnsupported, encode_tiled
from gsasr_plugin.ops import DEFAULT_CUTOFF
from gsasr_plugin.utils.atomic_io import atomic_write
from gsasr_plugin.utils.scale import (DEFAULT_SIZE_RULE, ScaleLike, Target, check_out_size, check_size_rule,
                                      lr_size_of, resolve_scale_and_size, scaled_size, to_scale_pair)

__all__ = ['ZoomRenderer', 'zoom_windows', 'zoom_frame_size', 'to_uint8_frames', 'save_gif', 'save_frames']


def zoom_windows(lr_size: Sequence[int], num_frames: int, max_zoom: float = 4.0,
                 center: Optional[Tuple[float, float]] = None) -> List[Window]:
    """Windows zooming from the whole image to 1 / ``max_zoom`` of it around ``center`` (y, x), LR pixels.

    The zoom grows geometrically (constant apparent speed); windows keep the image's aspect ratio and
    are shifted to stay inside the image.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f'num_frames must be an integer >= 1, got {num_frames!r}')
    if not isinstance(max_zoom, (int, float)) or isinstance(max_zoom, bool) or not max_zoom >= 1:
        raise ValueError(f'max_zoom must be a number >= 1, got {max_zoom!r}')
    height, width = float(lr_size[0]), float(lr_size[1])
    cy, cx = (height / 2, width / 2) if center is None else (float(center[0]), float(center[1]))
    if not (0 <= cy <= height and 0 <= cx <= width):
        raise ValueError(f'zoom center (y, x) must lie in the image [0, {height:g}] x [0, {width:g}], got {center!r}')
    windows = []
    for k in range(num_frames):
        zoom = max_zoom**(k / (num_frames - 1)) if num_frames > 1 else 1.0
        win_h, win_w = height / zoom, width / zoom
        top = min(max(cy - win_h / 2, 0.0), height - win_h)
        left = min(max(cx - win_w / 2, 0.0), width - win_w)
        windows.append((top, left, top + win_h, left + win_w))
    return windows


class ZoomRenderer:
    """Encode ``lq`` once (decode once per scale for scale-conditioned networks) and render it many times.

    Args:
        net: an SR network (``GSASR``, ``GaussianSR``, ``ContinuousSR``: :class:`SRNetwork`).
        lq: (B, 3, h, w) LR images in [0, 1].
        cutoff: Cutoff used to cull Gaussians outside a window; default: the network's, else the rasterizer's.
        tile_size: LR tile side for encoding a large image (``gsasr_plugin.inference.encode_tiled``; batch 1);
            None or 0 encodes it whole. Tiles keep no encoder features, so a scale-conditioned network
            re-encodes per new scale; a network whose field tiles cannot merge (GaussianSR's) is encoded whole.
        tile_pad: LR context pixels around each tile (default: ``encode_tiled``'s).
        on_tile: ``on_tile(done, total)`` after each tile (progress; what it raises ends the encoding).
        size_rule: How :meth:`render_scales` sizes a scale (``utils.scale.scaled_size``); None: the network's.

    Attributes:
        encodes: How many times the field was decoded (1 for scale-free networks; the encoder runs once).
        feature_encodes: How many times the encoder ran (once, unless tiles are re-encoded per scale).
    """

    def __init__(self, net: SRNetwork, lq: torch.Tensor, cutoff: Optional[float] = None,
                 tile_size: Optional[int] = None, tile_pad: Optional[int] = None,
                 on_tile: Optional[Callable[[int, int], None]] = None, size_rule: Optional[str] = None):
        if not isinstance(net, SRNetwork):
            raise TypeError(f'{type(net).__name__} is not an SR network (gsasr_plugin.archs.sr_network.SRNetwork)')
        self.net = net
        self.lq = lq
        self.lr_size = lr_size_of(lq)
        self.scale_free = not net.field_depends_on_scale
        self.cutoff = float(cutoff if cutoff is not None else (net.cutoff or DEFAULT_CUTOFF))
        self.tile_size = tile_size if tile_size and (tile_size < max(self.lr_size)) else 0
        self.tile_pad = tile_pad
        self.on_tile = on_tile
        self.size_rule = check_size_rule(size_rule if size_rule is not None else net.size_rule)
        self.encodes = 0
        self.feature_encodes = 0
        self._fields: Dict[Tuple[float, float], Any] = {}
        self._features: Any = None

    # ---------------------------------------------------------------------------------------- fields
    def field_key(self, scale: Tuple[float, float]) -> Tuple[float, float]:
        """The cache key of the field for ``scale`` (one key for every scale of a scale-free network)."""
        return (1.0, 1.0) if self.scale_free else (round(scale[0], 6), round(scale[1], 6))

    def has_field(self, scale: Tuple[float, float]) -> bool:
        """Whether the field for ``scale`` is cached (rendering it runs no network)."""
        return self.field_key(scale) in self._fields

    @property
    def has_features(self) -> bool:
        """Whether the encoder features are cached (a new scale then runs the decoder only)."""
        return self._features is not None

    @torch.no_grad()
    def field(self, scale: Tuple[float, float] = (1.0, 1.0), size: Optional[Tuple[int, int]] = None):
        """The field for a validated ``scale`` pair (the one field of a scale-free network whatever the scale),
        decoded for exactly that scale (fields are kept by :meth:`field_key`). With the output ``size`` of a
        whole-image render, a scale-free network's field is given that target too (``decode_field`` only adjusts
        it, e.g. ContinuousSR's ``covariance_scale: requested_scale``): what ``net.encode(lq, scale, size)``
        gives."""
        key = self.field_key(scale)
        if key not in self._fields:
            target = None if self.scale_free else resolve_scale_and_size(self.lr_size, scale, size, self.size_rule)
            if self.tile_size:
                try:
                    self._fields[key] = encode_tiled(self.net, self.lq, scale, self.tile_size, self.tile_pad,
                                                     on_tile=self.on_tile)
                    self.feature_encodes += 1
                except TiledEncodingUnsupported:
                    self.tile_size = 0
            if key not in self._fields:
                if self._features is None:
                    self._features = self.net.encode_features(self.lq)
                    self.feature_encodes += 1
                self._fields[key] = self.net.decode_field(self._features, target)
            self.encodes += 1
            if len(self._fields) > 8:  # keep memory bounded over long zooms
                self._fields.pop(next(iter(self._fields)))
        if self.scale_free and size is not None and self._features is not None:
            return self.net.decode_field(self._features, Target(scale, size))
        return self._fields[key]

    def forget_fields(self) -> None:
        """Drop the cached fields (the encoder features stay): the next render decodes again."""
        self._fields.clear()

    # --------------------------------------------------------------------------------------- renders
    def cached_scales(self) -> List[Tuple[float, float]]:
        """The scales whose fields are kept (one entry, (1, 1), for a scale-free network once encoded)."""
        return list(self._fields)

    def nearest_cached_scale(self, scale: Tuple[float, float]) -> Optional[Tuple[float, float]]:
        """The kept field's scale nearest to ``scale`` (by ratio), or None when no field is kept."""
        if not self._fields:
            return None
        return min(self._fields, key=lambda k: abs(math.log(k[0] / scale[0])) + abs(math.log(k[1] / scale[1])))

    @torch.no_grad()
    def render(self, out_size: Sequence[int], window: Optional[Sequence[float]] = None,
               scale: Optional[ScaleLike] = None, field_scale: Optional[ScaleLike] = None) -> torch.Tensor:
        """(B, C, Ho, Wo) render of ``window`` (default: the whole image) at ``out_size`` = (Ho, Wo).

        ``scale`` conditions a scale-dependent network (default: ``out_size`` over the window's size); for the
        whole image the render is ``net(lq, scale, out_size)``. ``field_scale`` renders the field of that scale
        instead: for a scale-dependent network, an approximation of ``scale`` (a preview from a field at hand,
        e.g. :meth:`nearest_cached_scale`).
        """
        out_size = check_out_size(out_size)
        view = check_window(window, self.lr_size)
        if scale is None:
            scale = (out_size[0] / (view[2] - view[0]), out_size[1] / (view[3] - view[1]))
        scale = to_scale_pair(field_scale if field_scale is not None else scale)
        if view == whole_window(self.lr_size):
            return self.net.render(self.field(scale, out_size), out_size)
        field = self.field(scale)
        if isinstance(field, GaussianField):
            field = cull_to_window(field, view, self.cutoff)
        return self.net.render(field, out_size, window=view)

    def render_scales(self, scales: Sequence[ScaleLike] = (),
                      sizes: Sequence[Sequence[int]] = ()) -> List[torch.Tensor]:
        """Renders of the whole image at each scale (its size by :attr:`size_rule`, conditioned on the scale
        itself: ``net(lq, scale)``), then at each size (``net(lq, out_size=size)``)."""
        outputs = []
        for scale in scales:
            target = resolve_scale_and_size(self.lr_size, scale, size_rule=self.size_rule)
            outputs.append(self.render(target.size, scale=target.scale))
        for size in sizes:
            outputs.append(self.render(size))
        return outputs

    def render_windows(self, windows: Sequence[Sequence[float]], frame_size: Sequence[int]) -> List[torch.Tensor]:
        """One frame of ``frame_size`` (Ho, Wo) per window: a zoom sequence."""
        return [self.render(frame_size, window) for window in windows]


# ----------------------------------------------------------------------------------------- writing
def to_uint8_frames(frames: Sequence[torch.Tensor], index: int = 0) -> List[np.ndarray]:
    """(B, 3, H, W) renders -> (H, W, 3) uint8 RGB arrays of batch item ``index``."""
    return [(f[index].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            for f in frames]


def save_gif(frames: Sequence[Union[torch.Tensor, np.ndarray]], path: Union[str, Path], duration_ms: int = 80,
             boomerang: bool = True) -> Path:
    """Write frames (renders or uint8 RGB arrays of one size) as a looping GIF; ``boomerang`` plays back too."""
    from PIL import Image
    arrays = list(frames) if all(isinstance(f, np.ndarray) for f in frames) else to_uint8_frames(frames)
    if not arrays:
        raise ValueError('save_gif needs at least one frame')
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f'all GIF frames must have one size, got {sorted({a.shape for a in arrays})}')
    if boomerang and len(arrays) > 2:
        arrays = arrays + arrays[-2:0:-1]
    images = [Image.fromarray(a) for a in arrays]
    path = Path(path)
    with atomic_write(str(path)) as handle:
        images[0].save(handle, format='GIF', save_all=True, append_images=images[1:], duration=int(duration_ms),
                       loop=0, optimize=False)
    return path


def save_frames(frames: Sequence[Union[torch.Tensor, np.ndarray]], folder: Union[str, Path],
                stem: str = 'frame') -> List[Path]:
    """Write frames as ``folder/<stem>_0000.png`` ...; returns the paths."""
    from PIL import Image
    arrays = list(frames) if all(isinstance(f, np.ndarray) for f in frames) else to_uint8_frames(frames)
    folder = Path(folder)
    paths = []
    for k, array in enumerate(arrays):
        path = folder / f'{stem}_{k:04d}.png'
        with atomic_write(str(path)) as handle:
            Image.fromarray(array).save(handle, format='PNG')
        paths.append(path)
    return paths


def zoom_frame_size(lr_size: Sequence[int], scale: Optional[Tuple[float, float]] = None,
                    size: Optional[Tuple[int, int]] = None, rule: str = DEFAULT_SIZE_RULE) -> Tuple[int, int]:
    """Frame size (Ho, Wo): ``size`` when given, else the LR size times ``scale`` (default x4) by ``rule``."""
    if size is not None:
        return int(size[0]), int(size[1])
    return scaled_size(lr_size, scale if scale is not None else 4.0, rule)
