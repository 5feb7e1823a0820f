"""ContinuousSR: shapes, the DGP dictionary and its units, encode once / render many, gradients,
determinism, and the pretrained x4 upsampler (CPU, tiny configs)."""
import itertools

import pytest
import torch

import gsasr_plugin  # noqa: F401  (registers archs, encoders, losses)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.continuoussr_arch import (DGP_CHOLESKY_VALUES, ContinuousSR, cholesky_dictionary,
                                                  cholesky_to_sigma_rho)
from gsasr_plugin.archs.gaussian_field import GaussianField
from test_transformer_encoders import _random_checkpoint, official_swinir_shapes

TINY_SWINIR = {'type': 'SwinIREncoder', 'embed_dim': 12, 'depths': [1], 'num_heads': [2], 'window_size': 4,
               'num_feat': 16, 'drop_path_rate': 0.0}


def tiny_continuoussr(**overrides) -> ContinuousSR:
    opt = dict(encoder=TINY_SWINIR, num_feat=16, color_hidden=[32, 16], offset_hidden=[32, 16], key_hidden=[32],
               attn_dim=16)
    opt.update(overrides)
    return ContinuousSR(**opt).eval()


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_and_default_decoder_layout():
    assert ARCH_REGISTRY.get('ContinuousSR') is ContinuousSR
    net = ContinuousSR(encoder={'type': 'EDSREncoder', 'num_block': 0})  # default decoder, small encoder

    def mlp(sizes):
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    upsampler = 2 * (64 * 256 * 9 + 256)
    hidden = [512, 1024, 256, 128, 64]
    heads = mlp([256, *hidden, 3]) + mlp([256, *hidden, 2])  # colour, offset
    keys = mlp([3, 256, 512, 512, 512, 512])
    query = 256 * 512 * 9 + 512
    assert num_params(net) - num_params(net.encoder) == upsampler + heads + keys + query
    assert net.gaussians_per_side == 2 and net.token_dim == 256


def test_dictionary_is_the_dgp_product_plus_zero():
    table = cholesky_dictionary()
    assert table.shape == (730, 3)
    assert torch.equal(table[-1], torch.zeros(3))
    expected = set(itertools.product(*DGP_CHOLESKY_VALUES)) | {(0.0, 0.0, 0.0)}
    assert {tuple(round(v, 4) for v in row) for row in table.tolist()} == {
        tuple(round(v, 4) for v in row) for row in expected}


def test_cholesky_conversion_matches_covariance_and_official_hr_units():
    """sigma/rho from L reproduce L L^T (+ floor); and the official HR-pixel factor (L / 4 scaled by s_w for
    l11, s_h for l21, l22) is our LR-pixel covariance stretched by the (anisotropic) scale."""
    factors = cholesky_dictionary()[:-1] * 0.25
    sigmas, rhos = cholesky_to_sigma_rho(factors, min_sigma=0.02)
    cov_xy = rhos * sigmas[:, 0] * sigmas[:, 1]
    ours = torch.stack([torch.stack([sigmas[:, 0]**2, cov_xy], -1), torch.stack([cov_xy, sigmas[:, 1]**2], -1)], -2)
    lower = torch.zeros(len(factors), 2, 2)
    lower[:, 0, 0], lower[:, 1, 0], lower[:, 1, 1] = factors.unbind(-1)
    expected = lower @ lower.transpose(1, 2) + 0.02**2 * torch.eye(2)
    assert torch.allclose(ours, expected, atol=1e-5)
    s_h, s_w = 3.0, 5.5
    official = lower.clone()
    official[:, 0, 0] *= s_w
    official[:, 1, :] *= s_h
    stretch = torch.diag(torch.tensor([s_w, s_h]))
    assert torch.allclose(official @ official.transpose(1, 2), stretch @ (lower @ lower.transpose(1, 2)) @ stretch,
                          atol=1e-5)
    assert (rhos.abs() < 1).all() and (sigmas >= 0.02).all()


@pytest.mark.parametrize('scale, out_size, expected', [
    (2.5, None, (25, 30)),
    ((1.5, 4.2), None, (15, 50)),  # anisotropic
    (None, (13, 7), (13, 7)),  # downscaling is a render too
    (6.0, (31, 17), (31, 17)),  # out_size wins
])
def test_shapes(scale, out_size, expected):
    net = tiny_continuoussr()
    lq = torch.rand(2, 3, 10, 12)
    with torch.no_grad():
        out = net(lq, scale=scale, out_size=out_size)
        field = net.encode(lq)
    assert out.shape == (2, 3, *expected) and torch.isfinite(out).all()
    assert isinstance(field, GaussianField) and field.means.shape == (2, 4 * 10 * 12, 2)
    assert field.lr_size == (10, 12)
    # adaptive position drifting stays within +-1 LR pixel of the sub-pixel reference point
    ys = (torch.arange(20) + 0.5) / 2
    xs = (torch.arange(24) + 0.5) / 2
    ref = torch.stack(torch.meshgrid(xs, ys, indexing='xy'), -1).view(1, -1, 2)
    assert ((field.means - ref).abs() <= 1.0).all()


