"""The CUDA rasterizer's own source (``ops/csrc/rasterize.cu``: kernels and launcher) executed on the CPU, thread by
thread, by the test-only execution layer in ``tests/cuda_host`` (see ``cuda_on_host.py``): no GPU needed.

* every case ``test_rasterize_cuda.py`` checks on a GPU, through the package's own wrapper (float32, as on CUDA);
* against the CPU kernel built with the same flags: forward bit-equal (the same per-pixel order), the auxiliary
  outputs equal, backward within float32 summation-order noise;
* the boundaries: tiles holding more Gaussians than one shared-memory batch, more channels than the colour chunks,
  empty tiles, boxes on the canvas edges, batch > 1, gsplat's 256 cap, each backward group width;
* results independent of the order the threads run in; finite differences; the execution layer's own semantics.
"""
import math
import shutil

import pytest
import torch

from gsasr_plugin.ops import _compiled as compiled_module
from gsasr_plugin.ops import rasterize_gaussians, use_backend
from gsasr_plugin.ops._ext_impl import FOOTPRINT_CODES
from cuda_on_host import csrc_dir, load_cuda_on_host, module_name
from rasterize_helpers import CASE_SIZES, assert_rel_close, make
from rasterize_helpers import compare as compare_on

TILE = 16
FOOTPRINTS = {'ellipse': {}, 'box': {'box_half_size': (1.2, 0.7)}, 'gsplat': {'mode': 'gsplat_sum'}}


@pytest.fixture(scope='module')
def host():
    module = load_cuda_on_host()
    module.set_schedule('random', 0x5eed)
    module.set_os_threads(False)
    return module


class HostAsDevice:
    """Stands in for ``gsasr_plugin.ops._C``: the host-built CUDA launchers behind the package's own wrapper, in
    float32 whatever the inputs' dtype, as the wrapper does for CUDA tensors."""

    def __init__(self, module):
        self.module = module

    @staticmethod
    def has_cuda():
        return True

    def forward(self, means, sigmas, rhos, colors, opacities, *rest):
        dtype = means.dtype
        out, *aux = self.module.forward(*(t.float().contiguous() for t in (means, sigmas, rhos, colors, opacities)),
                                        *rest)
        return [out.to(dtype)] + aux

    def backward(self, means, sigmas, rhos, colors, opacities, grad_out, boxes, slot_starts, allowed, *rest):
        dtype = means.dtype
        tensors = (means, sigmas, rhos, colors, opacities, grad_out)
        grads = self.module.backward(*(t.float().contiguous() for t in tensors), boxes, slot_starts, allowed, *rest)
        return [g.to(dtype) for g in grads]


@pytest.fixture
def on_host(host, monkeypatch):
    """Within the test, ``rasterize_gaussians`` on CPU tensors runs the host-built CUDA kernels."""
    proxy = HostAsDevice(host)
    monkeypatch.setattr(compiled_module, '_module', proxy)
    monkeypatch.setattr(compiled_module, '_tried', True)
    return proxy


def compare(params, lr_size, out_size, **kwargs):
    return compare_on(params, lr_size, out_size, 'cpu', **kwargs)


# --- against the CPU kernel built with the same flags ------------------------------------------------------------

def run_kernels(host, params, lr_size, out_size, footprint, opacities=None, cutoff=3.5, half=(1.2, 0.7),
                mean_area=None, grad_seed=3):
    """Forward and backward of the host-executed CUDA kernels and of the CPU kernel on the same float32 inputs.
    Returns (cuda forward outputs, cpu forward outputs, cuda grads, cpu grads)."""
    code = FOOTPRINT_CODES[footprint]
    means, sigmas, rhos, colors = [p.float().contiguous() for p in params]
    if opacities is None:
        opacities = torch.rand(means.shape[:2], generator=torch.Generator().manual_seed(2)) * 1.2 \
            if footprint == 'gsplat' else torch.empty(0)
    inputs = [means, sigmas, rhos, colors, opacities.float().contiguous()]
    shape = [*lr_size, *out_size, code, cutoff, *half]
    fwd = host.forward(*inputs, *shape)
    ref = host.cpu_forward(*inputs, *shape)
    grad_out = torch.randn(ref[0].shape, generator=torch.Generator().manual_seed(grad_seed))
    if mean_area is None:
        mean_area = float(ref[4][1]) / max(1, means.shape[0] * means.shape[1])
    bwd_shape = [*lr_size, code, cutoff, *half]
    grads = host.backward(*inputs, grad_out, *fwd[1:4], *bwd_shape, mean_area)
    ref_grads = host.cpu_backward(*inputs, grad_out, *ref[1:4], *bwd_shape)
    return fwd, ref, grads, ref_grads


