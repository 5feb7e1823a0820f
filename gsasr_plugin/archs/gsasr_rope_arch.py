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

Official weights: :func:`convert_official_rope_decoder` maps a ``Fea2GS_ROPE_AMP`` state dict onto ours
(q/k/v projections fused, the scale MLP's 1-input layer split over our (1 / s_h, 1 / s_w) inputs, the sigma
head's rows in our (x, y) order); :func:`load_official_gsasr_rope` loads an official encoder + decoder pair
strictly.
"""
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.gsasr_arch import GSASR, ScaleCrossAttention
from gsasr_plugin.archs.pretrained import extract_state_dict, map_checkpoint_keys
from gsasr_plugin.archs.rope_attention import RoPEWindowAttention, RoPEWindowCrossAttention
from gsasr_plugin.archs.window_utils import Mlp, from_window_tokens, to_window_tokens

__all__ = ['GSASRRoPE', 'RoPEInjectionLayer', 'RoPEInteractionLayer', 'RoPEResidualGroup',
           'convert_official_rope_decoder', 'convert_official_encoder', 'check_official_positions',
           'load_official_gsasr_rope', 'GSASR_ROPE_OFFICIAL_KEY_MAP']


def _conv_channels_last(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) conv applied to a channels-last (B, H, W, C) map."""
    return conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _scale_step(scale_attn: ScaleCrossAttention, x: torch.Tensor, pos: torch.Tensor,
                scale_tokens: torch.Tensor) -> torch.Tensor:
    """GSASR's scale sublayer on (B, H, W, C) maps."""
    batch, height, width, channels = x.shape
    out = scale_attn(x.reshape(batch, -1, channels), pos.reshape(batch, -1, channels), scale_tokens)
    return out.view(batch, height, width, channels)


class RoPEInjectionLayer(nn.Module):
    """Scale sublayer, then RoPE window cross-attention from the Gaussian tokens to the image features, then an MLP.

    Shifted layers roll the features (not the queries) by ``-window_size // 2`` on both axes and do not roll
    back, as the official decoder.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float,
                 rope_theta: float = 10.0):
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2 if shifted else 0
        self.scale_attn = ScaleCrossAttention(dim, num_heads, mlp_ratio)
        self.norm_attn = nn.LayerNorm(dim)
        self.cross_attn = RoPEWindowCrossAttention(dim, num_heads, window_size, theta=rope_theta)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor,
                scale_tokens: torch.Tensor) -> torch.Tensor:
        """x, pos, feat: (B, H, W, C) maps with H, W window multiples; returns the updated x."""
        x = _scale_step(self.scale_attn, x, pos, scale_tokens)
        if self.shift:
            feat = torch.roll(feat, shifts=(-self.shift, -self.shift), dims=(1, 2))
        k = self.window_size
        attended = self.cross_attn(to_window_tokens(self.norm_attn(x) + pos, k), to_window_tokens(feat, k))
        x = x + from_window_tokens(attended, k, x.shape[1], x.shape[2])
        return x + self.mlp(self.norm_mlp(x))


class RoPEInteractionLayer(nn.Module):
    """Scale sublayer, then RoPE window self-attention among the Gaussian tokens, then an MLP.

    Shifted layers roll the tokens by ``-window_size // 2``, attend without a mask and roll back.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float,
                 rope_theta: float = 10.0):
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2 if shifted else 0
        self.scale_attn = ScaleCrossAttention(dim, num_heads, mlp_ratio)
        self.norm_attn = nn.LayerNorm(dim)
        self.self_attn = RoPEWindowAttention(dim, num_heads, window_size, theta=rope_theta)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, scale_tokens: torch.Tensor) -> torch.Tensor:
        x = _scale_step(self.scale_attn, x, pos, scale_tokens)
        shift, k = self.shift, self.window_size
        tokens = self.norm_attn(x)
        if shift:
            tokens = torch.roll(tokens, shifts=(-shift, -shift), dims=(1, 2))
        attended = from_window_tokens(self.self_attn(to_window_tokens(tokens, k)), k, x.shape[1], x.shape[2])
        if shift:
            attended = torch.roll(attended, shifts=(shift, shift), dims=(1, 2))
        x = x + attended
        return x + self.mlp(self.norm_mlp(x))


