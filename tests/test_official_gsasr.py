"""The official GSASR checkpoints: conversion, the official-forward options, and the reference outputs.

The references in ``tests/fixtures/official_gsasr/<family>/`` were made by the official code
(``tests/fixtures/make_official_gsasr.py``; command and commit in each ``reference.pth``) on small
seeded configurations: the official files (``encoder.pth``, ``decoder.pth``), the LR images, the
rasterizer's inputs and the rendered, cropped images. Our GSASR built from the same ``network_g`` and
the converted weights must give the same Gaussians (1e-5) and images (1e-4).
"""
from pathlib import Path

import pytest
import torch

import gsasr_plugin  # noqa: F401
from basicsr.archs import build_network
from gsasr_plugin.official import hub
from gsasr_plugin.archs.edsr_encoder_arch import EDSREncoder
from gsasr_plugin.archs.gsasr_arch import GSASR
from gsasr_plugin.official.gsasr import (OfficialState, convert_official_gsasr, identify_encoder,
                                               paper_network_g, regather_relative_position_bias)
from gsasr_plugin.archs.window_utils import get_relative_position_index
from gsasr_plugin.official.gsasr_official_arch import GSASROfficial, box_half_size, round_canvas
from official_gsasr_helpers import (ENHANCED_FAMILIES, FIXTURES, PAPER_FAMILIES, cases, gaussian_error, image_error,
                                    official_files, official_net, reference)
from official_gsasr_helpers import kernel_gaussians_in_lr_units as _kernel_gaussians_in_lr_units
FAMILIES = PAPER_FAMILIES


# ------------------------------------------------------------------------------- reference outputs
# every official family: the paper models (Fea2GS) and the enhanced / ultra ones (Fea2GS_ROPE_AMP, GSASRRoPE)
@pytest.mark.parametrize('family, index', cases({**PAPER_FAMILIES, **ENHANCED_FAMILIES}))
def test_gaussians_match_the_official_code(family, index):
    net, ref = official_net(family)
    case = ref['cases'][index]
    with torch.no_grad():
        field = net.encode(case['lq'], case['scale'])
    assert field.canvas_size == tuple(case['canvas']) and field.lr_size == tuple(case['padded_size'])
    means = _kernel_gaussians_in_lr_units(case)[0]
    assert field.num_gaussians == means.shape[0] == 16 * case['padded_size'][0] * case['padded_size'][1]
    assert gaussian_error(field, case) < 1e-5


@pytest.mark.parametrize('family, index', cases({**PAPER_FAMILIES, **ENHANCED_FAMILIES}))
def test_images_match_the_official_code(family, index):
    net, ref = official_net(family)
    assert image_error(net, ref['cases'][index]) < 1e-4


@pytest.mark.parametrize('option, value', [('cross_attention_shift', 'masked'), ('shift_mask', True),
                                           ('shift_single_window', False), ('pad_input_to', None),
                                           ('box_cutoff', None)])
def test_each_official_option_matters(option, value):
    """With any one official option back at our default, the outputs leave the official ones (by far more
    than the tolerances of the tests above)."""
    net, ref = official_net('edsr_paper', **{option: value})
    case = ref['cases'][0]  # 8 x 4: several windows on the height axis, one on the width axis
    with torch.no_grad():
        field = net.encode(case['lq'], case['scale'])
    if option == 'box_cutoff':
        assert image_error(net, case) > 1e-2
        return
    if option == 'pad_input_to':  # the image is not padded: a field over the unpadded size, no canvas
        assert field.lr_size == tuple(case['lq'].shape[-2:]) and field.canvas_size is None
        case = ref['cases'][1]
        with torch.no_grad():
            field = net.encode(case['lq'], case['scale'])
        # the decoder pads the features, not the image, to the same windows: as many Gaussians, others
        assert field.num_gaussians == 16 * case['padded_size'][0] * case['padded_size'][1]
        assert gaussian_error(field, case) > 5e-5 and image_error(net, case) > 1e-2
        return
    assert gaussian_error(field, case) > 5e-5


