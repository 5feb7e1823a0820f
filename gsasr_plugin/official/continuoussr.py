"""The authors' released ContinuousSR checkpoint (``ContinuousSR.pth``, hub repo ``pey12/ContinuousSR``).

Their file (github peylnog/ContinuousSR, written by their LIIF-style training code; their ``test.py`` /
``demo.py`` load it and take its ``['model']`` entry) holds the model spec and the weights::

    {'model': {'name': 'continuous-gaussian',
               'args': {'encoder_spec': {'name': 'hat', 'args': {...}}, 'cnn_spec': ..., 'fc_spec': ...},
               'sd': {'encoder.conv_first.weight': ..., 'conv1.weight': ..., 'mlp.layers.0.weight': ...}},
     ...}

(``cnn_spec`` / ``fc_spec`` are not used by their model.) This module turns that into our ``network_g``
options (:func:`network_options_from_spec`) and state dict (:func:`convert_official_state_dict`), and
registers the released model as ``official:continuoussr`` with :mod:`gsasr_plugin.official.hub`, so that
``basicsr infer/test/convert`` take ``official:continuoussr`` (downloaded when online) or the file's path
(``--model ContinuousSR.pth``, ``path: pretrain_network_g: ContinuousSR.pth``).

Their state dict -> ours: the encoder's own keys follow our encoder's official key map (HAT / SwinIR),
``encoder.upsample.{0,2}`` is our ``upsample.{0,2}``, ``conv1`` our ``query.0``, ``mlp`` / ``mlp_offset`` /
``mlp_vector`` (``.layers.N``) our ``color_mlp`` / ``offset_mlp`` / ``key_mlp`` (``.N``). Skipped:
``encoder.conv_last`` (built by their encoder but not called: their forward comments it out) and the
encoders' index / mask buffers, which we recompute.
"""
import copy
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import torch

from gsasr_plugin.archs.hat_encoder_arch import HAT_OFFICIAL_KEY_MAP, HAT_OFFICIAL_SKIPPED_KEYS
from gsasr_plugin.archs.pretrained import map_checkpoint_keys, read_liif_checkpoint
from gsasr_plugin.archs.swinir_encoder_arch import SWINIR_OFFICIAL_KEY_MAP, SWINIR_OFFICIAL_SKIPPED_KEYS
from gsasr_plugin.official import hub

__all__ = ['OFFICIAL_REPOSITORY', 'OFFICIAL_COMMIT', 'GSPLAT_FORK_COMMIT', 'OFFICIAL_HEAD_OPTIONS',
           'OFFICIAL_NETWORK_G', 'RELEASED_MODEL', 'official_encoder_options', 'network_options_from_spec',
           'official_key_rules', 'convert_official_state_dict', 'read_official_checkpoint',
           'network_options_from_files', 'convert', 'OFFICIAL_MODEL_NAME']

OFFICIAL_REPOSITORY = 'https://github.com/peylnog/ContinuousSR'
OFFICIAL_MODEL_NAME = 'continuous-gaussian'  # the model name in their checkpoint (LIIF's layout)
OFFICIAL_COMMIT = '3879d16086b96d4e776cf03ced7550c1aec4723a'
# the gsplat fork the authors render with (github XingtongGe/gsplat, the commit named in their issue #18)
GSPLAT_FORK_COMMIT = 'bcca3ecae966a052e3bf8dd1ff9910cf7b8f851d'

# Our ContinuousSR options that reproduce their ``ContinuousGaussian`` around the encoder (the table in
# continuoussr_arch.py). The rasterizer option selects the gsplat-compatible mode of
# gsasr_plugin.ops.rasterize_gaussians (footprint, alpha threshold and the 256-per-tile cap of the fork).
OFFICIAL_HEAD_OPTIONS: Dict[str, Any] = {
    'num_feat': 64,
    'upscale': 4,
    'unshuffle': 2,
    'color_hidden': [512, 1024, 256, 128, 64],
    'offset_hidden': [512, 1024, 256, 128, 64],
    'key_hidden': [256, 512, 512, 512],
    'attn_dim': 512,
    'dictionary_unit': 0.25,
    'min_sigma': 0.0,
    'max_offset': 1.0,
    'load_upsampler': False,
    'mlp_activation': 'gelu',
    'head_activation': 'before_query_and_offset',
    'reference_points': 'corners',
    'crop_after_upsample': True,
    'covariance_scale': 'requested_scale',
    'mlp_init': 'xavier_uniform',
    'rasterizer': {'mode': 'gsplat_sum'},
}

