"""The contract of the Gaussian-splatting SR networks: ``SRNetwork``, the base class of ``GSASR`` (and its
subclass ``GSASRRoPE``), ``GaussianSR`` and ``ContinuousSR``.

Not an ``*_arch.py``: BasicSR registers the networks of those files; this one holds none.

A network predicts a *field* from the LR image and renders it at any size. Encoding is split at the point
where the scale enters, so that callers can encode once and decode / render many times:

* :meth:`SRNetwork.encode_features` ``(lq) -> features``: the part that does not depend on the scale (for
  ``GSASR`` the encoder features; for the scale-free networks their whole field);
* :meth:`SRNetwork.decode_field` ``(features, target) -> field``: the field for a validated
  :class:`~gsasr_plugin.utils.scale.Target` (scale, output size), or for no target (scale-free networks);
* :meth:`SRNetwork.render` ``(field, out_size, window=None) -> (B, C, Ho, Wo)``: ``out_size`` a pair of ints,
  ``window`` a checked :data:`~gsasr_plugin.archs.gaussian_field.Window` (a zoom into that part of the LR
  plane) or None.

The public boundary, defined here once, validates its arguments with :mod:`gsasr_plugin.utils.scale`:
:meth:`SRNetwork.forward` ``(lq, scale=None, out_size=None, pixel_index=None)`` and
:meth:`SRNetwork.encode` ``(lq, scale=None, out_size=None)``. Zoom, tiling, the Python API and the model
call the three methods above with validated values. A network also declares
:attr:`SRNetwork.field_depends_on_scale`, :attr:`SRNetwork.alignment` and
:meth:`SRNetwork.reference_points` (which tile owns a Gaussian in tiled inference).
"""
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import nn

from gsasr_plugin.archs.encoder_registry import build_encoder as build_registered_encoder
from gsasr_plugin.archs.gaussian_field import GaussianField, Window
from gsasr_plugin.utils.sampled_pixels import gather_pixels
from gsasr_plugin.utils.scale import (DEFAULT_SIZE_RULE, ScaleLike, Size, Target, check_size_rule, lr_size_of,
                                      resolve_scale_and_size)

__all__ = ['SRNetwork', 'activation_bytes']


