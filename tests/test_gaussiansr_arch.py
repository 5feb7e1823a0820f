"""GaussianSR: kernel bank, selective splatting through the rasterizer, LTE decoder, encode once /
render many, windows (zoom), gradients and deterministic evaluation (CPU, tiny configs)."""
import math

import pytest
import torch

import gsasr_plugin  # noqa: F401  (registers archs and encoders)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.gaussiansr_arch import GaussianSR, GaussianSRField
from gsasr_plugin.official.gaussiansr import OFFICIAL_NETWORK_G
from gsasr_plugin.ops import rasterize_gaussians

TINY_EDSR = {'type': 'EDSREncoder', 'num_feat': 12, 'num_block': 1}


def tiny_gaussiansr(**overrides) -> GaussianSR:
    opt = dict(encoder=TINY_EDSR, num_kernels=9, splat_channels=4, decoder_dim=16, mlp_hidden=[16, 16])
    opt.update(overrides)
    return GaussianSR(**opt).eval()


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_layout_and_parameter_count():
    assert ARCH_REGISTRY.get('GaussianSR') is GaussianSR
    net = GaussianSR()
    classifier = 64 * 100 * 9 + 100
    bank = 100 * 4
    coef_freq = 2 * (64 * 256 * 9 + 256)
    phase = 2 * 128
    mlp = 4 * (256 * 256 + 256) + 256 * 3 + 3
    assert num_params(net) - num_params(net.encoder) == classifier + bank + coef_freq + phase + mlp
    assert 1.75e6 < num_params(net) < 1.9e6  # "about 1.8 M" (EDSR-baseline encoder 1.22 M)


def test_kernel_bank_initialisation():
    net = GaussianSR(encoder=TINY_EDSR)
    bank = net.kernel_bank().detach()
    grid = torch.linspace(0.2, 3.0, 10)
    pairs = {(round(x, 4), round(y, 4)) for x, y in bank[:, :2].tolist()}
    assert pairs == {(round(float(x), 4), round(float(y), 4)) for x in grid for y in grid}
    assert torch.equal(bank[:, 2], torch.zeros(100))
    assert torch.allclose(bank[:, 3], torch.full((100, ), 1 / (1 + math.exp(-1))))


@pytest.mark.parametrize('scale, out_size, expected', [
    (2.5, None, (25, 30)),
    ((1.5, 3.4), None, (15, 41)),  # anisotropic
    (None, (13, 29), (13, 29)),
    (4.0, (21, 22), (21, 22)),  # out_size wins
])
def test_shapes(scale, out_size, expected):
    net = tiny_gaussiansr()
    lq = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        out = net(lq, scale=scale, out_size=out_size)
        field = net.encode(lq)
    assert out.shape == (2, 3, *expected) and torch.isfinite(out).all()
    assert isinstance(field, GaussianSRField) and field.lr_size == (10, 12)
    assert field.gaussians.colors.shape == (2, 120, 4) and field.features.shape == (2, 8, 10, 12)


def test_evaluation_picks_the_argmax_kernel_deterministically():
    net = tiny_gaussiansr()
    lq = torch.rand(1, 3, 9, 8)
    with torch.no_grad():
        assert torch.equal(net(lq, scale=3.0), net(lq, scale=3.0))
        field = net.encode(lq)
        logits = net.classifier(net.encoder(lq))
        chosen = net.kernel_bank()[logits.argmax(1).flatten()]
    assert torch.equal(field.kernel_index, logits.argmax(1))
    assert torch.allclose(field.gaussians.sigmas[0], chosen[:, :2])
    assert torch.allclose(field.gaussians.rhos[0], chosen[:, 2])
    feat = net.encoder(lq)[:, :4].flatten(2).transpose(1, 2)
    assert torch.allclose(field.gaussians.colors, feat * chosen[None, :, 3:4], atol=1e-6)


def test_training_samples_one_kernel_per_pixel_with_gumbel_noise():
    net = tiny_gaussiansr().train()
    lq = torch.rand(1, 3, 9, 8)
    bank = net.kernel_bank().detach()
    first, second = net.encode(lq), net.encode(lq)
    for field in (first, second):  # straight-through: every pixel carries one bank entry exactly
        distance = (field.gaussians.sigmas[0, :, None, :] - bank[None, :, :2]).abs().sum(-1)
        assert torch.allclose(distance.min(dim=1).values, torch.zeros(72), atol=1e-6)
    assert not torch.equal(first.gaussians.sigmas, second.gaussians.sigmas)  # sampled, not arg-max


