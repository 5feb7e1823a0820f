"""The compiled CUDA rasterizer against the pure-PyTorch path and the compiled CPU kernel (skipped without a GPU or
without the op)."""
import pytest
import torch

from gsasr_plugin.ops import cpu_op_available, cuda_op_available, rasterize_gaussians, use_backend
from gsasr_plugin.ops._torch_impl import rasterize_gaussians_torch
from rasterize_helpers import CASE_SIZES, assert_rel_close, make
from rasterize_helpers import compare as compare_on

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU'),
    pytest.mark.skipif(not cuda_op_available(), reason='gsasr_plugin.ops._C is not built '
                       '(GSASR_BUILD_CUDA=1 pip install --no-build-isolation -e .)'),
]


def compare(params, lr_size, out_size, **kwargs):
    return compare_on(params, lr_size, out_size, 'cuda', **kwargs)


@pytest.mark.parametrize('lr_size,out_size', CASE_SIZES)
@pytest.mark.parametrize('chans', [1, 3, 11])
def test_matches_pure_path(lr_size, out_size, chans):
    params = make(2, 300, chans, lr_size)
    # at x30 a Gaussian covers ~1e5 pixels: float32 sums of signed moments lose ~1e-3 of the largest gradient
    compare(params, lr_size, out_size, grad_rel=5e-3 if out_size[0] > 10 * lr_size[0] else 1e-3)


@pytest.mark.parametrize('sigma', [0.05, 3.0])
@pytest.mark.parametrize('rho', [0.99, -0.99, 0.0])
def test_extreme_sigmas_and_correlations(sigma, rho):
    params = make(2, 100, 3, (10, 10))
    params[1] = torch.full_like(params[1], sigma)
    params[2] = torch.full_like(params[2], rho)
    compare(params, (10, 10), (37, 41), fwd_rel=2e-4)


def test_batch_equals_loop():
    params = [p.cuda() for p in make(4, 500, 3, (16, 16))]
    out = rasterize_gaussians(*params, (16, 16), (50, 61))
    for b in range(4):
        single = rasterize_gaussians(*[p[b:b + 1] for p in params], (16, 16), (50, 61))
        torch.testing.assert_close(out[b:b + 1], single, rtol=1e-6, atol=1e-6)


def test_empty_tiles_and_far_away_gaussians():
    # all Gaussians in the top-left corner or far outside: most tiles get no Gaussian at all
    params = make(2, 200, 3, (4, 4), sigma_range=(0.1, 0.5), margin=0.0)
    far = make(2, 50, 3, (4, 4))
    far[0] = far[0] + torch.tensor([1e4, -1e4])
    params = [torch.cat([a, b], 1) for a, b in zip(params, far)]
    compare(params, (64, 64), (256, 256))
    out = rasterize_gaussians(*[p.cuda() for p in params], (64, 64), (256, 256))
    assert out[:, :, 32:, :].abs().max() == 0 and out[:, :, :, 32:].abs().max() == 0


def test_no_gaussians_and_all_invisible():
    empty = rasterize_gaussians(torch.zeros(2, 0, 2, device='cuda'), torch.ones(2, 0, 2, device='cuda'),
                                torch.zeros(2, 0, device='cuda'), torch.zeros(2, 0, 3, device='cuda'), (4, 4), (9, 9))
    assert empty.shape == (2, 3, 9, 9) and empty.abs().sum() == 0
    means = torch.full((1, 5, 2), -100.0, device='cuda', requires_grad=True)
    out = rasterize_gaussians(means, torch.ones(1, 5, 2, device='cuda'), torch.zeros(1, 5, device='cuda'),
                              torch.ones(1, 5, 3, device='cuda'), (4, 4), (9, 9))
    out.sum().backward()
    assert out.abs().sum() == 0 and means.grad.abs().sum() == 0


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_half_inputs(dtype):
    params = [p.cuda() for p in make(2, 400, 3, (12, 12), sigma_range=(0.2, 1.0))]
    half = [p.to(dtype).requires_grad_() for p in params]
    with torch.autocast('cuda', dtype=dtype):
        out = rasterize_gaussians(*half, (12, 12), (40, 40))
    assert out.dtype == dtype
    ref = rasterize_gaussians(*[p.to(dtype).float() for p in params], (12, 12), (40, 40))
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()))
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == dtype and torch.isfinite(p.grad.float()).all() for p in half)