def test_global_residual_and_mean_shift_of_the_official_edsr_encoder():
    torch.manual_seed(1)
    ours = EDSREncoder(num_feat=8, num_block=2)
    official = EDSREncoder(num_feat=8, num_block=2, rgb_mean=None, global_residual=False)
    official.load_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 6, 5)
    with torch.no_grad():
        head = ours.conv_first(x)
        assert torch.allclose(official(x), ours.conv_after_body(ours.body(head)), atol=1e-6)
        assert torch.allclose(ours(x), ours.conv_after_body(ours.body(ours.conv_first(ours.shift_mean(x))))
                              + ours.conv_first(ours.shift_mean(x)), atol=1e-6)
    with pytest.raises(TypeError, match='global_residual'):
        EDSREncoder(global_residual='no')


# ------------------------------------------------------------------------------------ conversion
def test_conversion_is_strict_about_leftover_and_missing_keys(tmp_path):
    encoder = torch.load(FIXTURES / 'edsr_paper' / 'encoder.pth', weights_only=True)
    decoder = torch.load(FIXTURES / 'edsr_paper' / 'decoder.pth', weights_only=True)
    extra = dict(decoder['params_ema'], **{'something.new': torch.zeros(1)})
    torch.save({'params_ema': extra}, tmp_path / 'decoder.pth')
    torch.save(encoder, tmp_path / 'encoder.pth')
    with pytest.raises(ValueError, match=r'decoder.pth: 1 official keys have no counterpart.*something.new'):
        convert_official_gsasr([tmp_path / 'encoder.pth', tmp_path / 'decoder.pth'], 'EDSRNOUP', 'Fea2GS')
    missing = {k: v for k, v in decoder['params_ema'].items() if k != 'scale_mlp.2.bias'}
    torch.save({'params_ema': missing}, tmp_path / 'decoder.pth')
    with pytest.raises(ValueError, match=r"decoder.pth: official key 'scale_mlp.2.bias' is missing"):
        convert_official_gsasr([tmp_path / 'encoder.pth', tmp_path / 'decoder.pth'], 'EDSRNOUP', 'Fea2GS')
    with pytest.raises(ValueError, match=r'encoder.pth: expected the weights of the official RDNNOUP, found EDSRNOUP'):
        convert_official_gsasr([tmp_path / 'encoder.pth', tmp_path / 'decoder.pth'], 'RDNNOUP', 'Fea2GS')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        convert_official_gsasr([tmp_path / 'nope.pth', tmp_path / 'decoder.pth'], 'EDSRNOUP', 'Fea2GS')


def test_identify_encoder_by_its_keys(monkeypatch):
    from gsasr_plugin.official import gsasr as official_gsasr
    for family, name in FAMILIES.items():
        state = torch.load(FIXTURES / family / 'encoder.pth', weights_only=True)['params_ema']
        assert identify_encoder(state) == name
    assert identify_encoder({'x': torch.zeros(1)}) is None
    # a class whose keys include another's signature (HAT's include SwinIR's) is told apart by a longer one
    monkeypatch.setitem(official_gsasr.ENCODER_SIGNATURES, 'HATLike', ('patch_embed.norm.weight', 'overlap.w'))
    swin = {'patch_embed.norm.weight': torch.zeros(1)}
    assert identify_encoder(swin) == 'SwinIRNOUP'
    assert identify_encoder(dict(swin, **{'overlap.w': torch.zeros(1)})) == 'HATLike'


def test_bias_table_regathered_through_the_checkpoint_index():
    """A permuted official numbering of the offsets gives back, per (query, key) pair, the same bias."""
    window = 3
    ours = get_relative_position_index(window, window)
    permutation = torch.randperm(25)
    official_index = permutation[ours]  # the official numbering: another order of the same offsets
    table = torch.randn(25, 2)
    regathered = regather_relative_position_bias(table, official_index, window, 'test')
    assert torch.equal(regathered[ours.view(-1)], table[official_index.view(-1)])
    inconsistent = official_index.clone()
    inconsistent[0, 1] = inconsistent[0, 2]
    with pytest.raises(ValueError, match='several bias entries'):
        regather_relative_position_bias(table, inconsistent, window, 'test')


