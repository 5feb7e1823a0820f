"""SwinIR (classical SR size) as a GSASR feature encoder, built from timm's Swin pieces.

Layout of SwinIR (Liang et al., 2021) for classical SR: a 3x3 head conv, a LayerNorm over the tokens,
residual Swin transformer groups (RSTB: shifted-window blocks followed by a 3x3 conv and a group
residual), a final LayerNorm, a 3x3 conv after the body with a global residual, then SwinIR's
``conv_before_upsample`` (3x3 conv to 64 channels + LeakyReLU). The pixel-shuffle upsampler and the
last conv are dropped, as in the official GSASR encoder: the encoder returns 64-channel features at the
LR size (11.6 M parameters with the defaults; SwinIR-classical x4 with its upsampler has 11.9 M).

The transformer blocks are ``timm.models.swin_transformer.SwinTransformerBlock`` (channels-last input,
always partitioned into full windows, shift mask computed for the actual size). The input is padded
to a window multiple inside the encoder and the output is cropped back, so any LR size works.
Module names follow SwinIR's where the structure matches, so that official checkpoints load through a
short key map (:data:`SWINIR_OFFICIAL_KEY_MAP`, used by :mod:`gsasr_plugin.archs.pretrained`).
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.utils.checkpoint
from timm.models.swin_transformer import SwinTransformerBlock
from torch import nn

from gsasr_plugin.archs.encoder_registry import ENCODER_REGISTRY
from gsasr_plugin.archs.mean_shift import DIV2K_RGB_MEAN, MeanShiftInput
from gsasr_plugin.archs.window_utils import pad_to_multiple, trunc_normal_

__all__ = ['SwinIREncoder', 'ResidualGroup', 'ResidualSwinGroup', 'WindowTransformerEncoder', 'SWINIR_OFFICIAL_KEY_MAP',
           'SWINIR_OFFICIAL_SKIPPED_KEYS', 'init_transformer_weights', 'stochastic_depth_rates', 'check_transformer_sizes']

# Official SwinIR (JingyunLiang/SwinIR, models/network_swinir.py) key -> our key, as regex rules.
SWINIR_OFFICIAL_KEY_MAP: Tuple[Tuple[str, str], ...] = (
    (r'^patch_embed\.norm\.', 'embed_norm.'),
    (r'^layers\.(\d+)\.residual_group\.blocks\.', r'layers.\1.blocks.'),
    (r'^conv_before_upsample\.0\.', 'conv_before_upsample.0.'),
)
# Official keys that have no counterpart here, with the reason reported when they are skipped.
SWINIR_OFFICIAL_SKIPPED_KEYS: Tuple[Tuple[str, str], ...] = (
    (r'^(upsample|conv_last|conv_up1|conv_up2|conv_hr)\.', 'upsampler (GSASR renders instead)'),
    (r'\.relative_position_index$', 'buffer recomputed from the window size'),
    (r'\.attn_mask$', 'buffer recomputed for each input size'),
)


def check_transformer_sizes(depths: Sequence[int], num_heads: Sequence[int], embed_dim: int,
                            window_size: int) -> None:
    """Raise ValueError naming the option when the transformer sizes do not fit together."""
    if len(depths) == 0 or any(int(d) < 1 for d in depths):
        raise ValueError(f'depths must be a non-empty list of positive ints, got {list(depths)}')
    if len(num_heads) != len(depths):
        raise ValueError(f'num_heads needs one entry per group (len(depths)={len(depths)}), got {list(num_heads)}')
    for heads in num_heads:
        if int(heads) < 1 or embed_dim % int(heads):
            raise ValueError(f'embed_dim ({embed_dim}) must be divisible by every num_heads entry, '
                             f'got {list(num_heads)}')
    if int(window_size) < 1:
        raise ValueError(f'window_size must be >= 1, got {window_size}')


def stochastic_depth_rates(depths: Sequence[int], drop_path_rate: float) -> list:
    """Per-block drop-path rates rising linearly from 0 to ``drop_path_rate`` over all blocks."""
    total = int(sum(depths))
    return [drop_path_rate * i / (total - 1) if total > 1 else 0. for i in range(total)]


def init_transformer_weights(module: nn.Module) -> None:
    """Swin/SwinIR initialisation: truncated normal (std 0.02) linears, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class WindowTransformerEncoder(MeanShiftInput, nn.Module):
    """SwinIR's outline without the upsampler, shared by :class:`SwinIREncoder` and :class:`HATEncoder`; subclasses
    pick the groups.

    Mean subtraction and ``img_range``, padding to a window multiple, head conv, token LayerNorm, the
    residual groups, LayerNorm, conv after the body with a global residual, ``conv_before_upsample``
    (conv to ``num_feat`` + LeakyReLU), crop back to the input size.
    """

    def _build_trunk(self, num_in_ch: int, num_feat: int, embed_dim: int, depths: Sequence[int],
                     num_heads: Sequence[int], window_size: int, drop_rate: float, drop_path_rate: float,
                     patch_norm: bool, img_range: float, rgb_mean: Optional[Sequence[float]], pad_mode: str,
                     make_group: Callable[[int, int, List[float]], nn.Module]) -> None:
        """Validate the shared options and build the modules; ``make_group(depth, heads, drop_path_rates)``."""
        self._init_mean_shift(num_in_ch, rgb_mean, img_range)
        if pad_mode not in ('reflect', 'replicate', 'constant'):
            raise ValueError(f"pad_mode must be 'reflect', 'replicate' or 'constant', got {pad_mode!r}")
        self.out_channels = num_feat
        self.window_size = int(window_size)
        self.pad_mode = pad_mode

        self.conv_first = nn.Conv2d(num_in_ch, embed_dim, 3, 1, 1)
        self.embed_norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()
        self.pos_drop = nn.Dropout(drop_rate)
        rates = stochastic_depth_rates(depths, drop_path_rate)
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList([
            make_group(int(depth), int(heads), rates[start:start + int(depth)])
            for depth, heads, start in zip(depths, num_heads, starts)
        ])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        # SwinIR's conv_before_upsample: the last layer the official GSASR encoder keeps.
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.apply(init_transformer_weights)

    @property
    def alignment(self) -> int:
        """The encoder contract (docs/layout.md): the window grid, in LR pixels, the input is padded to."""
        return self.window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(self.shift_mean(x), self.window_size, mode=self.pad_mode)
        feat = self.conv_first(x)
        tokens = self.pos_drop(self.embed_norm(feat.permute(0, 2, 3, 1)))
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.norm(tokens)
        feat = self.conv_after_body(tokens.permute(0, 3, 1, 2)) + feat
        return self.conv_before_upsample(feat)[..., :height, :width]


