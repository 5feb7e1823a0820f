"""The official GSASR checkpoints in our ``GSASR``: key conversion, network options, released models.

The authors (``ChrisDud0257/GSASR``) publish each trained model on the Hugging Face hub ``mutou0308/GSASR``
as two files, ``encoder.pth`` and ``decoder.pth``, with the weights under ``params_ema``. Their encoders
are SR networks without upsampler (``EDSRNOUP``, ``RDNNOUP``, ``SwinIRNOUP``; ``HATNOUP_ROPE_AMP`` for the
ultra model), their decoders ``Fea2GS`` (the paper) or ``Fea2GS_ROPE_AMP`` (the enhanced and ultra models).
Converting the two files gives one state dict of our ``GSASROfficial`` (``GSASRRoPEOfficial`` for
``Fea2GS_ROPE_AMP``; :mod:`gsasr_plugin.official.gsasr_official_arch`) whose ``network_g`` sets the options that
reproduce the official forward: nothing is patched at run time, the official classes are not used. The state
dict keys are those of ``GSASR`` (``GSASRRoPE``): the official subclasses add no weights.

One function per family:

- encoders: :data:`ENCODER_CONVERTERS` ``{official class: convert(state, source) -> our encoder keys}``;
- decoders: :data:`DECODER_CONVERTERS` ``{official class: convert(state, source) -> our decoder keys}``;
- :func:`convert_official_gsasr` reads the two files and applies one of each, strictly: every official
  key must be used (or be a buffer we recompute) and every key we need must be present, else a
  ValueError names the file and the keys.

A family is added by writing its two functions (or one, when the other exists), adding them to the
tables (and the encoder's keys to :data:`ENCODER_SIGNATURES`) and registering the released models with
:func:`register_gsasr_model`.
"""
import copy
import functools
import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import torch

from gsasr_plugin.archs.hat_rope_encoder_arch import HAT_ROPE_OFFICIAL_KEY_MAP, HAT_ROPE_OFFICIAL_SKIPPED_KEYS
from gsasr_plugin.archs.pretrained import map_checkpoint_keys, read_foreign_weights
from gsasr_plugin.archs.swinir_encoder_arch import SWINIR_OFFICIAL_KEY_MAP, SWINIR_OFFICIAL_SKIPPED_KEYS
from gsasr_plugin.archs.window_utils import get_relative_position_index
from gsasr_plugin.official import hub

__all__ = ['OfficialState', 'read_official_file', 'convert_edsr_noup', 'convert_rdn_noup', 'convert_swinir_noup',
           'convert_hat_rope_noup', 'convert_fea2gs', 'convert_fea2gs_rope', 'rope_positions',
           'regather_relative_position_bias', 'identify_encoder', 'convert_official_gsasr', 'ENCODER_CONVERTERS',
           'DECODER_CONVERTERS', 'ENCODER_SIGNATURES', 'paper_network_g', 'enhanced_network_g', 'register_gsasr_model',
           'HUB_REPO', 'PAPER_SIGMA_RANGE', 'PAPER_MODELS', 'ENHANCED_MODELS']

HUB_REPO = 'mutou0308/GSASR'

# The official renderer's sigma: (0.99999 * sigmoid + 1e-6) canvas units that are 1.2 / s output pixels,
# i.e. (0.99999 * sigmoid + 1e-6) / 1.2 LR pixels at an exact scale; our head is low + (high - low) * sigmoid.
PAPER_SIGMA_RANGE = (1e-6 / 1.2, (0.99999 + 1e-6) / 1.2)


