"""GSASR network, its EDSR-baseline / RDN encoders and the window cross-attention (CPU, tiny configs)."""
import copy
import io

import pytest
import torch

import gsasr_plugin  # noqa: F401  (registers archs and encoders)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs import build_encoder
from gsasr_plugin.archs.gaussian_field import GaussianField
from gsasr_plugin.archs.gsasr_arch import GSASR, ScaleCrossAttention
from gsasr_plugin.archs.window_utils import (ShiftedWindows, WindowAttention, WindowCrossAttention,
                                             from_window_tokens, to_window_tokens)

TINY_EDSR = {'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}


def tiny_gsasr(**overrides) -> GSASR:
    opt = dict(encoder=TINY_EDSR, embed_dim=24, num_heads=2, window_size=4, num_injection_layers=2, num_blocks=1,
               num_layers_per_block=2, num_scale_tokens=3, gaussian_density=4, num_upsample_stages=1,
               head_mlp_ratio=1.0)
    opt.update(overrides)
    return GSASR(**opt).eval()


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('lr_size, scale, out_size, expected', [
    ((5, 7), 2.5, None, (12, 18)),                  # non-integer: round(12.5) = 12, round(17.5) = 18
    ((5, 7), (1.5, 3.2), None, (8, 22)),            # anisotropic
    ((5, 7), None, (13, 9), (13, 9)),               # out_size alone
    ((5, 7), 4.0, (11, 30), (11, 30)),              # out_size wins over scale
    ((9, 6), torch.tensor([[1.7, 2.3], [1.7, 2.3]]), None, (15, 14)),  # a batch's (B, 2) scale tensor
])
def test_output_shapes(lr_size, scale, out_size, expected):
    net = tiny_gsasr()
    lq = torch.rand(2, 3, *lr_size)
    with torch.no_grad():
        out = net(lq, scale=scale, out_size=out_size)
    assert out.shape == (2, 3, *expected)
    assert torch.isfinite(out).all()


def test_registered_and_built_from_yaml_style_options():
    net = ARCH_REGISTRY.get('GSASR')(encoder={'type': 'RDNEncoder', 'num_feat': 8, 'num_blocks': 2, 'num_layers': 2,
                                             'growth': 4}, embed_dim=12, num_heads=2, window_size=3,
                                    num_blocks=1, num_layers_per_block=2, gaussian_density=16, num_upsample_stages=2)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 4, 5), scale=(2.0, 1.5))
    assert out.shape == (1, 3, 8, 8)
    assert type(net.encoder).__name__ == 'RDNEncoder'


def _smooth_gsasr(**overrides) -> GSASR:
    """A tiny GSASR whose heads ignore the tokens: every Gaussian sits on its reference point with one sigma
    and opacity, coloured by the bicubic prior (lr_color_residual): a smooth interpolator of the LR image."""
    net = tiny_gsasr(lr_color_residual=True, **overrides)
    with torch.no_grad():
        for head in (net.opacity_head, net.color_head, net.sigma_head, net.rho_head, net.offset_head):
            head[-1].weight.zero_()
            head[-1].bias.zero_()
    return net


