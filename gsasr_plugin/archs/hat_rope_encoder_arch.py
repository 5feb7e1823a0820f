"""HAT with rotary position embeddings: the encoder of the official GSASR "ultra" model (HAT-L, SA-1B).

The official ``HATNOUP_ROPE_AMP`` (ChrisDud0257/GSASR, ``utils/hatropeamp.py``) is HAT-L (12 residual
hybrid attention groups of 6 blocks, embed 192, 6 heads, window 16, overlap ratio 0.5, squeeze factor
32) without the upsampler, changed in four ways that this encoder reproduces:

- every attention (the hybrid attention blocks' window self-attention and the overlapping cross-attention)
  uses mixed 2D rotary position embeddings (:mod:`gsasr_plugin.archs.rope_attention`) instead of a
  relative position bias table;
- attention is plain scaled dot-product attention without a mask: the shifted blocks roll the map by
  half a window, attend within windows that wrap around the border, and roll back (Swin's shift mask is
  computed by the official code but not applied); every odd block shifts, whatever the input size;
- the overlapping cross-attention rotates its ``ws x ws`` queries by the positions of the *first*
  ``ws * ws`` tokens of its ``ows``-wide key grid (token ``n`` at ``(n % ows, n // ows)``), as the
  official code indexes them, while keys get their true positions in the ``ows x ows`` window;
- the image is not mean-shifted (``rgb_mean: ~``) and the output is HAT's ``conv_before_upsample``
  (conv to 64 channels + LeakyReLU).

The trunk (head conv, token LayerNorm, groups, LayerNorm, conv after the body with a global residual,
``conv_before_upsample``) is :class:`WindowTransformerEncoder`'s; the channel-attention branch and the
overlapping windows are HAT's (:mod:`gsasr_plugin.archs.hat_encoder_arch`). Official checkpoints load
through :data:`HAT_ROPE_OFFICIAL_KEY_MAP`.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from gsasr_plugin.archs.encoder_registry import ENCODER_REGISTRY
from gsasr_plugin.archs.hat_encoder_arch import (HAT_OFFICIAL_KEY_MAP, ChannelAttentionBlock, hat_sizes,
                                                 overlapping_windows)
from gsasr_plugin.archs.rope_attention import MixedRoPE, RoPEWindowAttention, grid_positions, register_positions
from gsasr_plugin.archs.swinir_encoder_arch import ResidualGroup, WindowTransformerEncoder
from gsasr_plugin.archs.window_utils import DropPath, Mlp, from_window_tokens, to_window_tokens

__all__ = ['HATRoPEEncoder', 'RoPEHybridAttentionBlock', 'RoPEOverlappingCrossAttention', 'RoPEHybridAttentionGroup',
           'HAT_ROPE_OFFICIAL_KEY_MAP', 'HAT_ROPE_OFFICIAL_SKIPPED_KEYS']

# Official HATNOUP_ROPE_AMP key -> our key, as regex rules (first match wins): HAT's, with the RoPE buffers of the
# blocks and of the overlapping attention renamed before HAT's generic block / overlap rules.
_HAT_RULES = dict(zip(('embed_norm', 'cab_in', 'cab_out', 'squeeze', 'excite', 'blocks', 'overlap'),
                      HAT_OFFICIAL_KEY_MAP))
HAT_ROPE_OFFICIAL_KEY_MAP: Tuple[Tuple[str, str], ...] = (
    *(_HAT_RULES[name] for name in ('embed_norm', 'cab_in', 'cab_out', 'squeeze', 'excite')),
    (r'^(layers\.\d+\.)residual_group\.blocks\.(\d+)\.attn\.rope_freqs$', r'\1blocks.\2.attn.rope.freqs'),
    (r'^(layers\.\d+\.)residual_group\.blocks\.(\d+)\.attn\.rope_t_([xy])$', r'\1blocks.\2.attn.pos_\3'),
    _HAT_RULES['blocks'],
    (r'^(layers\.\d+\.)residual_group\.overlap_attn\.rope_freqs$', r'\1overlap_attn.rope.freqs'),
    (r'^(layers\.\d+\.)residual_group\.overlap_attn\.rope_t_([xy])$', r'\1overlap_attn.pos_\2'),
    _HAT_RULES['overlap'],
)
# The official token positions (rope_t_x / rope_t_y, float) load into our integer pos_x / pos_y buffers.
HAT_ROPE_OFFICIAL_SKIPPED_KEYS: Tuple[Tuple[str, str], ...] = (
    (r'^(upsample|conv_last)\.', 'upsampler (GSASR renders instead)'),
    (r'^relative_position_index_(SA|OCA)$', 'unused by the RoPE model (no bias tables)'),
    (r'\.attn_mask$', 'unused (no attention mask)'),
)


class RoPEHybridAttentionBlock(nn.Module):
    """HAT's hybrid attention block with RoPE window attention and no shift mask.

    ``x + drop_path(W-MSA(norm1(x))) + conv_scale * CAB(norm1(x))``, then ``x + drop_path(MLP(norm2(x)))``.
    With ``shift_size`` > 0 the normalised map is rolled by ``-shift_size`` before the window attention
    and rolled back after it, and windows attend across the wrap-around (as the official RoPE HAT).
    Channels-last (B, H, W, C) input with H, W multiples of ``window_size``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int = 3,
                 squeeze_factor: int = 32, conv_scale: float = 0.01, mlp_ratio: float = 2., qkv_bias: bool = True,
                 drop: float = 0., drop_path: float = 0., rope_theta: float = 10.0):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size must be in [0, window_size), got {shift_size} (window_size {window_size})')
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = nn.LayerNorm(dim)
        self.attn = RoPEWindowAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, theta=rope_theta)
        self.proj_drop = nn.Dropout(drop)
        self.cab = ChannelAttentionBlock(dim, compress_ratio, squeeze_factor)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        normed = self.norm1(x)
        conv = self.cab(normed.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        shift = self.shift_size
        shifted = torch.roll(normed, shifts=(-shift, -shift), dims=(1, 2)) if shift else normed
        attended = self.attn(to_window_tokens(shifted, self.window_size))
        attended = from_window_tokens(self.proj_drop(attended), self.window_size, height, width)
        if shift:
            attended = torch.roll(attended, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(attended) + self.conv_scale * conv
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RoPEOverlappingCrossAttention(nn.Module):
    """HAT's overlapping cross-attention block with RoPE instead of a bias table, then an MLP.

    Queries of each ``window_size`` window attend to the keys/values of the enlarged ``ows`` window with
    the same centre (``ows = window_size + int(overlap_ratio * window_size)``). Keys are rotated by their
    positions in the ``ows x ows`` window; queries by the positions of the first ``ws * ws`` tokens of that
    ``ows``-wide grid, which is how the official code indexes them (see the module docstring).
    Channels-last (B, H, W, C) input with H, W multiples of ``window_size``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, overlap_ratio: float = 0.5,
                 mlp_ratio: float = 2., qkv_bias: bool = True, rope_theta: float = 10.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.window_size = window_size
        self.overlap_window_size = window_size + int(overlap_ratio * window_size)
        ows = self.overlap_window_size
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.rope = MixedRoPE(dim // num_heads, num_heads, rope_theta)
        register_positions(self, *grid_positions(ows * ows, ows))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = x.shape
        ws, ows, heads = self.window_size, self.overlap_window_size, self.num_heads
        query, key, value = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        query = to_window_tokens(query, ws)
        key, value = overlapping_windows(torch.cat([key, value], dim=-1), ws, ows).chunk(2, dim=-1)
        query, key, value = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (query, key, value))
        num_queries = ws * ws
        query = self.rope(query, self.pos_x[:num_queries], self.pos_y[:num_queries])
        key = self.rope(key, self.pos_x, self.pos_y)
        out = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).flatten(2)
        x = x + self.proj(from_window_tokens(out, ws, height, width))
        return x + self.mlp(self.norm2(x))


class RoPEHybridAttentionGroup(ResidualGroup):
    """HAT's residual group with RoPE blocks: ``depth`` hybrid blocks (odd ones shifted), one OCAB, a 3x3
    conv and a group residual. Channels-last (B, H, W, C) input."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, overlap_ratio: float, mlp_ratio: float = 2.,
                 qkv_bias: bool = True, drop: float = 0., drop_path: Sequence[float] = (),
                 rope_theta: float = 10.0, use_checkpoint: bool = False):
        super().__init__()
        drop_path = list(drop_path) or [0.] * depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            RoPEHybridAttentionBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                     compress_ratio, squeeze_factor, conv_scale, mlp_ratio, qkv_bias, drop,
                                     drop_path[i], rope_theta) for i in range(depth)
        ])
        self.overlap_attn = RoPEOverlappingCrossAttention(dim, num_heads, window_size, overlap_ratio, mlp_ratio,
                                                          qkv_bias, rope_theta)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def layers(self) -> Sequence[nn.Module]:
        return [*self.blocks, self.overlap_attn]