class OfficialState:
    """An official state dict that records which keys were used, so leftovers can be reported.

    ``take(key)`` returns a tensor and marks it used; a missing key is a ValueError naming ``source``.
    """

    def __init__(self, state: Mapping[str, torch.Tensor], source: str):
        self.state = dict(state)
        self.source = source
        self.used: Set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise ValueError(f'{self.source}: official key {key!r} is missing (not the expected official network)')
        self.used.add(key)
        return self.state[key]

    def skip(self, pattern: str) -> None:
        """Mark the keys matching ``pattern`` as used (buffers we recompute)."""
        self.used.update(k for k in self.state if re.search(pattern, k))

    def indices(self, pattern: str) -> List[int]:
        """The distinct integers the first group of ``pattern`` takes over the keys, sorted."""
        return sorted({int(m.group(1)) for m in (re.match(pattern, k) for k in self.state) if m})

    def count(self, pattern: str) -> int:
        """How many distinct indices the first group of ``pattern`` takes (e.g. layers of a block)."""
        return len(self.indices(pattern))

    def check_all_used(self) -> None:
        left = sorted(k for k in self.state if k not in self.used)
        if left:
            more = f' ... (+{len(left) - 8} more)' if len(left) > 8 else ''
            raise ValueError(f'{self.source}: {len(left)} official keys have no counterpart in our GSASR: '
                             f'{", ".join(left[:8])}{more}')


def read_official_file(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The weights of an official file: ``params_ema`` (what the official scripts load), else ``params``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f'official weights {path}: no such file')
    return read_foreign_weights(path, what='official weights')[0]  # weights only; one-line TorchFileError


def _copy(out: Dict[str, torch.Tensor], ours: str, state: OfficialState, theirs: str,
          names: Sequence[str] = ('weight', 'bias')) -> None:
    for name in names:
        out[f'{ours}.{name}'] = state.take(f'{theirs}.{name}')


def rope_positions(state: OfficialState, key: str) -> torch.Tensor:
    """An official RoPE position buffer (``rope_t_x`` / ``rope_t_y``, float) as our integer positions."""
    value = state.take(key)
    positions = value.round().long()
    if not torch.equal(positions.to(value.dtype), value):
        raise ValueError(f'{state.source}: {key} holds non-integer token positions')
    return positions


# ------------------------------------------------------------------------------------------- encoders
def convert_edsr_noup(state: OfficialState) -> Dict[str, torch.Tensor]:
    """``EDSRNOUP`` (head conv, residual blocks, conv after the body) -> our ``EDSREncoder``: same names."""
    out = {}
    for key in list(state.state):
        if re.match(r'^(conv_first|conv_after_body|body\.\d+\.conv[12])\.(weight|bias)$', key):
            out[key] = state.take(key)
    return out


def convert_rdn_noup(state: OfficialState) -> Dict[str, torch.Tensor]:
    """``RDNNOUP`` (SFENet1/2, RDBs, GFF) -> our ``RDNEncoder`` (shallow1/2, blocks, global_fusion)."""
    out = {}
    _copy(out, 'shallow1', state, 'SFENet1')
    _copy(out, 'shallow2', state, 'SFENet2')
    for b in range(state.count(r'^RDBs\.(\d+)\.')):
        for c in range(state.count(rf'^RDBs\.{b}\.convs\.(\d+)\.')):
            _copy(out, f'blocks.{b}.layers.{c}.0', state, f'RDBs.{b}.convs.{c}.conv.0')
        _copy(out, f'blocks.{b}.fusion', state, f'RDBs.{b}.LFF')
    _copy(out, 'global_fusion.0', state, 'GFF.0')
    _copy(out, 'global_fusion.1', state, 'GFF.1')
    return out


def convert_swinir_noup(state: OfficialState) -> Dict[str, torch.Tensor]:
    """``SwinIRNOUP`` -> our ``SwinIREncoder`` through SwinIR's own key map (the official class has SwinIR's names)."""
    renamed, skipped = map_checkpoint_keys(state.state, SWINIR_OFFICIAL_KEY_MAP, SWINIR_OFFICIAL_SKIPPED_KEYS)
    for key, reason in skipped.items():
        if not reason.startswith('buffer'):
            raise ValueError(f'{state.source}: official key {key!r} ({reason}) is not part of SwinIRNOUP')
        state.used.add(key)
    return {ours: state.take(theirs) for ours, theirs in renamed.items()}