def _channels_last_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a (B, C, H, W) conv to channels-last (B, H, W, C) tokens."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ResidualGroup(nn.Module):
    """The residual group of SwinIR and HAT: its layers in order (each gradient-checkpointed while training with
    ``use_checkpoint``), a 3x3 conv and a residual over the group. Channels-last (B, H, W, C) tokens.

    Subclasses build ``blocks`` (and whatever else :meth:`layers` lists), ``conv`` and ``use_checkpoint``.
    """

    use_checkpoint: bool
    blocks: nn.ModuleList
    conv: nn.Conv2d

    def layers(self) -> Sequence[nn.Module]:
        """The layers in the order they run (the blocks)."""
        return self.blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.layers():
            if self.use_checkpoint and out.requires_grad:
                out = torch.utils.checkpoint.checkpoint(layer, out, use_reentrant=False)
            else:
                out = layer(out)
        return x + _channels_last_conv(self.conv, out)


class ResidualSwinGroup(ResidualGroup):
    """SwinIR's RSTB: ``depth`` timm Swin blocks (alternating plain / shifted windows), a 3x3 conv, a residual.

    Works on channels-last (B, H, W, C) tokens whose H and W are multiples of ``window_size``.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float = 2.,
                 qkv_bias: bool = True, drop: float = 0., attn_drop: float = 0.,
                 drop_path: Sequence[float] = (), use_checkpoint: bool = False):
        super().__init__()
        drop_path = list(drop_path) or [0.] * depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(
                dim=dim,
                input_resolution=(window_size, window_size),  # unused: always_partition + dynamic_mask
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                always_partition=True,  # keep the window size whatever the input size (we pad instead)
                dynamic_mask=True,  # shift mask for the actual (padded) size of each input
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i]) for i in range(depth)
        ])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)


@ENCODER_REGISTRY.register()
class SwinIREncoder(WindowTransformerEncoder):
    """SwinIR feature encoder: (B, num_in_ch, h, w) in [0, 1] -> (B, num_feat, h, w), any h and w.

    Args:
        num_in_ch: Input image channels. Default: 3.
        num_feat: Output feature channels (``out_channels``), SwinIR's ``conv_before_upsample`` width.
            Default: 64.
        embed_dim: Transformer width. Default: 180.
        depths: Blocks per residual Swin group (RSTB). Default: six groups of 6.
        num_heads: Attention heads per group. Default: 6 in every group.
        window_size: Attention window side; the input is padded to a multiple of it. Default: 8.
        mlp_ratio: MLP hidden width / ``embed_dim``. Default: 2.
        qkv_bias: Bias in the qkv projection. Default: True.
        drop_rate: Dropout after attention / MLP projections. Default: 0.
        attn_drop_rate: Dropout on attention weights. Default: 0.
        drop_path_rate: Stochastic depth, rising linearly over the blocks to this value. Default: 0.1.
        patch_norm: LayerNorm on the tokens after the head conv (SwinIR's ``patch_embed.norm``). Default: True.
        img_range: The mean-subtracted input is multiplied by this. Default: 1.
        rgb_mean: Mean subtracted from the input (DIV2K's RGB mean). Default: (0.4488, 0.4371, 0.4040).
        use_checkpoint: Gradient checkpointing per block (saves memory in training). Default: False.
        pad_mode: How the input is padded to a window multiple ('reflect' as the official test code,
            'replicate' or 'constant'). Default: 'reflect'.
    """

    official_key_map = SWINIR_OFFICIAL_KEY_MAP
    official_skipped_keys = SWINIR_OFFICIAL_SKIPPED_KEYS

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, embed_dim: int = 180,
                 depths: Sequence[int] = (6, 6, 6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
                 window_size: int = 8, mlp_ratio: float = 2., qkv_bias: bool = True, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.1, patch_norm: bool = True,
                 img_range: float = 1., rgb_mean: Optional[Sequence[float]] = DIV2K_RGB_MEAN,
                 use_checkpoint: bool = False, pad_mode: str = 'reflect'):
        super().__init__()
        check_transformer_sizes(depths, num_heads, embed_dim, window_size)
        self._build_trunk(
            num_in_ch, num_feat, embed_dim, depths, num_heads, window_size, drop_rate, drop_path_rate, patch_norm,
            img_range, rgb_mean, pad_mode, lambda depth, heads, rates: ResidualSwinGroup(
                embed_dim, depth, heads, int(window_size), mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates,
                use_checkpoint))
