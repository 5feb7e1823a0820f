"""ContinuousSR with the authors' options: their checkpoint layout loads strictly, and with the same
weights our network reproduces their forward (fixture from their code: tests/fixtures/continuoussr_official,
made by tests/fixtures/make_continuoussr_official.py; neither their code nor their checkpoint is needed here)."""
import copy
import json
import math
from pathlib import Path

import pytest
import torch

import gsasr_plugin  # noqa: F401  (registers archs, encoders)
from basicsr.archs import build_network
from fixtures.make_continuoussr_official import FULL_SPECS, deterministic_state
from gsasr_plugin.official import hub
from gsasr_plugin.official import continuoussr as official
from gsasr_plugin.archs.pretrained import map_checkpoint_keys

FIXTURE = Path(__file__).parent / 'fixtures' / 'continuoussr_official'


@pytest.fixture(scope='module')
def reference():
    return torch.load(FIXTURE / 'reference.pt', map_location='cpu', weights_only=True)


_THEIR_STATE = {}


def _their_state(reference):
    """Their tiny model's weights (deterministic_state of the stored key table), computed once."""
    if 'state' not in _THEIR_STATE:
        _THEIR_STATE['state'] = deterministic_state(reference['tiny_shapes'])
    return _THEIR_STATE['state']


def _tiny_options(reference, **overrides):
    options = official.network_options_from_spec(
        {'name': 'continuous-gaussian', 'args': {'encoder_spec': reference['tiny_encoder_spec']}})
    options.update(overrides)
    return options


def _official_tiny_net(reference, **overrides):
    """Our ContinuousSR from the official options, with their (deterministic) fixture weights loaded strictly."""
    options = _tiny_options(reference, **overrides)
    net = build_network(copy.deepcopy(options)).eval()
    state = official.convert_official_state_dict(_their_state(reference), 'HATEncoder', net.state_dict())
    net.load_state_dict(state, strict=True)
    return net


def _their_gaussians_in_lr_units(case):
    """Their means (NDC) and Cholesky factors (output pixels) as our LR-pixel means, sigmas and rhos (float64)."""
    height, width = case['lr'].shape[-2:]
    out_h, out_w = case['out_size']
    ndc = case['means_ndc'].double()
    centre = 0.5 * torch.tensor([out_w, out_h], dtype=torch.float64) * (ndc + 1)  # their pixel j sits at x = j
    means = (centre + 0.5) * torch.tensor([width / out_w, height / out_h], dtype=torch.float64)
    l11, l21, l22 = case['cholesky'].double().unbind(-1)
    sxx, sxy, syy = l11 * l11, l11 * l21, l21 * l21 + l22 * l22
    sigma_x, sigma_y = sxx.sqrt() * width / out_w, syy.sqrt() * height / out_h
    rho = sxy / (sxx.sqrt() * syy.sqrt())
    return means, torch.stack([sigma_x, sigma_y], -1), rho


def test_reference_gaussians_match_theirs(reference):
    """Same weights, same LR image: means, covariances and colours agree with their forward to <= 1e-5."""
    net = _official_tiny_net(reference, rasterizer=None)  # the Gaussians do not depend on the renderer
    for case in reference['cases']:
        with torch.no_grad():
            field = net.encode(case['lr'][None], scale=case['scale'])
        means, sigmas, rhos = _their_gaussians_in_lr_units(case)
        label = f"{tuple(case['lr'].shape[-2:])} x{case['scale']}"
        assert (field.means[0].double() - means).abs().max() <= 1e-5, label
        assert (field.sigmas[0].double() - sigmas).abs().max() <= 1e-5, label
        assert (field.rhos[0].double() - rhos).abs().max() <= 1e-5, label
        assert (field.colors[0] - case['colors']).abs().max() <= 1e-5, label