class RoPEResidualGroup(nn.Module):
    """LayerNorm -> layers (odd ones shifted) -> MLP -> 3x3 conv, with a residual around the whole group."""

    def __init__(self, layer_cls: Callable[..., nn.Module], num_layers: int, dim: int, num_heads: int,
                 window_size: int, mlp_ratio: float, rope_theta: float = 10.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([
            layer_cls(dim, num_heads, window_size, bool(i % 2), mlp_ratio, rope_theta) for i in range(num_layers)
        ])
        self.mlp = Mlp(dim, dim, act_layer=nn.ReLU)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        out = self.norm(x)
        for layer in self.layers:
            out = layer(out, *args)
        return x + _conv_channels_last(self.conv, self.mlp(out))


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
            heads, rasterizer, ...), with GSASR's defaults.
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

    def attend(self, queries: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor,
               scale_tokens: torch.Tensor) -> torch.Tensor:
        """Injection blocks, then interaction blocks and ``conv_final`` with a residual around them; (B, H, W, d) maps."""
        x = queries
        for block in self.injection:
            x = block(x, pos, feat, scale_tokens)
        residual = x
        for block in self.interaction:
            x = block(x, pos, scale_tokens)
        return residual + _conv_channels_last(self.conv_final, x)


# ------------------------------------------------------------------------------------------ official weights
_LAYER = r'(\d+)\.blocks\.(\d+)\.'
# Fea2GS_ROPE_AMP key -> our key (first match wins). q/k/v heads and the positions are handled apart.
GSASR_ROPE_OFFICIAL_KEY_MAP: Tuple[Tuple[str, str], ...] = (
    (r'^gs_embedding$', 'gaussian_embedding'),
    (r'^pos_embedding$', 'position_embedding'),
    (r'^img_feat_proj\.', 'feature_proj.'),
    (r'^UPNet\.', 'upsample.'),
    (r'^conv_final\.', 'conv_final.'),
    (r'^scale_mlp\.', 'scale_mlp.'),
    (r'^mlp_block_sigma\.', 'sigma_head.'),
    (r'^mlp_block_rho\.', 'rho_head.'),
    (r'^mlp_block_alpha\.', 'opacity_head.'),
    (r'^mlp_block_rgb\.', 'color_head.'),
    (r'^mlp_block_mean\.', 'offset_head.'),
    # injection blocks
    (r'^window_crossattn_blocks\.(\d+)\.(norm|conv)\.', r'injection.\1.\2.'),
    (r'^window_crossattn_blocks\.(\d+)\.mlp\.0\.', r'injection.\1.mlp.fc1.'),
    (r'^window_crossattn_blocks\.(\d+)\.mlp\.2\.', r'injection.\1.mlp.fc2.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'gs_cross_attn_scale\.', r'injection.\1.layers.\2.scale_attn.attn.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'norm1\.', r'injection.\1.layers.\2.scale_attn.norm_attn.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'mlp_crossattn_scale\.', r'injection.\1.layers.\2.scale_attn.mlp.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'norm2\.', r'injection.\1.layers.\2.scale_attn.norm_mlp.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'norm3\.', r'injection.\1.layers.\2.norm_attn.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'window_cross_attn\.rope_freqs$',
     r'injection.\1.layers.\2.cross_attn.rope.freqs'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'window_cross_attn\.qhead\.', r'injection.\1.layers.\2.cross_attn.q.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'window_cross_attn\.proj\.', r'injection.\1.layers.\2.cross_attn.proj.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'norm4\.', r'injection.\1.layers.\2.norm_mlp.'),
    (r'^window_crossattn_blocks\.' + _LAYER + r'mlp_crossattn_feature\.', r'injection.\1.layers.\2.mlp.'),
    # interaction blocks
    (r'^gs_selfattn_blocks\.(\d+)\.(norm|conv)\.', r'interaction.\1.\2.'),
    (r'^gs_selfattn_blocks\.(\d+)\.mlp\.0\.', r'interaction.\1.mlp.fc1.'),
    (r'^gs_selfattn_blocks\.(\d+)\.mlp\.2\.', r'interaction.\1.mlp.fc2.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'gs_cross_attn_scale\.', r'interaction.\1.layers.\2.scale_attn.attn.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'norm3\.', r'interaction.\1.layers.\2.scale_attn.norm_attn.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'mlp_crossattn\.', r'interaction.\1.layers.\2.scale_attn.mlp.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'norm4\.', r'interaction.\1.layers.\2.scale_attn.norm_mlp.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'norm1\.', r'interaction.\1.layers.\2.norm_attn.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'gs_self_attn\.rope_freqs$', r'interaction.\1.layers.\2.self_attn.rope.freqs'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'gs_self_attn\.proj\.', r'interaction.\1.layers.\2.self_attn.proj.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'norm2\.', r'interaction.\1.layers.\2.norm_mlp.'),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'mlp_selfattn\.', r'interaction.\1.layers.\2.mlp.'),
)
# Separate official q / k / v projections and the modules they are fused into: (regex, our prefix, fused name,
# official head names in fused order).
_FUSED_PROJECTIONS = (
    (r'^window_crossattn_blocks\.' + _LAYER + r'window_cross_attn\.(khead|vhead)\.(weight|bias)$',
     r'injection.\1.layers.\2.cross_attn.', 'kv', ('khead', 'vhead')),
    (r'^gs_selfattn_blocks\.' + _LAYER + r'gs_self_attn\.(qhead|khead|vhead)\.(weight|bias)$',
     r'interaction.\1.layers.\2.self_attn.', 'qkv', ('qhead', 'khead', 'vhead')),
)
_POSITION_KEY = re.compile(r'^(.*)\.rope_t_([xy])$')


def _rename(key: str, key_map) -> Optional[str]:
    for pattern, replacement in key_map:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    return None


def convert_official_rope_decoder(state: Mapping[str, torch.Tensor],
                                  source: str = 'decoder') -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Map an official ``Fea2GS_ROPE_AMP`` state dict onto :class:`GSASRRoPE`'s decoder keys.

    Returns ``(weights, positions)``: ``weights`` in our names (no ``encoder.`` keys) and, for
    :func:`check_official_positions`, the checkpoint's token-position buffers under the names of our
    attention modules' ``pos_x`` / ``pos_y`` buffers.

    Raises:
        ValueError: naming ``source`` and the keys, for keys this layout does not know or incomplete q/k/v sets.
    """
    weights: Dict[str, torch.Tensor] = {}
    positions: Dict[str, torch.Tensor] = {}
    fused: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in state.items():
        match = _POSITION_KEY.match(key)
        if match:
            freqs_key = _rename(f'{match.group(1)}.rope_freqs', GSASR_ROPE_OFFICIAL_KEY_MAP)
            if freqs_key is None:
                unknown.append(key)
            else:
                positions[f"{freqs_key[:-len('rope.freqs')]}pos_{match.group(2)}"] = value
            continue
        for pattern, prefix, fused_name, heads in _FUSED_PROJECTIONS:
            match = re.match(pattern, key)
            if match:
                target = re.sub(pattern, prefix, key) + f'{fused_name}.{match.group(4)}'
                fused.setdefault((target, ','.join(heads)), {})[match.group(3)] = value
                break
        else:
            target = _rename(key, GSASR_ROPE_OFFICIAL_KEY_MAP)
            if target is None:
                unknown.append(key)
            else:
                weights[target] = value
    for (target, heads), parts in fused.items():
        names = heads.split(',')
        if sorted(parts) != sorted(names):
            raise ValueError(f'{source}: {target} needs the official {names} projections, found only {sorted(parts)}')
        weights[target] = torch.cat([parts[name] for name in names], dim=0)
    if unknown:
        raise ValueError(f'{source} is not a Fea2GS_ROPE_AMP state dict: unknown keys {unknown[:8]}'
                         f"{' ...' if len(unknown) > 8 else ''}")
    # One scale input (1 / s) -> our two inputs (1 / s_h, 1 / s_w): half the weight on each, equal for s_h = s_w.
    if 'scale_mlp.0.weight' in weights and weights['scale_mlp.0.weight'].shape[1] == 1:
        weights['scale_mlp.0.weight'] = (weights['scale_mlp.0.weight'] / 2).repeat(1, 2)
    # The official first sigma output acts on the height axis, the second on the width axis; ours are (x, y).
    for name in ('sigma_head.4.weight', 'sigma_head.4.bias'):
        if name in weights:
            weights[name] = weights[name].flip(0)
    return weights, positions


def convert_official_encoder(encoder: nn.Module, state: Mapping[str, torch.Tensor],
                             source: str = 'encoder') -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Map an official encoder state dict onto ``encoder``'s keys by its ``official_key_map`` / ``official_skipped_keys``.

    Returns ``(weights, positions)`` as :func:`convert_official_rope_decoder` (positions of RoPE encoders).
    """
    key_map = getattr(encoder, 'official_key_map', ())
    positions: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _POSITION_KEY.match(key)
        if match:
            freqs_key = _rename(f'{match.group(1)}.rope_freqs', key_map)
            if freqs_key is not None and freqs_key.endswith('rope.freqs'):
                positions[f"{freqs_key[:-len('rope.freqs')]}pos_{match.group(2)}"] = value
    renamed, _ = map_checkpoint_keys(state, key_map, getattr(encoder, 'official_skipped_keys', ()))
    return {ours: state[theirs] for ours, theirs in renamed.items()}, positions


def check_official_positions(net: nn.Module, positions: Mapping[str, torch.Tensor], source: str) -> None:
    """Compare a checkpoint's RoPE token positions with ``net``'s buffers of the same names.

    Nothing else in a RoPE checkpoint records the window size, so this is what catches a ``window_size``
    (or ``overlap_ratio``) in the options that differs from the one the weights were trained with.
    """
    buffers = dict(net.named_buffers())
    for name, value in positions.items():
        ours = buffers.get(name)
        if ours is None:
            raise ValueError(f'{source}: the checkpoint has RoPE positions for {name!r}, which this network lacks')
        if value.numel() != ours.numel() or not torch.equal(value.flatten().to(ours), ours.flatten()):
            raise ValueError(f'{source}: RoPE token positions of {name!r} ({value.numel()} tokens) differ from the '
                             f'network built from the options ({ours.numel()} tokens): check window_size / '
                             'overlap_ratio against the released configuration')


def _load(path_or_state: Union[str, Path, Mapping[str, torch.Tensor]], what: str) -> Tuple[Dict[str, torch.Tensor],
                                                                                           str]:
    if isinstance(path_or_state, Mapping):
        state, _ = extract_state_dict(path_or_state, None, f'<{what} state dict>')
        return state, f'<{what} state dict>'
    path = Path(path_or_state).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'official {what} file not found: {path}')
    state, _ = extract_state_dict(torch.load(str(path), map_location='cpu', weights_only=True), None, str(path))
    return state, str(path)


