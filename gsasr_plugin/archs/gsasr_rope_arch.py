"""GSASR with the RoPE decoder of the authors' "enhanced" and "ultra" models.

The official ``Fea2GS_ROPE_AMP`` decoder (ChrisDud0257/GSASR, ``utils/fea2gsropeamp.py``; loaded by the
official ``inference_enhenced.py``) keeps the paper decoder's outline -- Gaussian embeddings per window
position, condition injection by window cross-attention to the image features, Gaussian interaction by
window self-attention, a single-token scale cross-attention in every layer, pixel-shuffle upsampling to
16 Gaussians per LR pixel and the five MLP heads -- and changes the attention blocks:

- attention uses mixed 2D rotary position embeddings (:mod:`gsasr_plugin.archs.rope_attention`) instead
  of relative position bias tables, as plain scaled dot-product attention with no mask;
- every block (injection and interaction) ends with a 3x3 conv over the token map after its closing
  MLP, before the block residual; a last 3x3 conv (``conv_final``) follows the interaction blocks, before
  the residual around them;
- there may be several injection blocks (``num_injection_blocks``);
- the shifted (odd) injection layers roll the image features by half a window and not the queries, and
  do not roll back; the shifted interaction layers roll the tokens, attend across the wrap-around and roll
  back. Every odd layer shifts, also on an axis that a single window covers.

The released models use 192 channels, 144 tokens on 12 x 12 windows (EDSR, RDN encoders) or 256 tokens on
16 x 16 windows (SwinIR, HAT-L), 1-4 injection blocks of 2-4 layers and 6-8 interaction blocks of 6 layers.

Everything else -- encoder, feature projection, embeddings, scale MLP, upsampling, Gaussian heads, the
Gaussian field, rendering, ``encode`` / ``render`` / ``forward`` and all their options -- is
:class:`GSASR`'s: this class only replaces the attention blocks (:meth:`GSASR.attend`).

The released models' padded canvas and square cut-off are ``GSASRRoPEOfficial``'s
(:mod:`gsasr_plugin.official.gsasr_official_arch`), their weights convert with :mod:`gsasr_plugin.official.gsasr`.
"""
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.fast_linear import mlp
from gsasr_plugin.archs.gsasr_arch import GSASR, WindowLayerBase
from gsasr_plugin.archs.rope_attention import RoPEWindowAttention, RoPEWindowCrossAttention
from gsasr_plugin.archs.window_utils import Mlp, ShiftedWindows, from_windows, to_windows

__all__ = ['GSASRRoPE', 'RoPEInjectionLayer', 'RoPEInteractionLayer', 'RoPEResidualGroup']