# The backward sums each Gaussian's pixels in another order than the CPU kernel (GROUP lanes striding the box,
# then a shuffle tree; the CPU: 16-pixel rows, then the lanes in turn): float32 noise, here relative to the largest
# gradient of the tensor, for boxes of up to 256 pixels, growing like the square root of the pixels summed beyond.
# The geometry gradients combine moments that cancel (most of all rho's), which magnifies that noise.
GRAD_REL = {'means': 5e-6, 'sigmas': 5e-6, 'rhos': 3e-5, 'colors': 1e-6, 'opacities': 1e-6}


def assert_kernels_agree(fwd, ref, grads, ref_grads):
    assert torch.equal(fwd[0], ref[0]), f'forward differs by {(fwd[0] - ref[0]).abs().max():.3e}'
    for name, a, b in zip(('boxes', 'slot_starts', 'allowed', 'stats'), fwd[1:], ref[1:]):
        assert torch.equal(a, b), name
    boxes = fwd[1].long()
    areas = ((boxes[:, 2] - boxes[:, 0] + 1).clamp(min=0) * (boxes[:, 3] - boxes[:, 1] + 1).clamp(min=0))
    growth = max(1.0, math.sqrt(float(areas.max()) / 256)) if areas.numel() else 1.0
    for name, a, b in zip(GRAD_REL, grads, ref_grads):
        assert a.shape == b.shape, name
        if b.numel():
            assert torch.isfinite(a).all(), name
            assert_rel_close(a, b, GRAD_REL[name] * growth, name)


# --- the cases test_rasterize_cuda.py checks on a GPU, against the CPU kernel ------------------------------------

@pytest.mark.parametrize('lr_size,out_size', CASE_SIZES)
@pytest.mark.parametrize('chans', [1, 3, 11])
def test_cuda_on_host_gpu_cases_sum(host, lr_size, out_size, chans):
    assert_kernels_agree(*run_kernels(host, make(2, 300, chans, lr_size), lr_size, out_size, 'ellipse'))


@pytest.mark.parametrize('sigma', [0.05, 3.0])
@pytest.mark.parametrize('rho', [0.99, -0.99, 0.0])
def test_cuda_on_host_extreme_sigmas_and_correlations(host, sigma, rho):
    params = make(2, 100, 3, (10, 10))
    params[1] = torch.full_like(params[1], sigma)
    params[2] = torch.full_like(params[2], rho)
    for footprint in FOOTPRINTS:
        assert_kernels_agree(*run_kernels(host, params, (10, 10), (37, 41), footprint))


@pytest.mark.parametrize('lr_size,out_size,half', [
    ((12, 10), (31, 47), (0.8, 1.3)),
    ((48, 48), (192, 192), (1.2, 1.2)),
    ((3, 4), (90, 120), (0.5, 2.0)),
    ((20, 16), (9, 7), (3.0, 0.0)),
])
def test_cuda_on_host_gpu_cases_box(host, lr_size, out_size, half):
    assert_kernels_agree(*run_kernels(host, make(2, 300, 3, lr_size), lr_size, out_size, 'box', half=half))


@pytest.mark.parametrize('lr_size,out_size', CASE_SIZES[1:])
@pytest.mark.parametrize('chans', [3, 11])
def test_cuda_on_host_gpu_cases_gsplat(host, lr_size, out_size, chans):
    params = make(2, 300, chans, lr_size, sigma_range=(0.05, 1.0))
    opacities = torch.rand(2, 300, generator=torch.Generator().manual_seed(1)) * 1.2
    assert_kernels_agree(*run_kernels(host, params, lr_size, out_size, 'gsplat', opacities=opacities))


