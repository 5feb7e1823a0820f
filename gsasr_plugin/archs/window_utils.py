"""Window-attention pieces shared by every transformer in the plugin.

There is one window-attention implementation in the project: timm's
(``timm.models.swin_transformer.WindowAttention`` and friends, re-exported here). This module adds the
small pure helpers around it that timm keeps inside its blocks: padding a feature map to a window
multiple (so any LR size works), flattening windows to token sequences, and the shifted-window mask.

For GSASR's decoder, which runs ~40 window layers on one token map, it also offers what keeps that map
in window order throughout: :class:`ShiftedWindows` (a shifted layer's windows as one gather of the
unshifted windows' tokens, instead of a roll, a partition, a reverse and a roll back) and
:func:`window_self_attention` / :func:`window_attention` (timm's module and math, run by PyTorch's fused
attention when no gradient flows into the position bias).
"""
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.swin_transformer import (WindowAttention, get_relative_position_index, window_partition,
                                          window_reverse)

from gsasr_plugin.archs.fast_linear import linear

__all__ = [
    'DropPath', 'Mlp', 'WindowAttention', 'get_relative_position_index', 'trunc_normal_', 'window_partition',
    'window_reverse', 'pad_to_multiple', 'to_window_tokens', 'from_window_tokens', 'to_windows', 'from_windows',
    'shifted_window_mask', 'WindowCrossAttention', 'ShiftedWindows', 'shifted_window_index', 'window_attention',
    'relative_position_bias', 'window_self_attention'
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


def to_windows(x: torch.Tensor, window_size: IntOrPair) -> torch.Tensor:
    """(B, H, W, C) with H, W window multiples -> (B, num_windows, wh * ww, C): the window tokens per image."""
    wh, ww = _pair(window_size)
    return to_window_tokens(x, (wh, ww)).view(x.shape[0], -1, wh * ww, x.shape[-1])


def from_windows(tokens: torch.Tensor, window_size: IntOrPair, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`: (B, num_windows, N, C) -> (B, H, W, C)."""
    return from_window_tokens(tokens.flatten(0, 1), window_size, height, width)


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


def shifted_window_index(height: int, width: int, window_size: IntOrPair, shift_size: IntOrPair) -> torch.Tensor:
    """(H * W,) int64: for each token of ``to_window_tokens(roll(x, -shift_size))``, its index in
    ``to_window_tokens(x)``.

    ``x`` is a (B, H, W, C) map with H, W window multiples; tokens are numbered per image, windows of an
    image consecutive. Gathering the unshifted window tokens with it gives the shifted windows.
    """
    wh, ww = _pair(window_size)
    sh, sw = _pair(shift_size)
    grid = torch.arange(height * width).view(1, height, width, 1)
    plain = to_window_tokens(grid, (wh, ww)).reshape(-1)  # window order -> raster index
    shifted = to_window_tokens(torch.roll(grid, shifts=(-sh, -sw), dims=(1, 2)), (wh, ww)).reshape(-1)
    position = torch.empty_like(plain)
    position[plain] = torch.arange(plain.numel())  # raster index -> window order
    return position[shifted]


@dataclass
class ShiftedWindows:
    """Swin's shifted windows of a token map held in window order, as one permutation of its tokens.

    A (B, H, W, C) map kept as its window tokens ``(B, num_windows, N, C)`` (:func:`to_window_tokens`
    order, windows of an image consecutive) needs no partition or reverse in unshifted layers; a shifted
    layer gathers its windows with :meth:`shift` and puts its result back with :meth:`unshift` (one copy
    each, where a roll, a partition, a reverse and a roll back take four to six). ``index`` is None when
    ``shift_size`` is (0, 0) (both are identities then); ``mask`` is the layer's additive attention mask or
    None.
    """
    shift_size: Tuple[int, int]
    index: Optional[torch.Tensor] = None  # (B * H * W,) rows of the flattened batch, for shift()
    inverse: Optional[torch.Tensor] = None  # for unshift()
    mask: Optional[torch.Tensor] = None

    @classmethod
    def plan(cls, batch: int, height: int, width: int, window_size: IntOrPair, shift_size: IntOrPair,
             mask: Optional[torch.Tensor] = None, device: Union[torch.device, str, None] = None) -> 'ShiftedWindows':
        shift = _pair(shift_size)
        if shift == (0, 0):
            return cls(shift, mask=mask)
        index = shifted_window_index(height, width, window_size, shift)
        inverse = torch.empty_like(index)
        inverse[index] = torch.arange(index.numel())
        offsets = torch.arange(batch).view(batch, 1) * index.numel()
        return cls(shift, (index + offsets).view(-1).to(device), (inverse + offsets).view(-1).to(device), mask)

    def shift(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, num_windows, N, C) window tokens -> the tokens of the shifted windows, same layout."""
        return tokens if self.index is None else _gather_rows(tokens, self.index)

    def unshift(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`shift`."""
        return tokens if self.inverse is None else _gather_rows(tokens, self.inverse)


def _gather_rows(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tokens.reshape(-1, tokens.shape[-1]).index_select(0, index).view(tokens.shape)


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias + mask) v for (B_, heads, N, d) windows; bias (1, heads, N, N).

    ``mask`` (num_windows, N, N) is added per window, the windows of one image consecutive in ``B_``
    (timm's convention). When no gradient flows into ``bias`` (inference) this is PyTorch's fused
    attention, which never forms the (B_, heads, N, N) weights; otherwise timm's explicit math (the fused
    kernels cannot give the bias its gradient, and PyTorch's fallback for that case is slower).
    """
    batch_windows, heads, num_tokens, _ = q.shape
    if torch.is_grad_enabled() and bias.requires_grad:
        attn = (q * q.shape[-1]**-0.5) @ k.transpose(-2, -1) + bias
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(-1, num_windows, heads, num_tokens, num_tokens) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(batch_windows, heads, num_tokens, num_tokens)
        return attn.softmax(dim=-1) @ v
    if mask is not None:
        num_windows = mask.shape[0]
        bias = bias + mask.unsqueeze(1)  # num_windows, heads, N, N
        repeats = batch_windows // num_windows  # images: a view for one, else one copy (fused kernels need 4D)
        bias = bias if repeats == 1 else bias.repeat(repeats, 1, 1, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))


def relative_position_bias(table: torch.Tensor, index: torch.Tensor, window_area: int) -> torch.Tensor:
    """Swin's relative position bias (1, heads, N, N) from its table and index (timm's layout)."""
    bias = table[index.view(-1)].view(window_area, window_area, -1)
    return bias.permute(2, 0, 1).contiguous().unsqueeze(0)


def window_self_attention(attn: WindowAttention, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """timm's ``WindowAttention.forward(x, mask)`` (its parameters, its math) by :func:`window_attention`.

    ``x`` (B_, N, C) window tokens, ``mask`` (num_windows, N, N) or None; equal to ``attn(x, mask)`` within
    float rounding. timm keeps the module on its unfused path (``fused_attn`` is experimental there), which
    forms the attention weights and a copy of every transposed operand; this runs the fused kernel in
    inference. Attention dropout is not supported (GSASR has none).
    """
    batch_windows, num_tokens, _ = x.shape
    qkv = linear(attn.qkv, x).view(batch_windows, num_tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = relative_position_bias(attn.relative_position_bias_table, attn.relative_position_index,
                                  attn.window_area)
    out = window_attention(q, k, v, bias, mask)
    return attn.proj_drop(linear(attn.proj, out.transpose(1, 2).reshape(batch_windows, num_tokens, -1)))


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
        return relative_position_bias(self.relative_position_bias_table, self.relative_position_index,
                                      self.window_area)  # 1, nH, N, N

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
        q = linear(self.q, x).view(batch_windows, num_tokens, heads, -1).transpose(1, 2)
        k, v = linear(self.kv, context).view(batch_windows, num_tokens, 2, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = window_attention(q, k, v, self._rel_pos_bias().to(q.dtype), None if mask is None else mask.to(q.dtype))
        return linear(self.proj, out.transpose(1, 2).reshape(batch_windows, num_tokens, channels))