@pytest.mark.parametrize('lr_size', [(10, 13), (9, 16), (12, 14), (13, 13)])  # 2 or 3 LR pixels of padding
def test_right_and_bottom_edges_keep_the_padding_gaussians(lr_size):
    """Issue 26, item 1: with an LR side that is not a window multiple, the Gaussians of the decoder's padding
    were dropped, so the last output rows / columns lost the neighbours every inner pixel has (a trained
    demo model: 36-43 grey levels darker than bicubic there). A smooth interpolator of a flat image must be
    as bright on the right / bottom edge of such an image as inside; the field holds the padded plane."""
    net = _smooth_gsasr()  # window 4: (10, 13) pads 2 rows and 3 columns, (12, 14) 2 columns only
    lq = torch.full((1, 3) + lr_size, 0.5)
    with torch.no_grad():
        field = net.encode(lq, scale=3)
        out = net.render(field, (3 * lr_size[0], 3 * lr_size[1]))[0, 0]
    padded = [-(-n // 4) * 4 for n in lr_size]
    assert field.num_gaussians == 4 * padded[0] * padded[1] and field.lr_size == lr_size
    middle = (out.shape[0] // 2, out.shape[1] // 2)
    # x3 samples the LR plane at 3 phases: compare an edge pixel with the inner pixel 4 LR pixels inward
    if lr_size[0] % 4:
        torch.testing.assert_close(out[-1, middle[1]], out[-13, middle[1]], rtol=1e-5, atol=0)
    if lr_size[1] % 4:
        torch.testing.assert_close(out[middle[0], -1], out[middle[0], -13], rtol=1e-5, atol=0)
    assert out[0, middle[1]] < 0.9 * out[12, middle[1]]  # the top edge has no padding: the check can fail


def test_any_lr_size_and_field_layout():
    net = tiny_gsasr(window_size=12, gaussian_density=16, num_upsample_stages=2, max_offset=0.5,
                     sigma_range=(0.05, 0.7), rho_max=0.9)
    lq = torch.rand(1, 3, 23, 37)
    with torch.no_grad():
        field = net.encode(lq, scale=1.7)
        out = net.render(field, (39, 63))
        direct = net(lq, scale=1.7, out_size=(39, 63))
    assert isinstance(field, GaussianField) and field.lr_size == (23, 37)
    assert field.means.shape == (1, 16 * 24 * 48, 2)  # m Gaussians per LR pixel of the window-padded plane
    assert field.sigmas.shape == (1, 16 * 24 * 48, 2) and field.rhos.shape == (1, 16 * 24 * 48)
    x, y = field.means[..., 0], field.means[..., 1]
    assert x.min() >= -0.5 and x.max() <= 48.5 and y.min() >= -0.5 and y.max() <= 24.5
    assert field.sigmas.min() >= 0.05 and field.sigmas.max() <= 0.7
    assert field.rhos.abs().max() <= 0.9
    assert field.colors.min() >= 0 and field.colors.max() <= 1
    torch.testing.assert_close(out, direct)
    # The first Gaussian's reference point is the centre of the top-left quarter of LR pixel (0, 0).
    first = field.means[0, 0]
    assert (first - torch.tensor([0.125, 0.125])).abs().max() <= 0.5


def test_scale_conditioning_depends_on_scale():
    net = tiny_gsasr()
    lq = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        fields = [net.encode(lq, s) for s in (2.0, 3.0, (2.0, 3.0), (3.0, 2.0))]
    for i in range(len(fields)):
        for j in range(i + 1, len(fields)):
            assert not torch.allclose(fields[i].sigmas, fields[j].sigmas), (i, j)

    # Not a mere additive bias: what the scale sublayer adds differs from token to token.
    layer = net.interaction[0].layers[0].scale_attn
    assert isinstance(layer, ScaleCrossAttention)
    x = torch.randn(1, 10, 24)
    with torch.no_grad():
        tokens = net.scale_tokens((2.0, 3.0), 1, x)
        attended, weights = layer.attn(layer.norm_attn(x), tokens, tokens)
    assert (attended - attended[:, :1]).abs().max() > 1e-4
    assert (weights - weights[:, :1]).abs().max() > 1e-4


def test_decoder_uses_timm_window_attention():
    net = tiny_gsasr(num_blocks=2)
    self_attn = [m for m in net.modules() if isinstance(m, WindowAttention)]
    cross_attn = [m for m in net.modules() if isinstance(m, WindowCrossAttention)]
    assert len(self_attn) == 2 * 2 and len(cross_attn) == 2
    assert WindowAttention.__module__.startswith('timm.')


def _changed_positions(layer, inputs, perturbed_index, shift, mask):
    """Positions (row, col) of layer's output that change when input ``perturbed_index`` changes at (3, 3).

    ``inputs`` are (1, 8, 8, C) maps (and the scale tokens); the layers take window tokens and the plan.
    """
    windows = ShiftedWindows.plan(1, 8, 8, 4, shift, mask)

    def run(maps):
        tokens = [to_window_tokens(m, 4).view(1, 4, 16, -1) if m.dim() == 4 else m for m in maps]
        return from_window_tokens(layer(*tokens, windows).flatten(0, 1), 4, 8, 8)

    with torch.no_grad():
        before = run(inputs)
        changed = list(inputs)
        changed[perturbed_index] = changed[perturbed_index].clone()
        # Not a constant across channels: the layer norms would remove that.
        changed[perturbed_index][0, 3, 3] += 3.0 * torch.randn(changed[perturbed_index].shape[-1])
        after = run(changed)
    diff = (after - before).abs().amax(dim=-1)[0]
    return {tuple(p) for p in (diff > 1e-6).nonzero().tolist()}


def test_shifted_layers_roll_queries_and_features_together():
    # 8 x 8 map, window 4, shift 2: position (3, 3) shares its shifted window (and mask region) with
    # rows 2..5 x cols 2..5 only. Rolling the features but not the queries (as the official code does)
    # would instead reach rows 0..3 x cols 0..3.
    net = tiny_gsasr()
    shift, mask = net._window_plan(8, 8, torch.device('cpu'))
    assert shift == (2, 2) and mask.shape == (4, 16, 16)
    expected = {(r, c) for r in range(2, 6) for c in range(2, 6)}
    x, pos, feat = torch.randn(1, 8, 8, 24), torch.randn(1, 8, 8, 24), torch.randn(1, 8, 8, 24)
    tokens = net.scale_tokens((2.0, 2.0), 1, x)
    injection = net.injection.layers[1]
    assert injection.shifted
    assert _changed_positions(injection, (x, pos, feat, tokens), 2, shift, mask) == expected
    interaction = net.interaction[0].layers[1]
    assert interaction.shifted
    assert _changed_positions(interaction, (x, pos, tokens), 0, shift, mask) == expected
    # The unshifted layer keeps to the plain 4 x 4 window of (3, 3).
    plain = {(r, c) for r in range(4) for c in range(4)}
    assert _changed_positions(net.injection.layers[0], (x, pos, feat, tokens), 2, shift, mask) == plain


def test_window_cross_attention_mask_and_bias():
    attn = WindowCrossAttention(dim=8, num_heads=2, window_size=2).eval()
    x, context = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    # Tokens {0, 1} and {2, 3} may not see each other: changing context of 2, 3 leaves outputs 0, 1 alone.
    mask = torch.zeros(1, 4, 4)
    mask[:, :2, 2:] = mask[:, 2:, :2] = -100.0
    with torch.no_grad():
        before = attn(x, context, mask)
        changed = context.clone()
        changed[:, 2:] += 5.0
        after = attn(x, changed, mask)
        unmasked = attn(x, changed)
    torch.testing.assert_close(before[:, :2], after[:, :2])
    assert not torch.allclose(before[:, 2:], after[:, 2:])
    assert not torch.allclose(unmasked[:, :2], after[:, :2])
    assert attn.relative_position_bias_table.shape == (9, 2)
    with pytest.raises(ValueError, match='context'):
        attn(x, torch.randn(3, 5, 8))


def test_gradients_reach_encoder_and_embeddings():
    net = tiny_gsasr().train()
    out = net(torch.rand(1, 3, 5, 5), scale=1.5)
    out.mean().backward()
    for name in ('encoder.conv_first.weight', 'gaussian_embedding', 'position_embedding', 'scale_mlp.0.weight',
                 'offset_head.4.weight'):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_state_dict_round_trip_and_deepcopy():
    net = tiny_gsasr()
    buffer = io.BytesIO()
    torch.save({'params': net.state_dict()}, buffer)
    buffer.seek(0)
    other = tiny_gsasr()
    other.load_state_dict(torch.load(buffer)['params'], strict=True)
    clone = copy.deepcopy(net)
    lq = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        reference = net(lq, 2.0)
        torch.testing.assert_close(other(lq, 2.0), reference)
        torch.testing.assert_close(clone(lq, 2.0), reference)


@pytest.mark.parametrize('kwargs, match', [
    ({'encoder': {'type': 'NoSuchEncoder'}}, 'NoSuchEncoder'),
    ({'encoder': {'num_feat': 8}}, "'type'"),
    ({'gaussian_density': 8}, 'gaussian_density'),
    ({'gaussian_density': 16, 'num_upsample_stages': 3}, 'num_upsample_stages'),
    ({'embed_dim': 25}, 'num_heads'),
    ({'sigma_range': (0.5, 0.1)}, 'sigma_range'),
    ({'rho_max': 1.0}, 'rho_max'),
    ({'max_offset': 0}, 'max_offset'),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_gsasr(**kwargs)


@pytest.mark.parametrize('scale, out_size, match', [
    (0.0, None, 'scale'),
    (-2.0, None, 'scale'),
    ((2.0, 0.0), None, 'scale'),
    (float('inf'), None, 'scale'),
    (torch.tensor([[2.0, 2.0], [3.0, 3.0]]), None, 'share one scale'),
    (torch.ones(3), None, 'scale'),
    (None, None, 'scale'),
    (None, (0, 5), 'out_size'),
    (None, (4.5, 5), 'out_size'),
    (2.0, (3, 4, 5), 'out_size'),
])
def test_bad_scale_or_out_size_raise(scale, out_size, match):
    net = tiny_gsasr()
    with pytest.raises(ValueError, match=match):
        net(torch.rand(1, 3, 4, 4), scale=scale, out_size=out_size)


def test_bad_scale_type_raises():
    with pytest.raises(TypeError, match='scale'):
        tiny_gsasr()(torch.rand(1, 3, 4, 4), scale='x2')


def test_encoders_match_official_sizes():
    edsr, rdn = build_encoder({'type': 'EDSREncoder'}), build_encoder({'type': 'RDNEncoder'})
    assert edsr.out_channels == rdn.out_channels == 64
    # Official GSASR: EDSR-baseline encoder 1.22 M, RDN encoder 22.0 M.
    assert round(num_params(edsr) / 1e6, 2) == 1.22
    assert round(num_params(rdn) / 1e6, 1) == 22.0
    with torch.no_grad():
        assert edsr(torch.rand(1, 3, 5, 7)).shape == (1, 64, 5, 7)


def test_default_config_forward_and_size():
    net = GSASR().eval()
    decoder = num_params(net) - num_params(net.encoder)
    assert abs(decoder / 19.2e6 - 1) < 0.03                 # official decoder: 19.2 M
    with torch.no_grad():
        out = net(torch.rand(1, 3, 12, 12), scale=2.5)
    assert out.shape == (1, 3, 30, 30) and torch.isfinite(out).all()
    # Opacity starts at ~1 / coverage, so the first images are near colour (~0.5), not several times brighter.
    assert 0.2 < out[..., 4:-4, 4:-4].mean() < 0.9
    assert GSASR.field_depends_on_scale is True


def test_bf16_autocast_keeps_float32_positions():
    net = tiny_gsasr(gaussian_density=16, num_upsample_stages=2)
    lq = torch.rand(1, 3, 4, 44)
    with torch.no_grad():
        reference = net.encode(lq, 2.0)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            field = net.encode(lq, 2.0)
    assert field.means.dtype == torch.float32
    # bf16 positions near x = 40 would be off by up to 0.125 LR pixels.
    assert (field.means - reference.means).abs().max() < 0.06


def _psnr(a: torch.Tensor, b: torch.Tensor, border: int) -> float:
    a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    return float(10 * torch.log10(1 / ((a.clamp(0, 1) - b)**2).mean()))


@pytest.mark.parametrize('gaussian_density, stages', [(4, 1), (16, 2)])
def test_lr_color_residual_untrained_net_renders_near_bicubic(photo, gaussian_density, stages):
    from gsasr_plugin.utils.resize import matlab_bicubic_resize
    hr = photo('chelsea')[60:156, 120:216].astype('float32') / 255  # 96 x 96 crop of the cat's face
    lq = matlab_bicubic_resize(hr, (32, 32)).clip(0, 1)
    bicubic = torch.from_numpy(matlab_bicubic_resize(lq, (96, 96))).permute(2, 0, 1)
    gt = torch.from_numpy(hr).permute(2, 0, 1)
    lq = torch.from_numpy(lq).permute(2, 0, 1)[None]
    psnr = {}
    for residual in (False, True):
        torch.manual_seed(0)
        net = tiny_gsasr(gaussian_density=gaussian_density, num_upsample_stages=stages, lr_color_residual=residual)
        with torch.no_grad():
            psnr[residual] = _psnr(net(lq, 3.0)[0], gt, 3)
    reference = _psnr(bicubic, gt, 3)
    assert psnr[True] > reference - 1.0, (psnr, reference)
    assert psnr[False] < reference - 8.0, (psnr, reference)  # the paper's heads start far from the image


def test_lr_color_residual_adds_no_parameters_and_trains():
    plain, residual = tiny_gsasr(), tiny_gsasr(lr_color_residual=True)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == \
        [(k, v.shape) for k, v in residual.state_dict().items()]
    residual.train()
    target = torch.rand(1, 3, 10, 10)
    optimizer = torch.optim.Adam(residual.parameters(), lr=1e-3)
    lq = torch.rand(1, 3, 5, 5)
    losses = []
    for _ in range(2):
        loss = (residual(lq, 2.0) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    for name in ('color_head.4.weight', 'sigma_head.4.weight', 'offset_head.4.weight', 'opacity_head.4.weight'):
        assert dict(residual.named_parameters())[name].abs().sum() > 0, name  # zero-initialised, then learnt
    assert losses[1] < losses[0]
    # The residual follows the input: a brighter LR renders brighter.
    with torch.no_grad():
        assert residual(lq.clamp(0, 0.5) + 0.4, 2.0).mean() > residual(lq.clamp(0, 0.5), 2.0).mean() + 0.3


def test_lr_color_residual_bad_input():
    with pytest.raises(TypeError, match='lr_color_residual'):
        tiny_gsasr(lr_color_residual='yes')
    net = tiny_gsasr(lr_color_residual=True)
    with pytest.raises(ValueError, match='lr_color_residual'):
        net.gaussians_from_tokens(torch.rand(1, 4, 4, 24), (2, 2))


@pytest.mark.parametrize('feature_queries', [False, True])
def test_feature_queries_give_each_gaussian_its_own_pixel(feature_queries):
    torch.manual_seed(0)
    net = tiny_gsasr(feature_queries=feature_queries)
    assert num_params(net) == num_params(tiny_gsasr())
    for layer in net.injection.layers:  # silence the cross-attention: only the queries can carry the image
        torch.nn.init.zeros_(layer.cross_attn.proj.weight)
        torch.nn.init.zeros_(layer.cross_attn.proj.bias)
    lq = torch.rand(1, 3, 8, 8)
    changed = lq.clone()
    changed[..., 5, 2] = 1 - changed[..., 5, 2]
    with torch.no_grad():
        features = net.encoder(torch.cat([lq, changed]))
        tokens = net.decode_tokens(features, (2.0, 2.0))
    difference = (tokens[0] - tokens[1]).abs().sum(-1)  # (16, 16) Gaussians, 2 x 2 per LR pixel
    if feature_queries:
        assert difference[10:12, 4:6].min() > 0
        with pytest.raises(TypeError, match='feature_queries'):
            tiny_gsasr(feature_queries=1)
    else:
        assert difference.max() == 0
