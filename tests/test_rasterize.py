"""The rasterizer on the CPU (pure-PyTorch path and compiled CPU kernel, every test on both) against a dense
brute-force sum, its gradients, and input validation."""
import math

import pytest
import torch

from gsasr_plugin.ops import DEFAULT_CUTOFF, cpu_op_available, rasterize_gaussians, use_backend
from gsasr_plugin.ops._torch_impl import rasterize_gaussians_torch

BACKENDS = ['torch'] + (['compiled'] if cpu_op_available() else [])


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request):
    """Every test runs on the pure path and, where it is built, on the compiled CPU kernel."""
    with use_backend(request.param):
        yield request.param


def dense_reference(means, sigmas, rhos, colors, lr_size, out_size, cutoff=DEFAULT_CUTOFF):
    """Every Gaussian evaluated at every output pixel (small sizes only), straight from the contract."""
    height, width = lr_size
    out_h, out_w = out_size
    dtype = means.dtype
    x = (torch.arange(out_w, dtype=dtype) + 0.5) * width / out_w
    y = (torch.arange(out_h, dtype=dtype) + 0.5) * height / out_h
    dx = (x[None, None, None, :] - means[..., 0, None, None]) / sigmas[..., 0, None, None]
    dy = (y[None, None, :, None] - means[..., 1, None, None]) / sigmas[..., 1, None, None]
    rho = rhos[..., None, None]
    q = (dx * dx - 2 * rho * dx * dy + dy * dy) / (1 - rho * rho)
    weights = torch.exp(-q / 2) * (q <= cutoff ** 2)
    return torch.einsum('bnyx,bnc->bcyx', weights, colors)


def random_gaussians(bsz, num, chans, lr_size, sigma_range=(0.05, 1.5), rho_max=0.99, margin=1.0,
                     dtype=torch.float64):
    height, width = lr_size
    span = torch.tensor([width + 2 * margin, height + 2 * margin], dtype=dtype)
    means = torch.rand(bsz, num, 2, dtype=dtype) * span - margin
    lo, hi = sigma_range
    sigmas = torch.rand(bsz, num, 2, dtype=dtype) * (hi - lo) + lo
    rhos = (torch.rand(bsz, num, dtype=dtype) * 2 - 1) * rho_max
    colors = torch.randn(bsz, num, chans, dtype=dtype)
    return means, sigmas, rhos, colors


CASES = {
    'scale1': dict(lr_size=(6, 7), out_size=(6, 7)),
    'non_integer_anisotropic': dict(lr_size=(5, 8), out_size=(13, 11)),
    'downscale': dict(lr_size=(9, 10), out_size=(5, 7)),
    'scale30': dict(lr_size=(2, 3), out_size=(60, 90)),
    'scale4_batch': dict(lr_size=(6, 6), out_size=(24, 24)),
}


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('chans', [1, 3])
def test_matches_dense_sum(name, chans):
    case = CASES[name]
    params = random_gaussians(2, 40, chans, case['lr_size'])
    out = rasterize_gaussians(*params, case['lr_size'], case['out_size'])
    ref = dense_reference(*params, case['lr_size'], case['out_size'])
    assert out.shape == (2, chans) + case['out_size']
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert ref.abs().max() > 0.1  # the case is not trivially empty


