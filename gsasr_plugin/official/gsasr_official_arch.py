"""The forward of the authors' released GSASR models, as subclasses of our ``GSASR`` and ``GSASRRoPE``.

The official code (``ChrisDud0257/GSASR``: ``utils/fea2gs.py``, ``utils/fea2gsropeamp.py``,
``inference_paper.py``, ``inference_enhenced.py``) runs the same decoder as ours with a few differences that
its checkpoints depend on. :class:`GSASROfficial` (the paper decoder) and :class:`GSASRRoPEOfficial` (the
enhanced / ultra RoPE decoder, whose blocks already shift as the official ones) add them as options:

- attention shifts (``GSASROfficial`` only): the shifted injection layers roll the features alone (a query
  window attends to the features half a window down-right, no mask, no roll back); the shifted self-attention
  has no mask; odd layers shift also along an axis that one window covers;
- padding and canvas: the LR *image* is reflect-padded to a multiple of ``pad_input_to``, every Gaussian is
  kept and the padded canvas ``canvas_rounding(s * padded size)`` is rendered and cropped (top-left), each
  Gaussian's standard deviation being the head's ``sigma * s`` output pixels of that canvas;
- the rasterizer's square cut-off ``dmax`` (``box_cutoff``) instead of our ellipse.

The head ranges (``sigma_range``, ``rho_max``, ``max_offset``) and ``num_scale_tokens: 1`` are plain
options of the core classes; :mod:`gsasr_plugin.official.gsasr` sets them, with these classes, in the
released models' ``network_g``. The defaults below are the official training forward; the released models'
inference adds ``pad_input_to`` (12, 16 or 24), ``canvas_rounding: floor`` and ``box_cutoff: 0.1``.
"""
import dataclasses
import math
from typing import Any, Optional, Tuple

import torch

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.gaussian_field import GaussianField, Window, check_window, whole_window
from gsasr_plugin.archs.gsasr_arch import GSASR, ConditionInjectionLayer, LRFeatures
from gsasr_plugin.archs.gsasr_rope_arch import GSASRRoPE
from gsasr_plugin.archs.window_utils import ShiftedWindows, pad_to_multiple, shifted_window_mask
from gsasr_plugin.utils.scale import Size, Target

__all__ = ['GSASROfficial', 'GSASRRoPEOfficial', 'FeatureShiftInjectionLayer', 'OfficialCanvas', 'box_half_size',
           'round_canvas']

CROSS_ATTENTION_SHIFTS = ('masked', 'features_only')
CANVAS_ROUNDINGS = ('floor', 'ceil')


def round_canvas(value: float, mode: str) -> int:
    """``floor`` or ``ceil`` of a canvas side ``s * n``, taking values within 1e-6 of an integer as it (a
    scale computed as ``Ho / h`` must give back ``Ho``)."""
    nearest = round(value)
    if abs(value - nearest) < 1e-6:
        return max(1, int(nearest))
    return max(1, int(math.floor(value) if mode == 'floor' else math.ceil(value)))


def box_half_size(box_cutoff: float, lr_size: Tuple[int, int], canvas_size: Tuple[int, int]) -> Tuple[float, float]:
    """(half_h, half_w) in LR pixels of the official square cut-off ``dmax`` on a canvas.

    The official rasterizer places canvas pixel ``i`` at ``2 i / (n - 1) - 1`` and skips the pixels farther
    than ``dmax`` from the Gaussian's centre along an axis: ``dmax * (n - 1) / 2`` output pixels, that is
    ``dmax * (n - 1) / 2 * lr / n`` LR pixels of an axis of ``lr`` LR and ``n`` canvas pixels.
    """
    return tuple(box_cutoff * (n - 1) / 2 * lr / n for lr, n in zip(lr_size, canvas_size))


class FeatureShiftInjectionLayer(ConditionInjectionLayer):
    """A condition-injection layer whose shifted cross-attention rolls the features alone (the official code):
    a query window attends to the features of the window half a window down-right, with no mask and no roll
    back."""

    def attend_shifted(self, queries: torch.Tensor, feat: torch.Tensor, windows: ShiftedWindows) -> torch.Tensor:
        return self._attend(queries, windows.shift(feat), None)

    def attention_rows(self, windows: ShiftedWindows):
        """Inference by window chunks: the queries' own windows, the features of the shifted ones, no mask."""
        return (None, windows.index, None) if self.shifted else (None, None, None)