def test_cuda_on_host_gsplat_tile_cap_on_crowded_tiles(host):
    # 2000 Gaussians on 4x4 LR pixels at x4: every tile holds far more than 256, of which gsplat reads 256
    params = make(2, 2000, 3, (4, 4), sigma_range=(0.1, 0.6), margin=0.0)
    fwd, *rest = run_kernels(host, params, (4, 4), (64, 64), 'gsplat')
    assert tile_counts(fwd[1][:2000], (64, 64)).min() > 256
    allowed = fwd[3]
    assert 0 < allowed.sum() < allowed.numel()
    assert_kernels_agree(fwd, *rest)
    opacities = torch.rand(2, 2000, generator=torch.Generator().manual_seed(2)) * 1.2
    for b in range(2):
        single = host.forward(*[p[b:b + 1].contiguous() for p in params], opacities[b:b + 1].contiguous(),
                              4, 4, 64, 64, FOOTPRINT_CODES['gsplat'], 3.5, 1.2, 0.7)
        assert torch.equal(single[0], fwd[0][b:b + 1])


def test_cuda_on_host_large_gaussians_at_large_scale(host):
    for footprint in FOOTPRINTS:
        params = make(1, 20, 3, (4, 4), sigma_range=(2.0, 3.0))
        assert_kernels_agree(*run_kernels(host, params, (4, 4), (120, 120), footprint))


# --- through the package's wrapper (autograd, dtypes), against the float64 pure path ------------------------------

@pytest.mark.parametrize('kwargs', [{}, {'box_half_size': (0.8, 1.3)}, {'mode': 'gsplat_sum'}])
def test_cuda_on_host_wrapper_matches_pure_path(on_host, kwargs):
    params = make(2, 300, 3, (12, 10), sigma_range=(0.05, 1.5))
    opacities = torch.rand(2, 300, generator=torch.Generator().manual_seed(1)) * 1.2 if kwargs.get('mode') else None
    compare(params, (12, 10), (31, 47), opacities=opacities, grad_rel=3e-3, **kwargs)


def test_cuda_on_host_batch_equals_loop(on_host):
    params = make(4, 500, 3, (16, 16))
    with use_backend('compiled'):
        out = rasterize_gaussians(*params, (16, 16), (50, 61))
        for b in range(4):
            single = rasterize_gaussians(*[p[b:b + 1] for p in params], (16, 16), (50, 61))
            assert torch.equal(out[b:b + 1], single)


def test_cuda_on_host_empty_tiles_and_far_away_gaussians(on_host):
    params = make(2, 200, 3, (4, 4), sigma_range=(0.1, 0.5), margin=0.0)
    far = make(2, 50, 3, (4, 4))
    far[0] = far[0] + torch.tensor([1e4, -1e4])
    params = [torch.cat([a, b], 1) for a, b in zip(params, far)]
    compare(params, (64, 64), (256, 256))
    with use_backend('compiled'):
        out = rasterize_gaussians(*params, (64, 64), (256, 256))
    assert out[:, :, 32:, :].abs().max() == 0 and out[:, :, :, 32:].abs().max() == 0


def test_cuda_on_host_no_gaussians_and_all_invisible(on_host):
    with use_backend('compiled'):
        empty = rasterize_gaussians(torch.zeros(2, 0, 2), torch.ones(2, 0, 2), torch.zeros(2, 0),
                                    torch.zeros(2, 0, 3), (4, 4), (9, 9))
        assert empty.shape == (2, 3, 9, 9) and empty.abs().sum() == 0
        means = torch.full((1, 5, 2), -100.0, requires_grad=True)
        out = rasterize_gaussians(means, torch.ones(1, 5, 2), torch.zeros(1, 5), torch.ones(1, 5, 3), (4, 4), (9, 9))
        out.sum().backward()
    assert out.abs().sum() == 0 and means.grad.abs().sum() == 0


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_cuda_on_host_half_inputs(on_host, dtype):
    params = make(2, 400, 3, (12, 12), sigma_range=(0.2, 1.0))
    half = [p.to(dtype).requires_grad_() for p in params]
    with use_backend('compiled'), torch.autocast('cpu', dtype=torch.bfloat16):
        out = rasterize_gaussians(*half, (12, 12), (40, 40))
    assert out.dtype == dtype
    with use_backend('compiled'):
        ref = rasterize_gaussians(*[p.to(dtype).float() for p in params], (12, 12), (40, 40))
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()))
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == dtype and torch.isfinite(p.grad.float()).all() for p in half)