def test_reference_images_match_theirs(reference):
    """Rendered with the gsplat-compatible mode, the images agree with their forward to <= 1e-4 (one case at
    x2 has the fork's 256-per-tile cap dropping 242 tile entries). Our own sum cut at the fork's alpha
    threshold renders the same Gaussians without the cap: equal to ~1e-3 where no tile overflows, far off
    where one does."""
    net = _official_tiny_net(reference)
    threshold = _official_tiny_net(reference, rasterizer=None, cutoff=math.sqrt(2 * math.log(255)))
    for case in reference['cases']:
        with torch.no_grad():
            image = net(case['lr'][None], scale=case['scale'])[0]
            uncapped = threshold(case['lr'][None], scale=case['scale'])[0]
        label = f"{tuple(case['lr'].shape[-2:])} x{case['scale']}"
        assert image.shape == case['image'].shape, label
        assert (image - case['image']).abs().max() <= 1e-4, label
        if case['capped_entries']:
            assert (uncapped - case['image']).abs().max() > 0.1, label
        else:
            assert (uncapped - case['image']).abs().max() < 2e-3, label


def test_each_official_option_is_needed(reference):
    """Dropping any one official option moves the Gaussians well beyond the tolerance."""
    case = reference['cases'][1]  # non-square LR (window padding) at an anisotropic, rounded scale
    means, sigmas, _ = _their_gaussians_in_lr_units(case)
    ours = {'mlp_activation': 'relu', 'head_activation': 'after_query', 'reference_points': 'centers',
            'min_sigma': 0.02, 'crop_after_upsample': False, 'covariance_scale': 'output_size'}
    for key, value in ours.items():
        net = _official_tiny_net(reference, rasterizer=None, **{key: value})
        with torch.no_grad():
            field = net.encode(case['lr'][None], scale=case['scale'])
        error = max((field.means[0].double() - means).abs().max(), (field.sigmas[0].double() - sigmas).abs().max(),
                    (field.colors[0] - case['colors']).abs().max())
        assert error > 1e-4, key


def test_released_key_set_loads_strictly_into_the_official_options():
    """The key list and shapes their code produces for the released model's (HAT x4) layout, and for their
    SwinIR: every key maps onto ours with its shape, every one of ours is provided, only conv_last and the
    recomputed index buffers are skipped."""
    table = json.loads((FIXTURE / 'official_keys.json').read_text())
    assert table['encoder_specs']['hat'] == FULL_SPECS['hat']
    assert official.network_options_from_spec(
        {'name': 'continuous-gaussian', 'args': {'encoder_spec': FULL_SPECS['hat']}}) == official.OFFICIAL_NETWORK_G
    for name, encoder_type in (('hat', 'HATEncoder'), ('swinir', 'SwinIREncoder')):
        shapes = table['shapes'][name]
        theirs = {k: torch.empty(shape, dtype=getattr(torch, dtype), device='meta') for k, (shape, dtype) in
                  shapes.items()}
        options = official.network_options_from_spec(
            {'name': 'continuous-gaussian', 'args': {'encoder_spec': table['encoder_specs'][name]}})
        options['rasterizer'] = None
        with torch.device('meta'):
            net = build_network(options)
        ours = net.state_dict()
        converted = official.convert_official_state_dict(theirs, encoder_type, ours)
        assert set(converted) == set(ours) and all(converted[k].shape == ours[k].shape for k in ours)
        _, skipped = map_checkpoint_keys(theirs, *official.official_key_rules(encoder_type))
        assert all('conv_last' in k or 'relative_position_index' in k or 'attn_mask' in k for k in skipped), skipped
        assert 'encoder.conv_last.weight' in skipped
        params = sum(v.numel() for k, v in theirs.items() if k in skipped and 'attn_mask' not in k
                     and v.dtype.is_floating_point)
        assert params == 3 * 64 * 9 + 3  # of their weights only conv_last's are left behind (buffers aside)


def _write_official_file(path, reference):
    """A checkpoint in their layout (``torch.load(path)['model']``) with the fixture's tiny model."""
    torch.save({'model': {'name': 'continuous-gaussian',
                          'args': {'encoder_spec': reference['tiny_encoder_spec'], 'cnn_spec': {}, 'fc_spec': {}},
                          'sd': _their_state(reference)},
                'epoch': 1}, path)