def test_splatted_stream_is_the_rasterizer_with_features_as_colors():
    net = tiny_gaussiansr(image_skip=False)
    lq = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        field = net.encode(lq)
        g = field.gaussians
        captured = {}

        def grab(module, args, output):
            captured['x'] = args[0]

        hook = net.decoder.coef.register_forward_hook(grab)
        net.render(field, (17, 20))
        hook.remove()
        expected = rasterize_gaussians(g.means, g.sigmas, g.rhos, g.colors, (7, 9), (17, 20))
    assert torch.allclose(captured['x'][:, :4], expected, atol=1e-6)
    bicubic = torch.nn.functional.interpolate(field.features, (17, 20), mode='bicubic', align_corners=False)
    assert torch.allclose(captured['x'][:, 4:], bicubic, atol=1e-5)


def test_encode_once_render_many_equals_fresh_forward():
    net = tiny_gaussiansr()
    assert not GaussianSR.field_depends_on_scale
    lq = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        field = net.encode(lq, scale=2.0)
        for size in [(16, 20), (29, 13), (8, 10), (50, 61)]:
            assert torch.equal(net.render(field, size), net(lq, out_size=size)), size


def test_window_render_matches_the_crop_of_a_full_render():
    net = tiny_gaussiansr()
    lq = torch.rand(1, 3, 8, 10)
    with torch.no_grad():
        field = net.encode(lq)
        full = net.render(field, (32, 40))  # x4
        assert torch.allclose(net.render(field, (32, 40), window=(0, 0, 8, 10)), full, atol=1e-5)
        part = net.render(field, (12, 16), window=(2, 3, 5, 7))  # the same x4 sampling of a sub-window
    # the decoder's 3x3 convs see zero padding at the window's edge: compare the interior
    assert torch.allclose(part[..., 1:-1, 1:-1], full[..., 9:19, 13:27], atol=1e-4)


# default: the whole render goes band by band (bands of 2 rows + a row of context each side, as window renders);
# official (patches, LIIF coordinates: no window renders): the splat is whole, the decoder runs in bands of 4 rows
@pytest.mark.parametrize('options,passes', [({}, [3] + [4] * 17 + [2]),
                                            ({'decoder_coords': 'liif', 'splatting': 'patches'}, None)],
                         ids=['default', 'official'])
def test_a_large_output_is_rendered_in_bands_equal_to_one_pass(monkeypatch, options, passes):
    from gsasr_plugin.archs import gaussiansr_arch
    net = tiny_gaussiansr(**options)
    lq = torch.rand(1, 3, 8, 10)
    calls = []
    net.decoder.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        field = net.encode(lq)
        whole = net.render(field, (37, 45))
        monkeypatch.setattr(gaussiansr_arch, 'DECODER_BAND_PIXELS', 4 * 45)
        banded = net.render(field, (37, 45))
    assert calls[0] == (37, 45)  # the decoder's input features: whole, then per band
    if passes is None:
        assert calls[1:] == [(37, 45)]  # whole features, decoded in bands inside the decoder
    else:
        assert calls[1:] == [(rows, 45) for rows in passes]
    assert torch.allclose(banded, whole, atol=1e-5, rtol=0)
    if passes is not None:  # a zoom window is banded within the window
        window = (2.3, 1.7, 6.1, 8.9)
        with torch.no_grad():
            zoomed = net.render(field, (41, 53), window=window)
            monkeypatch.setattr(gaussiansr_arch, 'DECODER_BAND_PIXELS', 1 << 17)
            assert torch.allclose(zoomed, net.render(field, (41, 53), window=window), atol=1e-5, rtol=0)
            monkeypatch.setattr(gaussiansr_arch, 'DECODER_BAND_PIXELS', 4 * 45)
    with torch.enable_grad():  # training keeps one pass
        net.render(field, (37, 45))
    assert calls[-1] == (37, 45)


def test_the_decoder_alone_decodes_in_bands(monkeypatch):
    from gsasr_plugin.archs import gaussiansr_arch
    decoder = tiny_gaussiansr().decoder
    feature, rel, cell = torch.rand(1, 12, 37, 45), torch.rand(2, 37, 45) * 2 - 1, torch.tensor([0.2, 0.2])
    passes = []
    decoder.mlp.register_forward_hook(lambda module, args, out: passes.append(out.shape[-2]))
    with torch.no_grad():
        whole = decoder(feature, rel, cell)
        monkeypatch.setattr(gaussiansr_arch, 'DECODER_BAND_PIXELS', 4 * 45)
        banded = decoder(feature, rel, cell)
    assert passes == [37, 5] + [6] * 8 + [2]  # bands of 4 rows with a row of context each side
    assert torch.allclose(banded, whole, atol=1e-5, rtol=0)


def test_gradients_reach_every_parameter():
    net = tiny_gaussiansr().train()
    lq = torch.rand(2, 3, 8, 8)
    out = net(lq, scale=(2.0, 2.5))
    (out - torch.rand_like(out)).abs().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


