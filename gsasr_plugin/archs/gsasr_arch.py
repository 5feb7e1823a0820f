"""GSASR: arbitrary-scale super-resolution by 2D Gaussian splatting (Chen et al., 2025, arXiv 2501.06838).

One registered network holds the LR feature encoder (built from a nested ``encoder: {type: ...}``
option) and the Gaussian decoder, so BasicSR's EMA, save/load, ``param_key`` and resume work unchanged.

Decoder layout (Sec. 3.2 of the paper, laid out as in the authors' code):

1. Encoder features (B, 64, h, w) are reflect-padded to a multiple of the window size k (12) and
   projected to ``embed_dim`` (180) by conv-ReLU-conv. The Gaussians of the padding are kept: they stand
   beyond the right and bottom edges as the mirror image's, and give the last rows and columns the
   neighbours an inner pixel has (without them an image whose side is not a window multiple has a dark
   right / bottom edge: the decoder sees the padding's features, so it does not treat the image edge as
   one).
2. Learnable Gaussian embeddings, one per position of a k x k window (k^2 = 144 tokens), are duplicated
   into every window; a learnable positional embedding marks each token's place in its window (the
   tokens' reference positions form a regular grid over the LR image).
3. A condition injection block: window cross-attention, queries from the embeddings and keys/values
   from the window's features, with a Swin relative position bias; alternate layers shift the windows.
4. ``num_blocks`` (L = 6) Gaussian interaction blocks of window / shifted-window self-attention (timm's
   ``WindowAttention`` with Swin's shift masks).
5. The token map is upsampled by ``num_upsample_stages`` conv + pixel-shuffle stages to
   ``gaussian_density`` (m = 16) tokens per LR pixel. The paper's text reads as m * k^2 tokens per
   window; attending with k^2 tokens and upsampling afterwards (the authors' code) is 256x cheaper.
6. Five 3-layer MLP heads give each Gaussian its opacity and colour (sigmoid), standard deviations
   (sigmoid into ``sigma_range`` LR pixels), correlation (``rho_max * tanh``) and position (its
   reference point plus an offset); the Gaussians are rendered with ``rasterize_gaussians``.

Scale conditioning. Every layer of steps 3-4 starts with a scale cross-attention sublayer. With a
single scale token as keys/values (the authors' choice) the softmax is uniform and the sublayer reduces
to adding one per-image vector to every token (an additive bias that ignores the query). Here an MLP maps
``(1 / s_h, 1 / s_w)`` to ``num_scale_tokens`` (default 4) distinct tokens, so the attention weights
depend on both the query and the scale and anisotropic scales are told apart.

Shifted windows. Shifted layers roll queries (with their positional embedding) and features together,
attention uses Swin's shift mask, and the result is rolled back; an axis that a single window covers is
not shifted (Swin). A subclass changes how the shifted layers shift through :meth:`GSASR._window_plan` and
:meth:`ConditionInjectionLayer.attend_shifted`.

Speed (same math, fewer passes over memory): steps 3-4 keep the token map as window tokens, so
unshifted layers need no partition and shifted layers gather their windows in one pass
(``window_utils.ShiftedWindows``) instead of a roll, a partition, a reverse and a roll back; the scale
attention is evaluated reassociated (``ScaleCrossAttention``); in inference the window attention runs
PyTorch's fused kernel, the linear layers run by oneDNN where PyTorch's BLAS is slower
(``fast_linear``) and the heads go through in cache-sized chunks. Outputs and gradients equal the
plain forward within float rounding (``tests/test_gsasr_decoder_reference.py``).

The authors' released checkpoints run a forward of their own (other shifts, a padded canvas, a square
cut-off); it is a layer apart that subclasses this class (``docs/`` on compatibility), so that this file
holds the method and our choices only.
"""
import math
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.fast_linear import mlp, mlp_sequence
from gsasr_plugin.archs.gaussian_field import GaussianField, Window, check_window, reference_grid, window_field
from gsasr_plugin.archs.sr_network import SRNetwork, activation_bytes
from gsasr_plugin.archs.window_utils import (Mlp, ShiftedWindows, WindowAttention, WindowCrossAttention, from_windows,
                                             pad_to_multiple, shifted_window_mask, to_windows, trunc_normal_,
                                             window_self_attention)
from gsasr_plugin.utils.scale import MISSING_SCALE, Size, Target

__all__ = ['GSASR', 'LRFeatures']

# lr_color_residual: LR colours are clamped to [eps, 1 - eps] before the logit (logit(0) is -inf).
_PRIOR_EPS = 1e-3
# Tokens per chunk of the heads without autograd (a head's hidden activations: chunk x hidden floats).
_HEAD_CHUNK = 4096
# Attention windows per chunk of a window layer without autograd (k = 12: 2304 tokens, 1.7 MB at d = 180).
_WINDOW_CHUNK = 16
# About how many Gaussians are upsampled and sent through the heads at a time without autograd (one band of LR
# rows: the last conv's output is ~25 MB at d = 180).
_BAND_TOKENS = 1 << 15


