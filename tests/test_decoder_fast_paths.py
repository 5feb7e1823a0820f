"""The decoder's fast paths equal what they replace: window order, fused attention, oneDNN linears, scale attention."""
import pytest
import torch
from torch import nn

import gsasr_plugin  # noqa: F401
from gsasr_plugin.archs import fast_linear
from gsasr_plugin.archs.gsasr_arch import GSASR, ScaleCrossAttention
from gsasr_plugin.archs.window_utils import (Mlp, ShiftedWindows, WindowAttention, from_window_tokens,
                                             shifted_window_index, shifted_window_mask, to_window_tokens,
                                             window_self_attention)


@pytest.mark.parametrize('height, width, window, shift', [(8, 12, 4, (2, 2)), (12, 8, 4, (0, 2)), (6, 9, 3, (1, 0)),
                                                          (4, 8, (4, 2), (2, 1))])
def test_shifted_windows_are_roll_then_partition(height, width, window, shift):
    x = torch.randn(2, height, width, 5)
    expected = to_window_tokens(torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2)), window)
    tokens = to_window_tokens(x, window)
    area = tokens.shape[1]
    tokens = tokens.view(2, -1, area, 5)
    windows = ShiftedWindows.plan(2, height, width, window, shift)
    shifted = windows.shift(tokens)
    assert torch.equal(shifted.flatten(0, 1), expected)
    assert torch.equal(windows.unshift(shifted), tokens)
    # Back on the map: unshifting equals reversing the windows and rolling back.
    back = from_window_tokens(windows.unshift(shifted).flatten(0, 1), window, height, width)
    assert torch.equal(back, x)
    assert sorted(shifted_window_index(height, width, window, shift).tolist()) == list(range(height * width))


def test_unshifted_plan_is_the_identity():
    windows = ShiftedWindows.plan(3, 8, 8, 4, (0, 0))
    tokens = torch.randn(3, 4, 16, 2)
    assert windows.index is None and windows.shift(tokens) is tokens and windows.unshift(tokens) is tokens


@pytest.mark.parametrize('masked', [False, True])
@pytest.mark.parametrize('grad', [False, True])
def test_window_self_attention_equals_timm(masked, grad):
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, window_size=4)
    nn.init.normal_(attn.relative_position_bias_table, std=0.5)
    assert not attn.fused_attn  # timm's math path is the reference
    x = torch.randn(2 * 6, 16, 16, requires_grad=grad)
    mask = shifted_window_mask(8, 12, 4, 2) if masked else None
    with torch.set_grad_enabled(grad):
        expected = attn(x, mask)
        actual = window_self_attention(attn, x, mask)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    if grad:
        expected_grads = torch.autograd.grad(expected.square().sum(), [x, attn.relative_position_bias_table])
        actual_grads = torch.autograd.grad(actual.square().sum(), [x, attn.relative_position_bias_table])
        for a, e in zip(actual_grads, expected_grads):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('num_scale_tokens', [1, 4])
@pytest.mark.parametrize('shared', [False, True])
def test_scale_attention_equals_multihead_attention(num_scale_tokens, shared):
    torch.manual_seed(0)
    layer = ScaleCrossAttention(24, 3, 1.0)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(0.3 * torch.randn_like(param))
    query = torch.randn(2, 5, 7, 24, requires_grad=True)
    tokens = torch.randn(1 if shared else 2, num_scale_tokens, 24).expand(2, -1, -1)
    if not shared:
        tokens = tokens.contiguous()
    actual = layer.attend(query, tokens)
    params = [query, layer.attn.in_proj_weight, layer.attn.out_proj.weight]
    actual_grads = torch.autograd.grad(actual.square().sum(), params)
    # The reference runs in float64: torch's float32 multi-head attention leaves rounding noise of ~1e-3 in
    # gradients that are exactly zero with one scale token (softmax over one key), on some CPUs (AVX2).
    layer.double()
    params = [query, layer.attn.in_proj_weight, layer.attn.out_proj.weight]
    expected, _ = layer.attn(query.double().flatten(1, 2), tokens.double(), tokens.double(), need_weights=False)
    assert actual.shape == query.shape
    torch.testing.assert_close(actual.flatten(1, 2), expected.float(), rtol=1e-5, atol=1e-5)
    for a, e in zip(actual_grads, torch.autograd.grad(expected.square().sum(), params)):
        torch.testing.assert_close(a, e.float(), rtol=1e-4, atol=1e-4)