def test_official_state_reports_what_it_did_not_use():
    state = OfficialState({'a.weight': torch.zeros(1), 'b.bias': torch.zeros(1)}, 'file.pth')
    state.take('a.weight')
    with pytest.raises(ValueError, match=r'file.pth: 1 official keys .*b.bias'):
        state.check_all_used()


# ------------------------------------------------------------------------ official-forward options
def test_canvas_rounding():
    assert round_canvas(2.7 * 8, 'floor') == 21 and round_canvas(2.7 * 8, 'ceil') == 22
    assert round_canvas(157 / 48 * 48, 'ceil') == 157  # a ratio Ho / h gives back Ho
    assert round_canvas(4.0 * 12, 'floor') == 48


def test_padded_canvas_crop_and_ceil_rounding():
    net = GSASROfficial(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=8, num_heads=2,
                        window_size=4, num_blocks=1, num_layers_per_block=2, num_scale_tokens=1, pad_input_to=4,
                        canvas_rounding='ceil').eval()
    lq = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        field = net.encode(lq, 2.6)
        assert field.lr_size == (8, 8) and field.canvas_size == (21, 21)  # ceil(2.6 * 8) = ceil(20.8)
        assert field.num_gaussians == 16 * 8 * 8  # the padding's Gaussians are kept
        whole = field.render((21, 21))
        out = net(lq, 2.6)  # round(5 * 2.6), round(7 * 2.6) = 13, 18: the top-left of the canvas
    assert out.shape[-2:] == (13, 18)
    assert torch.equal(out, whole[..., :13, :18])
    # sigma in canvas output pixels: the LR sigma is stretched by s * padded / canvas = 20.8 / 21
    net.pad_input_to = None
    with torch.no_grad():
        plain = net.gaussians_from_tokens(net.decode_tokens(net.encoder(torch.nn.functional.pad(
            lq, (0, 1, 0, 3), mode='reflect')), (2.6, 2.6)), (8, 8))
    assert torch.allclose(field.sigmas, plain.sigmas * (2.6 * 8 / 21), atol=1e-6)


def test_floor_canvas_grows_to_a_larger_requested_output():
    net = GSASROfficial(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=8, num_heads=2,
                        window_size=4, num_blocks=1, num_layers_per_block=2, pad_input_to=4,
                        canvas_rounding='floor').eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 4, 4), scale=2.6)  # canvas floor(10.4) = 10, output round(10.4) = 10
        bigger = net(torch.rand(1, 3, 4, 4), scale=2.6, out_size=(11, 12))
    assert out.shape[-2:] == (10, 10) and bigger.shape[-2:] == (11, 12)


@pytest.mark.parametrize('option, value, match', [
    ('cross_attention_shift', 'sideways', 'cross_attention_shift'), ('shift_mask', 1, 'shift_mask'),
    ('shift_single_window', 'yes', 'shift_single_window'), ('pad_input_to', 6, 'multiple of window_size'),
    ('pad_input_to', True, 'pad_input_to'), ('canvas_rounding', 'round', 'canvas_rounding'),
    ('box_cutoff', 0, 'box_cutoff'), ('box_cutoff', 3, 'box_cutoff')])