def test_convert_reads_their_file(tmp_path, reference):
    path = tmp_path / 'ContinuousSR.pth'
    _write_official_file(path, reference)
    options = official.network_options_from_files([path])
    assert options == _tiny_options(reference)
    state = official.convert([path])  # checked against the file's own (tiny) options; warns: not the released size
    options['rasterizer'] = None
    net = build_network(options)
    net.load_state_dict(state, strict=True)
    expected = _official_tiny_net(reference, rasterizer=None).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in net.state_dict().items())
    bad = tmp_path / 'bad.pth'
    torch.save({'params': {}}, bad)
    with pytest.raises(ValueError, match="not an official ContinuousSR checkpoint"):
        official.convert([bad])
    with pytest.raises(FileNotFoundError, match='no such file'):
        official.convert([tmp_path / 'missing.pth'])


def test_basicsr_convert_and_load_weights_take_their_file_by_path(tmp_path, reference):
    """The released-weights plumbing finds our converter for their single file; ``-opt`` options win."""
    from gsasr_plugin.checkpoint import load_weights, network_options_of
    from gsasr_plugin_cli import main
    source, target = tmp_path / 'ContinuousSR.pth', tmp_path / 'converted.pth'
    _write_official_file(source, reference)
    options = _tiny_options(reference, rasterizer=None)
    weights = load_weights(str(source), options)
    assert weights.meta['released_model'] == 'continuoussr' and weights.network_g == options
    option_file = tmp_path / 'tiny.yml'
    import yaml
    option_file.write_text(yaml.safe_dump({'network_g': options}))
    assert main(['convert', '--model', str(source), '-opt', str(option_file), '-o', str(target)]) == 0
    saved = torch.load(target, map_location='cpu', weights_only=True)
    assert network_options_of(saved) == options
    expected = _official_tiny_net(reference, rasterizer=None).state_dict()
    assert saved['params'].keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in saved['params'].items())


def test_released_model_is_registered_by_short_name():
    model = hub.released_model('official:continuoussr')
    assert model.method == 'ContinuousSR' and model.hub_repo == 'pey12/ContinuousSR'
    assert model.files == ('ContinuousSR.pth', ) and model.network_g == official.OFFICIAL_NETWORK_G
    assert model.convert is official.convert and callable(model.extra['network_g_from_files'])
    with pytest.raises(hub.WeightsUnavailableError, match='pey12/ContinuousSR'):
        hub.fetch_files(model, offline=True)


@pytest.mark.parametrize('spec, message', [
    ({'name': 'edsr-baseline', 'args': {}}, "encoder 'edsr-baseline' is not supported"),
    ({'name': 'hat', 'args': {'upsampler': 'pixelshuffle', 'resi_connection': 'identity', 'upscale': 4}},
     'resi_connection'),
    ({'name': 'hat', 'args': {'upsampler': '', 'upscale': 4}}, 'upsampler'),
    ({'name': 'hat', 'args': {'upsampler': 'pixelshuffle', 'upscale': 3}}, 'upscale=3'),
])
def test_unsupported_encoder_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        official.network_options_from_spec({'name': 'continuous-gaussian', 'args': {'encoder_spec': spec}})


def test_option_files_build_the_official_network():
    import yaml
    root = Path(__file__).resolve().parents[1] / 'options'
    assert hub.released_model('official:continuoussr').network_g == official.OFFICIAL_NETWORK_G
    train_opt = yaml.safe_load((root / 'train_continuoussr_official.yml').read_text())['network_g']
    expected = copy.deepcopy(official.OFFICIAL_NETWORK_G)
    expected['encoder'].update(use_checkpoint=False, pretrained=None, strict=True, param_key=None)
    # training renders with our sum at gsplat's alpha threshold (opacity 1): no per-tile cap, no tile boxes
    del expected['rasterizer']
    expected.update(load_upsampler=True, cutoff=pytest.approx(math.sqrt(2 * math.log(255)), abs=1e-5))
    assert train_opt == expected