def test_double_inputs_on_cuda_compute_in_float32_and_return_colors_dtype():
    params = [p.cuda().double() for p in make(1, 50, 3, (6, 6))]
    out = rasterize_gaussians(*params, (6, 6), (13, 13))
    assert out.dtype == torch.float64
    ref = rasterize_gaussians_torch(*[p.cpu() for p in params], (6, 6), (13, 13))
    assert_rel_close(out.cpu(), ref, 1e-5)


def test_large_gaussians_at_large_scale():
    params = make(1, 20, 3, (4, 4), sigma_range=(2.0, 3.0))
    compare(params, (4, 4), (120, 120))


def test_deterministic_backward():
    params = [p.cuda().requires_grad_() for p in make(2, 300, 3, (10, 10))]
    grads = []
    for _ in range(2):
        for p in params:
            p.grad = None
        rasterize_gaussians(*params, (10, 10), (37, 37)).square().sum().backward()
        grads.append([p.grad.clone() for p in params])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize('lr_size,out_size,half', [
    ((12, 10), (31, 47), (0.8, 1.3)),
    ((48, 48), (192, 192), (1.2, 1.2)),
    ((3, 4), (90, 120), (0.5, 2.0)),
    ((20, 16), (9, 7), (3.0, 0.0)),
])
def test_box_mode_matches_pure_path(lr_size, out_size, half):
    compare(make(2, 300, 3, lr_size), lr_size, out_size, box_half_size=half)


@pytest.mark.parametrize('lr_size,out_size', [((12, 10), (31, 47)), ((48, 48), (192, 192)), ((3, 4), (90, 120)),
                                              ((20, 16), (9, 7)), ((17, 23), (33, 70))])
@pytest.mark.parametrize('chans', [3, 11])
def test_gsplat_mode_matches_pure_path(lr_size, out_size, chans):
    params = make(2, 300, chans, lr_size, sigma_range=(0.05, 1.0))
    opacities = torch.rand(2, 300, generator=torch.Generator().manual_seed(1)) * 1.2
    compare(params, lr_size, out_size, mode='gsplat_sum', opacities=opacities, grad_rel=3e-3)


def test_gsplat_mode_tile_cap_on_crowded_tiles():
    # 2000 Gaussians on 4x4 LR pixels at x4: every tile holds far more than 256
    params = make(2, 2000, 3, (4, 4), sigma_range=(0.1, 0.6), margin=0.0)
    compare(params, (4, 4), (16 * 4, 16 * 4), mode='gsplat_sum', grad_rel=3e-3)
    out = rasterize_gaussians(*[p.cuda() for p in params], (4, 4), (64, 64), mode='gsplat_sum')
    loop = torch.cat([rasterize_gaussians(*[p[b:b + 1].cuda() for p in params], (4, 4), (64, 64), mode='gsplat_sum')
                      for b in range(2)])
    torch.testing.assert_close(out, loop, rtol=1e-6, atol=1e-6)


# --- CUDA against the CPU kernel: the same arithmetic (rasterize_math.h) on both sides, float32 both ----------

def cpu_kernel(lr_size, out_size):
    def run(tensors, kwargs):
        extra = {'opacities': tensors[4].float()} if len(tensors) > 4 else {}
        with use_backend('compiled'):
            return rasterize_gaussians(*[t.float() for t in tensors[:4]], lr_size, out_size, **kwargs, **extra)
    return run


@pytest.mark.skipif(not cpu_op_available(), reason='needs the CPU kernel too')
@pytest.mark.parametrize('kwargs', [{}, {'box_half_size': (1.2, 0.7)}, {'mode': 'gsplat_sum'}])
@pytest.mark.parametrize('lr_size,out_size', [((12, 10), (31, 47)), ((48, 48), (192, 192)), ((3, 4), (90, 120)),
                                              ((20, 16), (9, 7))])
def test_cuda_matches_cpu_kernel(kwargs, lr_size, out_size):
    params = make(2, 600, 3, lr_size, sigma_range=(0.05, 1.5))
    opacities = torch.rand(2, 600, generator=torch.Generator().manual_seed(2)) if kwargs.get('mode') else None
    compare(params, lr_size, out_size, opacities=opacities, grad_rel=3e-3, reference=cpu_kernel(lr_size, out_size),
            **kwargs)