def test_cuda_on_host_double_inputs_compute_in_float32(on_host):
    params = [p.double() for p in make(1, 50, 3, (6, 6))]
    with use_backend('compiled'):
        out = rasterize_gaussians(*params, (6, 6), (13, 13))
    assert out.dtype == torch.float64
    with use_backend('torch'):
        ref = rasterize_gaussians(*params, (6, 6), (13, 13))
    assert_rel_close(out, ref, 1e-5)
    assert not torch.equal(out, ref)  # float32 arithmetic, as on CUDA


@pytest.mark.parametrize('footprint', list(FOOTPRINTS))
@pytest.mark.parametrize('lr_size,out_size', [((12, 10), (31, 47)), ((48, 48), (192, 192)), ((3, 4), (90, 120)),
                                              ((20, 16), (9, 7))])
def test_cuda_on_host_matches_cpu_kernel(host, footprint, lr_size, out_size):
    params = make(2, 600, 3, lr_size, sigma_range=(0.05, 1.5))
    assert_kernels_agree(*run_kernels(host, params, lr_size, out_size, footprint))


def tile_counts(boxes, out_size):
    """Gaussians per (image-independent) output tile, from the forward's (B*N, 4) boxes."""
    tiles_y, tiles_x = (out_size[0] + TILE - 1) // TILE, (out_size[1] + TILE - 1) // TILE
    counts = torch.zeros(tiles_y, tiles_x, dtype=torch.long)
    for x0, y0, x1, y1 in boxes.tolist():
        if x0 <= x1 and y0 <= y1:
            counts[y0 // TILE:y1 // TILE + 1, x0 // TILE:x1 // TILE + 1] += 1
    return counts


@pytest.mark.parametrize('footprint', ['ellipse', 'box'])
def test_cuda_on_host_tiles_beyond_one_shared_memory_batch(host, footprint):
    # 700 Gaussians in the top-left quarter of a 4x4 LR image at x8: its tile lists 3 batches of 256 (sh_*
    # reloaded between them), the others one
    params = make(1, 700, 3, (2, 2), sigma_range=(0.1, 0.5), margin=0.0)
    fwd, *rest = run_kernels(host, params, (4, 4), (32, 32), footprint)
    counts = tile_counts(fwd[1], (32, 32))
    assert counts.max() > 2 * 256 and counts.min() < 256, counts
    assert_kernels_agree(fwd, *rest)


@pytest.mark.parametrize('chans', [4, 5, 8, 9, 17])
def test_cuda_on_host_more_channels_than_the_chunks(host, chans):
    # forward: 4 colours per shared-memory pass; backward: 8 colour gradients per register pass
    params = make(2, 300, chans, (12, 10), sigma_range=(0.1, 1.5))
    footprint = ['ellipse', 'box', 'gsplat'][chans % 3]
    assert_kernels_agree(*run_kernels(host, params, (12, 10), (40, 35), footprint))


@pytest.mark.parametrize('footprint', list(FOOTPRINTS))
def test_cuda_on_host_boxes_on_the_canvas_edges(host, footprint):
    # centres on the edges and corners of a 9x7 LR image, boxes reaching past them, an output of partial tiles
    gen = torch.Generator().manual_seed(5)
    edge = torch.tensor([[0.0, 0.0], [7.0, 0.0], [0.0, 9.0], [7.0, 9.0], [3.5, 0.0], [0.0, 4.5], [7.0, 4.5],
                         [3.5, 9.0], [-0.4, 5.0], [7.3, 2.0], [2.0, -0.3], [5.0, 9.2]])
    num = edge.shape[0] * 4
    means = (edge.repeat(4, 1) + torch.randn(num, 2, generator=gen) * 0.05)[None].repeat(2, 1, 1)
    sigmas = torch.rand(2, num, 2, generator=gen) * 1.5 + 0.3
    rhos = torch.rand(2, num, generator=gen) * 1.6 - 0.8
    colors = torch.randn(2, num, 3, generator=gen)
    half = (2.5, 3.0)
    fwd, *rest = run_kernels(host, [means, sigmas, rhos, colors], (9, 7), (37, 29), footprint, half=half)
    boxes = fwd[1]
    visible = boxes[:, 0] <= boxes[:, 2]
    assert (boxes[visible, 0] == 0).any() and (boxes[visible, 1] == 0).any()
    assert (boxes[visible, 2] == 28).any() and (boxes[visible, 3] == 36).any()
    assert_kernels_agree(fwd, *rest)
    with_pure = {'ellipse': {}, 'box': {'box_half_size': half}, 'gsplat': {'mode': 'gsplat_sum'}}[footprint]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled_module, '_module', HostAsDevice(host))
        patch.setattr(compiled_module, '_tried', True)
        compare([means, sigmas, rhos, colors], (9, 7), (37, 29), grad_rel=3e-3, **with_pure)


