"""Window attention with mixed 2D rotary position embeddings (RoPE-Mixed) instead of a relative position bias.

RoPE-Mixed (Heo et al., 2024, "Rotary Position Embedding for Vision Transformer", arXiv 2403.13298)
rotates consecutive channel pairs ``(2i, 2i + 1)`` of every query and key head by the angle
``x * f_x[h, i] + y * f_y[h, i]`` of the token's grid position ``(x, y)``. The frequencies ``f`` are
learnable, one set per head: they start at RoPE's magnitudes ``theta ** (-4i / head_dim)`` along a random
direction per head (the first half of the pairs) and the perpendicular direction (the second half).
Attention scores then depend on the query-key offset only, which replaces Swin's bias table.

The official GSASR "enhanced" decoder and its HAT-L encoder use it with plain scaled dot-product
attention and no mask (shifted windows included). Positions are given per token: a token ``n`` of a
sequence laid out row-major in rows of ``row_length`` sits at ``(n % row_length, n // row_length)``
(:func:`grid_positions`); the positions are saved with the weights (:func:`register_positions`). Rotations
are computed in float32 whatever the input dtype.

Recent timm releases have the same math in ``timm.layers.RotaryEmbeddingMixed``; it is not used here
because ``setup.py`` allows timm 1.0 releases without it and it holds the frequencies of all blocks in one
parameter, where the official checkpoints hold one per attention module.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from gsasr_plugin.archs.fast_linear import linear

__all__ = ['init_mixed_frequencies', 'grid_positions', 'register_positions', 'rotation_angles', 'apply_rotation',
           'MixedRoPE', 'RoPEWindowAttention', 'RoPEWindowCrossAttention']


def init_mixed_frequencies(head_dim: int, num_heads: int, theta: float = 10.0, rotate: bool = True) -> torch.Tensor:
    """Initial RoPE-Mixed frequencies, (2, num_heads, head_dim // 2): ``[f_x, f_y]``.

    Args:
        head_dim: Channels per head; a multiple of 4 (two axes, pairs of channels).
        num_heads: Attention heads, each with its own random direction.
        theta: RoPE base; magnitudes are ``theta ** (-4i / head_dim)``.
        rotate: Random direction per head (RoPE-Mixed); False gives the axial layout (x, then y).
    """
    if head_dim % 4:
        raise ValueError(f'RoPE-Mixed needs a head dimension divisible by 4, got {head_dim}')
    magnitude = 1.0 / theta**(torch.arange(0, head_dim, 4)[:head_dim // 4].float() / head_dim)
    angles = torch.rand(num_heads, 1) * 2 * math.pi if rotate else torch.zeros(num_heads, 1)
    freq_x = torch.cat([magnitude * torch.cos(angles), magnitude * torch.cos(angles + math.pi / 2)], dim=-1)
    freq_y = torch.cat([magnitude * torch.sin(angles), magnitude * torch.sin(angles + math.pi / 2)], dim=-1)
    return torch.stack([freq_x, freq_y], dim=0)


def grid_positions(num_tokens: int, row_length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x, y) integer positions of ``num_tokens`` tokens laid out row-major in rows of ``row_length``."""
    index = torch.arange(num_tokens)
    return index % row_length, torch.div(index, row_length, rounding_mode='floor')


def rotation_angles(freqs: torch.Tensor, pos_x: torch.Tensor, pos_y: torch.Tensor) -> torch.Tensor:
    """Angles (num_heads, N, head_dim // 2) of tokens at (pos_x, pos_y), frequencies (2, num_heads, head_dim // 2)."""
    freqs = freqs.float()
    return pos_x.float()[:, None] * freqs[0][:, None, :] + pos_y.float()[:, None] * freqs[1][:, None, :]


def apply_rotation(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(2i, 2i + 1)`` of ``x`` (B, heads, N, head_dim) by ``angles`` (heads, N, head_dim // 2).

    Computed in float32 and returned in ``x``'s dtype, as one complex multiplication of the pairs
    ``even + i odd`` by ``cos + i sin`` (``even cos - odd sin``, ``even sin + odd cos``) in one pass.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    if pairs.stride(-1) != 1 or any(stride % 2 for stride in pairs.stride()[:-1]) or pairs.storage_offset() % 2:
        pairs = pairs.contiguous()  # complex views need aligned pairs
    rotation = torch.complex(torch.cos(angles), torch.sin(angles))
    return torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2).to(x.dtype)


def register_positions(module: nn.Module, pos_x: torch.Tensor, pos_y: torch.Tensor) -> None:
    """Token positions as the persistent integer buffers ``pos_x`` / ``pos_y`` of ``module``.

    Saved with the weights: nothing else in a RoPE checkpoint records the window size, so a checkpoint loaded
    into a network with another window size fails strictly on their shapes. Integers, so that casting the
    network to bf16 / fp16 keeps them exact.
    """
    module.register_buffer('pos_x', pos_x.long())
    module.register_buffer('pos_y', pos_y.long())


class MixedRoPE(nn.Module):
    """Learnable RoPE-Mixed frequencies of one attention module; ``forward(x, pos_x, pos_y)`` rotates ``x``.

    Args:
        head_dim: Channels per head (a multiple of 4).
        num_heads: Attention heads.
        theta: RoPE base of the initial magnitudes. Default: 10 (as the official GSASR models).
    """

    def __init__(self, head_dim: int, num_heads: int, theta: float = 10.0):
        super().__init__()
        self.freqs = nn.Parameter(init_mixed_frequencies(head_dim, num_heads, theta))

    def forward(self, x: torch.Tensor, pos_x: torch.Tensor, pos_y: torch.Tensor) -> torch.Tensor:
        return apply_rotation(x, rotation_angles(self.freqs, pos_x, pos_y))


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B_, N, C) -> (B_, heads, N, C // heads)."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B_, heads, N, d) -> (B_, N, heads * d)."""
    return x.transpose(1, 2).flatten(2)


class _RoPEAttentionBase(nn.Module):
    """Heads, the RoPE frequencies and the token positions of a window (row-major in rows of ``row_length``)."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int, row_length: int, theta: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.num_tokens = num_tokens
        self.rope = MixedRoPE(dim // num_heads, num_heads, theta)
        register_positions(self, *grid_positions(num_tokens, row_length))

    def _rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate (B_, heads, N, d) heads of the window's first N tokens."""
        num = x.shape[-2]
        return self.rope(x, self.pos_x[:num], self.pos_y[:num])

    def _check_tokens(self, name: str, tokens: torch.Tensor) -> None:
        if tokens.dim() != 3 or tokens.shape[1] != self.num_tokens:
            raise ValueError(f'{name} must be (B_, {self.num_tokens}, C) window tokens, got {tuple(tokens.shape)}')


class RoPEWindowAttention(_RoPEAttentionBase):
    """Window multi-head self-attention with RoPE-Mixed and no bias or mask (fused qkv projection, as timm).

    Args:
        dim: Token channels.
        num_heads: Attention heads; ``dim / num_heads`` must be a multiple of 4.
        window_size: Window side; the window's ``window_size ** 2`` tokens are row-major.
        qkv_bias: Biases on the qkv projection. Default: True.
        theta: RoPE base of the initial frequencies. Default: 10.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True, theta: float = 10.0):
        super().__init__(dim, num_heads, window_size * window_size, window_size, theta)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B_, window_size ** 2, C) window tokens -> attended tokens of the same shape."""
        self._check_tokens('x', x)
        q, k, v = (_split_heads(t, self.num_heads) for t in linear(self.qkv, x).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(self._rotate(q), self._rotate(k), v)
        return linear(self.proj, _merge_heads(out))


class RoPEWindowCrossAttention(_RoPEAttentionBase):
    """Window cross-attention with RoPE-Mixed: queries from ``x``, keys/values from ``context``, no bias or mask.

    Token ``n`` of ``x`` and of ``context`` share the position ``n`` of the window (e.g. a Gaussian token and
    the image feature of its LR pixel), so both are rotated by the same angles.

    Args:
        dim: Channels of queries and context.
        num_heads: Attention heads; ``dim / num_heads`` must be a multiple of 4.
        window_size: Window side; ``window_size ** 2`` tokens, row-major.
        qkv_bias: Biases on the q and kv projections. Default: True.
        theta: RoPE base of the initial frequencies. Default: 10.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True, theta: float = 10.0):
        super().__init__(dim, num_heads, window_size * window_size, window_size, theta)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x``, ``context``: (B_, window_size ** 2, C) window tokens -> attended queries, shaped as ``x``."""
        self._check_tokens('x', x)
        self._check_tokens('context', context)
        q = _split_heads(linear(self.q, x), self.num_heads)
        k, v = (_split_heads(t, self.num_heads) for t in linear(self.kv, context).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(self._rotate(q), self._rotate(k), v)
        return linear(self.proj, _merge_heads(out))