class OfficialCanvas:
    """The official inference's padded canvas and square cut-off, for a ``GSASR`` subclass (listed first).

    Args of the subclass (see :class:`GSASROfficial`): ``pad_input_to``, ``canvas_rounding``, ``box_cutoff``.
    """

    def _init_canvas(self, pad_input_to: Optional[int], canvas_rounding: str, box_cutoff: Optional[float]) -> None:
        window_size = self.window_size
        if pad_input_to is not None and (isinstance(pad_input_to, bool) or not isinstance(pad_input_to, int)
                                         or pad_input_to < 1 or pad_input_to % window_size):
            raise ValueError(f'pad_input_to must be None or a positive multiple of window_size ({window_size}), '
                             f'got {pad_input_to!r}')
        if canvas_rounding not in CANVAS_ROUNDINGS:
            raise ValueError(f"canvas_rounding must be 'floor' or 'ceil', got {canvas_rounding!r}")
        if box_cutoff is not None and (isinstance(box_cutoff, bool) or not isinstance(box_cutoff, (int, float))
                                       or not 0 < box_cutoff <= 2):
            raise ValueError(f'box_cutoff must be None or a number in (0, 2] (half-canvases), got {box_cutoff!r}')
        if box_cutoff is not None and self.cutoff is not None:
            raise ValueError(f'box_cutoff ({box_cutoff}) and cutoff ({self.cutoff}) exclude each other: the square '
                             'cut-off replaces the ellipse; set one of them to ~')
        self.pad_input_to = pad_input_to
        self.canvas_rounding = canvas_rounding
        self.box_cutoff = None if box_cutoff is None else float(box_cutoff)

    def encode_features(self, lq: torch.Tensor) -> LRFeatures:
        """The encoder features of ``lq`` reflect-padded at the bottom / right to a multiple of ``pad_input_to``."""
        if self.pad_input_to is not None:
            lq = pad_to_multiple(lq, self.pad_input_to, mode='reflect')
        return super().encode_features(lq)

    def decode_field(self, features: LRFeatures, target: Optional[Target]) -> GaussianField:
        """GSASR's field; with ``pad_input_to`` over the padded image (every Gaussian kept) on its canvas."""
        field = super().decode_field(features, target)
        return field if self.pad_input_to is None else self.canvas_field(field, target.scale)

    def canvas_field(self, field: GaussianField, scale: Tuple[float, float]) -> GaussianField:
        """Lay ``field`` (over the padded image) out on the official canvas of ``scale``.

        The canvas is ``canvas_rounding(s * padded size)`` output pixels per axis, and, as in the official
        renderer, each standard deviation is the head's sigma times s output pixels of it: the LR sigmas
        are multiplied by ``s * padded size / canvas`` (1 when the product is a whole number).
        """
        canvas = tuple(round_canvas(s * n, self.canvas_rounding) for s, n in zip(scale, field.lr_size))
        stretch = field.sigmas.new_tensor([scale[1] * field.lr_size[1] / canvas[1],
                                           scale[0] * field.lr_size[0] / canvas[0]])
        return dataclasses.replace(field, sigmas=field.sigmas * stretch, canvas_size=canvas)

    def render(self, field: GaussianField, out_size: Size, window: Optional[Window] = None) -> torch.Tensor:
        """With ``box_cutoff``: the square cut-off on the rendered canvas (``field.render_size``).

        The box is defined in half-canvases of the whole image, so a zoom into a part of it (a ``window``
        smaller than the image, which the official code does not have) renders with GSASR's ellipse
        ``cutoff`` instead.
        """
        if self.box_cutoff is None or (window is not None
                                       and check_window(window, field.lr_size) != whole_window(field.lr_size)):
            return super().render(field, out_size, window)
        size = field.render_size(out_size)
        return field.render(out_size, box_half_size=box_half_size(self.box_cutoff, tuple(field.lr_size), size))