def _mlp_head(dim: int, hidden: int, out_features: int) -> nn.Sequential:
    """The 3-layer MLP of every Gaussian attribute head: dim -> dim -> hidden -> out."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_features))


class ScaleCrossAttention(nn.Module):
    """Pre-norm cross-attention of every token to the scale tokens, then a pre-norm MLP.

    With several distinct scale tokens the softmax is not uniform: what a token takes from the scale
    depends on the token and on the scale (unlike a single key, which adds one vector to all tokens).

    The attention is ``nn.MultiheadAttention``'s (its parameters and math), evaluated in the order that
    suits T << d scale tokens: a token's logit for head h and scale token t is ``x . (W_q,h^T k_t,h) +
    b_q,h . k_t,h`` and its output ``sum_{h,t} a_h,t (W_o,h v_t,h) + b_o``, so each token costs 2 d h T
    multiply-adds instead of the 2 d^2 of the query and output projections (equal within float rounding).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, scale_tokens: torch.Tensor) -> torch.Tensor:
        """x: (B, ..., C) tokens in any layout, pos broadcastable to x; scale_tokens: (B, T, C)."""
        if scale_tokens.shape[1] == 1 and not torch.is_grad_enabled():
            # One scale token (num_scale_tokens: 1): the softmax is 1 whatever the query, so every token gets
            # out_proj(v). With autograd the full path runs, so that the query side keeps its (zero) gradients.
            x = x + self.attend_single_token(scale_tokens).view(x.shape[0], *([1] * (x.dim() - 2)), -1)
        else:
            x = x + self.attend(self.norm_attn(x) + pos, scale_tokens)
        return x + mlp(self.mlp, self.norm_mlp(x))

    def attend_single_token(self, scale_tokens: torch.Tensor) -> torch.Tensor:
        """What :meth:`attend` gives every query for (B, 1, C) scale tokens: (B, C), ``out_proj(v)``."""
        attn = self.attn
        _, _, w_v = attn.in_proj_weight.chunk(3)
        _, _, b_v = attn.in_proj_bias.chunk(3)
        values = nn.functional.linear(scale_tokens[:, 0], w_v, b_v)
        return nn.functional.linear(values, attn.out_proj.weight, attn.out_proj.bias)

    def attend(self, query: torch.Tensor, scale_tokens: torch.Tensor) -> torch.Tensor:
        """``self.attn(query, scale_tokens, scale_tokens)[0]`` for (B, ..., C) queries, reassociated (see above)."""
        attn = self.attn
        batch, num_scale, dim = scale_tokens.shape
        heads = attn.num_heads
        head_dim = dim // heads
        pairs = heads * num_scale
        shared = batch > 1 and scale_tokens.stride(0) == 0  # one scale for the batch (expanded): project once
        source = scale_tokens[:1] if shared else scale_tokens
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
        keys = nn.functional.linear(source, w_k, b_k).unflatten(-1, (heads, head_dim)) * head_dim**-0.5
        values = nn.functional.linear(source, w_v, b_v).unflatten(-1, (heads, head_dim))
        logit_weight = torch.einsum('bthe,hec->bhtc', keys, w_q.view(heads, head_dim, dim)).flatten(1, 2)
        logit_bias = torch.einsum('bthe,he->bht', keys, b_q.view(heads, head_dim)).reshape(-1, 1, pairs)
        value_out = torch.einsum('bthe,che->bhtc', values, attn.out_proj.weight.view(dim, heads, head_dim))
        value_out = value_out.flatten(1, 2)
        if shared:
            logit_weight, logit_bias, value_out = (t.expand(batch, -1, -1)
                                                   for t in (logit_weight, logit_bias, value_out))
        logits = torch.baddbmm(logit_bias, query.reshape(batch, -1, dim), logit_weight.transpose(1, 2))
        weights = logits.view(batch, -1, heads, num_scale).softmax(dim=-1).view(batch, -1, pairs)
        return torch.baddbmm(attn.out_proj.bias, weights, value_out).view(query.shape)