def convert_hat_rope_noup(state: OfficialState) -> Dict[str, torch.Tensor]:
    """``HATNOUP_ROPE_AMP`` (the ultra model's HAT-L with RoPE) -> our ``HATRoPE`` through its key map.

    The token positions (``rope_t_x`` / ``rope_t_y``) become our integer ``pos_x`` / ``pos_y``; the unused
    relative position indices of the official class are dropped.
    """
    renamed, skipped = map_checkpoint_keys(state.state, HAT_ROPE_OFFICIAL_KEY_MAP, HAT_ROPE_OFFICIAL_SKIPPED_KEYS)
    for key, reason in skipped.items():
        if key.startswith(('upsample.', 'conv_last.')):
            raise ValueError(f'{state.source}: official key {key!r} ({reason}) is not part of HATNOUP_ROPE_AMP')
        state.used.add(key)
    return {ours: rope_positions(state, theirs) if ours.endswith(('.pos_x', '.pos_y')) else state.take(theirs)
            for ours, theirs in renamed.items()}


ENCODER_CONVERTERS: Dict[str, Callable[[OfficialState], Dict[str, torch.Tensor]]] = {
    'EDSRNOUP': convert_edsr_noup,
    'RDNNOUP': convert_rdn_noup,
    'SwinIRNOUP': convert_swinir_noup,
    'HATNOUP_ROPE_AMP': convert_hat_rope_noup,
}

# Keys an official encoder class always has (to say which encoder a file holds). A class whose keys
# include another's signature adds keys of its own; the longest matching signature wins.
ENCODER_SIGNATURES: Dict[str, Tuple[str, ...]] = {
    'EDSRNOUP': ('body.0.conv1.weight', ),
    'RDNNOUP': ('SFENet1.weight', ),
    'SwinIRNOUP': ('patch_embed.norm.weight', ),
    'HATNOUP_ROPE_AMP': ('patch_embed.norm.weight', 'layers.0.residual_group.overlap_attn.rope_freqs'),
}