@ARCH_REGISTRY.register()
class GSASROfficial(OfficialCanvas, GSASR):
    """GSASR (the paper decoder) with the forward of the authors' code (see the module docstring).

    Args:
        cross_attention_shift: How the shifted condition-injection layers shift. ``'features_only'``
            (official): only the features are rolled; a query window attends to the features of the window
            half a window down and right, with no mask and no roll back. ``'masked'`` (GSASR's): queries
            and features are rolled together, masked (with ``shift_mask``) and rolled back.
            Default: 'features_only'.
        shift_mask: Swin's mask in shifted windows, so tokens wrapped around the image border by the roll
            do not attend to each other (GSASR's). The official code applies none. Default: False.
        shift_single_window: Shift the odd layers also along an axis that holds a single window (the official
            code always shifts; Swin and GSASR do not shift such an axis). Default: True.
        pad_input_to: ``None``: the encoder sees the LR image as it is, its features are padded inside the
            decoder and the padding's Gaussians kept beyond the right / bottom edge (GSASR's). An int (official: 12; 24 for the paper's
            SwinIR; 16 for the enhanced SwinIR and HAT-L), a multiple of ``window_size``: the LR *image* is
            reflect-padded at the bottom / right to a multiple of it, every Gaussian is kept and the whole
            padded canvas of ``canvas_rounding(s * padded size)`` output pixels is rendered, then cropped to
            the output size (top-left); a Gaussian's standard deviation is the head's ``sigma * s`` output
            pixels of that canvas (``sigma`` LR pixels when ``s * padded size`` is a whole number).
            Default: None.
        canvas_rounding: With ``pad_input_to``: ``'floor'`` (official ``inference_paper.py``) or ``'ceil'``
            (official test code, ``GSASRModel.test``) of ``s * padded size``; values within 1e-6 of an integer
            are that integer. A canvas smaller than the requested output (floor of a scale with no padding on
            that axis) grows to it. Default: 'ceil'.
        box_cutoff: The official rasterizer's cut-off ``dmax``: each Gaussian touches the output pixels whose
            distance to its centre is at most ``box_cutoff`` half-canvases along each axis, a square box of
            half-side ``box_cutoff * (canvas - 1) / 2`` output pixels, whatever its standard deviation
            (official: 0.1 at test, 0.5 in training). ``None``: GSASR's ellipse ``cutoff``; the two exclude
            each other. Default: None.
        **gsasr_options: every option of :class:`GSASR`.
    """

    def __init__(self, cross_attention_shift: str = 'features_only', shift_mask: bool = False,
                 shift_single_window: bool = True, pad_input_to: Optional[int] = None, canvas_rounding: str = 'ceil',
                 box_cutoff: Optional[float] = None, **gsasr_options: Any):
        if cross_attention_shift not in CROSS_ATTENTION_SHIFTS:
            raise ValueError("cross_attention_shift must be 'masked' or 'features_only', "
                             f'got {cross_attention_shift!r}')
        for name, value in (('shift_mask', shift_mask), ('shift_single_window', shift_single_window)):
            if not isinstance(value, bool):
                raise TypeError(f'{name} must be true or false, got {value!r}')
        # GSASR.__init__ builds the injection layers from this (an instance attribute before it runs)
        self.injection_layer = FeatureShiftInjectionLayer if cross_attention_shift == 'features_only' \
            else ConditionInjectionLayer
        super().__init__(**gsasr_options)
        self.cross_attention_shift = cross_attention_shift
        self.shift_mask = shift_mask
        self.shift_single_window = shift_single_window
        self._init_canvas(pad_input_to, canvas_rounding, box_cutoff)

    def _window_plan(self, height: int, width: int, device: torch.device):
        """Shift per axis (also where one window covers the side with ``shift_single_window``) and the shift mask
        (None without ``shift_mask``)."""
        k = self.window_size
        shift = tuple(k // 2 if side > k or self.shift_single_window else 0 for side in (height, width))
        if shift == (0, 0) or not self.shift_mask:
            return shift, None
        return shift, shifted_window_mask(height, width, k, shift, device=device)


@ARCH_REGISTRY.register()
class GSASRRoPEOfficial(OfficialCanvas, GSASRRoPE):
    """GSASRRoPE (the enhanced / ultra decoder) with the official inference's padded canvas and square cut-off.

    Args:
        pad_input_to, canvas_rounding, box_cutoff: as :class:`GSASROfficial`'s (official: 12 for EDSR and
            RDN, 16 for SwinIR and HAT-L; floor; 0.1). Defaults: None, 'ceil', None.
        **rope_options: every option of :class:`~gsasr_plugin.archs.gsasr_rope_arch.GSASRRoPE`.
    """

    def __init__(self, pad_input_to: Optional[int] = None, canvas_rounding: str = 'ceil',
                 box_cutoff: Optional[float] = None, **rope_options: Any):
        super().__init__(**rope_options)
        self._init_canvas(pad_input_to, canvas_rounding, box_cutoff)