# Their HAT class' defaults (models/hat.py), for spec entries the checkpoint leaves out.
_THEIR_HAT_DEFAULTS = {
    'in_chans': 3, 'patch_size': 1, 'embed_dim': 96, 'depths': (6, 6, 6, 6), 'num_heads': (6, 6, 6, 6),
    'window_size': 7, 'compress_ratio': 3, 'squeeze_factor': 30, 'conv_scale': 0.01, 'overlap_ratio': 0.5,
    'mlp_ratio': 4., 'qkv_bias': True, 'qk_scale': None, 'drop_rate': 0., 'attn_drop_rate': 0.,
    'drop_path_rate': 0.1, 'ape': False, 'patch_norm': True, 'upscale': 2, 'upsampler': '',
    'resi_connection': '1conv',
}
# Their ``swinir`` factory ignores its arguments and builds SwinIR() with these defaults (models/swinir.py).
_THEIR_SWINIR = {'type': 'SwinIREncoder', 'num_feat': 64, 'embed_dim': 180, 'depths': [6] * 6, 'num_heads': [6] * 6,
                 'window_size': 8, 'mlp_ratio': 2.0, 'qkv_bias': True, 'drop_path_rate': 0.1,
                 'patch_norm': True, 'img_range': 1.0, 'rgb_mean': None, 'pad_mode': 'reflect'}

# The released checkpoint's encoder is HAT at x4 (the authors' issues #14 and #20); its size is not
# published, so the options below assume the standard HAT (6 groups of 6 blocks, width 180, window 16).
# ``convert`` reads the spec stored in the file and warns of any difference.
_ASSUMED_RELEASED_SPEC = {'name': 'hat', 'args': {
    'upscale': 4, 'upsampler': 'pixelshuffle', 'embed_dim': 180, 'depths': [6] * 6, 'num_heads': [6] * 6,
    'window_size': 16, 'compress_ratio': 3, 'squeeze_factor': 30, 'conv_scale': 0.01, 'overlap_ratio': 0.5,
    'mlp_ratio': 2.0, 'img_size': 64, 'resi_connection': '1conv', 'img_range': 1.0}}


def _spec_error(message: str) -> ValueError:
    return ValueError(f'official ContinuousSR encoder_spec: {message}')


def official_encoder_options(encoder_spec: Mapping[str, Any]) -> Tuple[Dict[str, Any], int]:
    """Their ``encoder_spec`` -> (our ``encoder`` options, the encoder's upscale).

    Their SwinIR and HAT forwards skip the input mean shift and ``img_range`` (commented out), so ours
    get ``rgb_mean: ~`` and ``img_range: 1``.
    """
    if not isinstance(encoder_spec, Mapping) or 'name' not in encoder_spec:
        raise _spec_error(f"expected {{'name': ..., 'args': {{...}}}}, got {encoder_spec!r}")
    name = encoder_spec['name']
    if name == 'swinir':
        return copy.deepcopy(_THEIR_SWINIR), 4
    if name != 'hat':
        raise _spec_error(f"encoder {name!r} is not supported (ContinuousSR's official model needs a x4 'hat' or "
                          "'swinir' encoder)")
    args = {**_THEIR_HAT_DEFAULTS, **dict(encoder_spec.get('args') or {})}
    for key, wanted in (('upsampler', 'pixelshuffle'), ('resi_connection', '1conv'), ('ape', False),
                        ('in_chans', 3), ('patch_size', 1), ('qk_scale', None)):
        if args[key] != wanted:
            raise _spec_error(f'hat {key}={args[key]!r} is not supported (only {wanted!r})')
    upscale = int(args['upscale'])
    if upscale < 2 or upscale & (upscale - 1):
        raise _spec_error(f'hat upscale={upscale} is not a power of 2')
    options = {'type': 'HATEncoder', 'num_feat': 64, 'embed_dim': int(args['embed_dim']),
               'depths': [int(d) for d in args['depths']], 'num_heads': [int(h) for h in args['num_heads']],
               'window_size': int(args['window_size']), 'compress_ratio': int(args['compress_ratio']),
               'squeeze_factor': int(args['squeeze_factor']), 'conv_scale': float(args['conv_scale']),
               'overlap_ratio': float(args['overlap_ratio']), 'mlp_ratio': float(args['mlp_ratio']),
               'qkv_bias': bool(args['qkv_bias']), 'drop_rate': float(args['drop_rate']),
               'attn_drop_rate': float(args['attn_drop_rate']), 'drop_path_rate': float(args['drop_path_rate']),
               'patch_norm': bool(args['patch_norm']), 'img_range': 1.0, 'rgb_mean': None, 'pad_mode': 'reflect'}
    return options, upscale