def load_official_gsasr_rope(net: GSASRRoPE, encoder_file: Union[str, Path, Mapping[str, torch.Tensor]],
                             decoder_file: Union[str, Path, Mapping[str, torch.Tensor]]) -> GSASRRoPE:
    """Load an official encoder.pth + decoder.pth pair (``params_ema``) into ``net``, strictly.

    Args:
        net: A :class:`GSASRRoPE` built with the released model's options.
        encoder_file: The official encoder file (or its loaded dict); mapped by the encoder's ``official_key_map``.
        decoder_file: The official ``Fea2GS_ROPE_AMP`` file (or its loaded dict).

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: naming the file and keys, on unknown or missing keys, shape mismatches, or token positions
            that do not match the options.
    """
    enc_state, enc_source = _load(encoder_file, 'encoder')
    dec_state, dec_source = _load(decoder_file, 'decoder')
    enc_weights, enc_positions = convert_official_encoder(net.encoder, enc_state, enc_source)
    dec_weights, dec_positions = convert_official_rope_decoder(dec_state, dec_source)
    check_official_positions(net.encoder, enc_positions, enc_source)
    check_official_positions(net, dec_positions, dec_source)
    weights = {**{f'encoder.{k}': v for k, v in enc_weights.items()}, **dec_weights}
    ours = net.state_dict()
    problems = []
    for key in sorted(set(weights) - set(ours)):
        problems.append(f'unexpected {key!r} ({enc_source if key.startswith("encoder.") else dec_source})')
    for key in sorted(set(ours) - set(weights)):
        problems.append(f'missing {key!r} ({enc_source if key.startswith("encoder.") else dec_source})')
    for key in sorted(set(ours) & set(weights)):
        if tuple(ours[key].shape) != tuple(weights[key].shape):
            problems.append(f'{key!r}: checkpoint {tuple(weights[key].shape)}, network {tuple(ours[key].shape)}')
    if problems:
        raise ValueError(f'official GSASR-RoPE weights do not fit {type(net).__name__} built from the options '
                         f'(check the released configuration):\n  ' + '\n  '.join(problems))
    net.load_state_dict(weights, strict=True)
    return net
