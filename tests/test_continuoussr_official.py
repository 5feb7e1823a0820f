"""ContinuousSR with the authors' options: their checkpoint layout loads strictly, and with the same
weights our network reproduces their forward (fixture from their code: tests/fixtures/continuoussr_official,
made by tests/fixtures/make_continuoussr_official.py; neither their code nor their checkpoint is needed here)."""
import copy
import json
from pathlib import Path

import pytest
import torch

import gsasr_plugin  # noqa: F401  (registers archs, encoders)
from basicsr.archs import build_network
from fixtures.make_continuoussr_official import FULL_SPECS, deterministic_state
from gsasr_plugin import hub
from gsasr_plugin.archs import continuoussr_official as official
from gsasr_plugin.archs.pretrained import map_checkpoint_keys

FIXTURE = Path(__file__).parent / 'fixtures' / 'continuoussr_official'


@pytest.fixture(scope='module')
def reference():
    return torch.load(FIXTURE / 'reference.pt', map_location='cpu', weights_only=True)


def _tiny_options(reference, **overrides):
    options = official.network_options_from_spec(
        {'name': 'continuous-gaussian', 'args': {'encoder_spec': reference['tiny_encoder_spec']}})
    options.update(overrides)
    return options


def _official_tiny_net(reference, **overrides):
    """Our ContinuousSR from the official options, with their (deterministic) fixture weights loaded strictly."""
    options = _tiny_options(reference, **overrides)
    net = build_network(copy.deepcopy(options)).eval()
    state = official.convert_official_state_dict(deterministic_state(reference['tiny_shapes']), 'HAT',
                                                 net.state_dict())
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
    for name, encoder_type in (('hat', 'HAT'), ('swinir', 'SwinIR')):
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
                          'sd': deterministic_state(reference['tiny_shapes'])},
                'epoch': 1}, path)


def test_convert_reads_their_file_and_names_spec_differences(tmp_path, reference):
    path = tmp_path / 'ContinuousSR.pth'
    _write_official_file(path, reference)
    options = official.network_options_from_files([path])
    assert options == _tiny_options(reference)
    state = official.convert([path], options)
    options['rasterizer'] = None
    net = build_network(options)
    net.load_state_dict(state, strict=True)
    # the registered (full-size HAT) options do not fit this file: the error lists what differs
    with pytest.raises(ValueError, match=r'encoder\.embed_dim: 180 here, 12 in the file'):
        official.convert([path])
    bad = tmp_path / 'bad.pth'
    torch.save({'params': {}}, bad)
    with pytest.raises(ValueError, match="not an official ContinuousSR checkpoint"):
        official.convert([bad])
    with pytest.raises(FileNotFoundError, match='no such file'):
        official.convert([tmp_path / 'missing.pth'])


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
    test_opt = yaml.safe_load((root / 'test_continuoussr_official.yml').read_text())['network_g']
    assert test_opt == official.OFFICIAL_NETWORK_G
    train_opt = yaml.safe_load((root / 'train_continuoussr_official.yml').read_text())['network_g']
    expected = copy.deepcopy(official.OFFICIAL_NETWORK_G)
    expected['encoder'].update(use_checkpoint=False, pretrained=None, strict=True, param_key=None)
    expected.update(load_upsampler=True, rasterizer={'mode': 'gsplat_sum'})  # no per-tile cap in training
    assert train_opt == expected


def test_write_converted_checkpoint_round_trip(tmp_path, reference):
    from gsasr_plugin.checkpoint import network_options_of
    source, target = tmp_path / 'ContinuousSR.pth', tmp_path / 'converted.pth'
    _write_official_file(source, reference)
    official.write_converted_checkpoint(source, target)
    saved = torch.load(target, map_location='cpu', weights_only=True)
    options = network_options_of(saved)
    assert options == _tiny_options(reference)
    options['rasterizer'] = None
    net = build_network(options)
    net.load_state_dict(saved['params'], strict=True)
    expected = _official_tiny_net(reference, rasterizer=None)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in net.state_dict().items())
