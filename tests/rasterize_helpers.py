"""Shared by the compiled-rasterizer tests (CPU kernel and CUDA): random Gaussians and a float32-vs-float64 comparison
that leaves out pixels within rounding of a footprint boundary."""
import torch

from gsasr_plugin.ops import rasterize_gaussians, use_backend
from gsasr_plugin.ops import _torch_impl
from gsasr_plugin.ops._torch_impl import rasterize_gaussians_torch

# The (LR size, output size) cases of the GPU tests (test_rasterize_cuda.py) and of their host-executed twin
# (test_cuda_on_host.py), kept in one list so that both check the same cases.
CASE_SIZES = [
    ((8, 8), (8, 8)),          # s = 1
    ((12, 10), (31, 47)),      # non-integer, anisotropic
    ((48, 48), (192, 192)),    # the x4 training crop
    ((3, 4), (90, 120)),       # s = 30
    ((20, 16), (9, 7)),        # downscale
    ((17, 23), (33, 70)),      # sizes that are not tile multiples
]


def make(bsz, num, chans, lr_size, sigma_range=(0.05, 2.0), rho_max=0.99, margin=2.0, seed=0):
    """(means, sigmas, rhos, colors) float32, means up to ``margin`` LR pixels outside the image."""
    gen = torch.Generator().manual_seed(seed)
    height, width = lr_size
    span = torch.tensor([width + 2 * margin, height + 2 * margin])
    means = torch.rand(bsz, num, 2, generator=gen) * span - margin
    lo, hi = sigma_range
    sigmas = torch.rand(bsz, num, 2, generator=gen) * (hi - lo) + lo
    rhos = (torch.rand(bsz, num, generator=gen) * 2 - 1) * rho_max
    colors = torch.randn(bsz, num, chans, generator=gen)
    return [means, sigmas, rhos, colors]


def assert_rel_close(actual, expected, rel, name=''):
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f'{name}: max error {err:.3e} > {rel} * {scale:.3e}'


def _footprint_at(cutoff, box_half_size, mode, factor):
    """The footprint keywords with the boundary moved by ``factor`` (for finding rounding-sensitive pixels)."""
    if mode == 'gsplat_sum':
        return {'mode': mode}
    if box_half_size is not None:
        return {'box_half_size': tuple(h * factor for h in box_half_size)}
    return {'cutoff': cutoff * factor}


def compare(params, lr_size, out_size, device, cutoff=3.5, fwd_rel=1e-5, grad_rel=1e-3, box_half_size=None,
            mode='sum', opacities=None, reference=None):
    """The compiled op on ``device`` (float32) against the float64 pure path (or ``reference``, a callable
    taking (tensors, keywords) and returning the output to compare with, for kernel-vs-kernel checks)."""
    kwargs = _footprint_at(cutoff, box_half_size, mode, 1.0)
    names = ['means', 'sigmas', 'rhos', 'colors'] + (['opacities'] if opacities is not None else [])
    tensors = list(params) + ([opacities] if opacities is not None else [])
    cpu = [p.double().clone().requires_grad_() for p in tensors]
    dev = [p.to(device).float().clone().requires_grad_() for p in tensors]

    def call(fn, args, **kw):
        extra = {'opacities': args[4]} if len(args) > 4 else {}
        return fn(*args[:4], lr_size, out_size, **kw, **extra)

    if reference is None:
        ref = call(rasterize_gaussians_torch, cpu, **kwargs)
    else:
        ref = reference(cpu, kwargs)
    with use_backend('compiled'):
        out = call(rasterize_gaussians, dev, **kwargs)
    assert out.device.type == torch.device(device).type and out.dtype == torch.float32
    # pixels within rounding of a footprint boundary (q near cutoff^2, a box edge, a weight near 1/255) may
    # legitimately differ between float32 and float64
    doubles = [p.double() for p in tensors]
    with torch.no_grad():
        if mode == 'gsplat_sum':
            alpha_min = _torch_impl.GSPLAT_ALPHA_MIN
            try:
                _torch_impl.GSPLAT_ALPHA_MIN = alpha_min * (1 - 1e-4)
                inner = call(rasterize_gaussians_torch, doubles, **kwargs)
                _torch_impl.GSPLAT_ALPHA_MIN = alpha_min * (1 + 1e-4)
                outer = call(rasterize_gaussians_torch, doubles, **kwargs)
            finally:
                _torch_impl.GSPLAT_ALPHA_MIN = alpha_min
        else:
            inner = call(rasterize_gaussians_torch, doubles, **_footprint_at(cutoff, box_half_size, mode, 1 - 1e-5))
            outer = call(rasterize_gaussians_torch, doubles, **_footprint_at(cutoff, box_half_size, mode, 1 + 1e-5))
    stable = torch.isclose(inner, outer, rtol=1e-12, atol=1e-12)
    assert stable.float().mean() > 0.99
    assert_rel_close(torch.where(stable, out.detach().cpu().double(), 0), torch.where(stable, ref.detach().cpu(), 0),
                     fwd_rel, 'forward')
    weights = torch.randn(ref.shape, dtype=torch.float64)
    (ref * weights.to(ref.device, ref.dtype)).sum().backward()
    (out * weights.float().to(device)).sum().backward()
    for name, a, b in zip(names, dev, cpu):
        assert_rel_close(a.grad.cpu(), b.grad.cpu(), grad_rel, name)
    return out
