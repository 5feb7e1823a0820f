"""LPIPS/DISTS plumbing: registry, crop border, BGR/grayscale/uint16 handling, ranges, caching, offline errors.

The published numbers need the ImageNet backbones, which a fresh machine does not have; these tests use
the fixed random backbone (``pretrained_backbone: False``) or a stand-in weight file in a temporary
TORCH_HOME, and check what can break in our code.
"""
import numpy as np
import pytest
import torch

import gsasr_plugin  # noqa: F401  (registers the metrics)
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY
from gsasr_plugin.metrics import perceptual_metric as pm

KINDS = ['lpips', 'dists']


@pytest.fixture
def pair(photo):
    clean = photo('astronaut', (64, 64))[..., ::-1].copy()  # BGR, as BasicSR's tensor2img gives
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    return clean, noisy


def _metric(kind, img, img2, **opt):
    return calculate_metric({'img': img, 'img2': img2},
                            dict(type=f'calculate_{kind}', pretrained_backbone=False, **opt))


@pytest.mark.parametrize('kind', KINDS)
def test_registered_and_usable_from_yaml_options(kind, pair):
    assert METRIC_REGISTRY.get(f'calculate_{kind}') is not None
    clean, noisy = pair
    # the keys a BasicSR YAML metrics block carries, 'better' and 'test_y_channel' included
    value = _metric(kind, noisy, clean, crop_border=4, better='lower', test_y_channel=True)
    assert isinstance(value, float) and 0 < value < 1


@pytest.mark.parametrize('kind', KINDS)
def test_identical_is_zero_and_more_noise_is_farther(kind, pair):
    clean, noisy = pair
    assert _metric(kind, clean, clean, crop_border=0) == pytest.approx(0, abs=1e-5)
    rng = np.random.default_rng(1)
    noisier = np.clip(clean + rng.normal(0, 80, clean.shape), 0, 255).astype(np.uint8)
    assert _metric(kind, noisier, clean, crop_border=0) > _metric(kind, noisy, clean, crop_border=0) > 0


@pytest.mark.parametrize('kind', KINDS)
def test_crop_border_ignores_the_edges(kind, pair):
    clean, _ = pair
    spoiled = clean.copy()
    spoiled[:3] = 0
    spoiled[:, -3:] = 255
    assert _metric(kind, spoiled, clean, crop_border=3) == pytest.approx(0, abs=1e-5)
    assert _metric(kind, spoiled, clean, crop_border=0) > 1e-3