def test_encode_once_render_many_equals_fresh_forward():
    net = tiny_continuoussr()
    lq = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        field = net.encode(lq)
        assert not ContinuousSR.field_depends_on_scale
        # the field ignores the scale: encoding "for" x2 or x7.3 gives the same Gaussians
        other = net.encode(lq, scale=7.3)
        assert torch.equal(field.means, other.means) and torch.equal(field.sigmas, other.sigmas)
        for size in [(18, 22), (40, 17), (9, 11), (66, 81)]:
            assert torch.equal(net.render(field, size), net(lq, out_size=size)), size


def test_eval_is_deterministic_and_gradients_reach_every_parameter():
    net = tiny_continuoussr()
    lq = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(lq, scale=3.3), net(lq, scale=3.3))
    net.train()
    out = net(lq, scale=(2.0, 3.0))
    (out - torch.rand_like(out)).abs().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_pretrained_swinir_x4_loads_encoder_and_upsampler(tmp_path):
    checkpoint = _random_checkpoint(official_swinir_shapes(12, [1], [2], 4, img_size=16, upscale=4))
    path = tmp_path / 'swinir_x4.pth'
    torch.save({'params': checkpoint}, path)
    encoder = {k: v for k, v in TINY_SWINIR.items() if k != 'num_feat'}  # official num_feat is 64
    net = ContinuousSR(encoder={**encoder, 'pretrained': str(path)}, color_hidden=[8], offset_hidden=[8],
                       key_hidden=[8], attn_dim=8)
    for key in ('upsample.0.weight', 'upsample.0.bias', 'upsample.2.weight', 'upsample.2.bias'):
        assert torch.equal(net.state_dict()[key], checkpoint[key]), key
    assert torch.equal(net.encoder.conv_first.weight, checkpoint['conv_first.weight'])
    # without load_upsampler the upsampler keeps its random initialisation
    fresh = ContinuousSR(encoder={**encoder, 'pretrained': str(path)}, color_hidden=[8], offset_hidden=[8],
                         key_hidden=[8], attn_dim=8, load_upsampler=False)
    assert not torch.equal(fresh.upsample[0].weight, checkpoint['upsample.0.weight'])


@pytest.mark.parametrize('options, message', [
    ({'upscale': 3}, 'upscale'),
    ({'unshuffle': 3}, 'unshuffle'),
    ({'min_sigma': -0.1}, 'min_sigma'),
    ({'reference_points': 'middle'}, 'reference_points'),
    ({'head_activation': 'none'}, 'head_activation'),
    ({'mlp_activation': 'tanh'}, 'mlp_activation'),
    ({'covariance_scale': 'scale'}, 'covariance_scale'),
    ({'rasterizer': {'bogus': 1}}, 'rasterizer'),
    ({'max_offset': -1.0}, 'max_offset'),
    ({'dictionary_values': [[0.1], [0.2]]}, 'dictionary_values'),
])
def test_bad_options_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        tiny_continuoussr(**options)


def test_bad_inputs_raise():
    net = tiny_continuoussr()
    with pytest.raises(ValueError, match='lq'):
        net(torch.rand(3, 8, 8), scale=2)
    with pytest.raises(ValueError, match='scale|out_size'):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match='out_size'):
        net.render(net.encode(torch.rand(1, 3, 8, 8)), (0, 5))


# ------------------------------------------------------------------------------------------ FFT losses
def test_fft_amplitude_loss_ignores_circular_shifts_and_combines_with_l1():
    from basicsr.losses import build_loss
    pred = torch.rand(2, 3, 12, 10, requires_grad=True)
    target = torch.rand(2, 3, 12, 10)
    fft = build_loss({'type': 'FFTAmplitudeLoss', 'loss_weight': 1.0})
    assert fft(target.roll((3, 4), dims=(2, 3)), target) < 1e-5  # amplitudes do not see translations
    assert fft(pred, target) > 0.01
    combined = build_loss({'type': 'L1FFTLoss', 'loss_weight': 2.0, 'fft_weight': 0.1})
    value = combined(pred, target)
    expected = 2.0 * ((pred - target).abs().mean() + 0.1 * fft(pred, target))
    assert torch.allclose(value, expected)
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize('options, error', [
    ({'type': 'FFTAmplitudeLoss', 'reduction': 'max'}, ValueError),
    ({'type': 'L1FFTLoss', 'reduction': 'none'}, ValueError),
    ({'type': 'L1FFTLoss', 'fft_weight': -1}, ValueError),
])
def test_fft_loss_bad_options(options, error):
    from basicsr.losses import build_loss
    with pytest.raises(error):
        build_loss(options)