def _conv_channels_last(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) conv applied to a channels-last (B, H, W, C) map."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class RoPEInjectionLayer(WindowLayerBase):
    """Scale sublayer, then RoPE window cross-attention from the Gaussian tokens to the image features, then an MLP.

    Shifted layers shift the features (not the queries) by ``-window_size // 2`` on both axes and do not shift
    back, as the official decoder (which rolls the feature map).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float,
                 rope_theta: float = 10.0):
        super().__init__(dim, num_heads, window_size, shifted, mlp_ratio)
        self.cross_attn = RoPEWindowCrossAttention(dim, num_heads, window_size, theta=rope_theta)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor, scale_tokens: torch.Tensor,
                windows: ShiftedWindows) -> torch.Tensor:
        """x, feat: (B, num_windows, N, C) window tokens, pos broadcastable to them, ``windows`` the shifted
        windows of the map (shift ``window_size // 2``); returns the updated x."""
        x = self.scale_attn(x, pos, scale_tokens)
        if self.shifted:
            feat = windows.shift(feat)
        attended = self.cross_attn((self.norm_attn(x) + pos).flatten(0, 1), feat.flatten(0, 1))
        x = x + attended.view(x.shape)
        return x + mlp(self.mlp, self.norm_mlp(x))


class RoPEInteractionLayer(WindowLayerBase):
    """Scale sublayer, then RoPE window self-attention among the Gaussian tokens, then an MLP.

    Shifted layers shift the tokens by ``-window_size // 2`` (the official decoder rolls the map), attend
    without a mask and shift back.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float,
                 rope_theta: float = 10.0):
        super().__init__(dim, num_heads, window_size, shifted, mlp_ratio)
        self.self_attn = RoPEWindowAttention(dim, num_heads, window_size, theta=rope_theta)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, scale_tokens: torch.Tensor,
                windows: ShiftedWindows) -> torch.Tensor:
        """x: (B, num_windows, N, C) window tokens, pos broadcastable to them; returns the updated x."""
        x = self.scale_attn(x, pos, scale_tokens)
        tokens = self.norm_attn(x)
        if self.shifted:
            tokens = windows.shift(tokens)
        attended = self.self_attn(tokens.flatten(0, 1)).view(x.shape)
        if self.shifted:
            attended = windows.unshift(attended)
        x = x + attended
        return x + mlp(self.mlp, self.norm_mlp(x))


class RoPEResidualGroup(nn.Module):
    """LayerNorm -> layers (odd ones shifted) -> MLP -> 3x3 conv, with a residual around the whole group.

    The group takes and returns a (B, H, W, C) map (its conv needs one); its layers run on window tokens, so
    the map is partitioned once after the LayerNorm and reversed once before the conv.
    """

    def __init__(self, layer_cls: Callable[..., nn.Module], num_layers: int, dim: int, num_heads: int,
                 window_size: int, mlp_ratio: float, rope_theta: float = 10.0):
        super().__init__()
        self.window_size = window_size
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([
            layer_cls(dim, num_heads, window_size, bool(i % 2), mlp_ratio, rope_theta) for i in range(num_layers)
        ])
        self.mlp = Mlp(dim, dim, act_layer=nn.ReLU)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        """x: (B, H, W, C) map; ``args``: the layers' other inputs (window tokens, the ``ShiftedWindows``)."""
        k = self.window_size
        out = to_windows(self.norm(x), k)
        for layer in self.layers:
            out = layer(out, *args)
        out = from_windows(mlp(self.mlp, out), k, x.shape[1], x.shape[2])
        return x + _conv_channels_last(self.conv, out)


@ARCH_REGISTRY.register()
class GSASRRoPE(GSASR):
    """GSASR with the RoPE decoder blocks of the official enhanced / ultra models (see the module docstring).

    Args:
        encoder: Options of the LR feature encoder (any name in ``ENCODER_REGISTRY``). Default: EDSR-baseline.
        embed_dim: Channels d of the Gaussian tokens; ``embed_dim / num_heads`` must be a multiple of 4
            (RoPE rotates channel pairs on two axes). Default: 192.
        num_heads: Attention heads. Default: 6.
        window_size: Window side k in LR pixels (k^2 tokens per window). Default: 12.
        num_injection_blocks: Condition injection blocks. Default: 1.
        num_injection_layers: Cross-attention layers per injection block (odd ones shifted). Default: 2.
        num_blocks: Gaussian interaction blocks. Default: 6.
        num_layers_per_block: Self-attention layers per interaction block (odd ones shifted). Default: 6.
        mlp_ratio: Hidden width of the transformer MLPs relative to d. Default: 1 (as official).
        rope_theta: RoPE base of the initial frequencies (learned afterwards). Default: 10 (as official).
        **gsasr_options: Every other option of :class:`GSASR` (scale tokens, Gaussian density and upsampling,
            heads, rasterizer, ...), with GSASR's defaults. The blocks shift as the official decoder (above).
    """

    def __init__(self, encoder: Optional[Mapping[str, Any]] = None, embed_dim: int = 192, num_heads: int = 6,
                 window_size: int = 12, num_injection_blocks: int = 1, num_injection_layers: int = 2,
                 num_blocks: int = 6, num_layers_per_block: int = 6, mlp_ratio: float = 1.0,
                 rope_theta: float = 10.0, **gsasr_options: Any):
        if isinstance(num_injection_blocks, bool) or not isinstance(num_injection_blocks, int) \
                or num_injection_blocks < 1:
            raise ValueError(f'num_injection_blocks must be an integer >= 1, got {num_injection_blocks!r}')
        if isinstance(num_heads, int) and num_heads > 0 and isinstance(embed_dim, int) \
                and embed_dim % num_heads == 0 and (embed_dim // num_heads) % 4:
            raise ValueError(f'embed_dim / num_heads must be a multiple of 4 for RoPE, got {embed_dim} / {num_heads}')
        if not rope_theta > 0:
            raise ValueError(f'rope_theta must be > 0, got {rope_theta!r}')
        super().__init__(encoder=encoder, embed_dim=embed_dim, num_heads=num_heads, window_size=window_size,
                         num_injection_layers=num_injection_layers, num_blocks=num_blocks,
                         num_layers_per_block=num_layers_per_block, mlp_ratio=mlp_ratio, **gsasr_options)
        self.injection = nn.ModuleList([
            RoPEResidualGroup(RoPEInjectionLayer, num_injection_layers, embed_dim, num_heads, window_size, mlp_ratio,
                              rope_theta) for _ in range(num_injection_blocks)
        ])
        self.interaction = nn.ModuleList([
            RoPEResidualGroup(RoPEInteractionLayer, num_layers_per_block, embed_dim, num_heads, window_size,
                              mlp_ratio, rope_theta) for _ in range(num_blocks)
        ])
        self.conv_final = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)

    def _build_attention(self, *args: Any) -> None:
        """GSASR's paper blocks are not built; ``__init__`` builds the RoPE blocks after GSASR's modules."""

    def attend(self, feat: torch.Tensor, scale_tokens: torch.Tensor) -> torch.Tensor:
        """Injection blocks, then interaction blocks and ``conv_final`` with a residual around them.

        The projected features (B, H, W, d) in, the Gaussian tokens (B, H, W, d) out, as :meth:`GSASR.attend`.
        """
        batch, height, width, _ = feat.shape
        k = self.window_size
        windows = ShiftedWindows.plan(batch, height, width, k, k // 2, device=feat.device)  # every odd layer
        embedding, pos = self.window_embeddings()
        num_windows = (height // k) * (width // k)
        x = from_windows(embedding.expand(batch, num_windows, -1, -1), k, height, width)  # the queries' map
        if self.feature_queries:
            x = x + feat
        feat = to_windows(feat, k)
        for block in self.injection:
            x = block(x, pos, feat, scale_tokens, windows)
        del feat
        residual = x
        for block in self.interaction:
            x = block(x, pos, scale_tokens, windows)
        return residual + _conv_channels_last(self.conv_final, x)
