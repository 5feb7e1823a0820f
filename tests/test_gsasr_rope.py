"""GSASRRoPE, the HATRoPEEncoder and the released enhanced / ultra models against the official code.

The references in ``tests/fixtures/official_gsasr/{edsr_enhanced,hatl_ultra}/`` were made by the official code
(``tests/fixtures/make_gsasr_rope_fixtures.py``; command and commit in each ``reference.pth``) on tiny seeded
configurations of the enhanced decoder ``Fea2GS_ROPE_AMP`` with the ``EDSRNOUP`` and ``HATNOUP_ROPE_AMP``
encoders: the official files, the LR images, the rasterizer's inputs and the rendered, cropped images. Our
GSASRRoPE built from the same ``network_g`` with the converted weights must give the same Gaussians (1e-5) and
images (1e-4), float32 on the CPU. ``released_layouts.json.gz`` holds the key layouts of the official networks
at the released sizes, so that each registered model's conversion is checked without its files.
"""
import copy
import gzip
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

import gsasr_plugin  # noqa: F401  (registers archs, encoders, released models)
from basicsr.archs import build_network
from gsasr_plugin.official import hub
from gsasr_plugin.archs import build_encoder
from gsasr_plugin.official.gsasr_official_arch import GSASRRoPEOfficial
from gsasr_plugin.official.gsasr import (OfficialState, convert_fea2gs_rope, convert_hat_rope_noup,
                                               convert_official_gsasr, enhanced_network_g, identify_encoder)
from gsasr_plugin.archs.rope_attention import RoPEWindowAttention, apply_rotation, grid_positions, rotation_angles
from gsasr_plugin.checkpoint import build_with_weights, load_into, load_weights
from official_gsasr_helpers import ENHANCED_FAMILIES, FIXTURES
from official_gsasr_helpers import gaussian_error as _gaussian_error
from official_gsasr_helpers import official_net as _official_net
from official_gsasr_helpers import official_files as _files
from official_gsasr_helpers import reference as _reference
from recorded_options import current_network_g

FAMILIES = ENHANCED_FAMILIES
OPTIONS = Path(__file__).resolve().parents[1] / 'options'


# The Gaussians and images of every official family against the official code: tests/test_official_gsasr.py.


@pytest.mark.parametrize('index', range(4))
def test_hat_rope_encoder_matches_the_official_one(index):
    """The encoder alone, built from its options and loaded through ``encoder: pretrained`` (its key map)."""
    ref = _reference('hatl_ultra')
    case = ref['cases'][index]
    options = dict(current_network_g(ref['network_g'])['encoder'], pretrained=str(FIXTURES / 'hatl_ultra' / 'encoder.pth'))
    encoder = build_encoder(options).eval()
    lq = torch.nn.functional.pad(case['lq'], (0, case['padded_size'][1] - case['lq'].shape[-1], 0,
                                              case['padded_size'][0] - case['lq'].shape[-2]), mode='reflect')
    with torch.no_grad():
        features = encoder(lq)
    assert (features - case['encoder_output']).abs().max().item() < 1e-5 * case['encoder_output'].abs().max()


def test_the_official_forward_is_needed():
    """A GSASRRoPE with our padding / head defaults leaves the official Gaussians by far (the blocks are right,
    the options matter); and the official shift behaviour is the only one the RoPE blocks offer (no option)."""
    net, ref = _official_net('hatl_ultra', pad_input_to=None, max_offset=1.0)
    case = ref['cases'][1]  # 4 x 12: no padding, so the fields are comparable Gaussian by Gaussian
    with torch.no_grad():
        field = net.encode(case['lq'], case['scale'])
    assert _gaussian_error(field, case) > 1e-2
    with pytest.raises(TypeError, match='shift_mask'):
        build_network(dict(current_network_g(ref['network_g']), shift_mask=True))
    with pytest.raises(TypeError, match='cross_attention_shift'):
        build_network(dict(current_network_g(ref['network_g']), cross_attention_shift='masked'))