@pytest.mark.parametrize('kind', KINDS)
def test_bgr_input_is_measured_as_rgb(kind, pair):
    clean, noisy = pair
    rgb = torch.from_numpy(clean[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    rgb_noisy = torch.from_numpy(noisy[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    direct = pm.perceptual_distance(kind, rgb_noisy, rgb, pretrained_backbone=False).item()
    assert _metric(kind, noisy, clean) == pytest.approx(direct, rel=1e-5)
    # channel order matters for the network, so a swapped pair gives a different value
    swapped = pm.perceptual_distance(kind, rgb_noisy.flip(1), rgb.flip(1), pretrained_backbone=False).item()
    assert swapped != pytest.approx(direct, rel=1e-4)


@pytest.mark.parametrize('kind', KINDS)
def test_grayscale_uint16_and_chw_inputs(kind, pair):
    clean, noisy = pair
    gray, gray_noisy = clean[..., 0], noisy[..., 0]
    assert _metric(kind, gray_noisy, gray) == pytest.approx(_metric(kind, np.stack([gray_noisy] * 3, -1),
                                                                    np.stack([gray] * 3, -1)), rel=1e-5)
    deep, deep_noisy = clean.astype(np.uint16) * 257, noisy.astype(np.uint16) * 257
    assert _metric(kind, deep_noisy, deep) == pytest.approx(_metric(kind, noisy, clean), rel=1e-4)
    chw = _metric(kind, noisy.transpose(2, 0, 1), clean.transpose(2, 0, 1), input_order='CHW')
    assert chw == pytest.approx(_metric(kind, noisy, clean), rel=1e-5)


def test_shape_mismatch_and_bad_kind_are_named(pair):
    clean, _ = pair
    with pytest.raises(ValueError, match='shapes are different'):
        _metric('lpips', clean[:32], clean)
    with pytest.raises(ValueError, match='at least 31x31'):
        _metric('lpips', clean[:30], clean[:30])
    assert _metric('dists', clean[:20, :20], clean[:20, :20]) == pytest.approx(0, abs=1e-5)  # DISTS has no minimum
    with pytest.raises(ValueError, match="'lpips' or 'dists'"):
        pm.build_perceptual_net('ssim')


def test_network_is_built_once_per_process(pair, monkeypatch):
    clean, noisy = pair
    first = pm.build_perceptual_net('dists', 'cpu', pretrained_backbone=False)
    built = []
    original = pm.DISTSNet.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(pm.DISTSNet, '__init__', counting_init)
    for _ in range(3):
        _metric('dists', noisy, clean)
    assert not built
    assert pm.build_perceptual_net('dists', 'cpu', pretrained_backbone=False) is first


def test_env_var_selects_the_random_backbone(pair, monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))  # empty: a pretrained build would have to download
    monkeypatch.setenv(pm.RANDOM_BACKBONE_ENV, '1')
    clean, noisy = pair
    value = calculate_metric({'img': noisy, 'img2': clean}, {'type': 'calculate_lpips', 'crop_border': 0})
    assert value == pytest.approx(_metric('lpips', noisy, clean))


@pytest.mark.parametrize('kind', KINDS)
def test_offline_without_weights_names_the_file_and_folder(kind, pair, monkeypatch, tmp_path):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.delenv(pm.RANDOM_BACKBONE_ENV, raising=False)
    monkeypatch.setattr(pm, '_NET_CACHE', {})

    def no_network(url, dst, **kwargs):
        raise OSError('network is unreachable')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_network)
    clean, noisy = pair
    filename = pm._BACKBONE_FILES[kind][0]
    with pytest.raises(pm.BackboneWeightsMissing) as info:
        calculate_metric({'img': noisy, 'img2': clean}, {'type': f'calculate_{kind}', 'crop_border': 0})
    message = str(info.value)
    assert filename in message and str(tmp_path / 'hub' / 'checkpoints') in message
    assert 'Traceback' not in message and '\n' not in message


def test_backbone_file_in_torch_home_is_loaded(pair, monkeypatch, tmp_path):
    """A weight file in TORCH_HOME is used without any download, and its values reach the network."""
    import torchvision
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.delenv(pm.RANDOM_BACKBONE_ENV, raising=False)
    monkeypatch.setattr(pm, '_NET_CACHE', {})
    monkeypatch.setattr(torch.hub, 'download_url_to_file', lambda *a, **k: pytest.fail('tried to download'))
    torch.manual_seed(123)
    stand_in = torchvision.models.alexnet(weights=None).state_dict()
    folder = tmp_path / 'hub' / 'checkpoints'
    folder.mkdir(parents=True)
    torch.save(stand_in, folder / pm._BACKBONE_FILES['lpips'][0])
    net = pm.build_perceptual_net('lpips', 'cpu')
    assert torch.equal(net.net.net.slice1[0].weight, stand_in['features.0.weight'])
    assert torch.equal(getattr(net.net.net.slice5, '10').weight, stand_in['features.10.weight'])
    clean, noisy = pair
    value = calculate_metric({'img': noisy, 'img2': clean}, {'type': 'calculate_lpips', 'crop_border': 0})
    assert 0 < value < 1


def test_dists_matches_the_reference_implementation(pair, monkeypatch):
    """Same backbone and alpha/beta in the DISTS-pytorch package's class and ours -> same number."""
    import torchvision
    dists_pt = pytest.importorskip('DISTS_pytorch.DISTS_pt')
    vgg16 = torchvision.models.vgg16
    monkeypatch.setattr(dists_pt.models, 'vgg16', lambda pretrained=True: vgg16(weights=None))
    reference = dists_pt.DISTS(load_weights=False).eval()
    ours = pm.DISTSNet(pm._dists_alpha_beta()).eval()
    reference.alpha.data.copy_(ours.alpha)
    reference.beta.data.copy_(ours.beta)
    ref_features = {f'features.{i}.{name}': value
                    for stage in (reference.stage1, reference.stage2, reference.stage3, reference.stage4, reference.stage5)
                    for i, module in stage.named_children() for name, value in module.state_dict().items()
                    if name != 'filter'}
    for stage in ours.stages:
        pm._load_features(stage, ref_features)
    clean, noisy = pair
    x = torch.from_numpy(noisy.copy()).permute(2, 0, 1)[None].float() / 255
    y = torch.from_numpy(clean.copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert ours(x, y).item() == pytest.approx(reference(x, y).item(), rel=1e-5, abs=1e-6)
