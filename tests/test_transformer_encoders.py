"""SwinIR / HAT encoders: timm pieces, any LR size, official-checkpoint loading, options files.

Forward/backward runs use tiny sizes (embed_dim 12, one group of 2 blocks, window 4) on 23x37 inputs so
the file runs in seconds on 2 CPU cores; the full default sizes are only built to count parameters and
to check every official key and shape.
"""
from pathlib import Path
from typing import Dict, Sequence, Tuple

import pytest
import torch
import yaml
from timm.layers import Mlp
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention

from gsasr_plugin.archs import ENCODER_REGISTRY, build_encoder
from gsasr_plugin.archs.hat_encoder_arch import HATEncoder, overlapping_relative_position_index
from gsasr_plugin.archs.pretrained import load_pretrained_encoder, map_checkpoint_keys
from gsasr_plugin.archs.swinir_encoder_arch import SwinIREncoder
from gsasr_plugin.archs.window_utils import shifted_window_mask

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {'embed_dim': 12, 'depths': [2], 'num_heads': [2], 'window_size': 4, 'drop_path_rate': 0.0}
Shapes = Dict[str, Tuple[int, ...]]


# --------------------------------------------------------------------------------------------------
# Official checkpoint layouts, written out from the official model definitions:
#   SwinIR: JingyunLiang/SwinIR models/network_swinir.py, class SwinIR with upsampler='pixelshuffle',
#           resi_connection='1conv', patch_norm=True, ape=False (classical SR).
#   HAT:    XPixelGroup/HAT hat/archs/hat_arch.py, class HAT with upsampler='pixelshuffle',
#           resi_connection='1conv' (classical SR).
# Both keep num_feat = 64 for conv_before_upsample / upsample / conv_last; Upsample is
# [conv(64 -> 4*64), PixelShuffle(2)] per factor 2 (indices 0, 2, ...) or [conv(64 -> 9*64), PixelShuffle(3)].
# Persistent buffers: SwinIR's WindowAttention.relative_position_index and (shifted blocks only)
# SwinTransformerBlock.attn_mask for the training img_size; HAT's top-level relative_position_index_SA
# and relative_position_index_OCA.
# --------------------------------------------------------------------------------------------------
def _upsampler_shapes(upscale: int, num_feat: int = 64, out_ch: int = 3) -> Shapes:
    shapes: Shapes = {}
    convs = [(4 * num_feat)] * {1: 0, 2: 1, 4: 2, 8: 3}.get(upscale, 0) if upscale != 3 else [9 * num_feat]
    for i, out in enumerate(convs):
        shapes[f'upsample.{2 * i}.weight'] = (out, num_feat, 3, 3)
        shapes[f'upsample.{2 * i}.bias'] = (out, )
    shapes['conv_last.weight'] = (out_ch, num_feat, 3, 3)
    shapes['conv_last.bias'] = (out_ch, )
    return shapes


def _conv(prefix: str, out_ch: int, in_ch: int, k: int) -> Shapes:
    return {f'{prefix}.weight': (out_ch, in_ch, k, k), f'{prefix}.bias': (out_ch, )}


def _linear(prefix: str, out_f: int, in_f: int) -> Shapes:
    return {f'{prefix}.weight': (out_f, in_f), f'{prefix}.bias': (out_f, )}


def _norm(prefix: str, dim: int) -> Shapes:
    return {f'{prefix}.weight': (dim, ), f'{prefix}.bias': (dim, )}