@pytest.mark.parametrize('footprint', list(FOOTPRINTS))
def test_cuda_on_host_batch_of_three_images(host, footprint):
    # images of different content (and, for gsplat, caps reached in some tiles of some images only)
    params = make(3, 900, 3, (4, 6), sigma_range=(0.1, 1.2))
    params[0][1] = params[0][1] * 0.4 + 3.0  # image 1: all Gaussians in one corner
    fwd, *rest = run_kernels(host, params, (4, 6), (24, 36), footprint)
    assert_kernels_agree(fwd, *rest)
    for b in range(3):
        single = host.forward(*[p[b:b + 1].contiguous() for p in params], fwd[1].new_empty(0).float()
                              if footprint != 'gsplat' else
                              (torch.rand(3, 900, generator=torch.Generator().manual_seed(2)) * 1.2)[b:b + 1],
                              4, 6, 24, 36, FOOTPRINT_CODES[footprint], 3.5, 1.2, 0.7)
        assert torch.equal(single[0], fwd[0][b:b + 1])


@pytest.mark.parametrize('footprint', list(FOOTPRINTS))
@pytest.mark.parametrize('mean_area,group', [(10.0, 8), (50.0, 16), (200.0, 32)])
def test_cuda_on_host_every_backward_group_width(host, footprint, mean_area, group):
    # the launcher picks GROUP lanes per Gaussian from the mean box area; force each width on the same inputs
    params = make(2, 150, 3, (10, 12), sigma_range=(0.1, 2.0))
    fwd, ref, grads, ref_grads = run_kernels(host, params, (10, 12), (33, 41), footprint, mean_area=mean_area)
    assert fwd[1].shape[0] * group > 256  # several blocks, and warps holding 32 / group Gaussians
    assert_kernels_agree(fwd, ref, grads, ref_grads)


def test_cuda_on_host_float32_cpu_tensors_only(host):
    params = make(1, 10, 3, (4, 4))
    shape = [4, 4, 9, 9, 0, 3.5, 1.2, 0.7]
    with pytest.raises(RuntimeError, match='must be float32'):
        host.forward(*[p.double() for p in params], torch.empty(0), *shape)
    with pytest.raises(RuntimeError, match='must be contiguous'):
        host.forward(torch.zeros(1, 10, 4)[..., ::2], *params[1:], torch.empty(0), *shape)
    with pytest.raises(RuntimeError, match='opacities'):
        host.forward(*params, torch.empty(0), *shape[:4], 2, *shape[5:])


# --- the schedule: results must not depend on the order threads run in -------------------------------------------

def test_cuda_on_host_results_independent_of_thread_order(host):
    # a case with every synchronised structure: 3 shared-memory batches, 2 colour chunks, 2 gradient chunks
    params = make(2, 700, 9, (4, 4), sigma_range=(0.2, 1.0), margin=0.5)
    runs = []
    try:
        for order, seed in [('forward', 0), ('reverse', 0), ('random', 1), ('random', 2)]:
            host.set_schedule(order, seed)
            fwd, _, grads, _ = run_kernels(host, params, (4, 4), (32, 32), 'ellipse')
            runs.append([fwd[0]] + grads)
    finally:
        host.set_schedule('random', 0x5eed)
    for run in runs[1:]:
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b)


def test_cuda_on_host_os_threads_match_fibers(host):
    # the OS-thread mode (what the ThreadSanitizer run uses) computes the same bits
    params = make(1, 120, 5, (6, 5), sigma_range=(0.2, 1.5))
    fibers = run_kernels(host, params, (6, 5), (20, 18), 'gsplat')
    host.set_os_threads(True)
    try:
        threads = run_kernels(host, params, (6, 5), (20, 18), 'gsplat')
    finally:
        host.set_os_threads(False)
    for a, b in zip(fibers[0] + fibers[2], threads[0] + threads[2]):
        assert torch.equal(a, b)