@pytest.mark.parametrize('rho', [0.99, -0.99])
def test_extreme_correlation(rho):
    means, sigmas, _, colors = random_gaussians(2, 25, 3, (6, 6), sigma_range=(0.3, 2.0))
    rhos = torch.full(means.shape[:2], rho, dtype=torch.float64)
    out = rasterize_gaussians(means, sigmas, rhos, colors, (6, 6), (17, 23))
    torch.testing.assert_close(out, dense_reference(means, sigmas, rhos, colors, (6, 6), (17, 23)),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('sigma', [0.05, 3.0])
def test_tiny_and_large_sigmas(sigma):
    means, _, rhos, colors = random_gaussians(2, 20, 3, (5, 6))
    sigmas = torch.full_like(means, sigma)
    out = rasterize_gaussians(means, sigmas, rhos, colors, (5, 6), (23, 27))
    ref = dense_reference(means, sigmas, rhos, colors, (5, 6), (23, 27))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_centres_outside_image_still_contribute():
    means = torch.tensor([[[-1.0, 2.0], [8.5, -0.7], [3.0, 9.0], [40.0, 40.0]]], dtype=torch.float64)
    sigmas = torch.full((1, 4, 2), 0.8, dtype=torch.float64)
    rhos = torch.tensor([[0.3, -0.5, 0.0, 0.2]], dtype=torch.float64)
    colors = torch.ones(1, 4, 2, dtype=torch.float64)
    out = rasterize_gaussians(means, sigmas, rhos, colors, (6, 8), (15, 19))
    ref = dense_reference(means, sigmas, rhos, colors, (6, 8), (15, 19))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert out.abs().sum() > 0


def test_single_gaussian_peak_and_cutoff():
    # a Gaussian centred on output pixel (2, 3) at scale 1 has weight 1 there and 0 beyond the cutoff
    means = torch.tensor([[[3.5, 2.5]]])
    sigmas = torch.tensor([[[1.0, 1.0]]])
    out = rasterize_gaussians(means, sigmas, torch.zeros(1, 1), torch.ones(1, 1, 1), (8, 12), (8, 12), cutoff=2.5)
    assert out[0, 0, 2, 3] == pytest.approx(1.0)
    assert out[0, 0, 2, 5] == pytest.approx(math.exp(-2.0))  # q = 4 <= 6.25
    assert out[0, 0, 2, 6] == 0.0  # q = 9 > 6.25
    assert out[0, 0, 2, 0] == 0.0


def test_cutoff_none_is_the_default():
    params = random_gaussians(1, 20, 3, (5, 5))
    assert torch.equal(rasterize_gaussians(*params, (5, 5), (9, 11), cutoff=None),
                       rasterize_gaussians(*params, (5, 5), (9, 11), cutoff=DEFAULT_CUTOFF))


def test_float32_matches_float64_and_keeps_dtype():
    params = random_gaussians(2, 60, 3, (8, 8))
    out64 = rasterize_gaussians(*params, (8, 8), (20, 28))
    out32 = rasterize_gaussians(*[p.float() for p in params], (8, 8), (20, 28))
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)


def test_batch_equals_loop():
    params = random_gaussians(3, 30, 3, (6, 7))
    out = rasterize_gaussians(*params, (6, 7), (14, 15))
    for b in range(3):
        single = rasterize_gaussians(*[p[b:b + 1] for p in params], (6, 7), (14, 15))
        torch.testing.assert_close(out[b:b + 1], single, rtol=1e-12, atol=1e-12)