@ENCODER_REGISTRY.register()
class HATRoPEEncoder(WindowTransformerEncoder):
    """HAT with RoPE attention (official GSASR ultra encoder): (B, num_in_ch, h, w) in [0, 1] -> (B, num_feat, h, w).

    Any h and w: the input is padded to a window multiple inside (the official inference pads the image
    to a multiple of 16 before the encoder, which makes this padding a no-op).

    Args:
        size: 'HAT' (6 groups of 6 blocks) or 'HAT-L' (12 groups); sets ``depths`` and ``num_heads``
            when those are not given. Default: 'HAT-L'.
        num_in_ch: Input image channels. Default: 3.
        num_feat: Output feature channels (``out_channels``). Default: 64.
        embed_dim: Transformer width; ``embed_dim / heads`` must be a multiple of 4. Default: 192.
        depths: Hybrid attention blocks per group; overrides ``size``. Default: None (from ``size``).
        num_heads: Attention heads per group; overrides ``size``. Default: None (from ``size``).
        window_size: Attention window side. Default: 16.
        compress_ratio: Channel reduction inside the conv branch. Default: 3.
        squeeze_factor: Channel reduction of the channel attention. Default: 32.
        conv_scale: Weight of the conv branch in each hybrid block. Default: 0.01.
        overlap_ratio: OCAB key/value windows are ``window_size * (1 + overlap_ratio)`` wide. Default: 0.5.
        mlp_ratio: MLP hidden width / ``embed_dim``. Default: 2.
        qkv_bias: Bias in the qkv projections. Default: True.
        drop_rate: Dropout after attention / MLP projections. Default: 0.
        drop_path_rate: Stochastic depth, rising linearly over the blocks to this value. Default: 0.1.
        patch_norm: LayerNorm on the tokens after the head conv. Default: True.
        img_range: The (mean-subtracted) input is multiplied by this. Default: 1.
        rgb_mean: Mean subtracted from the input; None (the official RoPE model) subtracts nothing.
            Default: None.
        rope_theta: RoPE base of the initial frequencies. Default: 10.
        use_checkpoint: Gradient checkpointing per block (saves memory in training). Default: False.
        pad_mode: How the input is padded to a window multiple ('reflect', 'replicate' or 'constant').
            Default: 'reflect'.
    """

    official_key_map = HAT_ROPE_OFFICIAL_KEY_MAP
    official_skipped_keys = HAT_ROPE_OFFICIAL_SKIPPED_KEYS

    def __init__(self, size: str = 'HAT-L', num_in_ch: int = 3, num_feat: int = 64, embed_dim: int = 192,
                 depths: Optional[Sequence[int]] = None, num_heads: Optional[Sequence[int]] = None,
                 window_size: int = 16, compress_ratio: int = 3, squeeze_factor: int = 32, conv_scale: float = 0.01,
                 overlap_ratio: float = 0.5, mlp_ratio: float = 2., qkv_bias: bool = True, drop_rate: float = 0.,
                 drop_path_rate: float = 0.1, patch_norm: bool = True, img_range: float = 1.,
                 rgb_mean: Optional[Sequence[float]] = None, rope_theta: float = 10.0, use_checkpoint: bool = False,
                 pad_mode: str = 'reflect'):
        super().__init__()
        depths, num_heads = hat_sizes(size, depths, num_heads, embed_dim, window_size, overlap_ratio)
        for heads in num_heads:
            if (embed_dim // int(heads)) % 4:
                raise ValueError(f'embed_dim / num_heads must be a multiple of 4 for RoPE, got {embed_dim} / {heads}')
        self._build_trunk(
            num_in_ch, num_feat, embed_dim, depths, num_heads, window_size, drop_rate, drop_path_rate, patch_norm,
            img_range, rgb_mean, pad_mode, lambda depth, heads, rates: RoPEHybridAttentionGroup(
                embed_dim, depth, heads, int(window_size), compress_ratio, squeeze_factor, conv_scale, overlap_ratio,
                mlp_ratio, qkv_bias, drop_rate, rates, rope_theta, use_checkpoint))
