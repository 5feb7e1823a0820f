"""Scales and output sizes: the one place that turns user values into ``(s_h, s_w)`` and ``(Ho, Wo)``.

Every part of the plugin validates scales here, once, where a value enters it: an SR network's public
``forward`` / ``encode`` (:class:`gsasr_plugin.archs.sr_network.SRNetwork`), ``basicsr infer`` (its argument
parsers), the Python API, option files (datasets, ``check_options``) and the model's ``feed_data``. Inside,
validated :class:`Target` pairs and ints travel. A scale means the same everywhere (docs/layout.md): a pair
``(s_h, s_w)`` of finite numbers > 0, a single number ``s`` meaning ``(s, s)``; without an explicit output
size the output is ``rule(h * s_h), rule(w * s_w)`` with the *size rule* of :func:`scaled_size` (``round`` by
default; released models carry their authors' rule). Errors name the argument or option key the caller passes
in.
"""
import math
import numbers
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    'ScaleLike', 'ScalePair', 'Size', 'Target', 'MISSING_SCALE', 'SIZE_RULES', 'DEFAULT_SIZE_RULE', 'lr_size_of',
    'to_scale_pair', 'scale_from_option', 'scale_tag', 'check_out_size', 'check_size_rule', 'scaled_size',
    'resolve_scale_and_size', 'parse_scale_text',
    'parse_scale_list_text', 'parse_size_text'
]

ScaleLike = Union[float, int, Sequence[float], torch.Tensor]
ScalePair = Tuple[float, float]
Size = Tuple[int, int]
MISSING_SCALE = 'give scale (a float or a pair (s_h, s_w)) or out_size (Ho, Wo)'
# How an output side follows from an LR side n and a scale s when no output size is given: 'round' (ours,
# LIIF's and ContinuousSR's), 'floor' (the official GSASR inference: the SR image never reaches past the
# scaled LR image), 'ceil'. Products within 1e-6 of an integer are that integer under every rule.
SIZE_RULES = ('round', 'floor', 'ceil')
DEFAULT_SIZE_RULE = 'round'
_SIZE_TOLERANCE = 1e-6


class Target(NamedTuple):
    """A validated request: the conditioning scale ``(s_h, s_w)`` and the output size ``(Ho, Wo)`` (ints)."""
    scale: ScalePair
    size: Size


def _is_number(value: Any) -> bool:
    """A real number (numpy scalars too, not bools) or a one-element tensor."""
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and not value.dtype.is_complex and value.dtype != torch.bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def to_scale_pair(scale: ScaleLike, name: str = 'scale') -> ScalePair:
    """A number, a pair ``(s_h, s_w)`` or a (), (1,), (2,) or (B, 2) tensor -> ``(s_h, s_w)``.

    The rows of a (B, 2) tensor (a batch's ``scale``) must agree (to float tolerance).

    Args:
        scale: the value to convert.
        name: how error messages call it (an argument name, or a quoted option key).

    Raises:
        TypeError: if ``scale`` is not a number, a pair of numbers or a tensor (bools are not numbers).
        ValueError: if a tensor has another shape, the rows of a batch differ, or a value is not finite
            and > 0.
    """
    shown: Any = scale
    if isinstance(scale, torch.Tensor):
        values = scale.detach().double().cpu()
        if values.ndim == 2 and values.shape[1] == 2 and values.shape[0] >= 1:
            if not torch.allclose(values, values[:1].expand_as(values)):
                raise ValueError(f'{name}: all samples of a batch must share one {name}, got rows {values.tolist()}')
            values = values[0]
        if values.ndim == 0 or values.shape == (1, ):
            pair = (float(values.reshape(())), ) * 2
        elif values.shape == (2, ):
            pair = (float(values[0]), float(values[1]))
        else:
            raise ValueError(f'{name} tensor must have shape (), (2,) or (B, 2), got {tuple(scale.shape)}')
        shown = pair
    elif _is_number(scale):
        pair = (float(scale), float(scale))
    elif isinstance(scale, (tuple, list)) and len(scale) == 2 and all(_is_number(v) for v in scale):
        pair = (float(scale[0]), float(scale[1]))
    else:
        raise TypeError(f'{name} must be a number, a pair (s_h, s_w) or a tensor, got {scale!r}')
    if not all(math.isfinite(s) and s > 0 for s in pair):
        raise ValueError(f'{name} must be > 0 and finite, got {shown!r}')
    return pair


def scale_from_option(value: Any, key: str = 'scale') -> ScalePair:
    """An option value (``s`` or ``[s_h, s_w]``) -> ``(s_h, s_w)``; any bad value is a ValueError naming 'key'."""
    try:
        return to_scale_pair(value, f"'{key}'")
    except TypeError as error:
        raise ValueError(str(error)) from None


def scale_tag(scale: ScaleLike) -> str:
    """Name of a scale in metric keys and file names: ``2``, ``3.5``, ``2x3`` (anisotropic)."""
    s_h, s_w = scale_from_option(scale)
    return f'{s_h:g}' if s_h == s_w else f'{s_h:g}x{s_w:g}'


def lr_size_of(lq: Any, name: str = 'lq') -> Tuple[int, int]:
    """``(h, w)`` of a (B, C, h, w) image tensor; ValueError naming ``name`` for anything else."""
    if not isinstance(lq, torch.Tensor) or lq.ndim != 4:
        raise ValueError(f'{name} must be a (B, C, h, w) tensor, got {getattr(lq, "shape", type(lq))}')
    return int(lq.shape[-2]), int(lq.shape[-1])