# ------------------------------------------------------------------------------------ conversion
def test_conversion_is_strict(tmp_path):
    decoder = torch.load(FIXTURES / 'hatl_ultra' / 'decoder.pth', weights_only=True)['params_ema']
    encoder_file = FIXTURES / 'hatl_ultra' / 'encoder.pth'
    torch.save({'params_ema': {k: v for k, v in decoder.items() if k != 'conv_final.bias'}}, tmp_path / 'missing.pth')
    with pytest.raises(ValueError, match=r"missing.pth: official key 'conv_final.bias' is missing"):
        convert_official_gsasr([encoder_file, tmp_path / 'missing.pth'], 'HATNOUP_ROPE_AMP', 'Fea2GS_ROPE_AMP')
    torch.save({'params_ema': dict(decoder, extra=torch.zeros(1))}, tmp_path / 'extra.pth')
    with pytest.raises(ValueError, match=r'extra.pth: 1 official keys have no counterpart.*extra'):
        convert_official_gsasr([encoder_file, tmp_path / 'extra.pth'], 'HATNOUP_ROPE_AMP', 'Fea2GS_ROPE_AMP')
    # a paper decoder is not an enhanced one
    with pytest.raises(ValueError, match=r"edsr_paper/decoder.pth: official key .* is missing"):
        convert_official_gsasr([FIXTURES / 'edsr_paper' / 'encoder.pth', FIXTURES / 'edsr_paper' / 'decoder.pth'],
                               'EDSRNOUP', 'Fea2GS_ROPE_AMP')
    bent = dict(decoder)
    key = next(k for k in decoder if k.endswith('rope_t_x'))
    bent[key] = decoder[key] + 0.5
    with pytest.raises(ValueError, match='non-integer token positions'):
        convert_fea2gs_rope(OfficialState(bent, 'bent.pth'))


def test_the_window_size_is_checked_through_the_token_positions():
    """Nothing but the RoPE positions records the HAT encoder's window: another window_size fails strictly."""
    ref = _reference('hatl_ultra')
    state = convert_official_gsasr(_files('hatl_ultra'), 'HATNOUP_ROPE_AMP', 'Fea2GS_ROPE_AMP')
    options = copy.deepcopy(current_network_g(ref['network_g']))
    options['encoder']['window_size'] = 2
    with pytest.raises(ValueError, match='pos_x'):
        load_into(build_network(options), state, 'hatl_ultra')
    net = GSASRRoPEOfficial(**{k: v for k, v in current_network_g(ref['network_g']).items() if k != 'type'})
    load_into(net, state, 'hatl_ultra')
    assert net.encoder.layers[0].overlap_attn.pos_x.dtype == torch.int64
    assert net.to(torch.bfloat16).encoder.layers[0].overlap_attn.pos_x.max() == 5  # ows 6, kept exact


def test_identify_the_ultra_encoder():
    state = torch.load(FIXTURES / 'hatl_ultra' / 'encoder.pth', weights_only=True)['params_ema']
    assert identify_encoder(state) == 'HATNOUP_ROPE_AMP'
    converted = convert_hat_rope_noup(OfficialState(state, 'encoder.pth'))
    assert not any('relative_position' in k for k in converted)


def test_weights_by_folder_and_by_files_pick_the_rope_converter():
    """checkpoint.load_weights tries the registered converters: the enhanced files find an enhanced model."""
    for family in FAMILIES:
        weights = load_weights(str(FIXTURES / family), current_network_g(_reference(family)['network_g']))
        assert weights.meta['released_model'].startswith('gsasr-') and 'paper' not in weights.meta['released_model']
        build_with_weights(weights)
    weights = load_weights(','.join(str(p) for p in _files('hatl_ultra')))  # no options: the released model's
    assert weights.meta['released_model'] == 'gsasr-hatl-ultra-sa1b'
    assert weights.network_g['type'] == 'GSASRRoPEOfficial'


