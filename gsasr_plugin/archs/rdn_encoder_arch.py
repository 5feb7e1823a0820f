"""RDN (configuration B) as a GSASR feature encoder (no upsampler).

Residual Dense Network (Zhang et al., 2018): shallow features (two 3x3 convs), D residual dense blocks
of C densely connected 3x3 conv+ReLU layers (growth G) with 1x1 local feature fusion and a local
residual, then global feature fusion (1x1 over all block outputs, 3x3) and a global residual. Config B
is G0 = 64, D = 16, C = 8, G = 64. As in LIIF and GSASR the upsampler is dropped, giving 64-channel
features at the LR size: 21,973,952 parameters with the defaults (the official GSASR figure is 22.0 M).
"""
from typing import Sequence

import torch
from torch import nn

from gsasr_plugin.archs.encoder_registry import ENCODER_REGISTRY
from gsasr_plugin.archs.mean_shift import DIV2K_RGB_MEAN, MeanShiftInput

__all__ = ['RDNEncoder', 'RDN_OFFICIAL_KEY_MAP', 'RDN_OFFICIAL_SKIPPED_KEYS']

# The names of RDN checkpoints (the RDN of LIIF / EDSR-PyTorch, and the official GSASR encoder ``RDNNOUP``,
# e.g. a released ``encoder.pth``) -> ours, for ``encoder: pretrained:`` (``gsasr_plugin.archs.pretrained``).
RDN_OFFICIAL_KEY_MAP = (
    (r'^SFENet1\.', 'shallow1.'),
    (r'^SFENet2\.', 'shallow2.'),
    (r'^RDBs\.(\d+)\.convs\.(\d+)\.conv\.0\.', r'blocks.\1.layers.\2.0.'),
    (r'^RDBs\.(\d+)\.LFF\.', r'blocks.\1.fusion.'),
    (r'^GFF\.', 'global_fusion.'),
)
RDN_OFFICIAL_SKIPPED_KEYS = ((r'^UPNet\.', 'upsampler (GSASR renders instead)'), )


class ResidualDenseBlock(nn.Module):
    """C conv+ReLU layers, each seeing the block input and all previous outputs; 1x1 fusion; residual."""

    def __init__(self, num_feat: int, growth: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(num_feat + i * growth, growth, 3, 1, 1), nn.ReLU(inplace=True))
            for i in range(num_layers)
        ])
        self.fusion = nn.Conv2d(num_feat + num_layers * growth, num_feat, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return self.fusion(torch.cat(features, dim=1)) + x


@ENCODER_REGISTRY.register()
class RDNEncoder(MeanShiftInput, nn.Module):
    """RDN feature encoder: (B, num_in_ch, h, w) in [0, 1] -> (B, num_feat, h, w).

    Args:
        num_in_ch: Input image channels. Default: 3.
        num_feat: G0, feature channels and ``out_channels``. Default: 64.
        num_blocks: D, residual dense blocks. Default: 16.
        num_layers: C, conv layers per block. Default: 8.
        growth: G, growth rate (channels each layer adds). Default: 64.
        img_range: The mean-subtracted input is multiplied by this. Default: 1.
        rgb_mean: Mean subtracted from the input. Default: DIV2K's RGB mean.
    """

    alignment = 1  # convolutional: any input size, no windows (the encoder contract, docs/layout.md)
    official_key_map = RDN_OFFICIAL_KEY_MAP
    official_skipped_keys = RDN_OFFICIAL_SKIPPED_KEYS

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, num_blocks: int = 16, num_layers: int = 8,
                 growth: int = 64, img_range: float = 1.0, rgb_mean: Sequence[float] = DIV2K_RGB_MEAN):
        super().__init__()
        for name, value in (('num_blocks', num_blocks), ('num_layers', num_layers), ('growth', growth)):
            if value < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        self._init_mean_shift(num_in_ch, rgb_mean, img_range)
        self.out_channels = num_feat
        self.shallow1 = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.shallow2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.blocks = nn.ModuleList([ResidualDenseBlock(num_feat, growth, num_layers) for _ in range(num_blocks)])
        self.global_fusion = nn.Sequential(
            nn.Conv2d(num_blocks * num_feat, num_feat, 1),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.shallow1(self.shift_mean(x))
        x = self.shallow2(shallow)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return self.global_fusion(torch.cat(outputs, dim=1)) + shallow