# --- finite differences ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('footprint,kwargs', [('ellipse', {'cutoff': 8.0}), ('box', {'half': (9.0, 9.0)})])
def test_cuda_on_host_finite_differences(host, footprint, kwargs):
    # footprints wide enough that no pixel enters or leaves them under the perturbation: the rendered image is
    # smooth in every parameter, and central differences of the host-run forward check the host-run backward
    gen = torch.Generator().manual_seed(7)
    means = torch.rand(1, 6, 2, generator=gen) * 4 + 1
    sigmas = torch.rand(1, 6, 2, generator=gen) * 0.6 + 0.5
    rhos = torch.rand(1, 6, generator=gen) * 1.2 - 0.6
    colors = torch.randn(1, 6, 2, generator=gen)
    code = FOOTPRINT_CODES[footprint]
    cutoff = kwargs.get('cutoff', 3.5)
    half = kwargs.get('half', (1.0, 1.0))
    weights = torch.randn(1, 2, 18, 18, generator=gen)

    def loss(tensors):
        out = host.forward(*tensors, torch.empty(0), 6, 6, 18, 18, code, cutoff, *half)[0]
        return float((out.double() * weights.double()).sum())

    tensors = [means, sigmas, rhos, colors]
    fwd = host.forward(*tensors, torch.empty(0), 6, 6, 18, 18, code, cutoff, *half)
    grads = host.backward(*tensors, torch.empty(0), weights, *fwd[1:4], 6, 6, code, cutoff, *half, 50.0)
    for i, (name, scale) in enumerate([('means', 1.0), ('sigmas', 0.1), ('rhos', 0.05), ('colors', 1.0)]):
        direction = torch.randn(tensors[i].shape, generator=gen) * scale
        eps = 1e-2
        plus = [t + eps * direction if j == i else t for j, t in enumerate(tensors)]
        minus = [t - eps * direction if j == i else t for j, t in enumerate(tensors)]
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        analytic = float((grads[i].double() * direction.double()).sum())
        assert abs(numeric - analytic) <= 2e-3 * abs(analytic) + 1e-4, (name, numeric, analytic)


# --- the execution layer ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('width', [1, 2, 4, 8, 16, 32])
def test_cuda_on_host_layer_shuffle_down_semantics(host, width):
    # CUDA: lane l reads lane l + delta when that lies in l's segment of `width` lanes, else keeps its own value
    values = torch.arange(128, dtype=torch.int32) * 7 + 3
    for delta in [0, 1, 2, 3, width // 2, width - 1, width, 31]:
        out = host.probe_shfl_down(values, delta, width)
        lane = torch.arange(128) % 32
        source = torch.arange(128) + delta
        inside = (lane % width) + delta < width
        expected = torch.where(inside, values[source.clamp(max=127)], values)
        assert torch.equal(out, expected), (width, delta)
    with pytest.raises(RuntimeError, match='power of 2'):
        host.probe_shfl_down(values, 1, 12)


def test_cuda_on_host_layer_exposes_a_missing_barrier(host):
    try:
        for order in ['forward', 'reverse', 'random']:
            host.set_schedule(order, 1)
            expected = ((torch.arange(256) + 1) % 256).int().repeat(3, 1)
            assert torch.equal(host.probe_neighbour(True, 3), expected)
            assert not torch.equal(host.probe_neighbour(False, 3), expected), order
    finally:
        host.set_schedule('random', 0x5eed)


def test_cuda_on_host_layer_rejects_broken_cuda_rules(host):
    with pytest.raises(RuntimeError, match='different places'):
        host.probe_divergent_barrier()
    with pytest.raises(RuntimeError, match='has exited'):
        host.probe_exited_lane()


def test_cuda_on_host_layer_atomics(host):
    host.set_workers(4)
    try:
        count, total = host.probe_atomics(64)
    finally:
        host.set_workers(0)
    assert int(count) == 64 * 256 and float(total) == 64 * 256 * 0.5


def test_cuda_on_host_build_follows_the_source(tmp_path):
    # the module is keyed by the checkout's rasterize.cu: an edit gives another module (compiled on next use)
    copy = tmp_path / 'csrc'
    shutil.copytree(csrc_dir(), copy)
    assert module_name(copy) == module_name()
    source = copy / 'rasterize.cu'
    source.write_text(source.read_text().replace('__syncthreads();', '', 1))
    assert module_name(copy) != module_name()
    assert module_name(sanitize='thread') != module_name()