def test_onednn_linears_equal_the_modules():
    torch.manual_seed(0)
    layer = nn.Linear(20, 12)
    mlp = Mlp(20, 30, act_layer=nn.ReLU)
    head = nn.Sequential(nn.Linear(20, 20), nn.ReLU(inplace=True), nn.Linear(20, 9), nn.ReLU(inplace=True),
                         nn.Linear(9, 3))
    x = torch.randn(3, 17, 20)
    with torch.no_grad():
        torch.testing.assert_close(fast_linear.linear(layer, x), layer(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast_linear.linear(layer, x, relu=True), layer(x).relu(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast_linear.mlp(mlp, x), mlp(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast_linear.mlp_sequence(head, x), head(x), rtol=1e-5, atol=1e-5)
        for odd in (nn.Sequential(nn.ReLU(), nn.Linear(20, 2)), nn.Sequential(nn.Linear(20, 5), nn.Tanh())):
            torch.testing.assert_close(fast_linear.mlp_sequence(odd, x), odd(x))  # other layouts: the module


@pytest.mark.parametrize('case', ['contiguous', 'transposed input', 'frozen weights', 'input without grad'])
def test_onednn_linears_train_as_the_modules(case):
    """With autograd: the same outputs and the same gradients for the input, weights and biases."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(20, 20), nn.ReLU(inplace=True), nn.Linear(20, 9), nn.ReLU(inplace=True),
                         nn.Linear(9, 3))
    mlp = Mlp(20, 30, act_layer=nn.ReLU)
    no_bias = nn.Linear(20, 6, bias=False)
    if case == 'frozen weights':
        head[2].requires_grad_(False)
    base = torch.randn(3, 20, 17).transpose(1, 2) if case == 'transposed input' else torch.randn(3, 17, 20)
    upstream = [torch.randn(3, 17, n) for n in (3, 20, 6)]
    modules = (head, mlp, no_bias)
    runs = []
    for fast in (False, True):
        x = base.clone().requires_grad_(case != 'input without grad')
        if fast:
            assert fast_linear.onednn_linear_available()
            outs = [fast_linear.mlp_sequence(head, x), fast_linear.mlp(mlp, x), fast_linear.linear(no_bias, x)]
            assert all(type(out.grad_fn).__name__ == '_OneDNNLinearFunctionBackward' for out in outs)
        else:
            outs = [module(x) for module in modules]
        params = [p for module in modules for p in module.parameters() if p.requires_grad]
        inputs = params + ([x] if x.requires_grad else [])
        grads = torch.autograd.grad(sum((out * g).sum() for out, g in zip(outs, upstream)), inputs)
        runs.append((outs, grads))
    for expected, actual in zip(*runs):
        for e, a in zip(expected, actual):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_onednn_switch_off(monkeypatch):
    layer = nn.Linear(8, 4)
    monkeypatch.setattr(fast_linear, '_AVAILABLE', None)
    monkeypatch.setenv('GSASR_ONEDNN_LINEAR', '0')
    assert not fast_linear.onednn_linear_available()
    with torch.no_grad():
        x = torch.randn(5, 8)
        assert torch.equal(fast_linear.linear(layer, x), layer(x))


def test_head_chunks_equal_whole(monkeypatch):
    torch.manual_seed(0)
    net = GSASR(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=16, num_heads=2,
                window_size=4, num_blocks=1, num_layers_per_block=2, gaussian_density=4, num_upsample_stages=1).eval()
    tokens = torch.randn(2, 50, 16)
    with torch.no_grad():
        whole = net.head_outputs(tokens)
        monkeypatch.setattr('gsasr_plugin.archs.gsasr_arch._HEAD_CHUNK', 7)
        chunked = net.head_outputs(tokens)
    expected = [head(tokens) for head in (net.opacity_head, net.color_head, net.sigma_head, net.rho_head,
                                          net.offset_head)]
    for a, b, e in zip(whole, chunked, expected):
        assert a.shape == b.shape == e.shape
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_rope_rotation_is_the_pairwise_rotation(dtype):
    from gsasr_plugin.archs.rope_attention import apply_rotation
    torch.manual_seed(0)
    qkv = torch.randn(3, 10, 3 * 2 * 8, dtype=dtype)
    x = qkv[..., 16:32].unflatten(-1, (2, 8)).transpose(1, 2).requires_grad_()  # strided, as a qkv slice
    angles = torch.randn(2, 10, 4, requires_grad=True)
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = torch.cos(angles), torch.sin(angles)
    expected = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2).to(dtype)
    actual = apply_rotation(x, angles)
    assert actual.dtype == dtype and actual.shape == x.shape
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(actual.float().square().sum(), [x, angles])
    expected_grads = torch.autograd.grad(expected.float().square().sum(), [x, angles])
    for a, e in zip(grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_single_scale_token_shortcut_equals_the_attention():
    torch.manual_seed(0)
    layer = ScaleCrossAttention(24, 3, 1.0)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(0.3 * torch.randn_like(param))
    x, pos = torch.randn(2, 4, 9, 24), torch.randn(1, 4, 9, 24)
    tokens = torch.randn(1, 1, 24).expand(2, -1, -1)
    with torch.no_grad():
        shortcut = layer(x, pos, tokens)
        expected, _ = layer.attn((layer.norm_attn(x) + pos).flatten(1, 2), tokens, tokens, need_weights=False)
        expected = x + expected.view(x.shape)
        expected = expected + layer.mlp(layer.norm_mlp(expected))
    torch.testing.assert_close(shortcut, expected, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # the full path with autograd: the query side gets its (zero) gradients
        x.requires_grad_(True)
        layer(x, pos, tokens).sum().backward()
    assert layer.attn.in_proj_weight.grad is not None and layer.norm_attn.weight.grad is not None


def _small_gsasr(network_class=GSASR, **options):
    torch.manual_seed(0)
    net = network_class(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=16, num_heads=2,
                        window_size=4, num_injection_layers=2, num_blocks=2, num_layers_per_block=2,
                        gaussian_density=4, num_upsample_stages=1, **options).eval()
    for parameter in net.parameters():  # off the initial values, so that every path matters
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    return net


@pytest.mark.parametrize('options', [{}, {'feature_queries': True, 'num_scale_tokens': 1},
                                     {'official': True, 'num_scale_tokens': 1}, {'num_scale_tokens': 3}])
def test_window_chunks_equal_the_whole_layers(options, monkeypatch):
    """Inference runs the window layers chunk of windows by chunk, in place (shifted layers gather their
    windows' rows): the tokens equal those of the whole-map layers (the autograd path) for any chunk size."""
    from gsasr_plugin.official.gsasr_official_arch import GSASROfficial
    options = dict(options)
    net = _small_gsasr(GSASROfficial if options.pop('official', False) else GSASR, **options)
    features = torch.randn(2, 8, 14, 11)  # padded to 16 x 12: 4 x 3 windows per image, two images
    with torch.enable_grad():
        expected = net.lr_tokens(features, (2.5, 3.0)).detach()
    for chunk in (1, 5, 100):
        monkeypatch.setattr('gsasr_plugin.archs.gsasr_arch._WINDOW_CHUNK', chunk)
        with torch.no_grad():
            actual = net.lr_tokens(features, (2.5, 3.0))
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('network, size', [('GSASR', (13, 10)), ('official', (12, 12))])
def test_bands_equal_the_whole_upsampling(network, size):
    """Inference upsamples and decodes the Gaussians band of LR rows by band, each with the rows and columns its
    convolutions see: the field (the window padding's Gaussians included) equals the one of the whole token map,
    whatever the band size."""
    from gsasr_plugin.official.gsasr_official_arch import GSASROfficial
    net = _small_gsasr(GSASROfficial if network == 'official' else GSASR, lr_color_residual=network == 'GSASR')
    net.upsample = torch.nn.Sequential(torch.nn.Conv2d(16, 64, 3, 1, 1), torch.nn.PixelShuffle(2),
                                       torch.nn.Conv2d(16, 64, 5, 1, 2), torch.nn.PixelShuffle(2))
    net.gaussians_per_side = 4
    lq = torch.rand(1, 3, *size)
    with torch.no_grad():
        features = net.encode_features(lq)
        tokens = net.lr_tokens(features.features, (3.0, 3.0))
        whole = net.gaussians_from_tokens(net.upsample(tokens.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), size, lq)
        for band_tokens in (1, 100, 500):
            field = net.gaussians_in_bands(tokens, size, lq, band_tokens=band_tokens)
            for key in ('means', 'sigmas', 'rhos', 'colors', 'opacities'):
                torch.testing.assert_close(getattr(field, key), getattr(whole, key), rtol=1e-5, atol=1e-6)