def network_options_from_spec(model_spec: Mapping[str, Any]) -> Dict[str, Any]:
    """Their ``model`` entry (``{'name': 'continuous-gaussian', 'args': {'encoder_spec': ...}}``) -> ``network_g``."""
    if not isinstance(model_spec, Mapping) or model_spec.get('name') != OFFICIAL_MODEL_NAME:
        name = model_spec.get('name') if isinstance(model_spec, Mapping) else type(model_spec).__name__
        raise ValueError(f"official ContinuousSR model spec: expected name '{OFFICIAL_MODEL_NAME}', got {name!r}")
    args = model_spec.get('args') or {}
    if 'encoder_spec' not in args:
        raise ValueError("official ContinuousSR model spec: no 'encoder_spec' in its args")
    encoder, upscale = official_encoder_options(args['encoder_spec'])
    options = {'type': 'ContinuousSR', 'encoder': encoder, **copy.deepcopy(OFFICIAL_HEAD_OPTIONS)}
    options['upscale'] = upscale
    return options


OFFICIAL_NETWORK_G: Dict[str, Any] = network_options_from_spec(
    {'name': OFFICIAL_MODEL_NAME, 'args': {'encoder_spec': _ASSUMED_RELEASED_SPEC}})


def official_key_rules(encoder_type: str) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """(key map, skipped keys) from their state dict to our ContinuousSR with a ``encoder_type`` encoder."""
    if encoder_type == 'HATEncoder':
        encoder_map, encoder_skipped = HAT_OFFICIAL_KEY_MAP, HAT_OFFICIAL_SKIPPED_KEYS
    elif encoder_type == 'SwinIREncoder':
        encoder_map, encoder_skipped = SWINIR_OFFICIAL_KEY_MAP, SWINIR_OFFICIAL_SKIPPED_KEYS
    else:
        raise ValueError(f"official ContinuousSR checkpoints have a 'HATEncoder' or 'SwinIREncoder' encoder, not {encoder_type!r}")
    key_map = [(r'^encoder\.upsample\.', 'upsample.'), (r'^conv1\.', 'query.0.'), (r'^mlp\.layers\.', 'color_mlp.'),
               (r'^mlp_offset\.layers\.', 'offset_mlp.'), (r'^mlp_vector\.layers\.', 'key_mlp.')]
    # the encoder's own rules, under the 'encoder.' prefix ('^' anchors move behind it)
    for pattern, replacement in encoder_map:
        key_map.append((r'^encoder\.' + pattern.lstrip('^'), 'encoder.' + replacement))
    key_map.append((r'^encoder\.', 'encoder.'))
    skipped = [(r'^encoder\.conv_last\.', 'conv_last: built by their encoder, not called in their forward')]
    for pattern, reason in encoder_skipped:
        if 'upsample' in pattern:  # their upsample is ours; only conv_last (above) is dropped
            continue
        anchored = pattern.startswith('^')
        skipped.append((r'^encoder\.' + pattern.lstrip('^') if anchored else pattern, reason))
    return key_map, skipped