def test_chunking_does_not_change_result(monkeypatch, backend):
    if backend != 'torch':
        pytest.skip('chunking is the pure path\'s')
    from gsasr_plugin.ops import _torch_impl
    params = random_gaussians(2, 50, 3, (6, 6), sigma_range=(0.2, 2.0))
    ref = rasterize_gaussians(*params, (6, 6), (21, 21))
    monkeypatch.setattr(_torch_impl, '_CHUNK_ELEMENTS', 64)
    torch.testing.assert_close(rasterize_gaussians(*params, (6, 6), (21, 21)), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('out_size', [(7, 9), (11, 17), (40, 40)])
def test_gradcheck_float64(out_size):
    params = random_gaussians(2, 6, 2, (4, 5), sigma_range=(0.3, 1.2), rho_max=0.9)
    inputs = [p.clone().requires_grad_() for p in params]
    assert torch.autograd.gradcheck(lambda *p: rasterize_gaussians(*p, (4, 5), out_size), inputs,
                                    eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gradients_match_autograd_of_dense_sum():
    params = random_gaussians(2, 30, 3, (6, 6), sigma_range=(0.1, 2.5), rho_max=0.99)
    weights = torch.randn(2, 3, 19, 26, dtype=torch.float64)
    a = [p.clone().requires_grad_() for p in params]
    b = [p.clone().requires_grad_() for p in params]
    (rasterize_gaussians(*a, (6, 6), (19, 26)) * weights).sum().backward()
    (dense_reference(*b, (6, 6), (19, 26)) * weights).sum().backward()
    for name, x, y in zip(('means', 'sigmas', 'rhos', 'colors'), a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-8, atol=1e-8, msg=name)


def test_empty_and_invisible_gaussians_give_zero_output_and_gradient():
    means = torch.full((1, 3, 2), -50.0, requires_grad=True)
    sigmas = torch.ones(1, 3, 2, requires_grad=True)
    colors = torch.ones(1, 3, 3, requires_grad=True)
    out = rasterize_gaussians(means, sigmas, torch.zeros(1, 3), colors, (4, 4), (8, 8))
    assert out.abs().sum() == 0
    out.sum().backward()
    assert means.grad.abs().sum() == 0 and colors.grad.abs().sum() == 0
    empty = rasterize_gaussians(torch.zeros(2, 0, 2), torch.ones(2, 0, 2), torch.zeros(2, 0), torch.zeros(2, 0, 3),
                                (4, 4), (5, 6))
    assert empty.shape == (2, 3, 5, 6) and empty.abs().sum() == 0


def test_half_inputs_return_colors_dtype():
    params = [p.float() for p in random_gaussians(1, 10, 3, (4, 4))]
    out = rasterize_gaussians(*params[:3], params[3].bfloat16(), (4, 4), (8, 8))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), rasterize_gaussians_torch(*params, (4, 4), (8, 8)), rtol=2e-2, atol=2e-2)


def _good():
    return [torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2), torch.ones(1, 2, 3)]


@pytest.mark.parametrize('index,bad,exc,word', [
    (0, torch.zeros(1, 2, 3), ValueError, 'means'),
    (1, torch.ones(1, 3, 2), ValueError, 'sigmas'),
    (1, -torch.ones(1, 2, 2), ValueError, 'sigmas'),
    (1, torch.zeros(1, 2, 2), ValueError, 'sigmas'),
    (2, torch.ones(1, 2), ValueError, 'rhos'),
    (2, torch.zeros(1, 3), ValueError, 'rhos'),
    (3, torch.ones(1, 2), ValueError, 'colors'),
    (3, torch.ones(1, 2, 3, dtype=torch.long), TypeError, 'colors'),
    (0, [[0.0, 0.0]], TypeError, 'means'),
    (0, torch.tensor([[[0.0, float('nan')], [0.0, 0.0]]]), ValueError, 'means'),
    (0, torch.tensor([[[0.0, float('inf')], [0.0, 0.0]]]), ValueError, 'means'),
    (1, torch.tensor([[[1.0, float('inf')], [1.0, 1.0]]]), ValueError, 'sigmas'),
    (2, torch.tensor([[0.0, float('nan')]]), ValueError, 'rhos'),
])
def test_bad_tensors_name_the_argument(index, bad, exc, word):
    args = _good()
    args[index] = bad
    with pytest.raises(exc, match=word):
        rasterize_gaussians(*args, (4, 4), (8, 8))


@pytest.mark.parametrize('lr_size,out_size,exc,word', [
    ((0, 4), (8, 8), ValueError, 'lr_size'),
    ((4, 4), (8, -1), ValueError, 'out_size'),
    ((4, 4.5), (8, 8), TypeError, 'lr_size'),
    ((4, 4), (8,), TypeError, 'out_size'),
])
def test_bad_sizes_name_the_argument(lr_size, out_size, exc, word):
    with pytest.raises(exc, match=word):
        rasterize_gaussians(*_good(), lr_size, out_size)


def test_bad_cutoff_and_devices():
    with pytest.raises(ValueError, match='cutoff'):
        rasterize_gaussians(*_good(), (4, 4), (8, 8), cutoff=0)
    with pytest.raises(ValueError, match='cutoff'):
        rasterize_gaussians(*_good(), (4, 4), (8, 8), cutoff=float('inf'))
    args = _good()
    args[2] = torch.zeros(1, 2, device='meta')
    with pytest.raises(ValueError, match='rhos'):
        rasterize_gaussians(*args, (4, 4), (8, 8))