def identify_encoder(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The official encoder class whose weights ``state`` holds (the longest signature of
    :data:`ENCODER_SIGNATURES` whose keys are all present), or None when none or several tie."""
    found = [(len(keys), name) for name, keys in ENCODER_SIGNATURES.items() if all(k in state for k in keys)]
    if not found:
        return None
    found.sort(reverse=True)
    return found[0][1] if len(found) == 1 or found[0][0] > found[1][0] else None


# ------------------------------------------------------------------------------------------- decoders
def regather_relative_position_bias(table: torch.Tensor, index: torch.Tensor, window_size: int,
                                    source: str) -> torch.Tensor:
    """An official bias ``table`` read through its own ``index`` (N, N) -> our table for timm's index.

    The official cross-attention numbers its relative offsets in the iteration order of a Python set,
    not Swin's order; both index the bias by the offset between query and key, so the value of each
    offset carries over. Raises ValueError when ``index`` is not a function of the offset.
    """
    ours = get_relative_position_index(window_size, window_size).view(-1)
    tokens = window_size * window_size
    if tuple(index.shape) != (tokens, tokens):
        raise ValueError(f'{source}: relative_position_index is {tuple(index.shape)}, expected ({tokens}, {tokens}) '
                         f'for a {window_size}x{window_size} window with one Gaussian token per position')
    values = table[index.reshape(-1).long()]
    regathered = table.new_zeros(((2 * window_size - 1)**2, table.shape[1]))
    regathered[ours] = values
    if not torch.equal(regathered[ours], values):
        raise ValueError(f'{source}: relative_position_index gives one relative offset several bias entries')
    return regathered


def _qkv(state: OfficialState, prefix: str, heads: Sequence[str]) -> Dict[str, torch.Tensor]:
    weight = torch.cat([state.take(f'{prefix}.{h}.weight') for h in heads], dim=0)
    bias = torch.cat([state.take(f'{prefix}.{h}.bias') for h in heads], dim=0)
    return {'weight': weight, 'bias': bias}


def _scale_sublayer(out: Dict[str, torch.Tensor], ours: str, state: OfficialState, theirs: str, norm_attn: str,
                    norm_mlp: str, mlp: str) -> None:
    """Official scale cross-attention (its norm, MultiheadAttention, norm, MLP) -> our ScaleCrossAttention."""
    _copy(out, f'{ours}.norm_attn', state, f'{theirs}.{norm_attn}')
    _copy(out, f'{ours}.attn', state, f'{theirs}.gs_cross_attn_scale', ('in_proj_weight', 'in_proj_bias'))
    _copy(out, f'{ours}.attn.out_proj', state, f'{theirs}.gs_cross_attn_scale.out_proj')
    _copy(out, f'{ours}.norm_mlp', state, f'{theirs}.{norm_mlp}')
    _copy(out, f'{ours}.mlp.fc1', state, f'{theirs}.{mlp}.fc1')
    _copy(out, f'{ours}.mlp.fc2', state, f'{theirs}.{mlp}.fc2')


def _convert_stem(out: Dict[str, torch.Tensor], state: OfficialState) -> int:
    """Embeddings, feature projection and scale MLP (shared by both decoders); returns the window side."""
    out['gaussian_embedding'] = state.take('gs_embedding')
    out['position_embedding'] = state.take('pos_embedding')
    _copy(out, 'feature_proj.0', state, 'img_feat_proj.0')
    _copy(out, 'feature_proj.2', state, 'img_feat_proj.2')
    first = state.take('scale_mlp.0.weight')
    if first.shape[1] != 1:
        raise ValueError(f'{state.source}: scale_mlp.0.weight is {tuple(first.shape)}, expected one input (1 / s)')
    out['scale_mlp.0.weight'] = torch.cat([first / 2, first / 2], dim=1)
    out['scale_mlp.0.bias'] = state.take('scale_mlp.0.bias')
    _copy(out, 'scale_mlp.2', state, 'scale_mlp.2')
    return math.isqrt(out['gaussian_embedding'].shape[0])


# convert(out, our attention module, official attention module): the attention's position encoding.
_PositionConverter = Callable[[Dict[str, torch.Tensor], str, str], None]


def _convert_block(out: Dict[str, torch.Tensor], state: OfficialState, theirs: str, ours: str, cross: bool,
                   position: _PositionConverter, conv: bool) -> None:
    """One official injection (``cross``) or interaction block -> our residual group at ``ours``."""
    _copy(out, f'{ours}.norm', state, f'{theirs}.norm')
    _copy(out, f'{ours}.mlp.fc1', state, f'{theirs}.mlp.0')
    _copy(out, f'{ours}.mlp.fc2', state, f'{theirs}.mlp.2')
    if conv:
        _copy(out, f'{ours}.conv', state, f'{theirs}.conv')
    for i in range(state.count(rf'^{re.escape(theirs)}\.blocks\.(\d+)\.')):
        layer, our_layer = f'{theirs}.blocks.{i}', f'{ours}.layers.{i}'
        if cross:
            _scale_sublayer(out, f'{our_layer}.scale_attn', state, layer, 'norm1', 'norm2', 'mlp_crossattn_scale')
            _copy(out, f'{our_layer}.norm_attn', state, f'{layer}.norm3')
            attn, our_attn = f'{layer}.window_cross_attn', f'{our_layer}.cross_attn'
            _copy(out, f'{our_attn}.q', state, f'{attn}.qhead')
            for name, value in _qkv(state, attn, ('khead', 'vhead')).items():
                out[f'{our_attn}.kv.{name}'] = value
            norm_mlp, mlp = 'norm4', 'mlp_crossattn_feature'
        else:
            _scale_sublayer(out, f'{our_layer}.scale_attn', state, layer, 'norm3', 'norm4', 'mlp_crossattn')
            _copy(out, f'{our_layer}.norm_attn', state, f'{layer}.norm1')
            attn, our_attn = f'{layer}.gs_self_attn', f'{our_layer}.self_attn'
            for name, value in _qkv(state, attn, ('qhead', 'khead', 'vhead')).items():
                out[f'{our_attn}.qkv.{name}'] = value
            norm_mlp, mlp = 'norm2', 'mlp_selfattn'
        _copy(out, f'{our_attn}.proj', state, f'{attn}.proj')
        position(out, our_attn, attn)
        _copy(out, f'{our_layer}.norm_mlp', state, f'{layer}.{norm_mlp}')
        _copy(out, f'{our_layer}.mlp.fc1', state, f'{layer}.{mlp}.fc1')
        _copy(out, f'{our_layer}.mlp.fc2', state, f'{layer}.{mlp}.fc2')


def _convert_heads(out: Dict[str, torch.Tensor], state: OfficialState) -> None:
    """Upsampler and the five Gaussian heads (shared by both decoders)."""
    for i in state.indices(r'^UPNet\.(\d+)\.'):  # convs at 0, 2, ... between the pixel shuffles
        _copy(out, f'upsample.{i}', state, f'UPNet.{i}')
    heads = {'sigma': 'sigma_head', 'rho': 'rho_head', 'alpha': 'opacity_head', 'rgb': 'color_head',
             'mean': 'offset_head'}
    for theirs, ours in heads.items():
        for layer in (0, 2, 4):
            _copy(out, f'{ours}.{layer}', state, f'mlp_block_{theirs}.{layer}')
    # official sigma outputs are (height axis, width axis); ours are (x, y)
    out['sigma_head.4.weight'] = out['sigma_head.4.weight'].flip(0)
    out['sigma_head.4.bias'] = out['sigma_head.4.bias'].flip(0)


def convert_fea2gs(state: OfficialState) -> Dict[str, torch.Tensor]:
    """The paper's decoder ``Fea2GS`` -> our GSASR decoder (everything but ``encoder.*``).

    - q/k/v linears are concatenated into our ``kv`` (cross-attention) and ``qkv`` (self-attention);
    - bias tables are re-gathered through the checkpoint's own ``relative_position_index``;
    - the official scale MLP takes 1 / s, ours (1 / s_h, 1 / s_w): its first layer's weight is split in
      halves over our two inputs, so an isotropic scale gives the same token (``num_scale_tokens: 1``);
    - the sigma head's two outputs are swapped: the official first output is the height axis.
    """
    out: Dict[str, torch.Tensor] = {}
    window = _convert_stem(out, state)

    def bias_table(out: Dict[str, torch.Tensor], ours: str, theirs: str) -> None:
        out[f'{ours}.relative_position_bias_table'] = regather_relative_position_bias(
            state.take(f'{theirs}.relative_position_bias_table'), state.take(f'{theirs}.relative_position_index'),
            window, state.source)

    if state.count(r'^window_crossattn_blocks\.(\d+)\.') != 1:
        raise ValueError(f'{state.source}: our GSASR has one condition-injection block (num_crossattn_blocks: 1)')
    _convert_block(out, state, 'window_crossattn_blocks.0', 'injection', True, bias_table, conv=False)
    for b in range(state.count(r'^gs_selfattn_blocks\.(\d+)\.')):
        _convert_block(out, state, f'gs_selfattn_blocks.{b}', f'interaction.{b}', False, bias_table, conv=False)
    _convert_heads(out, state)
    return out


def _rope(state: OfficialState) -> _PositionConverter:
    """Position converter of RoPE attention: learnt frequencies and the token positions (the window size)."""

    def convert(out: Dict[str, torch.Tensor], ours: str, theirs: str) -> None:
        out[f'{ours}.rope.freqs'] = state.take(f'{theirs}.rope_freqs')
        out[f'{ours}.pos_x'] = rope_positions(state, f'{theirs}.rope_t_x')
        out[f'{ours}.pos_y'] = rope_positions(state, f'{theirs}.rope_t_y')

    return convert


def convert_fea2gs_rope(state: OfficialState) -> Dict[str, torch.Tensor]:
    """The enhanced decoder ``Fea2GS_ROPE_AMP`` -> our ``GSASRRoPE`` decoder (everything but ``encoder.*``).

    As :func:`convert_fea2gs`, with RoPE instead of bias tables (each attention's ``rope_freqs`` and its token
    positions ``rope_t_x`` / ``rope_t_y``, which record the window size), a 3x3 conv per block, several
    injection blocks (``injection.<b>``) and ``conv_final``.
    """
    out: Dict[str, torch.Tensor] = {}
    _convert_stem(out, state)
    position = _rope(state)
    for b in range(state.count(r'^window_crossattn_blocks\.(\d+)\.')):
        _convert_block(out, state, f'window_crossattn_blocks.{b}', f'injection.{b}', True, position, conv=True)
    for b in range(state.count(r'^gs_selfattn_blocks\.(\d+)\.')):
        _convert_block(out, state, f'gs_selfattn_blocks.{b}', f'interaction.{b}', False, position, conv=True)
    _copy(out, 'conv_final', state, 'conv_final')
    _convert_heads(out, state)
    return out


DECODER_CONVERTERS: Dict[str, Callable[[OfficialState], Dict[str, torch.Tensor]]] = {
    'Fea2GS': convert_fea2gs,
    'Fea2GS_ROPE_AMP': convert_fea2gs_rope,
}


def convert_official_gsasr(paths: Sequence[Union[str, Path]], encoder: str, decoder: str) -> Dict[str, torch.Tensor]:
    """Our GSASR state dict from the official ``(encoder.pth, decoder.pth)``.

    Args:
        paths: the two official files, encoder first.
        encoder: official encoder class, a key of :data:`ENCODER_CONVERTERS` (``EDSRNOUP``, ...).
        decoder: official decoder class, a key of :data:`DECODER_CONVERTERS` (``Fea2GS``, ...).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is not the expected official network (the message names it and the keys).
    """
    if len(paths) != 2:
        raise ValueError(f'official GSASR weights are two files (encoder, decoder), got {len(paths)}: {list(paths)}')
    if encoder not in ENCODER_CONVERTERS or decoder not in DECODER_CONVERTERS:
        raise ValueError(f'no converter for the official encoder {encoder!r} / decoder {decoder!r}; known: '
                         f'{sorted(ENCODER_CONVERTERS)} / {sorted(DECODER_CONVERTERS)}')
    encoder_state = OfficialState(read_official_file(paths[0]), str(paths[0]))
    found = identify_encoder(encoder_state.state)
    if found != encoder and (found is not None or encoder in ENCODER_SIGNATURES):
        raise ValueError(f'{paths[0]}: expected the weights of the official {encoder}, found '
                         f'{found or "no known official encoder"}')
    decoder_state = OfficialState(read_official_file(paths[1]), str(paths[1]))
    out = {f'encoder.{k}': v for k, v in ENCODER_CONVERTERS[encoder](encoder_state).items()}
    out.update(DECODER_CONVERTERS[decoder](decoder_state))
    encoder_state.check_all_used()
    decoder_state.check_all_used()
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ------------------------------------------------------------------------------------- released models
# Our encoder options reproducing each official encoder class.
_PAPER_ENCODERS = {
    'EDSRNOUP': {'type': 'EDSREncoder', 'num_feat': 64, 'num_block': 16, 'rgb_mean': None, 'global_residual': False},
    'RDNNOUP': {'type': 'RDNEncoder', 'num_feat': 64, 'num_blocks': 16, 'num_layers': 8, 'growth': 64, 'rgb_mean': None},
    'SwinIRNOUP': {'type': 'SwinIREncoder', 'embed_dim': 180, 'depths': [6] * 6, 'num_heads': [6] * 6, 'window_size': 8,
                   'mlp_ratio': 2.0, 'rgb_mean': None},
}
# The official inference pads the LR image to the least common multiple of the encoder's and the
# decoder's windows (inference_paper.py: 12 for EDSR and RDN, 24 for SwinIR).
_PAPER_PADDING = {'EDSRNOUP': 12, 'RDNNOUP': 12, 'SwinIRNOUP': 24}


def paper_network_g(encoder: str, box_cutoff: Optional[float] = 0.1) -> Dict[str, Any]:
    """Our ``network_g`` reproducing the official paper model (``Fea2GS`` decoder) with ``encoder``.

    ``box_cutoff`` is the official ``dmax`` (0.1 in ``inference_paper.py`` and the test options). The output
    size of a scale alone is the official inference's, ``floor(s * h)`` (``size_rule: floor``).
    """
    return {
        'type': 'GSASROfficial',
        'encoder': copy.deepcopy(_PAPER_ENCODERS[encoder]),
        'embed_dim': 180, 'num_heads': 6, 'window_size': 12, 'num_injection_layers': 2, 'num_blocks': 6,
        'num_layers_per_block': 6, 'mlp_ratio': 1.0, 'num_scale_tokens': 1, 'gaussian_density': 16,
        'num_upsample_stages': 2, 'head_mlp_ratio': 4.0,
        'sigma_range': list(PAPER_SIGMA_RANGE), 'rho_max': 0.999999, 'max_offset': None,
        'cross_attention_shift': 'features_only', 'shift_mask': False, 'shift_single_window': True,
        'pad_input_to': _PAPER_PADDING[encoder], 'canvas_rounding': 'floor', 'box_cutoff': box_cutoff,
        'size_rule': 'floor',
    }


# What the official training code (BasicSR's, with a second network) saves in experiments/<name>/models: the encoder
# as net_g_<iter>.pth, the decoder as net_fea2gs_<iter>.pth (``params``, and ``params_ema`` with EMA); the official
# test options load them through path: pretrain_network_g and path_fea2gs: pretrain_network_fea2gs.
TRAINING_OUTPUTS = ('net_g', 'net_fea2gs')


def register_gsasr_model(name: str, folder: str, encoder: str, decoder: str, network_g: Mapping[str, Any],
                         description: str) -> hub.ReleasedModel:
    """Register an official GSASR model whose files are ``<folder>/encoder.pth`` and ``<folder>/decoder.pth``.

    ``encoder`` / ``decoder`` name the official classes (keys of the converter tables); the released model's
    ``method`` is ``network_g['type']`` (the registered network it loads into, e.g. ``GSASROfficial``).
    """
    return hub.register(
        hub.ReleasedModel(name=name, method=network_g['type'], hub_repo=HUB_REPO,
                          files=(f'{folder}/encoder.pth', f'{folder}/decoder.pth'), network_g=network_g,
                          training_outputs=TRAINING_OUTPUTS,
                          convert=functools.partial(convert_official_gsasr, encoder=encoder, decoder=decoder),
                          description=description))


# The paper models (official README, "Pre-trained Models (Paper Version)"; inference_paper.py downloads
# GSASR_paper/<EDSR|RDN|SWIN>/{encoder,decoder}.pth). All trained on DIV2K.
PAPER_MODELS: List[hub.ReleasedModel] = [
    register_gsasr_model('gsasr-edsr-paper', 'GSASR_paper/EDSR', 'EDSRNOUP', 'Fea2GS', paper_network_g('EDSRNOUP'),
                         'GSASR paper model, EDSR-baseline encoder, DIV2K (the paper\'s Table 1)'),
    register_gsasr_model('gsasr-rdn-paper', 'GSASR_paper/RDN', 'RDNNOUP', 'Fea2GS', paper_network_g('RDNNOUP'),
                         'GSASR paper model, RDN encoder, DIV2K (the paper\'s Table 1)'),
    register_gsasr_model('gsasr-swinir-paper', 'GSASR_paper/SWIN', 'SwinIRNOUP', 'Fea2GS',
                         paper_network_g('SwinIRNOUP'),
                         'GSASR paper-version model, SwinIR encoder, DIV2K (released, not in the paper)'),
]


# The enhanced and ultra models (official README, "Pre-trained Models (Enhanced and Ultra Performance
# Version)"; inference_enhenced.py downloads GSASR_enhenced_ultra/<model>/{encoder,decoder}.pth). Their decoder
# is Fea2GS_ROPE_AMP, built by inference_enhenced.load_model with these arguments (channel 192, 6 heads, 6
# layers per interaction block everywhere), which our GSASRRoPE options repeat.
_ENHANCED_ENCODERS = {
    **_PAPER_ENCODERS,
    'HATNOUP_ROPE_AMP': {'type': 'HATRoPEEncoder', 'size': 'HAT-L', 'embed_dim': 192, 'window_size': 16, 'compress_ratio': 3,
                         'squeeze_factor': 32, 'conv_scale': 0.01, 'overlap_ratio': 0.5, 'mlp_ratio': 2.0,
                         'rgb_mean': None},
}
_ENHANCED_DECODERS = {  # window side (144 or 256 tokens), injection blocks and their layers, interaction blocks
    'EDSRNOUP': dict(window_size=12, num_injection_blocks=1, num_injection_layers=2, num_blocks=6),
    'RDNNOUP': dict(window_size=12, num_injection_blocks=2, num_injection_layers=2, num_blocks=6),
    'SwinIRNOUP': dict(window_size=16, num_injection_blocks=2, num_injection_layers=4, num_blocks=6),
    'HATNOUP_ROPE_AMP': dict(window_size=16, num_injection_blocks=4, num_injection_layers=4, num_blocks=8),
}
# inference_enhenced.py's denominator: 12 for EDSR and RDN, 16 for SwinIR (window 8) and HAT-L.
_ENHANCED_PADDING = {'EDSRNOUP': 12, 'RDNNOUP': 12, 'SwinIRNOUP': 16, 'HATNOUP_ROPE_AMP': 16}


def enhanced_network_g(encoder: str, box_cutoff: Optional[float] = 0.1) -> Dict[str, Any]:
    """Our ``network_g`` reproducing an official enhanced / ultra model (``Fea2GS_ROPE_AMP`` decoder) with ``encoder``.

    ``box_cutoff`` is the official ``dmax`` (0.1 in ``inference_enhenced.py`` and the test options). The shifts
    need no option: ``GSASRRoPE``'s blocks shift as the official decoder.
    """
    return {
        'type': 'GSASRRoPEOfficial',
        'encoder': copy.deepcopy(_ENHANCED_ENCODERS[encoder]),
        'embed_dim': 192, 'num_heads': 6, **_ENHANCED_DECODERS[encoder], 'num_layers_per_block': 6, 'mlp_ratio': 1.0,
        'rope_theta': 10.0, 'num_scale_tokens': 1, 'gaussian_density': 16, 'num_upsample_stages': 2,
        'head_mlp_ratio': 4.0, 'sigma_range': list(PAPER_SIGMA_RANGE), 'rho_max': 0.999999, 'max_offset': None,
        'pad_input_to': _ENHANCED_PADDING[encoder], 'canvas_rounding': 'floor', 'box_cutoff': box_cutoff,
        'size_rule': 'floor',
    }


def _register_enhanced(name: str, folder: str, encoder: str, description: str) -> hub.ReleasedModel:
    return register_gsasr_model(name, f'GSASR_enhenced_ultra/{folder}', encoder, 'Fea2GS_ROPE_AMP',
                                enhanced_network_g(encoder), description)


# Hub folders as inference_enhenced.py and demo_gr.py name them (the official README links HATL-SA1B for the
# last one; the scripts, which the authors' online demo runs, use HATL_SA1B).
ENHANCED_MODELS: List[hub.ReleasedModel] = [
    _register_enhanced('gsasr-edsr-enhanced-div2k', 'EDSR_DIV2K', 'EDSRNOUP',
                       'GSASR enhanced (RoPE decoder), EDSR-baseline encoder, DIV2K'),
    _register_enhanced('gsasr-edsr-enhanced-df2k', 'EDSR_DF2K', 'EDSRNOUP',
                       'GSASR enhanced (RoPE decoder), EDSR-baseline encoder, DF2K'),
    _register_enhanced('gsasr-rdn-enhanced-div2k', 'RDN_DIV2K', 'RDNNOUP',
                       'GSASR enhanced (RoPE decoder, 2 injection blocks), RDN encoder, DIV2K'),
    _register_enhanced('gsasr-rdn-enhanced-df2k', 'RDN_DF2K', 'RDNNOUP',
                       'GSASR enhanced (RoPE decoder, 2 injection blocks), RDN encoder, DF2K'),
    _register_enhanced('gsasr-swinir-enhanced-div2k', 'SWIN_DIV2K', 'SwinIRNOUP',
                       'GSASR enhanced (RoPE decoder, 16x16 windows), SwinIR encoder, DIV2K'),
    _register_enhanced('gsasr-swinir-enhanced-df2k', 'SWIN_DF2K', 'SwinIRNOUP',
                       'GSASR enhanced (RoPE decoder, 16x16 windows), SwinIR encoder, DF2K'),
    _register_enhanced('gsasr-hatl-ultra-sa1b', 'HATL_SA1B', 'HATNOUP_ROPE_AMP',
                       'GSASR ultra: HAT-L RoPE encoder, RoPE decoder (4 injection, 8 interaction blocks), SA-1B'),
]