class WindowLayerBase(nn.Module):
    """Shared plumbing: scale sublayer, pre-norms and the closing MLP.

    The layers work on window tokens ``(B, num_windows, N, C)`` (``to_window_tokens`` order, N = k^2); a
    shifted layer takes its shifted windows from the ``ShiftedWindows`` plan (one gather) instead of
    rolling and re-partitioning the map.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float):
        super().__init__()
        self.window_size = window_size
        self.shifted = shifted
        self.scale_attn = ScaleCrossAttention(dim, num_heads, mlp_ratio)
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU)

    # -------------------------------------------------------------- inference, window chunk by chunk
    def attention_rows(self, windows: ShiftedWindows) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor],
                                                               Optional[torch.Tensor]]:
        """How this layer's attention sees the map: (query rows, context rows, mask). The rows (of the flattened
        window tokens, :attr:`ShiftedWindows.index` or None for the map's own windows) whose tokens make up each
        attention window, queries and the tokens they attend to (features or, for self-attention, the queries
        themselves); the mask of those windows or None. The attention's output goes back to the query rows."""
        if not self.shifted:
            return None, None, None
        return windows.index, windows.index, windows.mask

    def attend_windows(self, tokens: torch.Tensor, pos: torch.Tensor, context: Optional[torch.Tensor],
                       mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The attention sublayer's output for (B_, N, C) windows of (scale-updated) tokens, their positional
        embedding ``pos`` and ``context`` (B_, N, C) or None; ``mask`` (B_, N, N) or None."""
        raise NotImplementedError

    def forward_inplace(self, x: torch.Tensor, pos: torch.Tensor, context: Optional[torch.Tensor],
                        scale_tokens: torch.Tensor, windows: ShiftedWindows,
                        chunk: Optional[int] = None) -> torch.Tensor:
        """Inference (no autograd): the layer on (B, num_windows, N, C) contiguous window tokens ``x``, updated in
        place and returned, ``chunk`` attention windows at a time (default ``_WINDOW_CHUNK``).

        Every sublayer is either per token (scale cross-attention, norms, MLP) or per attention window, so a
        chunk of the layer's windows (gathered by :meth:`attention_rows` for a shifted layer) goes through the
        whole layer at once, its intermediate results staying in cache and no map-sized temporary being
        made; each token is read and written by one chunk. ``pos`` is the positional embedding of each window
        position, broadcastable to (1, 1, N, C); ``context`` the (B, num_windows, N, C) features of a
        cross-attention layer or None.
        """
        batch, num_windows, tokens, dim = x.shape
        chunk = _WINDOW_CHUNK if chunk is None else chunk
        query_rows, context_rows, mask = self.attention_rows(windows)
        flat = x.view(-1, dim)
        flat_context = None if context is None else context.reshape(-1, dim)
        pos = pos.reshape(-1, tokens, dim)
        for image in range(batch):
            image_tokens = scale_tokens[image:image + 1]
            for first in range(0, num_windows, chunk):
                last = min(num_windows, first + chunk)
                start, stop = (image * num_windows + first) * tokens, (image * num_windows + last) * tokens
                if query_rows is None:
                    rows, part, part_pos = None, flat[start:stop], pos
                else:
                    rows = query_rows[start:stop]
                    part = flat.index_select(0, rows)
                    part_pos = pos.view(-1, dim).index_select(0, rows % tokens)
                part = part.view(1, last - first, tokens, dim)
                part_pos = part_pos.view(-1, tokens, dim)
                ctx = None
                if flat_context is not None:
                    ctx = flat_context[start:stop] if context_rows is None \
                        else flat_context.index_select(0, context_rows[start:stop])
                    ctx = ctx.view(-1, tokens, dim)
                part = self.scale_attn(part, part_pos.unsqueeze(0) if rows is not None else part_pos, image_tokens)
                part = part.view(-1, tokens, dim)
                part = part + self.attend_windows(part, part_pos, ctx, None if mask is None else mask[first:last])
                part = part + mlp(self.mlp, self.norm_mlp(part))
                if rows is None:
                    flat[start:stop] = part.view(-1, dim)
                else:
                    flat.index_copy_(0, rows, part.view(-1, dim))
        return x


class ConditionInjectionLayer(WindowLayerBase):
    """Scale sublayer, then window cross-attention from the Gaussian tokens to the image features.

    Shifted layers shift queries and features together, mask as in Swin and shift back
    (:meth:`attend_shifted`, which a subclass may replace).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float):
        super().__init__(dim, num_heads, window_size, shifted, mlp_ratio)
        self.cross_attn = WindowCrossAttention(dim, num_heads, window_size)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor, scale_tokens: torch.Tensor,
                windows: ShiftedWindows) -> torch.Tensor:
        """x, feat: (B, num_windows, N, C) window tokens, pos broadcastable to them; returns the updated x."""
        x = self.scale_attn(x, pos, scale_tokens)
        queries = self.norm_attn(x) + pos
        attended = self.attend_shifted(queries, feat, windows) if self.shifted else self._attend(queries, feat, None)
        x = x + attended
        return x + mlp(self.mlp, self.norm_mlp(x))

    def attend_shifted(self, queries: torch.Tensor, feat: torch.Tensor, windows: ShiftedWindows) -> torch.Tensor:
        """The cross-attention of a shifted layer: queries and features shifted together, masked, shifted back."""
        return windows.unshift(self._attend(windows.shift(queries), windows.shift(feat), windows.mask))

    def _attend(self, queries: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.cross_attn(queries.flatten(0, 1), context.flatten(0, 1), mask).view(queries.shape)

    def attend_windows(self, tokens: torch.Tensor, pos: torch.Tensor, context: Optional[torch.Tensor],
                       mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.cross_attn(self.norm_attn(tokens) + pos, context, mask)


class GaussianInteractionLayer(WindowLayerBase):
    """Scale sublayer, then (shifted-)window self-attention among the Gaussian tokens (timm's)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float):
        super().__init__(dim, num_heads, window_size, shifted, mlp_ratio)
        self.self_attn = WindowAttention(dim, num_heads, window_size=window_size)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, scale_tokens: torch.Tensor,
                windows: ShiftedWindows) -> torch.Tensor:
        """x: (B, num_windows, N, C) window tokens, pos broadcastable to them; returns the updated x."""
        x = self.scale_attn(x, pos, scale_tokens)
        tokens = self.norm_attn(x)
        if self.shifted:
            attended = windows.unshift(self._attend(windows.shift(tokens), windows.mask))
        else:
            attended = self._attend(tokens, None)
        x = x + attended
        return x + mlp(self.mlp, self.norm_mlp(x))

    def _attend(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        return window_self_attention(self.self_attn, tokens.flatten(0, 1), mask).view(tokens.shape)

    def attention_rows(self, windows: ShiftedWindows):
        query_rows, _, mask = super().attention_rows(windows)
        return query_rows, None, mask

    def attend_windows(self, tokens: torch.Tensor, pos: torch.Tensor, context: Optional[torch.Tensor],
                       mask: Optional[torch.Tensor]) -> torch.Tensor:
        return window_self_attention(self.self_attn, self.norm_attn(tokens), mask)


class _ResidualGroup(nn.Module):
    """LayerNorm -> layers (odd ones shifted) -> MLP, with a residual around the whole group."""

    def __init__(self, layer_cls: type, num_layers: int, dim: int, num_heads: int, window_size: int,
                 mlp_ratio: float, **layer_options: Any):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([
            layer_cls(dim, num_heads, window_size, bool(i % 2), mlp_ratio, **layer_options) for i in range(num_layers)
        ])
        self.mlp = Mlp(dim, dim, act_layer=nn.ReLU)

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        if not torch.is_grad_enabled() and x.dim() == 4:
            return self.forward_inplace(x, *args)
        out = self.norm(x)
        for layer in self.layers:
            out = layer(out, *args)
        return x + mlp(self.mlp, out)

    def forward_inplace(self, x: torch.Tensor, pos: torch.Tensor, *args: Any) -> torch.Tensor:
        """Inference on (B, num_windows, N, C) window tokens ``x`` (which may be a broadcast view): one new map,
        updated by the layers in place (:meth:`WindowLayerBase.forward_inplace`); the closing MLP and the
        residual, too, go window chunk by window chunk."""
        if x.stride(0) == 0 and x.stride(1) == 0:  # the same tokens in every window (the Gaussian embeddings)
            out = self.norm(x[:1, :1]).expand_as(x).contiguous()
        else:
            out = self.norm(x)
        *context, scale_tokens, windows = args
        for layer in self.layers:
            out = layer.forward_inplace(out, pos, context[0] if context else None, scale_tokens, windows)
        for first in range(0, x.shape[1], _WINDOW_CHUNK):
            part = out[:, first:first + _WINDOW_CHUNK]
            part.copy_(mlp(self.mlp, part) + x[:, first:first + _WINDOW_CHUNK])
        return out


class LRFeatures(NamedTuple):
    """GSASR's scale-free stage: the LR image as the encoder saw it and the encoder's features of it."""
    lq: torch.Tensor
    features: torch.Tensor


@ARCH_REGISTRY.register()
class GSASR(SRNetwork):
    """GSASR: an LR encoder and a Gaussian decoder, rendered by 2D Gaussian splatting at any scale.

    Args:
        encoder: Options of the LR feature encoder, e.g. ``{'type': 'EDSREncoder'}`` or ``{'type': 'RDNEncoder'}``
            (any name in ``ENCODER_REGISTRY``). Default: EDSR-baseline.
        embed_dim: Channels d of the Gaussian embeddings. Default: 180.
        num_heads: Attention heads. Default: 6.
        window_size: Window side k in LR pixels (k^2 tokens per window). Default: 12.
        num_injection_layers: Layers of the condition injection block (odd ones shifted). Default: 2.
        num_blocks: Gaussian interaction blocks L. Default: 6.
        num_layers_per_block: Window self-attention layers per interaction block. Default: 6.
        mlp_ratio: Hidden width of the transformer MLPs relative to d. Default: 1 (as the authors).
        num_scale_tokens: Scale tokens the scale cross-attention attends to. Default: 4.
        gaussian_density: Gaussians per LR pixel m; must be a square. Default: 16.
        num_upsample_stages: Conv + pixel-shuffle stages reaching sqrt(m) Gaussians per LR pixel side;
            each stage upsamples by sqrt(m) ** (1 / stages), which must be an integer. Default: 2.
        head_mlp_ratio: Width of the heads' last hidden layer relative to d. Default: 4.
        sigma_range: (min, max) standard deviation in LR pixels. Default: (0.01, 0.8333); the
            authors' renderer's sigmoid range corresponds to (0, 1 / 1.2) LR pixels.
        rho_max: Correlations are ``rho_max * tanh``; < 1 keeps the covariance invertible. Default: 0.99.
        max_offset: Largest offset of a Gaussian from its reference point, in LR pixels (``tanh``
            bounded). ``None`` leaves offsets unbounded, in units of the Gaussian grid (the authors').
            Default: 1.0.
        cutoff: Rasterizer cutoff in standard deviations; ``None`` uses the rasterizer's default.
        num_colors: Colour channels. Default: 3.
        lr_color_residual: Our addition, not in the paper or the authors' code. Each Gaussian's colour
            becomes ``sigmoid(logit(c) + head)``, ``c`` being the LR image bicubic-sampled at the
            Gaussian's reference point, instead of ``sigmoid(head)``; the last layers of the colour,
            standard-deviation, correlation, offset and opacity heads start at zero (opacity at the
            ~1 / coverage constant of :meth:`_init_opacity`, so the Gaussians sum to about one). An
            untrained net then renders a smooth interpolation of the LR image (within about 1 dB of
            bicubic) instead of a flat grey one, and training refines it: a small net learns within a
            few hundred CPU iterations (see the README's Demo section). No parameters are added.
            Default: False (the paper's heads).
        feature_queries: Our addition, not in the paper or the authors' code. Each Gaussian token's
            query starts as its embedding plus the projected feature of its own LR pixel, instead of the
            embedding alone. In the paper a Gaussian learns what lies under it only through window
            cross-attention, which starts nearly uniform over the k x k window, so an untrained net
            sees window averages and localising the attention takes many iterations. No parameters are
            added. Default: False.
        size_rule: The output size for a scale alone, ``rule(s * h)``: ``'round'``, ``'floor'`` or ``'ceil'``
            (``utils.scale.scaled_size``). Default: 'round'.
    """

    field_depends_on_scale = True
    # The class of the condition-injection layers (a subclass may shift them otherwise).
    injection_layer: type = ConditionInjectionLayer

    def __init__(self, encoder: Optional[Mapping[str, Any]] = None, embed_dim: int = 180, num_heads: int = 6,
                 window_size: int = 12, num_injection_layers: int = 2, num_blocks: int = 6,
                 num_layers_per_block: int = 6, mlp_ratio: float = 1.0, num_scale_tokens: int = 4,
                 gaussian_density: int = 16, num_upsample_stages: int = 2, head_mlp_ratio: float = 4.0,
                 sigma_range: Sequence[float] = (0.01, 0.8333), rho_max: float = 0.99,
                 max_offset: Optional[float] = 1.0, cutoff: Optional[float] = None, num_colors: int = 3,
                 lr_color_residual: bool = False, feature_queries: bool = False, size_rule: str = 'round'):
        super().__init__(size_rule)
        self._check_options(embed_dim, num_heads, window_size, num_injection_layers, num_blocks,
                            num_layers_per_block, num_scale_tokens, sigma_range, rho_max, max_offset, cutoff)
        self.shuffle_factor, self.gaussians_per_side = self._upsample_plan(gaussian_density, num_upsample_stages)
        in_channels = self.build_encoder(encoder, 'EDSREncoder')

        self.embed_dim = embed_dim
        self.window_size = window_size
        self.num_scale_tokens = num_scale_tokens
        self.sigma_range = (float(sigma_range[0]), float(sigma_range[1]))
        self.rho_max = float(rho_max)
        self.max_offset = None if max_offset is None else float(max_offset)
        self.cutoff = cutoff
        if not isinstance(lr_color_residual, bool):
            raise TypeError(f'lr_color_residual must be true or false, got {lr_color_residual!r}')
        self.lr_color_residual = lr_color_residual
        if not isinstance(feature_queries, bool):
            raise TypeError(f'feature_queries must be true or false, got {feature_queries!r}')
        self.feature_queries = feature_queries

        num_tokens = window_size * window_size
        self.gaussian_embedding = nn.Parameter(torch.zeros(num_tokens, embed_dim))
        self.position_embedding = nn.Parameter(torch.zeros(num_tokens, embed_dim))
        trunc_normal_(self.gaussian_embedding, std=.02)
        trunc_normal_(self.position_embedding, std=.02)
        self.feature_proj = nn.Sequential(
            nn.Conv2d(in_channels, embed_dim, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(embed_dim, embed_dim, 3, 1, 1))
        self.scale_mlp = nn.Sequential(
            nn.Linear(2, 4 * embed_dim), nn.ReLU(inplace=True), nn.Linear(4 * embed_dim, num_scale_tokens * embed_dim))

        self._build_attention(num_heads, window_size, num_injection_layers, num_blocks, num_layers_per_block,
                              mlp_ratio)
        stages = []
        for _ in range(num_upsample_stages):
            stages += [nn.Conv2d(embed_dim, embed_dim * self.shuffle_factor**2, 3, 1, 1),
                       nn.PixelShuffle(self.shuffle_factor)]
        self.upsample = nn.Sequential(*stages)

        hidden = int(embed_dim * head_mlp_ratio)
        self.opacity_head = _mlp_head(embed_dim, hidden, 1)
        self.color_head = _mlp_head(embed_dim, hidden, num_colors)
        self.sigma_head = _mlp_head(embed_dim, hidden, 2)
        self.offset_head = _mlp_head(embed_dim, hidden, 2)
        self.rho_head = _mlp_head(embed_dim, hidden, 1)
        if lr_color_residual:
            self._init_interpolating_heads(gaussian_density)
        else:
            self._init_opacity(gaussian_density)

    def _build_attention(self, num_heads: int, window_size: int, num_injection_layers: int, num_blocks: int,
                         num_layers_per_block: int, mlp_ratio: float) -> None:
        """Steps 3-4: the condition injection block and the Gaussian interaction blocks (used by :meth:`attend`).

        A subclass with other attention blocks (``GSASRRoPE``) overrides this and :meth:`attend`; one with other
        injection layers sets :attr:`injection_layer`.
        """
        embed_dim = self.embed_dim
        self.injection = _ResidualGroup(self.injection_layer, num_injection_layers, embed_dim, num_heads,
                                        window_size, mlp_ratio)
        self.interaction = nn.ModuleList([
            _ResidualGroup(GaussianInteractionLayer, num_layers_per_block, embed_dim, num_heads, window_size,
                           mlp_ratio) for _ in range(num_blocks)
        ])

    def _init_opacity(self, gaussian_density: int) -> None:
        """Start near a mid-grey image instead of ~4x over-bright.

        The rasterizer sums unnormalised Gaussians: m Gaussians per LR pixel of standard deviation sigma
        cover each point with total weight ~ m * 2 * pi * sigma^2 (about 18 at the defaults). The opacity
        head's last bias is set so that opacity ~ 1 / that coverage at the initial sigma (mid-range), so
        the first rendered images are about colour (0.5) rather than 0.5 * 18. The authors' code keeps
        PyTorch's default bias (opacity ~ 0.5).
        """
        self._set_opacity_bias(gaussian_density, sum(self.sigma_range) / 2)

    def _set_opacity_bias(self, gaussian_density: int, sigma: float) -> None:
        coverage = gaussian_density * 2 * math.pi * sigma**2
        opacity = min(0.99, max(0.01, 1.0 / coverage))
        nn.init.constant_(self.opacity_head[-1].bias, math.log(opacity / (1 - opacity)))

    def _init_interpolating_heads(self, gaussian_density: int) -> None:
        """``lr_color_residual``: start as a partition of unity of isotropic Gaussians on the reference grid.

        Every head's last layer gets zero weights, so the untrained Gaussians are all alike: at their
        reference points, uncorrelated, colour = the LR colour there, standard deviation 0.6 grid
        spacings (the narrowest whose sum over the grid is flat to ~0.1%; wider ones blur more) and
        opacity 1 / (m * 2 pi sigma^2), which makes the Gaussians sum to ~1 everywhere.
        """
        for head in (self.opacity_head, self.color_head, self.sigma_head, self.rho_head, self.offset_head):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        low, high = self.sigma_range
        sigma = min(max(0.6 / self.gaussians_per_side, low + 0.01 * (high - low)), high - 0.01 * (high - low))
        fraction = (sigma - low) / (high - low)
        nn.init.constant_(self.sigma_head[-1].bias, math.log(fraction / (1 - fraction)))
        self._set_opacity_bias(gaussian_density, sigma)

    @staticmethod
    def _check_options(embed_dim, num_heads, window_size, num_injection_layers, num_blocks, num_layers_per_block,
                       num_scale_tokens, sigma_range, rho_max, max_offset, cutoff) -> None:
        for name, value, low in (('embed_dim', embed_dim, 1), ('num_heads', num_heads, 1),
                                 ('window_size', window_size, 1), ('num_injection_layers', num_injection_layers, 1),
                                 ('num_blocks', num_blocks, 0), ('num_layers_per_block', num_layers_per_block, 1),
                                 ('num_scale_tokens', num_scale_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})')
        if len(sigma_range) != 2 or not 0 < sigma_range[0] < sigma_range[1]:
            raise ValueError(f'sigma_range must be (min, max) with 0 < min < max, got {sigma_range!r}')
        if not 0 < rho_max < 1:
            raise ValueError(f'rho_max must be in (0, 1), got {rho_max!r}')
        if max_offset is not None and not max_offset > 0:
            raise ValueError(f'max_offset must be > 0 or None, got {max_offset!r}')
        SRNetwork.check_cutoff(cutoff)

    @staticmethod
    def _upsample_plan(gaussian_density: int, num_upsample_stages: int) -> Tuple[int, int]:
        """(pixel-shuffle factor per stage, Gaussians per LR pixel side) or a ValueError."""
        side = math.isqrt(gaussian_density) if isinstance(gaussian_density, int) and gaussian_density > 0 else 0
        if side < 1 or side * side != gaussian_density:
            raise ValueError(f'gaussian_density must be a positive square (1, 4, 9, 16, ...), got {gaussian_density!r}')
        if isinstance(num_upsample_stages, bool) or not isinstance(num_upsample_stages, int) or num_upsample_stages < 0:
            raise ValueError(f'num_upsample_stages must be an integer >= 0, got {num_upsample_stages!r}')
        if num_upsample_stages == 0:
            if side != 1:
                raise ValueError(f'gaussian_density {gaussian_density} needs num_upsample_stages >= 1')
            return 1, 1
        factor = round(side**(1.0 / num_upsample_stages))
        if factor < 2 or factor**num_upsample_stages != side:
            raise ValueError(f'gaussian_density {gaussian_density} (sqrt {side}) is not reached by '
                             f'num_upsample_stages={num_upsample_stages} equal integer pixel-shuffle factors >= 2')
        return factor, side

    # ------------------------------------------------------------------ encode / render / forward
    def scale_tokens(self, scale: Tuple[float, float], batch: int, like: torch.Tensor) -> torch.Tensor:
        """(B, T, d) scale tokens from (s_h, s_w); the input is (1 / s_h, 1 / s_w) (the authors': 1 / s)."""
        inverse = torch.tensor([[1.0 / scale[0], 1.0 / scale[1]]], device=like.device, dtype=like.dtype)
        tokens = self.scale_mlp(inverse).view(1, self.num_scale_tokens, self.embed_dim)
        return tokens.expand(batch, -1, -1)

    def _window_plan(self, height: int, width: int, device: torch.device):
        """Shift per axis (none where one window covers the side, as in Swin) and Swin's shift mask (None when
        nothing shifts)."""
        k = self.window_size
        shift = tuple(k // 2 if side > k else 0 for side in (height, width))
        if shift == (0, 0):
            return shift, None
        return shift, shifted_window_mask(height, width, k, shift, device=device)

    def decode_tokens(self, features: torch.Tensor, scale: Tuple[float, float]) -> torch.Tensor:
        """Encoder features (B, C, h, w) -> per-Gaussian tokens (B, H * r, W * r, d), r = sqrt(m), where (H, W) is
        (h, w) padded to window multiples: the padding's tokens are kept (module docstring, step 1)."""
        return self.upsample(self.lr_tokens(features, scale).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def lr_tokens(self, features: torch.Tensor, scale: Tuple[float, float]) -> torch.Tensor:
        """Steps 1-4: encoder features (B, C, h, w) -> the Gaussian tokens before upsampling, (B, H, W, d), on the
        features reflect-padded to window multiples H x W."""
        # no name holds the projected features here: attend frees them once the injection has read them
        return self.attend(self.project_features(features), self.scale_tokens(scale, features.shape[0], features))

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """Step 1: encoder features (B, C, h, w) reflect-padded to window multiples and projected, (B, H, W, d)."""
        return self.feature_proj(pad_to_multiple(features, self.window_size, mode='reflect')).permute(0, 2, 3, 1)

    def window_embeddings(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian embedding and the positional embedding of each window position, each (1, 1, k^2, d):
        every window's tokens start as the former (step 2) and are marked by the latter."""
        num_tokens = self.window_size**2
        return (self.gaussian_embedding.view(1, 1, num_tokens, -1), self.position_embedding.view(1, 1, num_tokens, -1))

    def attend(self, feat: torch.Tensor, scale_tokens: torch.Tensor) -> torch.Tensor:
        """Steps 2-4 on the projected features (B, H, W, d) (H, W window multiples) -> the Gaussian tokens before
        upsampling, (B, H, W, d).

        The blocks run on window tokens (B, num_windows, k^2, d): the features are partitioned once here and
        the result is reversed once; shifted layers gather their windows (:class:`ShiftedWindows`). The queries
        start as the Gaussian embedding in every window (plus the features with ``feature_queries``).
        """
        batch, height, width, _ = feat.shape
        k = self.window_size
        shift, mask = self._window_plan(height, width, feat.device)
        if mask is not None:  # added to the attention logits: keep a bf16/fp16 net in its dtype
            mask = mask.to(feat.dtype)
        windows = ShiftedWindows.plan(batch, height, width, k, shift, mask, device=feat.device)
        feat = to_windows(feat, k)
        embedding, pos = self.window_embeddings()
        if not torch.is_grad_enabled():
            # a view of a parameter made without autograd still says requires_grad, without a grad_fn: hooks that
            # inspect module inputs (FlopCounterMode's module tracker) fail on it
            embedding, pos = embedding.detach(), pos.detach()
        queries = embedding.expand_as(feat)
        if self.feature_queries:
            queries = queries + feat
        x = self.injection(queries, pos, feat, scale_tokens, windows)
        del feat, queries  # the interaction blocks do not need them
        residual = x
        for block in self.interaction:
            x = block(x, pos, scale_tokens, windows)
        x = x + residual
        del residual
        return from_windows(x, k, height, width)

    def reference_colors(self, lq: torch.Tensor, grid_size: Tuple[int, int]) -> torch.Tensor:
        """``lq`` (B, C, h, w) bicubic-sampled at the Gaussians' reference points: (B, rows * cols, C), float32.

        The reference points are the centres of an r x r sub-grid of every LR pixel, so this is a
        bicubic upsampling by r (``align_corners=False``, edges replicated), clamped to [0, 1].
        """
        if lq.shape[1] != self.color_head[-1].out_features:
            raise ValueError(f'lr_color_residual: lq has {lq.shape[1]} channels but the net predicts '
                             f'{self.color_head[-1].out_features} colours (num_colors)')
        up = nn.functional.interpolate(lq.float(), size=tuple(grid_size), mode='bicubic', align_corners=False)
        return up.clamp(0, 1).flatten(2).transpose(1, 2)

    def _prior_colors(self, lq: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """:meth:`reference_colors` on a ``rows`` x ``cols`` Gaussian grid that may reach past the image (the
        decoder's window padding): the image's own Gaussians take ``lq``'s bicubic values (edges replicated), those
        of the padding the reflect-padded image's, as the features are padded. (B, rows * cols, C)."""
        side = self.gaussians_per_side
        inner = (lq.shape[-2] * side, lq.shape[-1] * side)
        prior = self.reference_colors(lq, inner)
        if (rows, cols) == inner:
            return prior
        padded = self.reference_colors(pad_to_multiple(lq, self.window_size, mode='reflect'), (rows, cols))
        padded = padded.view(lq.shape[0], rows, cols, -1).clone()
        padded[:, :inner[0], :inner[1]] = prior.view(lq.shape[0], inner[0], inner[1], -1)
        return padded.flatten(1, 2)

    def head_outputs(self, tokens: torch.Tensor) -> List[torch.Tensor]:
        """The raw outputs of the opacity, colour, sigma, rho and offset heads for (B, L, d) tokens, each (B, L, n).

        The heads see the tokens as one (B * L, d) matrix: a linear layer's output is then a tensor of its own,
        not a view of one (as for 3-D inputs), so the heads' in-place ReLUs cost autograd no copies. Without
        autograd the tokens go through in chunks of ``_HEAD_CHUNK``, so each head's (chunk, hidden)
        activations stay in cache instead of making round trips to memory; the result is the same, row by row.
        """
        heads = (self.opacity_head, self.color_head, self.sigma_head, self.rho_head, self.offset_head)
        flat = tokens.reshape(-1, tokens.shape[-1])
        if torch.is_grad_enabled() or flat.shape[0] <= _HEAD_CHUNK:
            outs = [mlp_sequence(head, flat) for head in heads]
        else:
            chunks = [[mlp_sequence(head, chunk) for head in heads] for chunk in flat.split(_HEAD_CHUNK)]
            outs = [torch.cat(parts) for parts in zip(*chunks)]
        return [out.view(*tokens.shape[:2], -1) for out in outs]

    def gaussians_from_tokens(self, tokens: torch.Tensor, lr_size: Tuple[int, int],
                              lq: Optional[torch.Tensor] = None) -> GaussianField:
        """Heads and activations: (B, H * r, W * r, d) tokens (:meth:`decode_tokens`'s, over the window-padded LR
        plane) -> a GaussianField of ``lr_size`` in LR pixel units (Gaussians of the padding beyond its edges).

        ``lq`` (the LR input) is needed with ``lr_color_residual`` only (:meth:`_prior_colors`). Activations and
        positions are computed in float32 whatever the net's dtype: a bf16 position has a resolution of whole LR
        pixels on large images.
        """
        batch, rows, cols, _ = tokens.shape
        prior = self._color_prior(lq, rows, cols)
        return GaussianField(**self._gaussian_attributes(tokens.reshape(batch, rows * cols, -1), 0, cols, prior),
                             lr_size=tuple(lr_size))

    def _color_prior(self, lq: Optional[torch.Tensor], rows: int, cols: int) -> Optional[torch.Tensor]:
        """``lr_color_residual``: the clamped LR colours at the reference points of the (rows, cols) Gaussian grid,
        (B, rows * cols, C); None without it."""
        if not self.lr_color_residual:
            return None
        if lq is None:
            raise ValueError('GSASR with lr_color_residual needs lq in gaussians_from_tokens')
        return self._prior_colors(lq, rows, cols).clamp(_PRIOR_EPS, 1 - _PRIOR_EPS)

    def _gaussian_attributes(self, flat: torch.Tensor, first: int, cols: int, prior: Optional[torch.Tensor]) -> dict:
        """Heads and activations of (B, L, d) tokens, the Gaussians ``first ... first + L - 1`` (row-major) of a grid
        of ``cols`` columns: the GaussianField's tensors (float32). ``prior``: :meth:`_color_prior` of those
        Gaussians or None."""
        side = self.gaussians_per_side
        raw_opacity, raw_color, raw_sigma, raw_rho, raw_offset = self.head_outputs(flat)
        opacity = torch.sigmoid(raw_opacity.float())
        color_logit = raw_color.float()
        if prior is not None:
            color_logit = color_logit + torch.log(prior / (1 - prior))
        color = torch.sigmoid(color_logit)
        low, high = self.sigma_range
        sigmas = low + (high - low) * torch.sigmoid(raw_sigma.float())
        rhos = self.rho_max * torch.tanh(raw_rho.float()).squeeze(-1)
        raw_offset = raw_offset.float()
        offset = raw_offset / side if self.max_offset is None else self.max_offset * torch.tanh(raw_offset)
        # Reference points: centres of the r x r sub-cells of each LR pixel, (x, y), row-major (reference_grid's
        # values for the Gaussians first, first + 1, ... of a grid of cols columns).
        index = torch.arange(first, first + flat.shape[1], device=flat.device)
        reference = torch.stack(((index % cols).float(), torch.div(index, cols, rounding_mode='floor').float()), -1)
        reference = ((reference + 0.5) / side).unsqueeze(0)
        return dict(means=reference + offset, sigmas=sigmas, rhos=rhos, colors=color * opacity,
                    opacities=opacity.squeeze(-1))

    def _upsample_stages(self) -> Optional[List[Tuple[nn.Conv2d, int]]]:
        """``upsample`` as (3x3-like conv, pixel-shuffle factor) stages, or None when it is laid out otherwise."""
        layers = list(self.upsample)
        if len(layers) % 2:
            return None
        stages = []
        for conv, shuffle in zip(layers[0::2], layers[1::2]):
            if not (isinstance(conv, nn.Conv2d) and isinstance(shuffle, nn.PixelShuffle) and conv.stride == (1, 1)
                    and conv.dilation == (1, 1) and conv.padding_mode == 'zeros'
                    and tuple(conv.padding) == tuple(k // 2 for k in conv.kernel_size)
                    and all(k % 2 for k in conv.kernel_size)):
                return None
            stages.append((conv, shuffle.upscale_factor))
        return stages

    def gaussians_in_bands(self, lr_tokens: torch.Tensor, lr_size: Tuple[int, int], lq: Optional[torch.Tensor] = None,
                           band_tokens: Optional[int] = None) -> GaussianField:
        """``gaussians_from_tokens(upsampled lr_tokens)`` without autograd, band of LR rows by band.

        ``lr_tokens`` (B, H, W, d) is :meth:`lr_tokens`'s map (the window-padded LR plane). Each band of rows is
        upsampled from its rows plus the few around it that the convolutions see, then goes through the heads,
        so the (B, H * r, W * r, d) tokens of the whole map (16 x the LR map: 0.8 GB for 256 x 256 LR) never
        exist at once; the Gaussians are those of the whole map, the convolutions' sums taken over the same
        pixels. ``band_tokens``: about how many Gaussians per band (default ``_BAND_TOKENS``).
        """
        stages = self._upsample_stages()
        side = self.gaussians_per_side
        band_tokens = _BAND_TOKENS if band_tokens is None else band_tokens
        if stages is None or not stages:
            return self.gaussians_from_tokens(self.upsample(lr_tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
                                              lr_size, lq)
        batch, height, width, _ = lr_tokens.shape
        rows, cols = height * side, width * side
        prior = self._color_prior(lq, rows, cols)
        count = rows * cols
        means = lr_tokens.new_empty((batch, count, 2), dtype=torch.float32)
        sigmas, colors = torch.empty_like(means), None
        rhos = means.new_empty((batch, count))
        opacities = torch.empty_like(rhos)
        col_plan = _band_plan(stages, 0, cols, width)
        # LR rows per band (all of them up to 3 x band_tokens: no conv runs twice on a row then)
        band = height if count <= 3 * band_tokens else max(1, band_tokens // cols // side)
        factor = stages[-1][1]
        rows_per_chunk = max(1, _HEAD_CHUNK // (cols * factor))  # rows of the last conv's output
        for y0 in range(0, height, band):
            y1 = min(height, y0 + band)
            row_plan = _band_plan(stages, y0 * side, y1 * side, height)
            x = lr_tokens[:, row_plan[0][0]:row_plan[0][1], col_plan[0][0]:col_plan[0][1]].permute(0, 3, 1, 2)
            x = _upsample_band(stages, x, row_plan, col_plan)  # the last conv's rows of this band, unshuffled
            x = x.unflatten(1, (-1, factor, factor))  # pixel shuffle's (channel, sub-row, sub-column)
            for row in range(0, x.shape[4], rows_per_chunk):  # the heads, a few rows of Gaussians at a time
                # the Gaussians of these rows, row-major: (B, rows, sub-row, cols, sub-col, channels)
                part_rows = x[:, :, :, :, row:row + rows_per_chunk].permute(0, 4, 2, 5, 3, 1)
                first = (y0 * side + row * factor) * cols
                last = first + part_rows.shape[1] * factor * cols
                part = self._gaussian_attributes(part_rows.reshape(batch, last - first, -1), first, cols,
                                                 None if prior is None else prior[:, first:last])
                if colors is None:
                    colors = means.new_empty((batch, count, part['colors'].shape[-1]))
                for name, out in (('means', means), ('sigmas', sigmas), ('rhos', rhos), ('colors', colors),
                                  ('opacities', opacities)):
                    out[:, first:last] = part[name]
        return GaussianField(means=means, sigmas=sigmas, rhos=rhos, colors=colors, opacities=opacities,
                             lr_size=tuple(lr_size))

    def encode_features(self, lq: torch.Tensor) -> LRFeatures:
        """The encoder features of ``lq`` (B, 3, h, w): computed once for every scale (the decoder is what depends
        on the scale)."""
        return LRFeatures(lq, self.encoder(lq))

    def decode_field(self, features: LRFeatures, target: Optional[Target]) -> GaussianField:
        """The Gaussians for one scale ``target.scale`` = (s_h, s_w) shared by the batch.

        The field is of the size of ``features.lq``, means in LR pixel units, and holds m Gaussians per LR pixel
        of that image padded to window multiples (those of the padding beyond its right / bottom edge); it is
        valid for that scale only (``field_depends_on_scale``).
        """
        if target is None:
            raise ValueError(MISSING_SCALE)
        lq = features.lq
        lr_size = (int(lq.shape[-2]), int(lq.shape[-1]))
        if torch.is_grad_enabled():
            return self.gaussians_from_tokens(self.decode_tokens(features.features, target.scale), lr_size, lq)
        return self.gaussians_in_bands(self.lr_tokens(features.features, target.scale), lr_size, lq)

    def render(self, field: GaussianField, out_size: Size, window: Optional[Window] = None) -> torch.Tensor:
        """Rasterize ``field`` to (B, C, Ho, Wo) at ``out_size`` (cropped from its canvas when it has one) with the
        ellipse ``cutoff``; ``window``: the field seen through that window of the LR plane (``window_field``)."""
        if window is not None:
            field = window_field(field, check_window(window, field.lr_size))
        return field.render(out_size, cutoff=self.cutoff)

    @property
    def alignment(self) -> int:
        """The decoder's window grid and the encoder's."""
        return math.lcm(self.window_size, self.encoder.alignment)

    def bytes_per_lr_pixel(self) -> float:
        return activation_bytes(self.embed_dim, self.gaussians_per_side)

    def reference_points(self, field: GaussianField) -> torch.Tensor:
        """The Gaussians' reference points (centres of the r x r sub-grid of every LR pixel of the field's plane
        padded to window multiples), which the predicted offsets cannot move."""
        k, side = self.window_size, self.gaussians_per_side
        rows, cols = (-(-n // k) * k * side for n in field.lr_size)
        return reference_grid(rows, cols, side, device=field.means.device, dtype=field.means.dtype)


def _band_plan(stages: Sequence[Tuple[nn.Conv2d, int]], lo: int, hi: int, full: int) -> List[Tuple[int, int, int, int]]:
    """What ``stages`` (conv, pixel shuffle) need to give output rows [lo, hi) (or columns) of a map of ``full`` LR
    rows exactly: per stage, (first, stop) of the input rows it needs and (first, stop) of the conv output rows it
    keeps, at its input's resolution. A conv output row needs ``kernel // 2`` input rows on each side, within
    the map (beyond it the conv pads with zeros, as on the whole map)."""
    fulls = [full]
    for _, factor in stages[:-1]:
        fulls.append(fulls[-1] * factor)
    plan = []
    for (conv, factor), size in zip(reversed(stages), reversed(fulls)):
        keep = (lo // factor, -(-hi // factor))
        halo = conv.kernel_size[0] // 2
        lo, hi = max(0, keep[0] - halo), min(size, keep[1] + halo)
        plan.append((lo, hi, *keep))
    return plan[::-1]


def _upsample_band(stages: Sequence[Tuple[nn.Conv2d, int]], x: torch.Tensor, row_plan, col_plan) -> torch.Tensor:
    """The last conv's output (B, C * f^2, rows, cols) before its pixel shuffle (factor f) for the rows / columns that
    :func:`_band_plan` keeps, from (B, C, rows, cols) ``x``: the LR input rows / columns the plan asks for."""
    for index, ((conv, factor), rows, cols) in enumerate(zip(stages, row_plan, col_plan)):
        if index:  # the shuffled previous stage covers [keep * factor): take this stage's input from it
            x = nn.functional.pixel_shuffle(x, stages[index - 1][1])
            x = x[:, :, rows[0] - row_origin:rows[1] - row_origin, cols[0] - col_origin:cols[1] - col_origin]
        x = conv(x)[:, :, rows[2] - rows[0]:rows[3] - rows[0], cols[2] - cols[0]:cols[3] - cols[0]]
        row_origin, col_origin = rows[2] * factor, cols[2] * factor
    return x