def official_swinir_shapes(embed_dim: int = 180, depths: Sequence[int] = (6, ) * 6,
                           num_heads: Sequence[int] = (6, ) * 6,
                           window_size: int = 8, mlp_ratio: float = 2., img_size: int = 48, upscale: int = 4) -> Shapes:
    """Keys and shapes of an official classical-SR SwinIR state dict."""
    e, ws, hidden = embed_dim, window_size, int(embed_dim * mlp_ratio)
    shapes = {**_conv('conv_first', e, 3, 3), **_norm('patch_embed.norm', e)}
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        for j in range(depth):
            p = f'layers.{i}.residual_group.blocks.{j}'
            shapes.update(_norm(f'{p}.norm1', e))
            shapes[f'{p}.attn.relative_position_bias_table'] = ((2 * ws - 1)**2, heads)
            shapes[f'{p}.attn.relative_position_index'] = (ws * ws, ws * ws)
            shapes.update({**_linear(f'{p}.attn.qkv', 3 * e, e), **_linear(f'{p}.attn.proj', e, e)})
            shapes.update({**_norm(f'{p}.norm2', e), **_linear(f'{p}.mlp.fc1', hidden, e)})
            shapes.update(_linear(f'{p}.mlp.fc2', e, hidden))
            if j % 2 == 1:
                shapes[f'{p}.attn_mask'] = ((img_size // ws)**2, ws * ws, ws * ws)
        shapes.update(_conv(f'layers.{i}.conv', e, e, 3))
    shapes.update({**_norm('norm', e), **_conv('conv_after_body', e, e, 3)})
    shapes.update(_conv('conv_before_upsample.0', 64, e, 3))
    shapes.update(_upsampler_shapes(upscale))
    return shapes


def official_hat_shapes(embed_dim: int = 180, depths: Sequence[int] = (6, ) * 6, num_heads: Sequence[int] = (6, ) * 6,
                        window_size: int = 16, mlp_ratio: float = 2., compress_ratio: int = 3, squeeze_factor: int = 30,
                        overlap_ratio: float = 0.5, upscale: int = 4) -> Shapes:
    """Keys and shapes of an official classical-SR HAT state dict."""
    e, ws, hidden = embed_dim, window_size, int(embed_dim * mlp_ratio)
    ows = ws + int(overlap_ratio * ws)
    shapes = {'relative_position_index_SA': (ws * ws, ws * ws), 'relative_position_index_OCA': (ws * ws, ows * ows)}
    shapes.update({**_conv('conv_first', e, 3, 3), **_norm('patch_embed.norm', e)})
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        for j in range(depth):
            p = f'layers.{i}.residual_group.blocks.{j}'
            shapes.update(_norm(f'{p}.norm1', e))
            shapes[f'{p}.attn.relative_position_bias_table'] = ((2 * ws - 1)**2, heads)
            shapes.update({**_linear(f'{p}.attn.qkv', 3 * e, e), **_linear(f'{p}.attn.proj', e, e)})
            shapes.update(_conv(f'{p}.conv_block.cab.0', e // compress_ratio, e, 3))
            shapes.update(_conv(f'{p}.conv_block.cab.2', e, e // compress_ratio, 3))
            shapes.update(_conv(f'{p}.conv_block.cab.3.attention.1', e // squeeze_factor, e, 1))
            shapes.update(_conv(f'{p}.conv_block.cab.3.attention.3', e, e // squeeze_factor, 1))
            shapes.update({**_norm(f'{p}.norm2', e), **_linear(f'{p}.mlp.fc1', hidden, e)})
            shapes.update(_linear(f'{p}.mlp.fc2', e, hidden))
        p = f'layers.{i}.residual_group.overlap_attn'
        shapes.update({**_norm(f'{p}.norm1', e), **_linear(f'{p}.qkv', 3 * e, e)})
        shapes[f'{p}.relative_position_bias_table'] = ((ws + ows - 1)**2, heads)
        shapes.update({**_linear(f'{p}.proj', e, e), **_norm(f'{p}.norm2', e)})
        shapes.update({**_linear(f'{p}.mlp.fc1', hidden, e), **_linear(f'{p}.mlp.fc2', e, hidden)})
        shapes.update(_conv(f'layers.{i}.conv', e, e, 3))
    shapes.update({**_norm('norm', e), **_conv('conv_after_body', e, e, 3)})
    shapes.update(_conv('conv_before_upsample.0', 64, e, 3))
    shapes.update(_upsampler_shapes(upscale))
    return shapes


def _random_checkpoint(shapes: Shapes) -> Dict[str, torch.Tensor]:
    return {k: (torch.randint(0, 10, s) if 'index' in k else torch.randn(s)) for k, s in shapes.items()}


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ building
@pytest.mark.parametrize('encoder_type, size, official_shapes, params, official_millions', [
    ('SwinIREncoder', {}, official_swinir_shapes, 11_603_044, 11.9),
    ('HATEncoder', {}, official_hat_shapes, 20_475_352, 20.8),
    ('HATEncoder', {'size': 'HAT-L'}, lambda: official_hat_shapes(depths=(6, ) * 12, num_heads=(6, ) * 12), 40_549_420, 40.8),
])
def test_full_size_matches_official_layout(encoder_type, size, official_shapes, params, official_millions):
    """Default sizes: our parameter count is the official x4 model's minus its upsampler, and every
    official key maps onto one of our tensors with the same shape (upsampler and buffers skipped)."""
    with torch.device('meta'):  # shapes only: no memory, no init
        encoder = build_encoder({'type': encoder_type, **size})
    assert encoder.out_channels == 64
    assert _num_params(encoder) == params
    official = official_shapes()
    upsampler = sum(torch.Size(s).numel() for s in _upsampler_shapes(4).values())
    official_params = sum(torch.Size(s).numel() for k, s in official.items() if 'index' not in k and 'mask' not in k)
    assert params + upsampler == official_params
    assert round(official_params / 1e6, 1) == official_millions
    renamed, skipped = map_checkpoint_keys(official, encoder.official_key_map, encoder.official_skipped_keys)
    ours = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert {target: official[source] for target, source in renamed.items()} == ours
    assert all(k.startswith(('upsample.', 'conv_last.')) or 'index' in k or 'attn_mask' in k for k in skipped)
    assert {'upsample.0.weight', 'upsample.2.weight', 'conv_last.weight'} <= set(skipped)


@pytest.mark.parametrize('encoder_type', ['SwinIREncoder', 'HATEncoder'])
def test_encoders_use_timm_window_attention(encoder_type):
    encoder = build_encoder({'type': encoder_type, **TINY})
    blocks = [m for m in encoder.modules() if isinstance(m, SwinTransformerBlock)]
    assert len(blocks) == 2
    assert all(isinstance(b.attn, WindowAttention) and isinstance(b.mlp, Mlp) for b in blocks)
    assert [b.shift_size for b in blocks] == [(0, 0), (2, 2)]
    if encoder_type == 'HATEncoder':
        assert isinstance(encoder.layers[0].overlap_attn.mlp, Mlp)


@pytest.mark.parametrize('encoder_type', ['SwinIREncoder', 'HATEncoder'])
@pytest.mark.parametrize('size', [(23, 37), (4, 4), (1, 9)])
def test_any_lr_size_forward_backward(encoder_type, size):
    encoder = build_encoder({'type': encoder_type, **TINY})
    lq = torch.rand(2, 3, *size, requires_grad=True)
    out = encoder(lq)
    assert out.shape == (2, 64, *size)
    out.square().mean().backward()
    assert torch.isfinite(lq.grad).all() and lq.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)


@pytest.mark.parametrize('encoder_type', ['SwinIREncoder', 'HATEncoder'])
def test_batch_items_are_independent_and_cropping_is_exact(encoder_type):
    encoder = build_encoder({'type': encoder_type, **TINY}).eval()
    lq = torch.rand(2, 3, 23, 37)
    with torch.no_grad():
        together = encoder(lq)
        alone = encoder(lq[1:])
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)


def test_timm_dynamic_shift_mask_matches_window_utils():
    block = build_encoder({'type': 'SwinIREncoder', **TINY}).layers[0].blocks[1]
    tokens = torch.zeros(1, 8, 12, 12)
    expected = shifted_window_mask(8, 12, 4, 2)
    torch.testing.assert_close(block.get_attn_mask(tokens), expected)
    assert (expected == -100).any() and (expected == 0).any()


def test_overlapping_position_index_depends_only_on_relative_offset():
    ws, ows = 4, 6
    index = overlapping_relative_position_index(ws, ows)
    assert index.shape == (ws * ws, ows * ows) and index.min() >= 0 and index.max() < (ws + ows - 1)**2
    seen = {}
    for q in range(ws * ws):
        for k in range(ows * ows):
            offset = (k // ows - q // ws, k % ows - q % ws)
            assert seen.setdefault(offset, int(index[q, k])) == int(index[q, k])
    assert len(set(seen.values())) == len(seen)  # distinct offsets -> distinct table rows


@pytest.mark.parametrize('encoder_type, options, message', [
    ('SwinIREncoder', {'num_heads': [5]}, 'divisible'),
    ('SwinIREncoder', {'depths': [2, 2]}, 'num_heads'),
    ('HATEncoder', {'size': 'HAT-XL'}, 'size'),
    ('HATEncoder', {'pad_mode': 'wrap'}, 'pad_mode'),
])
def test_bad_sizes_raise_value_error_naming_the_option(encoder_type, options, message):
    with pytest.raises(ValueError, match=message):
        build_encoder({'type': encoder_type, **{**TINY, **options}})


# ------------------------------------------------------------------------------------------ pretrained
@pytest.mark.parametrize('encoder_type, make_shapes', [
    ('SwinIREncoder', lambda: official_swinir_shapes(12, [2], [2], 4, img_size=16, upscale=3)),
    ('HATEncoder', lambda: official_hat_shapes(12, [2], [2], 4, compress_ratio=3, squeeze_factor=6, upscale=2)),
])
def test_load_official_checkpoint_through_build_encoder(tmp_path, encoder_type, make_shapes):
    checkpoint = _random_checkpoint(make_shapes())
    path = tmp_path / 'official.pth'
    torch.save({'params_ema': checkpoint, 'params': {}}, path)
    options = {'type': encoder_type, **TINY, 'pretrained': str(path)}
    if encoder_type == 'HATEncoder':
        options['squeeze_factor'] = 6
    encoder = build_encoder(options)
    encoder_cls = ENCODER_REGISTRY.get(encoder_type)
    renamed, _ = map_checkpoint_keys(checkpoint, encoder_cls.official_key_map, encoder_cls.official_skipped_keys)
    state = encoder.state_dict()
    assert set(renamed) == set(state)
    for target, source in renamed.items():
        assert torch.equal(state[target], checkpoint[source]), target
    out = encoder(torch.rand(1, 3, 23, 37))
    assert out.shape == (1, 64, 23, 37) and torch.isfinite(out).all()


def test_loader_reports_skipped_keys(tmp_path):
    shapes = official_swinir_shapes(12, [2], [2], 4, img_size=16)
    path = tmp_path / 'swinir.pth'
    torch.save({'params': _random_checkpoint(shapes)}, path)
    encoder = SwinIREncoder(**TINY)
    messages = []

    class Recorder:
        info = warning = staticmethod(messages.append)

    report = load_pretrained_encoder(encoder, path, logger=Recorder())
    assert report.param_key == 'params' and not report.missing and not report.unexpected
    assert report.skipped['upsample.0.weight'].startswith('upsampler')
    assert report.skipped['conv_last.bias'].startswith('upsampler')
    assert 'layers.0.residual_group.blocks.1.attn_mask' in report.skipped
    assert 'layers.0.residual_group.blocks.0.attn.relative_position_index' in report.skipped
    assert len(report.loaded) == len(encoder.state_dict())
    assert 'upsampler' in messages[0] and 'upsample.0.weight' in messages[0]


def test_loader_wrong_shape_names_the_key(tmp_path):
    checkpoint = _random_checkpoint(official_hat_shapes(12, [2], [2], 4, squeeze_factor=6))
    checkpoint['layers.0.residual_group.overlap_attn.qkv.weight'] = torch.randn(30, 12)
    path = tmp_path / 'hat.pth'
    torch.save({'params_ema': checkpoint}, path)
    encoder = HATEncoder(**TINY, squeeze_factor=6)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    bad_key = r'layers\.0\.residual_group\.overlap_attn\.qkv\.weight'
    with pytest.raises(ValueError, match=bad_key + r'.*\(30, 12\).*\(36, 12\)'):
        load_pretrained_encoder(encoder, path)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())  # nothing half-loaded


def test_loader_unknown_and_missing_keys(tmp_path):
    checkpoint = _random_checkpoint(official_swinir_shapes(12, [2], [2], 4, img_size=16))
    checkpoint['extra_head.weight'] = torch.randn(3)
    del checkpoint['norm.bias']
    path = tmp_path / 'odd.pth'
    torch.save(checkpoint, path)  # weights at the top level
    with pytest.raises(ValueError, match=r"(?s)extra_head\.weight.*norm\.bias"):
        build_encoder({'type': 'SwinIREncoder', **TINY, 'pretrained': str(path)})
    encoder = SwinIREncoder(**TINY)
    report = load_pretrained_encoder(encoder, path, strict=False, logger=type('L', (), {
        'info': staticmethod(print), 'warning': staticmethod(print)})())
    assert report.unexpected == ['extra_head.weight'] and report.missing == ['norm.bias']
    assert torch.equal(encoder.state_dict()['norm.weight'], checkpoint['norm.weight'])


def test_loader_bad_path_and_param_key(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        build_encoder({'type': 'SwinIREncoder', **TINY, 'pretrained': str(tmp_path / 'missing.pth')})
    path = tmp_path / 'ckpt.pth'
    torch.save({'params': {}}, path)
    with pytest.raises(ValueError, match="param_key 'params_ema'"):
        build_encoder({'type': 'SwinIREncoder', **TINY, 'pretrained': str(path), 'param_key': 'params_ema'})


# ------------------------------------------------------------------------------------------ option files
def _load_options(name: str) -> dict:
    with open(REPO_ROOT / 'options' / name, encoding='utf-8') as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize('name, encoder_type', [
    ('train_gsasr_swinir.yml', 'SwinIREncoder'),
    ('train_gsasr_hat.yml', 'HATEncoder'),
])
def test_option_files_name_the_encoder(name, encoder_type):
    options = _load_options(name)
    encoder_opt = options['network_g']['encoder']
    assert encoder_opt['type'] == encoder_type
    assert not encoder_opt.get('pretrained')  # users point it at their own checkpoint


@pytest.mark.parametrize('name', ['train_gsasr_swinir.yml', 'train_gsasr_hat.yml'])
def test_gsasr_builds_from_option_file_and_trains_at_any_scale(name):
    """Build ``network_g`` of the options file by name through BasicSR, with sizes shrunk for the CPU
    (encoder: TINY; decoder: width 12, window 4, one block of one layer, 4 Gaussians per LR pixel),
    and run forward + backward at scales 1.6, 4 and (3, 2) on a 23x37 LR image."""
    from basicsr.archs import build_network

    network_opt = _load_options(name)['network_g']
    network_opt['encoder'].update(TINY)
    network_opt.update(embed_dim=12, num_heads=2, window_size=4, num_injection_layers=1, num_blocks=1,
                       num_layers_per_block=1, gaussian_density=4, num_upsample_stages=1)
    net = build_network(network_opt)
    assert type(net.encoder).__name__ == network_opt['encoder']['type']
    assert any(isinstance(m, WindowAttention) for m in net.encoder.modules())
    decoder_modules = [m for n, m in net.named_modules() if not n.startswith('encoder')]
    assert any(isinstance(m, WindowAttention) for m in decoder_modules)  # one window attention for both
    lq = torch.rand(1, 3, 23, 37)
    for scale in (1.6, 4, (3, 2)):
        net.zero_grad()
        sr = net(lq, scale=scale)
        s_h, s_w = (scale, scale) if isinstance(scale, (int, float)) else scale
        assert sr.shape == (1, 3, round(23 * s_h), round(37 * s_w))
        sr.mean().backward()
        assert net.encoder.conv_first.weight.grad.abs().sum() > 0
        assert torch.isfinite(net.encoder.conv_first.weight.grad).all()


def test_overlapping_cross_attention_matches_a_direct_computation():
    """OCAB against a loop over windows: queries of each ws x ws window attend to the zero-padded
    ows x ows window with the same centre, plus the bias of each (key - query) offset."""
    from gsasr_plugin.archs.hat_encoder_arch import OverlappingCrossAttention
    torch.manual_seed(0)
    ws, heads, dim = 4, 2, 8
    block = OverlappingCrossAttention(dim, heads, ws, overlap_ratio=0.5).eval()
    ows, pad = block.overlap_window_size, (block.overlap_window_size - ws) // 2
    x = torch.randn(1, 8, 12, dim)
    with torch.no_grad():
        q, k, v = block.qkv(block.norm1(x)).chunk(3, dim=-1)
        k = torch.nn.functional.pad(k, (0, 0, pad, ows - ws - pad, pad, ows - ws - pad))
        v = torch.nn.functional.pad(v, (0, 0, pad, ows - ws - pad, pad, ows - ws - pad))
        attended = torch.zeros_like(q)
        for top in range(0, 8, ws):
            for left in range(0, 12, ws):
                qw = q[0, top:top + ws, left:left + ws].reshape(ws * ws, heads, -1).transpose(0, 1)
                kw = k[0, top:top + ows, left:left + ows].reshape(ows * ows, heads, -1).transpose(0, 1)
                vw = v[0, top:top + ows, left:left + ows].reshape(ows * ows, heads, -1).transpose(0, 1)
                bias = torch.stack([
                    block.relative_position_bias_table[overlapping_relative_position_index(ws, ows)[i, j]]
                    for i in range(ws * ws) for j in range(ows * ows)
                ]).view(ws * ws, ows * ows, heads).permute(2, 0, 1)
                weights = (qw * block.scale @ kw.transpose(-2, -1) + bias).softmax(-1)
                attended[0, top:top + ws, left:left + ws] = (weights @ vw).transpose(0, 1).reshape(ws, ws, dim)
        expected = x + block.proj(attended)
        expected = expected + block.mlp(block.norm2(expected))
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('encoder_type', ['SwinIREncoder', 'HATEncoder'])
def test_gradient_checkpointing_gives_the_same_output_and_gradients(encoder_type):
    plain = build_encoder({'type': encoder_type, **TINY})
    checkpointed = build_encoder({'type': encoder_type, **TINY, 'use_checkpoint': True})
    checkpointed.load_state_dict(plain.state_dict())
    lq = torch.rand(1, 3, 11, 13)
    outputs = []
    for encoder in (plain, checkpointed):
        out = encoder(lq)
        out.square().mean().backward()
        outputs.append((out.detach(), encoder.conv_first.weight.grad.clone()))
    torch.testing.assert_close(outputs[0][0], outputs[1][0])
    torch.testing.assert_close(outputs[0][1], outputs[1][1])


def test_basicsr_edsr_x4_and_official_rdn_encoder_files_load_strictly(tmp_path):
    """Issue 26, item 15: `encoder: pretrained:` refused BasicSR's EDSR x4 checkpoint under strict (its upsampler
    keys were not skipped, as SwinIR's and HAT's are) and the official RDNNOUP encoder.pth (no key map)."""
    from basicsr.archs.edsr_arch import EDSR
    from gsasr_plugin.official.gsasr import OfficialState, convert_rdn_noup, read_official_file
    torch.manual_seed(0)
    edsr = EDSR(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, upscale=4)
    torch.save({'params': edsr.state_dict()}, tmp_path / 'EDSR_Mx4_f8b2.pth')
    encoder = build_encoder({'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 2,
                             'pretrained': str(tmp_path / 'EDSR_Mx4_f8b2.pth'), 'strict': True})
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, edsr.state_dict()[key]), key
    official = Path(__file__).resolve().parent / 'fixtures' / 'official_gsasr' / 'rdn_paper' / 'encoder.pth'
    weights = read_official_file(official)
    expected = convert_rdn_noup(OfficialState(weights, str(official)))  # the converter of released models
    rdn = build_encoder({'type': 'RDNEncoder', 'num_feat': 8, 'num_blocks': 2, 'num_layers': 3, 'growth': 4,
                         'rgb_mean': None, 'pretrained': str(official), 'strict': True})
    assert rdn.state_dict().keys() == expected.keys()
    for key, value in rdn.state_dict().items():
        assert torch.equal(value, expected[key]), key
