"""The official GaussianSR checkpoints (tljxyys/GaussianSR) as our ``GaussianSR``.

Their ``train_gaussian.py`` saves LIIF's layout::

    {'model': {'name': 'gaussian-splatter', 'args': {...constructor arguments...}, 'sd': state_dict},
     'optimizer': {...}, 'epoch': N}

Their released EDSR-baseline model is ``save/edsr-baseline-gaussiansr/epoch-last.pth`` in their GitHub
repository (not on a model hub). This module turns such a file into our network options and state dict:

* :data:`RELEASED_MODEL` -- their model registered with :mod:`gsasr_plugin.official.hub` as
  ``official:gaussiansr-edsr-official`` (one file, no hub repository: given by path, the plumbing of
  :func:`gsasr_plugin.checkpoint.load_weights` finds :func:`convert_official_files` for it), so that
  ``basicsr infer --model epoch-last.pth``, ``path: pretrain_network_g: epoch-last.pth`` and ``basicsr convert``
  take the file as it is;
* :func:`official_network_options` -- the ``network_g`` that reproduces their forward (``splatting: patches``,
  ``kernel_param: raw``, ``kernel_sharing: patch_mean``, ``decoder_coords: liif``, ``mlp_act: gelu``, ...);
  evaluation keeps our deterministic kernel choice (``kernel_choice_eval: softmax``, the expectation of
  their sampled one; set ``gumbel`` for theirs);
* :func:`official_state_dict_keys` -- the key -> shape list their code produces for given arguments (the
  tests check it against the list their code printed);
* :func:`convert_state_dict` -- every key checked (missing, unexpected, shape) and mapped: the encoder by
  :data:`EDSR_KEY_MAP` (EDSR-PyTorch's names), the classifier, the kernel bank (their ``sigma_x`` spreads
  along rows, ours along columns: swapped), the decoder (their offsets and cells are (y, x), ours (x, y): the
  frequency pairs and the phase columns are swapped; their ``nn.Linear`` MLP becomes our 1x1 convs);
* :func:`load_official_checkpoint` -- a file (or a loaded dict) to a :class:`gsasr_plugin.checkpoint.Checkpoint`;
* ``python -m gsasr_plugin.official.gaussiansr epoch-last.pth OURS.pth [--kernel-choice-eval X]`` --
  writes our self-describing checkpoint (weights + ``network_g``), as ``basicsr convert`` does.

Their ``data_norm`` (mean 0.5, std 0.5 for inputs and targets) is part of the training config, not of the
checkpoint; every config they ship uses it, so the options set ``norm_mean: 0.5``, ``norm_std: 0.5``.
"""
import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from gsasr_plugin.archs.pretrained import map_checkpoint_keys, read_liif_checkpoint
from gsasr_plugin.checkpoint import Checkpoint, save_checkpoint
from gsasr_plugin.official import hub

__all__ = ['OFFICIAL_MODEL_NAME', 'OFFICIAL_REPO', 'OFFICIAL_FILE', 'RELEASED_MODEL', 'EDSR_KEY_MAP',
           'official_network_options',
           'official_state_dict_keys', 'convert_state_dict', 'load_official_checkpoint', 'convert_official_files',
           'convert_checkpoint_file', 'OFFICIAL_TRAIN_ARGS', 'OFFICIAL_NETWORK_G', 'main']

OFFICIAL_MODEL_NAME = 'gaussian-splatter'
OFFICIAL_REPO = 'https://github.com/tljxyys/GaussianSR'
OFFICIAL_FILE = 'save/edsr-baseline-gaussiansr/epoch-last.pth'
# Constructor defaults of their encoders (models/edsr.py) and of GaussianSplatter / MLP.
_ENCODER_DEFAULTS = {
    'edsr-baseline': {'n_resblocks': 16, 'n_feats': 64, 'res_scale': 1, 'no_upsampling': True, 'n_class': 100},
    'edsr-large': {'n_resblocks': 32, 'n_feats': 256, 'res_scale': 0.1, 'no_upsampling': True, 'n_class': 100},
}
_SPLATTER_DEFAULTS = {'hidden_dim': 256, 'unfold_row': 7, 'unfold_column': 7, 'num_points': 100}
_SPLAT_CHANNELS = 8  # hard-coded in their query_rgb: feat[:, :8] is splatted, feat[:, 8:] upsampled
_ENCODER_PREFIX = 'encoder.edsr.'
# EDSR-PyTorch's layout (LIIF's, and theirs under encoder.edsr.) -> our EDSREncoder:
# head.0, body.<i>.body.{0,2}, body.<num_block> (the conv after the body)
EDSR_KEY_MAP = (
    (r'^head\.0\.', 'conv_first.'),
    (r'^body\.(\d+)\.body\.0\.', r'body.\1.conv1.'),
    (r'^body\.(\d+)\.body\.2\.', r'body.\1.conv2.'),
    (r'^body\.\d+\.(weight|bias)$', r'conv_after_body.\1'),
)
EDSR_SKIPPED_KEYS = ((r'^(sub_mean|add_mean)\.', "EDSR's MeanShift convs, built but not applied in their forward"), )


