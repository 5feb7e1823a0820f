"""Window-attention pieces shared by every transformer in the plugin.

There is one window-attention implementation in the project: timm's
(``timm.models.swin_transformer.WindowAttention`` and friends, re-exported here). This module adds the
small pure helpers around it that timm keeps inside its blocks: padding a feature map to a window
multiple (so any LR size works), flattening windows to token sequences, and the shifted-window mask.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.swin_transformer import (WindowAttention, get_relative_position_index, window_partition,
                                          window_reverse)

__all__ = [
    'DropPath', 'Mlp', 'WindowAttention', 'get_relative_position_index', 'trunc_normal_', 'window_partition',
    'window_reverse', 'pad_to_multiple', 'to_window_tokens', 'from_window_tokens', 'shifted_window_mask',
    'WindowCrossAttention'
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


class WindowCrossAttention(nn.Module):
    """Window multi-head cross-attention with a Swin-style learnable relative position bias.

    The counterpart of timm's :class:`WindowAttention` for two token sets laid out on the same window
    grid: queries come from ``x`` and keys/values from ``context``, token ``n`` of both sitting at the
    same position of a ``window_size`` window (e.g. query embeddings and the image features of that
    window). The bias table, its indexing and the mask convention are timm's.

    Args:
        dim: Channels of queries and context.
        num_heads: Attention heads.
        window_size: Window height and width (an int for a square window).
        qkv_bias: Learnable biases on the query/key/value projections.
    """

    def __init__(self, dim: int, num_heads: int, window_size: IntOrPair, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.window_size = _pair(window_size)
        win_h, win_w = self.window_size
        self.window_area = win_h * win_w
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * win_h - 1) * (2 * win_w - 1), num_heads))
        self.register_buffer('relative_position_index', get_relative_position_index(win_h, win_w), persistent=False)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=.02)

    def _rel_pos_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(self.window_area, self.window_area, -1).permute(2, 0, 1).unsqueeze(0)  # 1, nH, N, N

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attend from ``x`` (B_, N, C) to ``context`` (B_, N, C); ``mask`` is (num_windows, N, N) or None.

        ``B_`` is batch times windows with the windows of one image consecutive (as :func:`to_window_tokens`
        lays them out), so the mask repeats over the batch.
        """
        batch_windows, num_tokens, channels = x.shape
        if num_tokens != self.window_area or context.shape != x.shape:
            raise ValueError(f'x and context must both be (B_, {self.window_area}, C); got {tuple(x.shape)} '
                             f'and {tuple(context.shape)}')
        heads = self.num_heads
        q = self.q(x).view(batch_windows, num_tokens, heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(batch_windows, num_tokens, 2, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self._rel_pos_bias().to(q.dtype)
        if mask is not None:
            num_windows = mask.shape[0]
            bias = (bias.unsqueeze(1) + mask.to(q.dtype).view(1, num_windows, 1, num_tokens, num_tokens))
            bias = bias.expand(batch_windows // num_windows, -1, -1, -1, -1).reshape(batch_windows, heads,
                                                                                      num_tokens, num_tokens)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch_windows, num_tokens, channels))
