"""EDSR-baseline as a GSASR feature encoder (no upsampler).

Layout of EDSR (Lim et al., 2017) in its "baseline" size as used by LIIF and GSASR: a 3x3 head conv,
16 residual blocks of two 3x3 convs without batch norm, a 3x3 conv after the body and a global
residual. The upsampler and the last conv are dropped: the encoder returns 64-channel features at the
LR size. With the defaults this is 1,220,416 parameters (the official GSASR number is 1.22 M).

The official GSASR encoder (``EDSRNOUP``) differs from EDSR in two ways, both options here: it
returns the body output without the global residual (``global_residual: false``) and it feeds the
image without the mean shift (``rgb_mean: ~``).
"""
from typing import Optional, Sequence

import torch
from torch import nn

from gsasr_plugin.archs.encoder_registry import ENCODER_REGISTRY
from gsasr_plugin.archs.mean_shift import DIV2K_RGB_MEAN, MeanShiftInput

__all__ = ['EDSREncoder', 'EDSR_OFFICIAL_SKIPPED_KEYS']

# Keys of BasicSR's (and LIIF's, EDSR's) EDSR checkpoints that have no counterpart here: the x2/x3/x4 upsampler
# and the last conv (``encoder: pretrained:``, ``gsasr_plugin.archs.pretrained``). The official GSASR encoder
# (``EDSRNOUP``) has our names and none of these.
EDSR_OFFICIAL_SKIPPED_KEYS = ((r'^(upsample|conv_last|tail)\.', 'upsampler (GSASR renders instead)'), )


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with an identity shortcut and a residual scale (EDSR's block)."""

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0):
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


@ENCODER_REGISTRY.register()
class EDSREncoder(MeanShiftInput, nn.Module):
    """EDSR-baseline feature encoder: (B, num_in_ch, h, w) in [0, 1] -> (B, num_feat, h, w).

    Args:
        num_in_ch: Input image channels. Default: 3.
        num_feat: Feature channels, also ``out_channels``. Default: 64.
        num_block: Residual blocks in the body. Default: 16.
        res_scale: Residual scale of the blocks. Default: 1.
        img_range: The mean-subtracted input is multiplied by this (EDSR's mean shift). Default: 1.
        rgb_mean: Mean subtracted from the input (DIV2K's RGB mean); ``None`` subtracts nothing (the official
            GSASR encoder). Default: (0.4488, 0.4371, 0.4040).
        global_residual: Add the head conv's output to the body's (EDSR). The official GSASR encoder
            returns the body output alone (``False``). Default: True.
    """

    alignment = 1  # convolutional: any input size, no windows (the encoder contract, docs/layout.md)
    official_skipped_keys = EDSR_OFFICIAL_SKIPPED_KEYS

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, num_block: int = 16, res_scale: float = 1.0,
                 img_range: float = 1.0, rgb_mean: Optional[Sequence[float]] = DIV2K_RGB_MEAN,
                 global_residual: bool = True):
        super().__init__()
        if num_block < 0:
            raise ValueError(f'num_block must be >= 0, got {num_block}')
        if not isinstance(global_residual, bool):
            raise TypeError(f'global_residual must be true or false, got {global_residual!r}')
        self.global_residual = global_residual
        self._init_mean_shift(num_in_ch, rgb_mean, img_range)
        self.out_channels = num_feat
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat, res_scale) for _ in range(num_block)])
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(self.shift_mean(x))
        out = self.conv_after_body(self.body(x))
        return out + x if self.global_residual else out