def convert_official_state_dict(state: Mapping[str, torch.Tensor], encoder_type: str,
                                expected: Mapping[str, torch.Tensor] = None,
                                source: str = 'official ContinuousSR checkpoint') -> Dict[str, torch.Tensor]:
    """Their ``sd`` -> our ContinuousSR state dict (every kept key renamed, skipped keys dropped).

    Args:
        state: their state dict (``checkpoint['model']['sd']``).
        encoder_type: 'HATEncoder' or 'SwinIREncoder', our encoder type.
        expected: our network's ``state_dict()``; when given, every one of our keys must be provided with
            the same shape and no converted key may be unknown (a strict load), else ValueError.
        source: named in errors.
    """
    key_map, skipped_keys = official_key_rules(encoder_type)
    renamed, _ = map_checkpoint_keys(state, key_map, skipped_keys)
    converted = {ours: state[theirs] for ours, theirs in renamed.items()}
    if expected is not None:
        unknown = sorted(renamed[k] for k in converted if k not in expected)
        missing = sorted(k for k in expected if k not in converted)
        wrong = [f'{renamed[k]} -> {k}: {tuple(v.shape)} vs ours {tuple(expected[k].shape)}'
                 for k, v in converted.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
        if unknown or missing or wrong:
            parts = []
            if wrong:
                parts.append(f'{len(wrong)} shape mismatches ({"; ".join(wrong[:3])})')
            if unknown:
                parts.append(f'{len(unknown)} keys with no place here ({", ".join(unknown[:3])})')
            if missing:
                parts.append(f'{len(missing)} of our keys not in the file ({", ".join(missing[:3])})')
            raise ValueError(f'{source} does not fit the ContinuousSR built from the options: ' + '; '.join(parts))
    return converted


def read_official_checkpoint(path: Union[str, Path]) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(their model spec without weights, their state dict) from ``ContinuousSR.pth``."""
    checkpoint, _ = read_liif_checkpoint(path, OFFICIAL_MODEL_NAME, 'ContinuousSR')
    model = checkpoint['model']
    spec = {'name': model['name'], 'args': copy.deepcopy(dict(model.get('args') or {}))}
    return spec, dict(model['sd'])


def network_options_from_files(paths: Sequence[Union[str, Path]]) -> Dict[str, Any]:
    """``network_g`` for the checkpoint itself (its stored encoder spec), for loading by path."""
    spec, _ = read_official_checkpoint(paths[0])
    return network_options_from_spec(spec)


def _differences(ours: Any, theirs: Any, prefix: str = '') -> List[str]:
    if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            out += _differences(ours.get(key), theirs.get(key), f'{prefix}{key}.')
        return out
    return [] if ours == theirs else [f'{prefix[:-1]}: {theirs!r} (registered options: {ours!r})']


def convert(paths: Sequence[Union[str, Path]]) -> Dict[str, torch.Tensor]:
    """``hub.ReleasedModel.convert``: ``[ContinuousSR.pth]`` -> our state dict.

    The weights are checked (every key, every shape) against the network that the file's own encoder spec
    gives (:func:`network_options_from_files`). When that differs from :data:`OFFICIAL_NETWORK_G` (the
    released model's registered options) a warning names the options to change, and a network built from
    the registered options will refuse the weights.
    """
    if len(paths) != 1:
        raise ValueError(f'official ContinuousSR is one file (ContinuousSR.pth), got {len(paths)}: {list(paths)}')
    spec, state = read_official_checkpoint(paths[0])
    from_file = network_options_from_spec(spec)
    differences = _differences(OFFICIAL_NETWORK_G, from_file, 'network_g.')
    if differences:
        from basicsr.utils import get_root_logger
        get_root_logger().warning(f'{paths[0]}: its encoder spec gives other network options than '
                                  f'official:continuoussr assumes: {"; ".join(differences)}')
    return convert_official_state_dict(state, from_file['encoder']['type'], _expected_shapes(from_file),
                                       str(paths[0]))


def _expected_shapes(network_g: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Our state dict for ``network_g`` as meta tensors (shapes only, no memory)."""
    from basicsr.archs import build_network
    options = copy.deepcopy(dict(network_g))
    options.pop('rasterizer', None)  # rendering has no weights
    with torch.device('meta'):
        net = build_network(options)
    return net.state_dict()


RELEASED_MODEL = hub.register(hub.ReleasedModel(
    name='continuoussr', method='ContinuousSR', hub_repo='pey12/ContinuousSR', files=('ContinuousSR.pth', ),
    network_g=OFFICIAL_NETWORK_G, convert=convert,
    description="ContinuousSR (Peng et al. 2025), the authors' released HAT model, rendered as their gsplat fork",
    extra={'network_g_from_files': network_options_from_files, 'paper': 'arXiv 2503.06617',
           'code': f'{OFFICIAL_REPOSITORY} @ {OFFICIAL_COMMIT[:7]}'}))

