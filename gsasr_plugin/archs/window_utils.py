"""Window-attention pieces shared by every transformer in the plugin.

There is one window-attention implementation in the project: timm's
(``timm.models.swin_transformer.WindowAttention`` and friends, re-exported here). This module adds the
small pure helpers around it that timm keeps inside its blocks: padding a feature map to a window
multiple (so any LR size works), flattening windows to token sequences, and the shifted-window mask.
"""
from typing import Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.swin_transformer import (WindowAttention, get_relative_position_index, window_partition,
                                          window_reverse)

__all__ = [
    'DropPath', 'Mlp', 'WindowAttention', 'get_relative_position_index', 'trunc_normal_', 'window_partition',
    'window_reverse', 'pad_to_multiple', 'to_window_tokens', 'from_window_tokens', 'shifted_window_mask'
]

IntOrPair = Union[int, Tuple[int, int]]


def _pair(value: IntOrPair) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def pad_to_multiple(x: torch.Tensor, multiple: IntOrPair, mode: str = 'reflect') -> torch.Tensor:
    """Pad a (B, C, H, W) tensor at the bottom/right so that H and W are multiples of ``multiple``.

    ``reflect`` padding needs the pad to be smaller than the side; for tiny inputs we fall back to
    ``replicate`` so that no input size is refused. Crop back with ``out[..., :H, :W]``.
    """
    mh, mw = _pair(multiple)
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % mh, (-width) % mw
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == 'reflect' and (pad_h >= height or pad_w >= width):
        mode = 'replicate'
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def to_window_tokens(x: torch.Tensor, window_size: IntOrPair) -> torch.Tensor:
    """(B, H, W, C) with H, W window multiples -> (B * num_windows, wh * ww, C)."""
    wh, ww = _pair(window_size)
    windows = window_partition(x, (wh, ww))
    return windows.view(-1, wh * ww, x.shape[-1])


def from_window_tokens(tokens: torch.Tensor, window_size: IntOrPair, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_window_tokens`: (B * num_windows, wh * ww, C) -> (B, H, W, C)."""
    wh, ww = _pair(window_size)
    return window_reverse(tokens.view(-1, wh, ww, tokens.shape[-1]), (wh, ww), height, width)


def shifted_window_mask(height: int, width: int, window_size: IntOrPair, shift_size: IntOrPair,
                        device: Union[torch.device, str, None] = None) -> torch.Tensor:
    """Additive attention mask (num_windows, N, N) for a feature map cyclically shifted by ``-shift_size``.

    Tokens that came from different regions of the unshifted map must not attend to each other; their
    pairs get -100 (as in Swin), the others 0. ``height`` and ``width`` are the padded sizes.
    """
    wh, ww = _pair(window_size)
    sh, sw = _pair(shift_size)
    region = torch.zeros((1, height, width, 1), device=device)
    label = 0
    for hs in (slice(0, -wh), slice(-wh, -sh if sh else None), slice(-sh, None) if sh else slice(0, 0)):
        for ws in (slice(0, -ww), slice(-ww, -sw if sw else None), slice(-sw, None) if sw else slice(0, 0)):
            region[:, hs, ws, :] = label
            label += 1
    labels = to_window_tokens(region, (wh, ww)).squeeze(-1)  # num_windows, N
    mask = labels.unsqueeze(1) - labels.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