# model: args of their configs/train/train_edsr-baseline-gaussian-batch16.yaml (the released checkpoint's)
OFFICIAL_TRAIN_ARGS = {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'no_upsampling': True}},
    'dec_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256, 256, 256, 256]}},
    'kernel_size': 5,
}


def _resolved_args(args: Mapping[str, Any]) -> Dict[str, Any]:
    """Their constructor arguments with every default filled in; unsupported settings raise ValueError."""
    if 'encoder_spec' not in args or 'dec_spec' not in args or 'kernel_size' not in args:
        raise ValueError("official GaussianSR args need 'encoder_spec', 'dec_spec' and 'kernel_size', got "
                         f'{sorted(args)}')
    encoder_name = args['encoder_spec'].get('name')
    if encoder_name not in _ENCODER_DEFAULTS:
        raise ValueError(f"official encoder {encoder_name!r} is not supported (known: {sorted(_ENCODER_DEFAULTS)})")
    encoder = dict(_ENCODER_DEFAULTS[encoder_name], **dict(args['encoder_spec'].get('args') or {}))
    if not encoder['no_upsampling']:
        raise ValueError('official GaussianSR with an upsampling encoder (no_upsampling: false) cannot run: '
                         'its decoder needs the feature map')
    decoder = dict(args['dec_spec'].get('args') or {})
    if args['dec_spec'].get('name') != 'mlp':
        raise ValueError(f"official decoder {args['dec_spec'].get('name')!r} is not supported (only 'mlp')")
    act = str(decoder.get('act', 'gelu')).lower()
    if act not in ('gelu', 'relu'):
        raise ValueError(f"official MLP activation {decoder.get('act')!r} is not supported ('gelu' or 'relu')")
    resolved = dict(_SPLATTER_DEFAULTS)
    resolved.update({k: v for k, v in args.items() if k not in ('encoder_spec', 'dec_spec')})
    if resolved['num_points'] != 100 or encoder['n_class'] != 100:
        raise ValueError('official GaussianSR initialises a 10 x 10 kernel bank: num_points and n_class must be '
                         f"100, got {resolved['num_points']} and {encoder['n_class']}")
    resolved.update(encoder=encoder, act=act, hidden_list=[int(h) for h in decoder['hidden_list']],
                    out_dim=int(decoder.get('out_dim', 3)))
    return resolved


def official_network_options(args: Mapping[str, Any], kernel_choice_eval: str = 'softmax') -> Dict[str, Any]:
    """Our ``network_g`` for their constructor arguments (``checkpoint['model']['args']``)."""
    a = _resolved_args(args)
    enc = a['encoder']
    return {
        'type': 'GaussianSR',
        'encoder': {'type': 'EDSREncoder', 'num_feat': int(enc['n_feats']), 'num_block': int(enc['n_resblocks']),
                    'res_scale': float(enc['res_scale']), 'rgb_mean': None},
        'num_kernels': 100,
        'sigma_init_range': [0.2, 3.0],
        'opacity_init_logit': 1.0,
        'splat_channels': _SPLAT_CHANNELS,
        'gumbel_tau': 1.0,
        'gumbel_hard': False,
        'kernel_choice_eval': kernel_choice_eval,
        'kernel_param': 'raw',
        'kernel_sharing': 'patch_mean',
        'patch_mean_images': 0,
        'splatting': 'patches',
        'patch_size': [int(a['unfold_row']), int(a['unfold_column'])],
        'kernel_size': int(a['kernel_size']),
        'splat_clamp': [0.0, 1.0],
        'decoder_dim': int(a['hidden_dim']),
        'mlp_hidden': a['hidden_list'],
        'mlp_act': a['act'],
        'decoder_coords': 'liif',
        'image_skip': False,
        'norm_mean': 0.5,
        'norm_std': 0.5,
        'num_colors': a['out_dim'],
    }