def test_bad_official_options_are_named(option, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GSASROfficial(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=8, num_heads=2,
                      window_size=4, num_blocks=1, **{option: value})


@pytest.mark.parametrize('option', ['cross_attention_shift', 'shift_mask', 'shift_single_window', 'pad_input_to',
                                    'canvas_rounding', 'box_cutoff'])
def test_the_core_gsasr_has_no_official_options(option):
    with pytest.raises(TypeError, match=option):
        GSASR(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=8, num_heads=2,
              window_size=4, num_blocks=1, **{option: None})


def test_box_cutoff_and_cutoff_exclude_each_other():
    """The square cut-off replaces the ellipse: both set is an error, not a silently dropped cutoff."""
    with pytest.raises(ValueError, match=r'box_cutoff \(0.1\) and cutoff \(3.0\) exclude each other'):
        GSASROfficial(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=8, num_heads=2,
                      window_size=4, num_blocks=1, box_cutoff=0.1, cutoff=3.0)


def test_the_box_cutoff_renders_a_whole_canvas_and_a_zoom_with_the_ellipse():
    torch.manual_seed(0)
    common = dict(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=8, num_heads=2,
                  window_size=4, num_blocks=1, num_layers_per_block=2, pad_input_to=4)
    boxed = GSASROfficial(**common, box_cutoff=0.1).eval()
    plain = GSASROfficial(**common)
    plain.load_state_dict(boxed.state_dict())
    plain.eval()
    with torch.no_grad():
        field = boxed.encode(torch.rand(1, 3, 6, 5), 3.0)
        size = field.render_size((18, 15))
        box = box_half_size(0.1, field.lr_size, size)
        assert torch.equal(boxed.render(field, (18, 15)), field.render((18, 15), box_half_size=box))
        assert not torch.equal(boxed.render(field, (18, 15)), plain.render(field, (18, 15)))
        zoom = (1.0, 1.0, 4.0, 3.0)
        assert torch.equal(boxed.render(field, (9, 6), zoom), plain.render(field, (9, 6), zoom))
        whole = (0.0, 0.0) + tuple(float(n) for n in field.lr_size)
        assert torch.equal(boxed.render(field, (18, 15), whole), boxed.render(field, (18, 15)))


def test_window_plan_shifts_single_window_axes_only_when_asked():
    common = dict(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=8, num_heads=2,
                  window_size=4, num_blocks=1)
    shift, mask = GSASR(**common)._window_plan(8, 4, torch.device('cpu'))
    assert shift == (2, 0) and mask is not None
    shift, mask = GSASROfficial(**common)._window_plan(8, 4, torch.device('cpu'))
    assert shift == (2, 2) and mask is None
    shift, mask = GSASROfficial(**common, shift_single_window=False, shift_mask=True)._window_plan(
        8, 4, torch.device('cpu'))
    assert shift == (2, 0) and mask is not None


def test_box_half_size_is_the_official_canvas_box():
    """dmax of a [-1, 1] canvas whose pixel i sits at 2 i / (n - 1) - 1: dmax (n - 1) / 2 output pixels."""
    half_h, half_w = box_half_size(0.1, (8, 12), (20, 30))
    assert half_h == pytest.approx(0.1 * 19 / 2 * 8 / 20) and half_w == pytest.approx(0.1 * 29 / 2 * 12 / 30)


def test_paper_network_g_builds_the_released_sizes():
    options = paper_network_g('EDSRNOUP')
    net = build_network(dict(options))
    decoder = sum(p.numel() for name, p in net.named_parameters() if not name.startswith('encoder.'))
    encoder = sum(p.numel() for p in net.encoder.parameters())
    assert encoder == 1_220_416  # EDSR-baseline without upsampler
    assert net.pad_input_to == 12 and net.box_cutoff == 0.1 and net.num_scale_tokens == 1
    assert decoder > 0
    assert {m.name for m in hub.released_models().values() if m.method == 'GSASROfficial'} >= {
        'gsasr-edsr-paper', 'gsasr-rdn-paper', 'gsasr-swinir-paper'}


# ------------------------------------------------------------------------------------- option files
OPTIONS = Path(__file__).resolve().parents[1] / 'options'


def _options(name):
    import yaml
    return yaml.safe_load((OPTIONS / name).read_text())


@pytest.mark.parametrize('short, encoder', [('edsr', 'EDSRNOUP'), ('rdn', 'RDNNOUP'), ('swinir', 'SwinIRNOUP')])
def test_paper_models_and_the_paper_protocol_file(short, encoder):
    """The released paper models bring their network_g; options/test_benchmarks.yml is the paper's protocol."""
    assert hub.released_model(f'official:gsasr-{short}-paper').network_g == paper_network_g(encoder)
    opt = _options('test_benchmarks.yml')
    assert 'network_g' not in opt and opt['path']['pretrain_network_g'] is None  # any model: -m MODEL
    assert [d['name'] for d in opt['datasets'].values()] == ['Set5', 'Set14', 'B100', 'Urban100', 'Manga109',
                                                             'DIV2K_val']
    assert all(d['lq_bits'] == 8 and d['scales'][:3] == [2, 3, 4] for d in opt['datasets'].values())
    assert all(m['crop_border'] is None and m['crop_border_max'] == 8 for m in opt['val']['metrics'].values())


@pytest.mark.parametrize('short, encoder', [('edsr', 'EDSRNOUP'), ('rdn', 'RDNNOUP')])
def test_training_options_train_the_released_architecture(short, encoder):
    """train_gsasr_<enc>.yml: the released network (state dict keys and shapes, forward options); its
    checkpoints carry that network_g to basicsr test; *_ours.yml keep our defaults."""
    released = paper_network_g(encoder)
    network_g = _options(f'train_gsasr_{short}.yml')['network_g']
    differing = {k for k in set(released) | set(network_g) if released.get(k) != network_g.get(k)}
    assert differing == {'canvas_rounding', 'box_cutoff'}  # ceil as the official test code; the ellipse
    assert _options(f'train_gsasr_{short}.yml')['train']['ema_decay'] == 0.999
    shapes = {k: v.shape for k, v in build_network(released).state_dict().items()}
    trained = build_network(_options(f'train_gsasr_{short}.yml')['network_g']).state_dict()
    assert {k: v.shape for k, v in trained.items()} == shapes
    ours = _options(f'train_gsasr_{short}_ours.yml')['network_g']
    assert not {'cross_attention_shift', 'pad_input_to', 'num_scale_tokens'} & set(ours)


# ------------------------------------------------------------------------------------------ layering
def test_the_core_does_not_know_the_compatibility_layer():
    """``gsasr_plugin/archs`` imports nothing of ``gsasr_plugin.official`` (which imports the core), and the GSASR
    core and the field do not mention the official forward at all (docs/official_compatibility.md)."""
    import ast
    archs = Path(gsasr_plugin.__file__).parent / 'archs'
    for path in archs.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ''] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            assert not any(name.startswith('gsasr_plugin.official') for name in names), path.name
    for name in ('gsasr_arch.py', 'gaussian_field.py'):
        assert 'official' not in (archs / name).read_text().lower(), name