def check_out_size(out_size: Any, name: str = 'out_size') -> Tuple[int, int]:
    """A pair (or 2-element tensor) of positive integers ``(Ho, Wo)`` -> a tuple of ints; ValueError naming ``name``."""
    if isinstance(out_size, torch.Tensor):
        out_size = out_size.flatten().tolist()
    if (not isinstance(out_size, (tuple, list)) or len(out_size) != 2
            or any(isinstance(v, bool) or not float(v).is_integer() or v < 1 for v in out_size)):
        raise ValueError(f'{name} must be a pair of positive integers (Ho, Wo), got {out_size!r}')
    return int(out_size[0]), int(out_size[1])


def check_size_rule(rule: Any, name: str = 'size_rule') -> str:
    """One of :data:`SIZE_RULES`, else a ValueError naming ``name``."""
    if rule not in SIZE_RULES:
        raise ValueError(f"{name} must be one of {', '.join(SIZE_RULES)}, got {rule!r}")
    return rule


def scaled_size(lr_size: Sequence[int], scale: ScaleLike, rule: str = DEFAULT_SIZE_RULE) -> Size:
    """The one output-size rule: ``(rule(h * s_h), rule(w * s_w))``.

    ``rule`` is ``'round'`` (halves to even, Python's), ``'floor'`` or ``'ceil'`` (:data:`SIZE_RULES`); a product
    within 1e-6 of an integer is that integer whatever the rule (``3 * (10 / 3)`` is 10, not 9).
    ``scale`` is validated here.

    Raises:
        ValueError: a side of no pixel (a scale far below 1 for the image: ``round(24 * 0.01)`` is 0).
    """
    return _scaled(lr_size, to_scale_pair(scale), check_size_rule(rule))


def _side(length: int, scale: float, rule: str) -> int:
    product = length * scale
    nearest = round(product)
    if rule == 'round' or abs(product - nearest) < _SIZE_TOLERANCE:
        side = int(nearest)
    else:
        side = int(math.floor(product) if rule == 'floor' else math.ceil(product))
    if side < 1:
        raise ValueError(f'scale {scale:g} leaves no output pixel of {length} LR pixels ({rule}({length} x {scale:g}) '
                         f'= {side}); use a larger scale')
    return side


def _scaled(lr_size: Sequence[int], pair: ScalePair, rule: str = DEFAULT_SIZE_RULE) -> Size:
    return _side(int(lr_size[0]), pair[0], rule), _side(int(lr_size[1]), pair[1], rule)


def resolve_scale_and_size(lr_size: Tuple[int, int], scale: Optional[ScaleLike] = None,
                           out_size: Optional[Sequence[int]] = None, size_rule: str = DEFAULT_SIZE_RULE) -> Target:
    """The conditioning scale (s_h, s_w) and output size (Ho, Wo) from ``scale`` and/or ``out_size``.

    ``out_size`` wins for the output size; without ``scale`` the scale is ``(Ho / h, Wo / w)``; without
    ``out_size`` the size is :func:`scaled_size` under ``size_rule``.

    Raises:
        ValueError: if neither is given, or either is malformed or not positive.
        TypeError: if ``scale`` is of the wrong kind.
    """
    height, width = lr_size
    if out_size is not None:
        out_size = check_out_size(out_size)
        pair = to_scale_pair(scale) if scale is not None else (out_size[0] / height, out_size[1] / width)
        return Target(pair, out_size)
    if scale is None:
        raise ValueError(MISSING_SCALE)
    pair = to_scale_pair(scale)
    return Target(pair, _scaled(lr_size, pair, check_size_rule(size_rule)))


# ------------------------------------------------------------------------------ command-line text
def parse_scale_text(text: str, name: str = '--scale', separator: str = ',') -> ScalePair:
    """'4', '2.5' or 'SH<separator>SW' (e.g. '2,3.5') -> ``(s_h, s_w)``; ValueError naming ``name`` otherwise."""
    parts = [p.strip() for p in str(text).split(separator)]
    if len(parts) not in (1, 2):
        raise ValueError(f'{name} must be S or SH{separator}SW, got {text!r}')
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f'{name} must be a number or two numbers SH{separator}SW, got {text!r}') from None
    return to_scale_pair(values[0] if len(values) == 1 else tuple(values), name)


def parse_scale_list_text(text: str, name: str = '--scales') -> List[ScalePair]:
    """'2,3.5,4' (and 'SH:SW' items for a different scale per axis, e.g. '2,1.5:3') -> [(s_h, s_w), ...]."""
    items = [item.strip() for item in str(text).split(',') if item.strip()]
    if not items:
        raise ValueError(f'{name} must list scales like 2,3.5,4, got {text!r}')
    return [parse_scale_text(item, name, separator=':') for item in items]


def parse_size_text(text: str, name: str = '--size') -> Tuple[int, int]:
    """'WxH' (e.g. '1920x1080') -> ``(H, W)``; ValueError naming ``name`` otherwise."""
    parts = str(text).lower().split('x')
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or min(int(p) for p in parts) < 1:
        raise ValueError(f'{name} must be WxH with positive integers (e.g. 1920x1080), got {text!r}')
    width, height = (int(p) for p in parts)
    return height, width