def official_state_dict_keys(args: Mapping[str, Any]) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the state dict their ``GaussianSplatter(**args)`` has (worked out from the arguments)."""
    a = _resolved_args(args)
    enc = a['encoder']
    feats, blocks = int(enc['n_feats']), int(enc['n_resblocks'])
    keys: Dict[str, Tuple[int, ...]] = {'sigma_x': (100, ), 'sigma_y': (100, ), 'opacity': (100, 1), 'rho': (100, 1)}
    keys[_ENCODER_PREFIX + 'head.0.weight'] = (feats, 3, 3, 3)
    keys[_ENCODER_PREFIX + 'head.0.bias'] = (feats, )
    for index in range(blocks):
        for conv in (0, 2):
            keys[f'{_ENCODER_PREFIX}body.{index}.body.{conv}.weight'] = (feats, feats, 3, 3)
            keys[f'{_ENCODER_PREFIX}body.{index}.body.{conv}.bias'] = (feats, )
    keys[f'{_ENCODER_PREFIX}body.{blocks}.weight'] = (feats, feats, 3, 3)
    keys[f'{_ENCODER_PREFIX}body.{blocks}.bias'] = (feats, )
    for shift in ('sub_mean', 'add_mean'):
        keys[f'{_ENCODER_PREFIX}{shift}.weight'] = (3, 3, 1, 1)
        keys[f'{_ENCODER_PREFIX}{shift}.bias'] = (3, )
    keys['encoder.segmentation_head.0.weight'] = (100, feats, 3, 3)
    keys['encoder.segmentation_head.0.bias'] = (100, )
    dim = int(a['hidden_dim'])
    for name in ('coef', 'freq'):
        keys[f'{name}.weight'] = (dim, feats, 3, 3)
        keys[f'{name}.bias'] = (dim, )
    keys['phase.weight'] = (dim // 2, 2)
    width = dim
    for index, size in enumerate(a['hidden_list'] + [a['out_dim']]):
        keys[f'dec.layers.{2 * index}.weight'] = (size, width)
        keys[f'dec.layers.{2 * index}.bias'] = (size, )
        width = size
    return keys


def _pair_swap(channels: int) -> torch.Tensor:
    """Index that swaps channels 2m and 2m + 1 (their (y, x) frequency pairs -> our (x, y))."""
    return torch.arange(channels).view(-1, 2).flip(1).reshape(-1)


def convert_state_dict(state: Mapping[str, torch.Tensor], args: Mapping[str, Any],
                       source: str = '<checkpoint>') -> Dict[str, torch.Tensor]:
    """Their state dict -> ours (for :func:`official_network_options` of the same ``args``), every key checked.

    Raises:
        ValueError: naming the missing, unexpected and mis-shaped keys.
    """
    expected = official_state_dict_keys(args)
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f'{k}: {tuple(state[k].shape)} (expected {expected[k]})' for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = [f'{len(missing)} missing {missing[:5]}' if missing else '',
                 f'{len(unexpected)} unexpected {unexpected[:5]}' if unexpected else '',
                 f'{len(wrong)} with other shapes {wrong[:3]}' if wrong else '']
        raise ValueError(f"{source}: the weights do not match the official GaussianSR built from its own 'args': "
                         + '; '.join(p for p in parts if p))
    encoder_state = {k[len(_ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(_ENCODER_PREFIX)}
    renamed, _ = map_checkpoint_keys(encoder_state, EDSR_KEY_MAP, EDSR_SKIPPED_KEYS)
    ours = {f'encoder.{target}': encoder_state[key] for target, key in renamed.items()}
    ours['classifier.weight'] = state['encoder.segmentation_head.0.weight']
    ours['classifier.bias'] = state['encoder.segmentation_head.0.bias']
    # their sigma_x is the spread along rows (y), sigma_y along columns (x)
    ours['kernel_sigma'] = torch.stack((state['sigma_y'], state['sigma_x']), dim=-1)
    ours['kernel_rho'] = state['rho'].reshape(-1)
    ours['kernel_opacity'] = state['opacity'].reshape(-1)
    ours['decoder.coef.weight'] = state['coef.weight']
    ours['decoder.coef.bias'] = state['coef.bias']
    swap = _pair_swap(state['freq.weight'].shape[0])
    ours['decoder.freq.weight'] = state['freq.weight'][swap]
    ours['decoder.freq.bias'] = state['freq.bias'][swap]
    ours['decoder.phase.weight'] = state['phase.weight'].flip(1)
    for key in expected:
        if key.startswith('dec.layers.'):
            index, kind = key[len('dec.layers.'):].split('.')
            value = state[key]
            ours[f'decoder.mlp.{index}.{kind}'] = value.view(*value.shape, 1, 1) if kind == 'weight' else value
    return {k: v.detach().clone().float().contiguous() for k, v in ours.items()}


def load_official_checkpoint(checkpoint: Union[str, Path, Mapping[str, Any]], kernel_choice_eval: str = 'softmax'):
    """Their checkpoint (a path or a loaded dict) -> :class:`gsasr_plugin.checkpoint.Checkpoint` of ours.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if the file is not their layout or its weights do not match its arguments.
    """
    checkpoint, source = read_liif_checkpoint(checkpoint, OFFICIAL_MODEL_NAME, 'GaussianSR')
    model = checkpoint['model']
    network_g = official_network_options(model.get('args') or {}, kernel_choice_eval)
    state = convert_state_dict(model['sd'], model.get('args') or {}, source)
    meta = {'source': f'official GaussianSR ({OFFICIAL_REPO}) {source}'}
    if 'epoch' in checkpoint:
        meta['epoch'] = int(checkpoint['epoch'])
    return Checkpoint(state_dict=state, network_g=network_g, meta=meta)


def convert_official_files(paths: Sequence[Union[str, Path]]) -> Dict[str, torch.Tensor]:
    """``ReleasedModel.convert``'s signature: their one checkpoint file -> our state dict (for
    :data:`OFFICIAL_NETWORK_G`, i.e. the default arguments of their training config)."""
    if len(paths) != 1:
        raise ValueError(f'official GaussianSR is one file (epoch-last.pth), got {len(paths)}: {list(paths)}')
    return load_official_checkpoint(paths[0]).state_dict


def convert_checkpoint_file(source: Union[str, Path], target: Union[str, Path],
                            kernel_choice_eval: str = 'softmax') -> Dict[str, Any]:
    """Write their checkpoint ``source`` as our self-describing checkpoint ``target``; returns its network_g."""
    converted = load_official_checkpoint(source, kernel_choice_eval)
    epoch = converted.meta.get('epoch')
    save_checkpoint(str(target), converted.state_dict, converted.network_g,
                    source=converted.meta['source'] + (f', epoch {epoch}' if epoch is not None else ''))
    return converted.network_g


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m gsasr_plugin.official.gaussiansr OFFICIAL.pth OURS.pth [--kernel-choice-eval X]``."""
    parser = argparse.ArgumentParser(prog='python -m gsasr_plugin.official.gaussiansr',
                                     description='Convert an official GaussianSR checkpoint (LIIF layout) to a '
                                     'gsasr-basicsr checkpoint (weights + network_g).')
    parser.add_argument('source', help='their checkpoint, e.g. save/edsr-baseline-gaussiansr/epoch-last.pth')
    parser.add_argument('target', help='where to write ours, e.g. net_g_gaussiansr_official.pth')
    parser.add_argument('--kernel-choice-eval', default='softmax', choices=['argmax', 'softmax', 'gumbel'],
                        help="evaluation kernel choice stored in network_g (default softmax, deterministic; "
                        "'gumbel' samples as their test code)")
    args = parser.parse_args(argv)
    try:
        network_g = convert_checkpoint_file(args.source, args.target, args.kernel_choice_eval)
    except (OSError, ValueError) as error:
        print(f'error: {str(error).splitlines()[0]}', file=sys.stderr)
        return 1
    print(f"wrote {args.target} (GaussianSR, splatting: {network_g['splatting']}, "
          f"kernel_choice_eval: {network_g['kernel_choice_eval']})")
    return 0


# our network_g for their released EDSR-baseline model (what options/*_gaussiansr_edsr_official.yml hold)
OFFICIAL_NETWORK_G = official_network_options(OFFICIAL_TRAIN_ARGS)

# Their released model: in their GitHub repository, not on a model hub, so given by path (basicsr infer
# --model epoch-last.pth, path: pretrain_network_g, basicsr convert); official:<name> says where to get it.
RELEASED_MODEL = hub.register(hub.ReleasedModel(
    name='gaussiansr-edsr-official', method='GaussianSR', hub_repo='', files=(OFFICIAL_FILE, ),
    network_g=OFFICIAL_NETWORK_G, convert=convert_official_files, source=f'{OFFICIAL_REPO}/blob/main/{OFFICIAL_FILE}',
    description='GaussianSR, EDSR-baseline encoder, DIV2K, 2000 epochs (the authors\' GitHub repository; by path)'))

if __name__ == '__main__':
    sys.exit(main())