class SRNetwork(nn.Module):
    """Base class of the SR networks: encoder building, the validated public ``forward`` / ``encode``, and the
    methods every network implements (see the module docstring).

    Attributes:
        field_depends_on_scale: whether a field is valid for the scale it was decoded for only (``GSASR``:
            its Gaussians are conditioned on the scale), or for every output size (the field is encoded
            once and rendered many times).
        cutoff: the rasterizer cut-off (standard deviations) the network renders with; None: the rasterizer's.
        size_rule: how the output size follows from a scale alone (``utils.scale.scaled_size``: ``'round'``,
            ``'floor'``, ``'ceil'``); every network takes it as its ``size_rule`` option, so that a released
            model carries its authors' rule (the official GSASR inference: ``floor``).
    """

    field_depends_on_scale: bool = True
    cutoff: Optional[float] = None  # the rasterizer cut-off in standard deviations (None: the rasterizer's)

    def __init__(self, size_rule: str = DEFAULT_SIZE_RULE):
        super().__init__()
        self.size_rule = check_size_rule(size_rule)

    # ------------------------------------------------------------------------------------ building
    def build_encoder(self, options: Optional[Mapping[str, Any]], default_type: str) -> int:
        """Build ``self.encoder`` from its nested options (``{'type': default_type}`` when None); returns its
        ``out_channels``.

        Raises:
            ValueError: for unknown types, or an encoder without int attributes ``out_channels`` and
                ``alignment`` (the encoder contract, docs/layout.md).
        """
        self.encoder = build_registered_encoder(options if options is not None else {'type': default_type})
        channels = getattr(self.encoder, 'out_channels', None)
        alignment = getattr(self.encoder, 'alignment', None)
        for name, value in (('out_channels', channels), ('alignment', alignment)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'encoder {type(self.encoder).__name__} must expose an int attribute {name}')
        return channels

    @staticmethod
    def check_cutoff(cutoff: Optional[float]) -> Optional[float]:
        """The rasterizer cut-off option: None or a number > 0."""
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f'cutoff must be > 0 or None, got {cutoff!r}')
        return cutoff

    # ---------------------------------------------------------------------------- public boundary
    def forward(self, lq: torch.Tensor, scale: Optional[ScaleLike] = None, out_size: Optional[Sequence[int]] = None,
                pixel_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Super-resolve ``lq`` (B, C, h, w) to ``out_size`` or, without it, to ``scaled_size(lq's size, scale,
        self.size_rule)`` ((round(h * s_h), round(w * s_w)) under the default rule).

        ``out_size`` wins; with only ``out_size`` the scale is (Ho / h, Wo / w). With ``pixel_index`` (B, Q)
        flat output pixel indices, returns only those pixels, (B, C, Q) (sampled-pixel training).
        """
        target = resolve_scale_and_size(lr_size_of(lq), scale, out_size, self.size_rule)
        field = self.decode_field(self.encode_features(lq), target)
        if pixel_index is None:
            return self.render(field, target.size)
        return self.render_pixels(field, target.size, pixel_index)

    def encode(self, lq: torch.Tensor, scale: Optional[ScaleLike] = None,
               out_size: Optional[Sequence[int]] = None) -> Any:
        """The field of ``lq`` (B, C, h, w) for ``scale`` / ``out_size`` (validated; a scale-free network needs
        neither). ``forward(lq, scale, out_size)`` is ``render(encode(lq, scale, out_size), size)``."""
        lr_size = lr_size_of(lq)
        if scale is None and out_size is None:
            return self.decode_field(self.encode_features(lq), None)
        target = resolve_scale_and_size(lr_size, scale, out_size, self.size_rule)
        return self.decode_field(self.encode_features(lq), target)

    # ------------------------------------------------------------------------- what networks implement
    def encode_features(self, lq: torch.Tensor) -> Any:
        """The scale-free part of encoding a (B, C, h, w) image (validated by the caller)."""
        raise NotImplementedError

    def decode_field(self, features: Any, target: Optional[Target]) -> Any:
        """The field of ``features`` (:meth:`encode_features`'s) for ``target``; None: scale-free networks only."""
        raise NotImplementedError

    def render(self, field: Any, out_size: Size, window: Optional[Window] = None) -> torch.Tensor:
        """(B, C, Ho, Wo) render of ``field`` at ``out_size`` (ints), of ``window`` of the LR plane (None: all)."""
        raise NotImplementedError

    def render_pixels(self, field: Any, out_size: Size, pixel_index: torch.Tensor) -> torch.Tensor:
        """(B, C, Q) pixels ``pixel_index`` (B, Q) of the render at ``out_size``; a network that can decode single
        pixels (GaussianSR) overrides this."""
        return gather_pixels(self.render(field, out_size), pixel_index)

    @property
    def alignment(self) -> int:
        """The period, in LR pixels, of every window grid the network (and its encoder) lays on an image: an
        image cropped at multiples of it sees the same windows (tiles start there). Default: the encoder's (1
        without one)."""
        encoder = getattr(self, 'encoder', None)
        return 1 if encoder is None else encoder.alignment

    def gaussians(self, field: Any) -> Optional[GaussianField]:
        """The Gaussians of ``field`` in LR pixel units (what ``--save-gaussians`` draws), None when it has none."""
        return field if isinstance(field, GaussianField) else None

    def bytes_per_lr_pixel(self) -> float:
        """A rough activation footprint of encoding one LR pixel (for choosing tiles from free memory). Default:
        a 64-channel decoder with 4 x 4 tokens per LR pixel."""
        return activation_bytes(64, 4)

    def bytes_per_output_pixel(self) -> float:
        """A rough footprint of rendering one output pixel without autograd (for refusing an output that cannot
        fit before anything runs). Default: the float RGB render and the rasterizer's working memory (GSASR at x16 to
        x32 took 33-38 B more per added output pixel, file written, ``benchmarks/bench_file_memory.py``)."""
        return 40.0

    def reference_points(self, field: GaussianField) -> torch.Tensor:
        """(1 or B, N, 2) points that decide which tile owns each Gaussian of ``field`` (LR pixels); points that
        cannot move with the prediction keep tiled inference exact. Default: the means."""
        return field.means


def activation_bytes(width: int, per_side: int) -> float:
    """Bytes of activations per LR pixel of a decoder of ``width`` channels and ``per_side`` x ``per_side`` tokens
    per LR pixel: its tokens times ~12 live copies, plus ~40 64-channel encoder maps."""
    return 4.0 * width * per_side * per_side * 12 + 4.0 * 64 * 40