def test_a_folder_of_official_training_outputs_loads(tmp_path):
    """Issue 26, item 15: the official training code saves net_g_<iter>.pth (encoder) + net_fea2gs_<iter>.pth
    (decoder) with params and params_ema, and its test options load them; such a folder was not recognised. The
    newest iteration that has both files is read (params_ema first, as the official test options do)."""
    from gsasr_plugin.checkpoint import load_weights
    from recorded_options import current_network_g
    encoder, decoder = (torch.load(path, weights_only=True) for path in official_files('edsr_paper'))
    models = tmp_path / 'experiments' / 'GSASR_EDSR' / 'models'
    models.mkdir(parents=True)
    for iteration, shift in (100, 1.0), (200, 0.0):
        for name, state in ('net_g', encoder), ('net_fea2gs', decoder):
            ema = {key: value + shift for key, value in state['params_ema'].items()}
            torch.save({'params': {key: value - 1 for key, value in ema.items()}, 'params_ema': ema},
                       models / f'{name}_{iteration}.pth')
    torch.save({'params': encoder['params_ema']}, models / 'net_g_300.pth')  # no decoder of iteration 300 yet
    network_g = current_network_g(reference('edsr_paper')['network_g'])
    weights = load_weights(str(models), network_g=network_g)
    expected = convert_official_gsasr(official_files('edsr_paper'), 'EDSRNOUP', 'Fea2GS')
    assert weights.state_dict.keys() == expected.keys()
    assert all(torch.equal(weights.state_dict[key], value) for key, value in expected.items())
    assert 'net_g_200.pth' in weights.meta['source'] and 'net_fea2gs_200.pth' in weights.meta['source']
    for name in ('net_g', 'net_fea2gs'):
        (models / f'{name}_200.pth').rename(models / f'{name}_latest.pth')  # BasicSR's name for the last save
    assert 'net_g_latest.pth' in load_weights(str(models), network_g=network_g).meta['source']
    with pytest.raises(FileNotFoundError, match=r'holds none of the released models.*net_g_<iter>\.pth \+ '
                                                r'net_fea2gs_<iter>\.pth'):
        load_weights(str(tmp_path), network_g=network_g)