def test_infer_and_convert_an_ultra_model_by_short_name(tmp_path, monkeypatch, capsys):
    """``basicsr infer --model official:gsasr-hatl-ultra-sa1b`` (hub download stood in by the fixture files, tiny
    options by -opt) and ``basicsr convert`` give the official image."""
    import cv2
    import huggingface_hub
    import numpy as np
    import gsasr_plugin_cli as cli
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(FIXTURES / 'hatl_ultra' / Path(filename).name)

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
    ref = _reference('hatl_ultra')
    case = ref['cases'][2]  # 7 x 9 at x3: the output is the official floor(3 * size) image
    image = (case['lq'][0].permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'in.png'), image)
    (tmp_path / 'tiny.yml').write_text(yaml.safe_dump({'network_g': current_network_g(ref['network_g'])}))
    assert cli.main(['infer', '-m', 'official:gsasr-hatl-ultra-sa1b', '-opt', str(tmp_path / 'tiny.yml'), '-i',
                     str(tmp_path / 'in.png'), '-o', str(tmp_path / 'out'), '--scale', '3', '--tile-size', '0']) == 0, \
        capsys.readouterr().err
    assert calls == [('mutou0308/GSASR', 'GSASR_enhenced_ultra/HATL_SA1B/encoder.pth'),
                     ('mutou0308/GSASR', 'GSASR_enhenced_ultra/HATL_SA1B/decoder.pth')]
    (written, ) = (tmp_path / 'out').iterdir()  # in_x3.png
    out = cv2.imread(str(written))
    assert out.shape == (21, 27, 3)
    net, _ = _official_net('hatl_ultra')
    with torch.no_grad():  # the same image from the 8-bit input the command read
        lq = torch.from_numpy(image[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
        expected = net(lq, scale=3.0)[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1]
    assert np.abs(out.astype(int) - (expected * 255).round().astype(int)).max() <= 1
    assert cli.main(['convert', '-m', 'official:gsasr-hatl-ultra-sa1b', '-opt', str(tmp_path / 'tiny.yml'),
                     '-o', str(tmp_path / 'ultra.pth')]) == 0
    assert torch.load(tmp_path / 'ultra.pth', weights_only=True)['network_g']['type'] == 'GSASRRoPEOfficial'


# ------------------------------------------------------------------------------ released models
with gzip.open(FIXTURES / 'released_layouts.json.gz', 'rt') as _f:
    LAYOUTS = json.load(_f)
RELEASED = {  # short name: (hub folder, official encoder, layout)
    'gsasr-edsr-enhanced-div2k': ('EDSR_DIV2K', 'EDSRNOUP', 'EDSR'),
    'gsasr-edsr-enhanced-df2k': ('EDSR_DF2K', 'EDSRNOUP', 'EDSR'),
    'gsasr-rdn-enhanced-div2k': ('RDN_DIV2K', 'RDNNOUP', 'RDN'),
    'gsasr-rdn-enhanced-df2k': ('RDN_DF2K', 'RDNNOUP', 'RDN'),
    'gsasr-swinir-enhanced-div2k': ('SWIN_DIV2K', 'SwinIRNOUP', 'SWIN'),
    'gsasr-swinir-enhanced-df2k': ('SWIN_DF2K', 'SwinIRNOUP', 'SWIN'),
    'gsasr-hatl-ultra-sa1b': ('HATL_SA1B', 'HATNOUP_ROPE_AMP', 'HATL'),
}


def _official_state(layout):
    """Meta tensors of the official shapes; the RoPE positions as the official code makes them."""
    state = {}
    for key, shape in layout['shapes'].items():
        prefix = key[:-len('rope_t_x')] if key.endswith(('rope_t_x', 'rope_t_y')) else None
        if prefix is not None:
            x, y = grid_positions(shape[0], layout['rope_row_length'][prefix])
            state[key] = (x if key.endswith('x') else y).float()
        else:
            state[key] = torch.empty(shape, device='meta')
    return state


@pytest.mark.parametrize('name', RELEASED)
def test_released_files_convert_into_the_network_their_options_build(name, tmp_path):
    """Every official tensor of the released layout is used, every tensor of ours given, with our shapes."""
    folder, encoder, layout = RELEASED[name]
    model = hub.released_model(name)
    assert model.method == 'GSASRRoPEOfficial' and model.hub_repo == 'mutou0308/GSASR'
    assert model.files == (f'GSASR_enhenced_ultra/{folder}/encoder.pth', f'GSASR_enhenced_ultra/{folder}/decoder.pth')
    assert model.network_g == enhanced_network_g(encoder)
    official = LAYOUTS[layout]
    assert identify_encoder(official['encoder']['shapes']) == encoder
    enc, dec = OfficialState(_official_state(official['encoder']), 'encoder'), \
        OfficialState(_official_state(official['decoder']), 'decoder')
    from gsasr_plugin.official.gsasr import DECODER_CONVERTERS, ENCODER_CONVERTERS
    converted = {f'encoder.{k}': v for k, v in ENCODER_CONVERTERS[encoder](enc).items()}
    converted.update(DECODER_CONVERTERS['Fea2GS_ROPE_AMP'](dec))
    enc.check_all_used()
    dec.check_all_used()
    with torch.device('meta'):
        net = build_network(copy.deepcopy(dict(model.network_g)))
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours


def test_released_sizes():
    with torch.device('meta'):
        hatl = build_network(enhanced_network_g('HATNOUP_ROPE_AMP'))
        edsr = build_network(enhanced_network_g('EDSRNOUP'))

    def official_count(layout):  # parameters only: no position / index buffers
        return sum(math.prod(shape) for key, shape in layout['shapes'].items()
                   if not key.endswith(('rope_t_x', 'rope_t_y')) and 'relative_position_index' not in key)

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(hatl.encoder) == official_count(LAYOUTS['HATL']['encoder']) == 45_522_352  # HAT-L at embed 192
    decoder = sum(p.numel() for n, p in hatl.named_parameters() if not n.startswith('encoder.'))
    assert decoder == official_count(LAYOUTS['HATL']['decoder']) + 4 * 192  # the scale MLP's second input
    assert count(edsr.encoder) == 1_220_416
    assert len(hatl.injection) == 4 and len(hatl.interaction) == 8 and hatl.window_size == 16
    assert hatl.pad_input_to == 16 and edsr.pad_input_to == 12 and edsr.box_cutoff == 0.1


# ------------------------------------------------------------------------------------ option files
def _options(name):
    return yaml.safe_load((OPTIONS / name).read_text())


@pytest.mark.parametrize('name, encoder', [('edsr', 'EDSRNOUP'), ('rdn', 'RDNNOUP'), ('swinir', 'SwinIRNOUP'),
                                           ('hatl_ultra', 'HATNOUP_ROPE_AMP')])
def test_training_option_files_train_the_released_architecture(name, encoder):
    opt = _options(f'train_gsasr_{name}{"_enhanced" if name != "hatl_ultra" else ""}.yml')
    released = enhanced_network_g(encoder)
    differing = {k for k in set(released) | set(opt['network_g']) if released.get(k) != opt['network_g'].get(k)}
    assert differing == {'canvas_rounding', 'box_cutoff'}
    assert opt['train']['ema_decay'] == 0.999 and opt['train']['bf16'] is True


OPTION_FILES = sorted(p.name for p in OPTIONS.glob('*.yml') if 'enhanced' in p.name or 'ultra' in p.name)


@pytest.mark.parametrize('name', OPTION_FILES)
def test_option_files_datasets_build_by_name(name, tmp_path, photo):
    import cv2
    from basicsr.data import build_dataset
    opt = _options(name)
    assert opt['model_type'] == 'ArbitraryScaleSRModel' and opt['network_g']['type'] == 'GSASRRoPEOfficial'
    (tmp_path / 'hr').mkdir()
    side = 1024 if name == 'train_gsasr_hatl_ultra.yml' else 200  # crops up to 64 x 16 = 1024 HR pixels
    cv2.imwrite(str(tmp_path / 'hr' / 'a.png'), photo('astronaut', (side, side))[:, :, ::-1])
    for phase, dataset_opt in opt['datasets'].items():
        dataset_opt = dict(dataset_opt, dataroot_gt=str(tmp_path / 'hr'), phase=phase.split('_')[0])
        assert build_dataset(dataset_opt)[0]['scale'].shape == (2, )


def test_all_enhanced_option_files_are_checked():
    assert len(OPTION_FILES) == 4  # the training files; released models bring their own network_g to test


# ------------------------------------------------------------------------------------ RoPE pieces
def test_rope_scores_depend_on_offsets_only():
    """Rotated q.k is unchanged when both tokens move by the same offset (what replaces the bias table)."""
    freqs = torch.randn(2, 3, 4)  # 3 heads, head_dim 8
    q, k = torch.randn(1, 3, 1, 8), torch.randn(1, 3, 1, 8)

    def score(pq, pk):
        rq = apply_rotation(q, rotation_angles(freqs, torch.tensor([pq[0]]), torch.tensor([pq[1]])))
        rk = apply_rotation(k, rotation_angles(freqs, torch.tensor([pk[0]]), torch.tensor([pk[1]])))
        return (rq * rk).sum(-1)

    assert torch.allclose(score((1, 2), (4, 0)), score((3, 5), (6, 3)), atol=1e-5)
    assert not torch.allclose(score((1, 2), (4, 0)), score((1, 2), (0, 4)), atol=1e-3)
    x, y = grid_positions(6, 4)
    assert x.tolist() == [0, 1, 2, 3, 0, 1] and y.tolist() == [0, 0, 0, 0, 1, 1]


def test_rope_window_attention_shapes_dtype_and_errors():
    attn = RoPEWindowAttention(16, 2, 4).eval()
    x = torch.randn(3, 16, 16)
    with torch.no_grad():
        out = attn(x)
        out_bf16 = attn.to(torch.bfloat16)(x.bfloat16())
    assert out.shape == x.shape and out_bf16.dtype == torch.bfloat16
    assert (out_bf16.float() - out).abs().max() < 0.1 * out.abs().max()
    with pytest.raises(ValueError, match=r'\(B_, 16, C\)'):
        attn(torch.randn(3, 9, 16).bfloat16())
    with pytest.raises(ValueError, match='divisible by 4'):
        RoPEWindowAttention(12, 2, 4)


def test_options_are_checked_and_training_runs():
    options = {k: v for k, v in current_network_g(_reference('hatl_ultra')['network_g']).items() if k != 'type'}
    with pytest.raises(ValueError, match='multiple of 4'):
        GSASRRoPEOfficial(**dict(options, embed_dim=12, num_heads=2))
    with pytest.raises(ValueError, match='num_injection_blocks'):
        GSASRRoPEOfficial(**dict(options, num_injection_blocks=0))
    with pytest.raises(ValueError, match='multiple of 4'):
        build_encoder(dict(options['encoder'], embed_dim=12))
    net = GSASRRoPEOfficial(**dict(options, box_cutoff=None)).train()
    out = net(torch.rand(1, 3, 8, 8), scale=2.0)
    out.mean().backward()
    grads = [p.grad for n, p in net.named_parameters() if 'rope.freqs' in n]
    assert len(grads) == 4 + 4 + 6 and all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = net.eval()(torch.rand(1, 3, 7, 9), scale=3.0)
    assert torch.isfinite(out).all() and out.shape[-2:] == (21, 27)
