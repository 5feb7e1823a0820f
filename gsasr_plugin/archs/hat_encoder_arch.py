"""HAT (classical SR sizes HAT and HAT-L) as a GSASR feature encoder, built from timm's Swin pieces.

Layout of HAT (Chen et al., 2023, "Activating More Pixels in Image Super-Resolution Transformer"):
SwinIR's outline (head conv, token LayerNorm, residual groups, LayerNorm, conv after the body, global
residual, ``conv_before_upsample`` to 64 channels) where each residual group (RHAG) holds hybrid
attention blocks (HAB: shifted-window self-attention plus a parallel channel-attention conv branch
scaled by ``conv_scale``) followed by one overlapping cross-attention block (OCAB: queries from
``window_size`` windows attend to keys/values from larger windows overlapping their neighbours).
The upsampler is dropped: the encoder returns 64-channel features at the LR size.

Sizes: HAT is 6 groups of 6 blocks, HAT-L 12 groups (``size: HAT-L``); both embed 180 channels with
6 heads, window 16, MLP ratio 2, overlap ratio 0.5, compress ratio 3, squeeze factor 30.

The HAB is timm's ``SwinTransformerBlock`` (its window attention, MLP, norms and shift handling) with
the conv branch added; the OCAB uses timm's ``Mlp``, window partition helpers and init. Official
checkpoints (XPixelGroup/HAT) load through :data:`HAT_OFFICIAL_KEY_MAP`.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from gsasr_plugin.archs.encoder_registry import ENCODER_REGISTRY
from gsasr_plugin.archs.mean_shift import DIV2K_RGB_MEAN
from gsasr_plugin.archs.swinir_encoder_arch import ResidualGroup, WindowTransformerEncoder, check_transformer_sizes
from gsasr_plugin.archs.window_utils import Mlp, from_window_tokens, to_window_tokens, trunc_normal_

__all__ = ['HATEncoder', 'HybridAttentionBlock', 'OverlappingCrossAttention', 'ResidualHybridAttentionGroup',
           'ChannelAttentionBlock', 'overlapping_relative_position_index', 'overlapping_windows', 'HAT_SIZES',
           'HAT_OFFICIAL_KEY_MAP', 'HAT_OFFICIAL_SKIPPED_KEYS']

# Presets for ``size``: (depths, num_heads).
HAT_SIZES = {
    'HAT': ((6, ) * 6, (6, ) * 6),
    'HAT-L': ((6, ) * 12, (6, ) * 12),
}

# Official HAT (XPixelGroup/HAT, hat/archs/hat_arch.py) key -> our key, as regex rules.
HAT_OFFICIAL_KEY_MAP: Tuple[Tuple[str, str], ...] = (
    (r'^patch_embed\.norm\.', 'embed_norm.'),
    (r'^(layers\.\d+\.)residual_group\.blocks\.(\d+)\.conv_block\.cab\.0\.', r'\1blocks.\2.cab.conv_in.'),
    (r'^(layers\.\d+\.)residual_group\.blocks\.(\d+)\.conv_block\.cab\.2\.', r'\1blocks.\2.cab.conv_out.'),
    (r'^(layers\.\d+\.)residual_group\.blocks\.(\d+)\.conv_block\.cab\.3\.attention\.1\.', r'\1blocks.\2.cab.squeeze.'),
    (r'^(layers\.\d+\.)residual_group\.blocks\.(\d+)\.conv_block\.cab\.3\.attention\.3\.', r'\1blocks.\2.cab.excite.'),
    (r'^(layers\.\d+\.)residual_group\.blocks\.', r'\1blocks.'),
    (r'^(layers\.\d+\.)residual_group\.overlap_attn\.', r'\1overlap_attn.'),
)
HAT_OFFICIAL_SKIPPED_KEYS: Tuple[Tuple[str, str], ...] = (
    (r'^(upsample|conv_last)\.', 'upsampler (GSASR renders instead)'),
    (r'^relative_position_index_(SA|OCA)$', 'buffer recomputed from the window size'),
    (r'\.attn_mask$', 'buffer recomputed for each input size'),
)


def overlapping_relative_position_index(window_size: int, overlap_window_size: int) -> torch.Tensor:
    """(ws*ws, ows*ows) indices into a ((ws + ows - 1)^2, heads) bias table, for HAT's OCAB.

    Rows are query positions in a ``ws`` window, columns key positions in the ``ows`` window unfolded
    around it. HAT offsets each axis' difference (key - query) by ``ws - ows + 1``, which leaves some
    indices negative (PyTorch then counts from the table's end); we return the same table entries as
    non-negative indices so that official bias tables mean the same here.
    """
    span = window_size + overlap_window_size - 1
    query = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'), -1)
    key = torch.stack(
        torch.meshgrid(torch.arange(overlap_window_size), torch.arange(overlap_window_size), indexing='ij'), -1)
    offset = key.view(1, -1, 2) - query.view(-1, 1, 2) + (window_size - overlap_window_size + 1)
    return (offset[..., 0] * span + offset[..., 1]) % (span * span)


def overlapping_windows(x: torch.Tensor, window_size: int, overlap_window_size: int) -> torch.Tensor:
    """(B, H, W, C) map -> (B * nW, ows * ows, C) tokens of the enlarged windows around each ``window_size`` window.

    Window ``n`` (in :func:`to_window_tokens` order) gets the ``ows x ows`` square with the same centre,
    zero-padded at the borders ((ows - ws) // 2 before, the rest after), tokens row-major: HAT's OCAB
    keys/values.
    """
    batch, _, _, channels = x.shape
    ws, ows = window_size, overlap_window_size
    before = (ows - ws) // 2
    x = F.pad(x.permute(0, 3, 1, 2), (before, ows - ws - before, before, ows - ws - before))
    x = F.unfold(x, kernel_size=ows, stride=ws)  # B, C*ows*ows, nW
    return x.view(batch, channels, ows * ows, -1).permute(0, 3, 2, 1).reshape(-1, ows * ows, channels)


class ChannelAttentionBlock(nn.Module):
    """HAT's CAB: conv (C -> C / compress), GELU, conv back to C, then squeeze-excitation channel attention."""

    def __init__(self, dim: int, compress_ratio: int = 3, squeeze_factor: int = 30):
        super().__init__()
        hidden, squeezed = max(1, dim // compress_ratio), max(1, dim // squeeze_factor)
        self.conv_in = nn.Conv2d(dim, hidden, 3, 1, 1)
        self.act = nn.GELU()
        self.conv_out = nn.Conv2d(hidden, dim, 3, 1, 1)
        self.squeeze = nn.Conv2d(dim, squeezed, 1)
        self.excite = nn.Conv2d(squeezed, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_out(self.act(self.conv_in(x)))
        weight = torch.sigmoid(self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(x, 1)))))
        return x * weight


class HybridAttentionBlock(SwinTransformerBlock):
    """HAT's HAB: a timm Swin block whose attention branch gets a parallel, scaled channel-attention conv.

    ``x + drop_path(W-MSA(norm1(x))) + conv_scale * CAB(norm1(x))``, then the block's MLP. Channels-last
    (B, H, W, C) input with H, W multiples of ``window_size``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, compress_ratio: int = 3,
                 squeeze_factor: int = 30, conv_scale: float = 0.01, mlp_ratio: float = 2., qkv_bias: bool = True,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0.):
        super().__init__(dim=dim, input_resolution=(window_size, window_size), num_heads=num_heads,
                         window_size=window_size, shift_size=shift_size, always_partition=True, dynamic_mask=True,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop, attn_drop=attn_drop,
                         drop_path=drop_path)
        self.conv_scale = conv_scale
        self.cab = ChannelAttentionBlock(dim, compress_ratio, squeeze_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        conv = self.cab(normed.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path1(self._attn(normed)) + self.conv_scale * conv
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class OverlappingCrossAttention(nn.Module):
    """HAT's OCAB: window queries attend to keys/values of an enlarged, overlapping window, then an MLP.

    The key/value window has side ``ows = window_size + int(overlap_ratio * window_size)`` and the same
    centre as the query window (zero padding at the borders). Channels-last (B, H, W, C) input with
    H, W multiples of ``window_size``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, overlap_ratio: float = 0.5,
                 mlp_ratio: float = 2., qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.overlap_window_size = window_size + int(overlap_ratio * window_size)
        self.scale = (dim // num_heads)**-0.5
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        span = window_size + self.overlap_window_size - 1
        self.relative_position_bias_table = nn.Parameter(torch.zeros(span * span, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=.02)
        self.register_buffer('relative_position_index',
                             overlapping_relative_position_index(window_size, self.overlap_window_size),
                             persistent=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        ws, ows, heads = self.window_size, self.overlap_window_size, self.num_heads
        query, key, value = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        query = to_window_tokens(query, ws)  # B*nW, ws*ws, C
        key, value = overlapping_windows(torch.cat([key, value], dim=-1), ws, ows).chunk(2, dim=-1)

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], t.shape[1], heads, dim // heads).transpose(1, 2)

        attn = (split_heads(query) * self.scale) @ split_heads(key).transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(ws * ws, ows * ows, heads).permute(2, 0, 1).unsqueeze(0)
        out = (attn.softmax(dim=-1) @ split_heads(value)).transpose(1, 2).reshape(-1, ws * ws, dim)
        x = x + self.proj(from_window_tokens(out, ws, height, width))
        return x + self.mlp(self.norm2(x))


class ResidualHybridAttentionGroup(ResidualGroup):
    """HAT's RHAG: ``depth`` hybrid attention blocks, one OCAB, a 3x3 conv and a group residual."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, compress_ratio: int,
                 squeeze_factor: int, conv_scale: float, overlap_ratio: float, mlp_ratio: float = 2.,
                 qkv_bias: bool = True, drop: float = 0., attn_drop: float = 0., drop_path: Sequence[float] = (),
                 use_checkpoint: bool = False):
        super().__init__()
        drop_path = list(drop_path) or [0.] * depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            HybridAttentionBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, compress_ratio,
                                 squeeze_factor, conv_scale, mlp_ratio, qkv_bias, drop, attn_drop, drop_path[i])
            for i in range(depth)
        ])
        self.overlap_attn = OverlappingCrossAttention(dim, num_heads, window_size, overlap_ratio, mlp_ratio, qkv_bias)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def layers(self) -> Sequence[nn.Module]:
        """The hybrid blocks, then the overlapping cross-attention."""
        return [*self.blocks, self.overlap_attn]


def hat_sizes(size: str, depths: Optional[Sequence[int]], num_heads: Optional[Sequence[int]], embed_dim: int,
              window_size: int, overlap_ratio: float) -> Tuple[List[int], List[int]]:
    """(depths, num_heads) of a HAT-style encoder: given, else from ``size`` ('HAT' or 'HAT-L'); checked."""
    if size not in HAT_SIZES:
        raise ValueError(f'size must be one of {sorted(HAT_SIZES)}, got {size!r}')
    depths = list(HAT_SIZES[size][0] if depths is None else depths)
    num_heads = list(num_heads) if num_heads is not None else [HAT_SIZES[size][1][0]] * len(depths)
    check_transformer_sizes(depths, num_heads, embed_dim, window_size)
    if not 0 <= overlap_ratio:
        raise ValueError(f'overlap_ratio must be >= 0, got {overlap_ratio}')
    return depths, num_heads


@ENCODER_REGISTRY.register()
class HATEncoder(WindowTransformerEncoder):
    """HAT feature encoder: (B, num_in_ch, h, w) in [0, 1] -> (B, num_feat, h, w), any h and w.

    Args:
        size: 'HAT' (6 groups of 6 blocks) or 'HAT-L' (12 groups); sets ``depths`` and ``num_heads``
            when those are not given. Default: 'HAT'.
        num_in_ch: Input image channels. Default: 3.
        num_feat: Output feature channels (``out_channels``), HAT's ``conv_before_upsample`` width. Default: 64.
        embed_dim: Transformer width. Default: 180.
        depths: Hybrid attention blocks per group; overrides ``size``. Default: None (from ``size``).
        num_heads: Attention heads per group; overrides ``size``. Default: None (from ``size``).
        window_size: Attention window side; the input is padded to a multiple of it. Default: 16.
        compress_ratio: Channel reduction inside the conv branch. Default: 3.
        squeeze_factor: Channel reduction of the channel attention. Default: 30.
        conv_scale: Weight of the conv branch in each hybrid block. Default: 0.01.
        overlap_ratio: OCAB key/value windows are ``window_size * (1 + overlap_ratio)`` wide. Default: 0.5.
        mlp_ratio: MLP hidden width / ``embed_dim``. Default: 2.
        qkv_bias: Bias in the qkv projections. Default: True.
        drop_rate: Dropout after attention / MLP projections. Default: 0.
        attn_drop_rate: Dropout on attention weights. Default: 0.
        drop_path_rate: Stochastic depth, rising linearly over the blocks to this value. Default: 0.1.
        patch_norm: LayerNorm on the tokens after the head conv. Default: True.
        img_range: The mean-subtracted input is multiplied by this. Default: 1.
        rgb_mean: Mean subtracted from the input (DIV2K's RGB mean). Default: (0.4488, 0.4371, 0.4040).
        use_checkpoint: Gradient checkpointing per block (saves memory in training). Default: False.
        pad_mode: How the input is padded to a window multiple ('reflect', 'replicate' or 'constant').
            Default: 'reflect'.
    """

    official_key_map = HAT_OFFICIAL_KEY_MAP
    official_skipped_keys = HAT_OFFICIAL_SKIPPED_KEYS

    def __init__(self, size: str = 'HAT', num_in_ch: int = 3, num_feat: int = 64, embed_dim: int = 180,
                 depths: Optional[Sequence[int]] = None, num_heads: Optional[Sequence[int]] = None,
                 window_size: int = 16, compress_ratio: int = 3, squeeze_factor: int = 30, conv_scale: float = 0.01,
                 overlap_ratio: float = 0.5, mlp_ratio: float = 2., qkv_bias: bool = True, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.1, patch_norm: bool = True,
                 img_range: float = 1., rgb_mean: Optional[Sequence[float]] = DIV2K_RGB_MEAN,
                 use_checkpoint: bool = False, pad_mode: str = 'reflect'):
        super().__init__()
        depths, num_heads = hat_sizes(size, depths, num_heads, embed_dim, window_size, overlap_ratio)
        self._build_trunk(
            num_in_ch, num_feat, embed_dim, depths, num_heads, window_size, drop_rate, drop_path_rate, patch_norm,
            img_range, rgb_mean, pad_mode, lambda depth, heads, rates: ResidualHybridAttentionGroup(
                embed_dim, depth, heads, int(window_size), compress_ratio, squeeze_factor, conv_scale, overlap_ratio,
                mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates, use_checkpoint))