@pytest.mark.parametrize('options, message', [
    ({'num_kernels': 10}, 'num_kernels'),
    ({'splat_channels': 12}, 'splat_channels'),
    ({'sigma_init_range': [0.0, 3.0]}, 'sigma_init_range'),
    ({'gumbel_tau': 0}, 'gumbel_tau'),
    ({'decoder_dim': 15}, 'decoder_dim'),
])
def test_bad_options_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_gaussiansr(**options)


def test_bad_inputs_raise():
    net = tiny_gaussiansr()
    field = net.encode(torch.rand(1, 3, 6, 6))
    with pytest.raises(TypeError, match='GaussianSRField'):
        net.render(field.gaussians, (12, 12))
    with pytest.raises(ValueError, match='window'):
        net.render(field, (12, 12), window=(3, 3, 2, 5))
    with pytest.raises(ValueError, match='lq'):
        net(torch.rand(3, 6, 6), scale=2)


# ------------------------------------------------------------------- both archs through `basicsr train`
TINY_NETWORKS = {
    'train_gaussiansr_edsr.yml': dict(type='GaussianSR', encoder=TINY_EDSR, num_kernels=9, splat_channels=4,
                                      sigma_init_range=[0.2, 1.0],
                                      decoder_dim=16, mlp_hidden=[16, 16]),
    # the official forward (splatting: patches, ...) with sampled-pixel training (sample_q)
    'train_gaussiansr_edsr_official.yml': dict(OFFICIAL_NETWORK_G, encoder=dict(TINY_EDSR, rgb_mean=None),
                                               decoder_dim=16, mlp_hidden=[16, 16], patch_mean_images=2),
    'train_continuoussr_swinir.yml': dict(type='ContinuousSR', encoder={
        'type': 'SwinIREncoder', 'embed_dim': 12, 'depths': [1], 'num_heads': [2], 'window_size': 4, 'num_feat': 16,
        'pretrained': None}, num_feat=16, color_hidden=[16], offset_hidden=[16], key_hidden=[16], attn_dim=16),
}


@pytest.mark.parametrize('options_file', sorted(TINY_NETWORKS))
def test_basicsr_train_two_iterations_and_validate_per_scale(tmp_path, photo, options_file):
    """The shipped option file with its network shrunk and its data pointed at scikit-image photos, run by
    the real `basicsr train` (a subprocess, as users run it): trains, checkpoints and validates per scale."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    import cv2
    import yaml

    repo = Path(__file__).resolve().parents[1]
    for split, names, size in (('train', ('astronaut', 'coffee'), (100, 100)), ('val', ('chelsea', ), (48, 56))):
        (tmp_path / split).mkdir()
        for name in names:
            cv2.imwrite(str(tmp_path / split / f'{name}.png'), photo(name, size)[:, :, ::-1])
    opt = yaml.safe_load((repo / 'options' / options_file).read_text())
    opt.update(name='tiny_run', num_gpu=0, network_g=TINY_NETWORKS[options_file])
    train = opt['datasets']['train']
    train.update(dataroot_gt='train', batch_size_per_gpu=2, num_worker_per_gpu=0)
    # shrink whichever patch side the file fixes (lq_size and gt_size exclude each other)
    if 'gt_size' in train:
        train['gt_size'] = 48  # LR patches of 6..12 pixels at x4..x8
    else:
        train['lq_size'] = 12
    if 'sample_q' in train:
        train['sample_q'] = 100  # of the 12x12 .. 42x42 GT pixels of a crop
    scales = [opt['datasets']['train']['scale_min'] + 1, opt['datasets']['train']['scale_max'] - 0.5]
    opt['datasets']['val'].update(dataroot_gt='val', scales=scales)
    opt['train'].update(total_iter=2)
    opt['val']['val_freq'] = 2
    opt['logger'].update(save_checkpoint_freq=2, print_freq=1, use_tb_logger=False)
    (tmp_path / 'train.yml').write_text(yaml.safe_dump(opt, sort_keys=False))

    proc = subprocess.run([sys.executable, '-m', 'gsasr_plugin_cli', 'train', '-opt', 'train.yml'], cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS='2'), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / 'experiments' / 'tiny_run'
    assert (exp / 'models' / 'net_g_2.pth').is_file()
    log = max(exp.glob('*.log'), key=lambda p: p.stat().st_mtime).read_text()
    assert f"Network [{opt['network_g']['type']}] is created" in log
    assert re.search(r'l_pix: [0-9.e+-]+', log)
    for scale in scales:
        tag = f'{scale:g}'
        assert re.search(rf'# psnr_x{re.escape(tag)}: \d+\.\d+ \[\d+\.\d+\]', log), f'psnr_x{tag} not logged'
