"""The two compatibility modes of ``rasterize_gaussians`` (pure path and compiled CPU kernel) against float64
transcriptions of the official renderers.

* ``box_half_size``: GSASR's ``utils/gs_cuda_dmax/gs.cu`` (forward and backward kernels) with the coordinate remap
  of ``utils/gaussian_splatting.py::rendering_cuda_dmax``, transcribed below as dense loops over the canvas.
* ``mode='gsplat_sum'``: the gsplat fork's ``project_gaussians_2d`` (``foward2d.cu``, ``helpers.cuh``) and
  ``rasterize_gaussians_sum`` (``forward.cu::rasterize_forward_sum``, ``backward.cu::rasterize_backward_sum_kernel``,
  ``utils.bin_and_sort_gaussians``), transcribed below as slow per-tile, per-pixel loops.

Official sources: ChrisDud0257/GSASR 9d2eb64a51303ce7a22fd672197185488b38e10a and XingtongGe/gsplat
bf697c8cb0f98627e4a1abed8144cae953a667f7 (read, not imported: their kernels need CUDA).
"""
import math

import pytest
import torch

from gsasr_plugin.ops import cpu_op_available, rasterize_gaussians, use_backend

TILE = 16
BACKENDS = ['torch'] + (['compiled'] if cpu_op_available() else [])


@pytest.fixture(autouse=True, params=BACKENDS)
def backend(request):
    """Every test runs on the pure path and, where it is built, on the compiled CPU kernel."""
    with use_backend(request.param):
        yield request.param


def random_gaussians(bsz, num, chans, lr_size, sigma_range=(0.05, 1.5), rho_max=0.95, margin=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    height, width = lr_size
    span = torch.tensor([width + 2 * margin, height + 2 * margin], dtype=torch.float64)
    means = torch.rand(bsz, num, 2, generator=gen, dtype=torch.float64) * span - margin
    lo, hi = sigma_range
    sigmas = torch.rand(bsz, num, 2, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    rhos = (torch.rand(bsz, num, generator=gen, dtype=torch.float64) * 2 - 1) * rho_max
    colors = torch.randn(bsz, num, chans, generator=gen, dtype=torch.float64)
    return means, sigmas, rhos, colors


def grads_of(fn, inputs, weights):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    (fn(*leaves) * weights).sum().backward()
    return [t.grad for t in leaves]


# ----------------------------------------------------------------------------------------------------------------
# box_half_size: the official dmax kernel
# ----------------------------------------------------------------------------------------------------------------

def dense_box_reference(means, sigmas, rhos, colors, lr_size, out_size, half):
    """Straight from the contract: exp(-q/2) wherever |x - mu_x| <= half_w and |y - mu_y| <= half_h."""
    height, width = lr_size
    out_h, out_w = out_size
    x = (torch.arange(out_w, dtype=torch.float64) + 0.5) * width / out_w
    y = (torch.arange(out_h, dtype=torch.float64) + 0.5) * height / out_h
    ox = x[None, None, None, :] - means[..., 0, None, None]
    oy = y[None, None, :, None] - means[..., 1, None, None]
    dx, dy = ox / sigmas[..., 0, None, None], oy / sigmas[..., 1, None, None]
    rho = rhos[..., None, None]
    q = (dx * dx - 2 * rho * dx * dy + dy * dy) / (1 - rho * rho)
    inside = (ox.abs() <= half[1]) & (oy.abs() <= half[0])
    return torch.einsum('bnyx,bnc->bcyx', torch.exp(-q / 2) * inside, colors)


def official_dmax_forward(sigmas3, coords, colors, out_h, out_w, dmax):
    """gs.cu ``_gs_render_cuda``: canvas pixel (hi, wi) at (2 wi / (w - 1) - 1, 2 hi / (h - 1) - 1), a Gaussian
    reaching every pixel with |d_x| <= dmax and |d_y| <= dmax. ``sigmas3`` (S, 3) = (sigma_x, sigma_y, rho),
    ``coords`` (S, 2) already remapped; returns (h, w, c)."""
    img = torch.zeros(out_h, out_w, colors.shape[1], dtype=torch.float64)
    for s in range(sigmas3.shape[0]):
        sigma_x, sigma_y, rho = sigmas3[s].tolist()
        x, y = coords[s].tolist()
        for hi in range(out_h):
            d_y = 2.0 * hi / (out_h - 1) - 1.0 - y
            if d_y > dmax or d_y < -dmax:
                continue
            for wi in range(out_w):
                d_x = 2.0 * wi / (out_w - 1) - 1.0 - x
                if d_x > dmax or d_x < -dmax:
                    continue
                v = (d_x * d_x / sigma_x / sigma_x - 2 * rho / sigma_x / sigma_y * d_x * d_y
                     + d_y * d_y / sigma_y / sigma_y) * (-0.5 / (1 - rho * rho))
                img[hi, wi] += math.exp(v) * colors[s]
    return img


def official_dmax_backward(sigmas3, coords, colors, grads, dmax):
    """gs.cu ``_gs_render_backward_cuda``: (grads_sigmas (S, 3), grads_coords (S, 2), grads_colors (S, C))."""
    out_h, out_w, chans = grads.shape
    g_sig = torch.zeros_like(sigmas3)
    g_xy = torch.zeros_like(coords)
    g_col = torch.zeros_like(colors)
    for s in range(sigmas3.shape[0]):
        sigma_x, sigma_y, rho = sigmas3[s].tolist()
        x, y = coords[s].tolist()
        w1 = -0.5 / (1 - rho * rho)
        w2, w3, w4 = 1.0 / (sigma_x * sigma_x), 1.0 / (sigma_x * sigma_y), 1.0 / (sigma_y * sigma_y)
        for hi in range(out_h):
            for wi in range(out_w):
                d_x = 2.0 * wi / (out_w - 1) - 1.0 - x
                d_y = 2.0 * hi / (out_h - 1) - 1.0 - y
                if d_x > dmax or d_x < -dmax or d_y > dmax or d_y < -dmax:
                    continue
                d = w2 * d_x * d_x - 2 * rho * w3 * d_x * d_y + w4 * d_y * d_y
                v = math.exp(w1 * d)
                v_2_w1 = v * 2 * w1
                gx = v_2_w1 * (-w2 * d_x + rho * w3 * d_y)
                gy = v_2_w1 * (-w4 * d_y + rho * w3 * d_x)
                gsx = v_2_w1 / sigma_x * (w3 * rho * d_x * d_y - w2 * d_x * d_x)
                gsy = v_2_w1 / sigma_y * (w3 * rho * d_x * d_y - w4 * d_y * d_y)
                grho = -v_2_w1 * (2 * w1 * rho * d + w3 * d_x * d_y)
                gpt = grads[hi, wi]
                gp = float((gpt * colors[s]).sum())
                g_col[s] += v * gpt
                g_xy[s] += torch.tensor([gp * gx, gp * gy], dtype=torch.float64)
                g_sig[s] += torch.tensor([gp * gsx, gp * gsy, gp * grho], dtype=torch.float64)
    return g_sig, g_xy, g_col


@pytest.mark.parametrize('lr_size,out_size,dmax', [((5, 6), (13, 17), 0.2), ((4, 4), (16, 16), 0.12),
                                                  ((6, 5), (9, 7), 0.5)])
def test_box_mode_equals_official_dmax_kernel(lr_size, out_size, dmax):
    """Official inputs (coords in [-1, 1] as GSASR's decoder gives them, canvas sigmas, dmax) through the
    official remap and kernel, against ours after the documented conversion to LR pixel units."""
    height, width = lr_size
    out_h, out_w = out_size
    gen = torch.Generator().manual_seed(1)
    num = 12
    raw = torch.rand(num, 2, generator=gen, dtype=torch.float64) * 2.2 - 1.1  # decoder coords, some outside
    canvas_sigma = torch.rand(num, 2, generator=gen, dtype=torch.float64) * 0.15 + 0.02
    rho = (torch.rand(num, 1, generator=gen, dtype=torch.float64) * 2 - 1) * 0.9
    colors = torch.randn(num, 3, generator=gen, dtype=torch.float64)
    # rendering_cuda_dmax's remap of the coordinates onto the canvas
    coords = torch.stack([(raw[:, 0] + 1 - 1 / out_w) * out_w / (out_w - 1) - 1.0,
                          (raw[:, 1] + 1 - 1 / out_h) * out_h / (out_h - 1) - 1.0], 1)
    sigmas3 = torch.cat([canvas_sigma, rho], 1)
    official = official_dmax_forward(sigmas3, coords, colors, out_h, out_w, dmax).permute(2, 0, 1)

    # the conversion: one canvas unit is (Wo - 1) / 2 output pixels, i.e. (Wo - 1) / 2 * W / Wo LR pixels
    unit = torch.tensor([(out_w - 1) / 2 * width / out_w, (out_h - 1) / 2 * height / out_h], dtype=torch.float64)
    means = ((raw + 1) / 2 * torch.tensor([width, height], dtype=torch.float64))[None]
    sigmas = (canvas_sigma * unit)[None]
    half = (dmax * float(unit[1]), dmax * float(unit[0]))
    params = (means, sigmas, rho.reshape(1, num), colors[None])
    ours = rasterize_gaussians(*params, lr_size, out_size, box_half_size=half)
    torch.testing.assert_close(ours[0], official, rtol=1e-10, atol=1e-10)
    assert official.abs().max() > 0.1

    weights = torch.randn(1, 3, out_h, out_w, dtype=torch.float64, generator=gen)
    g_means, g_sigmas, g_rhos, g_colors = grads_of(
        lambda *p: rasterize_gaussians(*p, lr_size, out_size, box_half_size=half), params, weights)
    o_sig, o_xy, o_col = official_dmax_backward(sigmas3, coords, colors, weights[0].permute(1, 2, 0), dmax)
    # chain rule through mu = (raw + 1) W / 2 and the remap; canvas sigma = sigma / unit
    d_coord_d_mean = torch.tensor([2 * out_w / ((out_w - 1) * width), 2 * out_h / ((out_h - 1) * height)],
                                  dtype=torch.float64)
    torch.testing.assert_close(g_means[0], o_xy * d_coord_d_mean, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g_sigmas[0], o_sig[:, :2] / unit, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g_rhos[0], o_sig[:, 2], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g_colors[0], o_col, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('lr_size,out_size,half', [((5, 6), (13, 17), (0.7, 1.3)), ((4, 4), (32, 32), (0.25, 0.6)),
                                                  ((6, 5), (4, 3), (2.0, 0.0)), ((3, 3), (21, 21), (9.0, 9.0))])
@pytest.mark.parametrize('chans', [1, 3])
def test_box_mode_matches_dense_reference(lr_size, out_size, half, chans):
    params = random_gaussians(2, 30, chans, lr_size, sigma_range=(0.05, 3.0))
    out = rasterize_gaussians(*params, lr_size, out_size, box_half_size=half)
    ref = dense_box_reference(*params, lr_size, out_size, half)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    weights = torch.randn(ref.shape, dtype=torch.float64)
    ours = grads_of(lambda *p: rasterize_gaussians(*p, lr_size, out_size, box_half_size=half), params, weights)
    dense = grads_of(lambda *p: dense_box_reference(*p, lr_size, out_size, half), params, weights)
    for name, a, b in zip(('means', 'sigmas', 'rhos', 'colors'), ours, dense):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8, msg=name)


def test_box_mode_edges_are_inclusive_and_exact():
    # scale 1: pixel j samples x = j + 0.5; a Gaussian at x = 3.5 with half-size 2 reaches pixels 1..5 exactly
    means = torch.tensor([[[3.5, 2.5]]], dtype=torch.float64)
    sigmas = torch.full((1, 1, 2), 100.0, dtype=torch.float64)  # flat: the box alone shapes the footprint
    out = rasterize_gaussians(means, sigmas, torch.zeros(1, 1, dtype=torch.float64),
                              torch.ones(1, 1, 1, dtype=torch.float64), (6, 8), (6, 8), box_half_size=(1.0, 2.0))
    support = (out[0, 0] > 0).nonzero()
    assert support[:, 0].unique().tolist() == [1, 2, 3]
    assert support[:, 1].unique().tolist() == [1, 2, 3, 4, 5]
    assert out[0, 0, 2, 3] == pytest.approx(1.0)


def test_box_mode_has_no_ellipse_cut():
    # tiny sigma, big box: weights far beyond 3.5 sigma are kept (they underflow only where exp does)
    means = torch.tensor([[[4.0, 4.0]]], dtype=torch.float64)
    sigmas = torch.full((1, 1, 2), 0.5, dtype=torch.float64)
    args = (means, sigmas, torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, 1, dtype=torch.float64),
            (8, 8), (16, 16))
    boxed = rasterize_gaussians(*args, box_half_size=(4.0, 4.0))
    ellipse = rasterize_gaussians(*args)
    far = boxed[0, 0, 8, 15]  # 3.75 LR pixels = 7.5 sigma from the centre
    assert far == pytest.approx(math.exp(-7.5 ** 2 / 2)) and ellipse[0, 0, 8, 15] == 0


def test_box_mode_gradcheck():
    params = random_gaussians(1, 5, 2, (4, 5), sigma_range=(0.3, 1.2), rho_max=0.9)
    inputs = [p.clone().requires_grad_() for p in params]
    assert torch.autograd.gradcheck(
        lambda *p: rasterize_gaussians(*p, (4, 5), (11, 13), box_half_size=(0.9, 1.4)), inputs,
        eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


# ----------------------------------------------------------------------------------------------------------------
# mode='gsplat_sum': project_gaussians_2d + rasterize_gaussians_sum
# ----------------------------------------------------------------------------------------------------------------

def _c_int(value: float) -> int:
    """C's (int) conversion: truncation toward zero."""
    return int(math.trunc(value))


def official_gsplat_project(center, l_el, out_h, out_w):
    """foward2d.cu ``project_gaussians_2d_forward_kernel`` for one Gaussian given its pixel centre and L elements
    (l11, l21, l22): (conic (a, b, c), tile_min (x, y), tile_max (x, y)) or None when det == 0."""
    l11, l21, l22 = l_el
    cov = (l11 * l11, l11 * l21, l21 * l21 + l22 * l22)
    det = cov[0] * cov[2] - cov[1] * cov[1]
    if det == 0:
        return None
    conic = (cov[2] / det, -cov[1] / det, cov[0] / det)
    b = 0.5 * (cov[0] + cov[2])
    v1 = b + math.sqrt(max(0.1, b * b - det))
    v2 = b - math.sqrt(max(0.1, b * b - det))
    radius = math.ceil(3.0 * math.sqrt(max(v1, v2)))
    bounds = ((out_w + TILE - 1) // TILE, (out_h + TILE - 1) // TILE)
    tmin, tmax = [], []
    for axis in range(2):  # helpers.cuh get_tile_bbox / get_bbox
        tc, tr = center[axis] / TILE, radius / TILE
        tmin.append(min(max(0, _c_int(tc - tr)), bounds[axis]))
        tmax.append(min(max(0, _c_int(tc + tr + 1)), bounds[axis]))
    return conic, tmin, tmax


def official_gsplat_sum(centers, l_els, colors, opacities, out_h, out_w, v_out=None, cap=TILE * TILE):
    """Slow transcription of bin_and_sort_gaussians + rasterize_forward_sum (+ rasterize_backward_sum_kernel when
    ``v_out`` (H, W, C) is given). Returns out (H, W, C) and, with v_out, (v_xy, v_conic, v_rgb, v_opacity).
    ``cap=None`` leaves out the per-tile limit (for showing that it matters)."""
    num, chans = colors.shape
    tiles_x, tiles_y = (out_w + TILE - 1) // TILE, (out_h + TILE - 1) // TILE
    projected = [official_gsplat_project(centers[g].tolist(), l_els[g].tolist(), out_h, out_w) for g in range(num)]
    # map_gaussian_to_intersects emits (tile | depth 0) keys in Gaussian order; a stable sort keeps that order
    lists = {t: [] for t in range(tiles_x * tiles_y)}
    for g, proj in enumerate(projected):
        if proj is None:
            continue
        _, tmin, tmax = proj
        for ty in range(tmin[1], tmax[1]):
            for tx in range(tmin[0], tmax[0]):
                lists[ty * tiles_x + tx].append(g)
    out = torch.zeros(out_h, out_w, chans, dtype=torch.float64)
    v_xy = torch.zeros(num, 2, dtype=torch.float64)
    v_conic = torch.zeros(num, 3, dtype=torch.float64)
    v_rgb = torch.zeros(num, chans, dtype=torch.float64)
    v_opacity = torch.zeros(num, dtype=torch.float64)
    for tile, members in lists.items():
        ty, tx = divmod(tile, tiles_x)
        batch = members[:cap]  # the forward reads one batch of BLOCK_SIZE Gaussians and stops
        for i in range(ty * TILE, min((ty + 1) * TILE, out_h)):
            for j in range(tx * TILE, min((tx + 1) * TILE, out_w)):
                for g in batch:
                    (a, b, c), _, _ = projected[g]
                    dx, dy = centers[g, 0].item() - j, centers[g, 1].item() - i
                    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                    vis = math.exp(-sigma)
                    alpha = min(1.0, opacities[g].item() * vis)
                    if sigma < 0 or alpha < 1.0 / 255.0:
                        continue
                    out[i, j] += colors[g] * alpha
                    if v_out is None:
                        continue
                    # backward: v_rgb = alpha v_out; v_sigma = -opac vis <rgb, v_out> (the clamp is ignored)
                    v_alpha = float((colors[g] * v_out[i, j]).sum())
                    v_sigma = -opacities[g].item() * vis * v_alpha
                    v_rgb[g] += alpha * v_out[i, j]
                    v_conic[g] += torch.tensor([0.5 * v_sigma * dx * dx, 0.5 * v_sigma * dx * dy,
                                                0.5 * v_sigma * dy * dy], dtype=torch.float64)
                    v_xy[g] += torch.tensor([v_sigma * (a * dx + b * dy), v_sigma * (b * dx + c * dy)],
                                            dtype=torch.float64)
                    v_opacity[g] += vis * v_alpha
    if v_out is None:
        return out
    return out, (v_xy, v_conic, v_rgb, v_opacity)


def to_gsplat(means, sigmas, rhos, lr_size, out_size):
    """Our (LR-unit) Gaussians as gsplat's inputs: pixel centres (mu * Wo / W - 0.5) and the Cholesky factor of
    the output-pixel covariance (l11 = sx, l21 = rho sy, l22 = sy sqrt(1 - rho^2))."""
    height, width = lr_size
    out_h, out_w = out_size
    scale = torch.tensor([out_w / width, out_h / height], dtype=torch.float64)
    centers = means * scale - 0.5
    s_out = sigmas * scale
    l_el = torch.stack([s_out[:, 0], rhos * s_out[:, 1], s_out[:, 1] * torch.sqrt(1 - rhos * rhos)], 1)
    return centers, l_el


def conic_of(sigmas, rhos, scale):
    """Inverse output-pixel covariance (a, b, c) of (N, 2) LR sigmas and (N,) rhos (differentiable)."""
    s_out = sigmas * scale
    k = 1 / (1 - rhos * rhos)
    return torch.stack([k / s_out[:, 0] ** 2, -k * rhos / (s_out[:, 0] * s_out[:, 1]), k / s_out[:, 1] ** 2], 1)


def check_gsplat(means, sigmas, rhos, colors, opacities, lr_size, out_size, seed=0, pass_opacities=True):
    """Ours against the transcription for one image (B = 1): forward, and gradients through the official
    rasterizer backward chained to our parameters (mu -> centre, (sigma, rho) -> conic, exactly)."""
    height, width = lr_size
    out_h, out_w = out_size
    centers, l_el = to_gsplat(means, sigmas, rhos, lr_size, out_size)
    v_out = torch.randn(out_h, out_w, colors.shape[1], dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    official, (v_xy, v_conic, v_rgb, v_opacity) = official_gsplat_sum(centers, l_el, colors, opacities, out_h,
                                                                       out_w, v_out)
    kwargs = dict(mode='gsplat_sum', opacities=opacities[None] if pass_opacities else None)
    params = [means[None], sigmas[None], rhos[None], colors[None]]
    if pass_opacities:
        leaves = [t.clone().requires_grad_() for t in params + [opacities[None]]]
        out = rasterize_gaussians(*leaves[:4], lr_size, out_size, mode='gsplat_sum', opacities=leaves[4])
    else:
        leaves = [t.clone().requires_grad_() for t in params]
        out = rasterize_gaussians(*leaves, lr_size, out_size, **kwargs)
    torch.testing.assert_close(out[0].permute(1, 2, 0), official, rtol=1e-10, atol=1e-10)
    (out[0].permute(1, 2, 0) * v_out).sum().backward()
    scale = torch.tensor([out_w / width, out_h / height], dtype=torch.float64)
    torch.testing.assert_close(leaves[0].grad[0], v_xy * scale, rtol=1e-8, atol=1e-8, msg='means')
    # v_conic holds the per-entry derivative (the off-diagonal once per symmetric entry): dL = a' da + 2 b' db + c' dc
    sig, rho = sigmas.clone().requires_grad_(), rhos.clone().requires_grad_()
    conic = conic_of(sig, rho, scale)
    (conic * v_conic * torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(leaves[1].grad[0], sig.grad, rtol=1e-8, atol=1e-8, msg='sigmas')
    torch.testing.assert_close(leaves[2].grad[0], rho.grad, rtol=1e-8, atol=1e-8, msg='rhos')
    torch.testing.assert_close(leaves[3].grad[0], v_rgb, rtol=1e-8, atol=1e-8, msg='colors')
    if pass_opacities:
        torch.testing.assert_close(leaves[4].grad[0], v_opacity, rtol=1e-8, atol=1e-8, msg='opacities')
    return official


@pytest.mark.parametrize('lr_size,out_size', [((5, 6), (20, 24)), ((7, 5), (37, 23)), ((12, 12), (12, 12)),
                                              ((3, 3), (50, 45))])
def test_gsplat_sum_equals_official_tile_logic(lr_size, out_size):
    means, sigmas, rhos, colors = [t[0] for t in random_gaussians(1, 40, 3, lr_size, sigma_range=(0.1, 1.2))]
    opacities = torch.rand(40, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.05
    official = check_gsplat(means, sigmas, rhos, colors, opacities, lr_size, out_size)
    assert official.abs().max() > 0.1


def test_gsplat_sum_default_opacity_is_one_and_any_channel_count():
    means, sigmas, rhos, colors = [t[0] for t in random_gaussians(1, 25, 5, (6, 6), sigma_range=(0.2, 1.0))]
    check_gsplat(means, sigmas, rhos, colors, torch.ones(25, dtype=torch.float64), (6, 6), (30, 30),
                 pass_opacities=False)


def test_gsplat_sum_tile_cap_drops_gaussians_beyond_256():
    # 400 Gaussians crowd the first tile: only the first 256 of its list (by index) render there; 40 more (indices
    # 400..439) on the uncrowded last tile all render
    gen = torch.Generator().manual_seed(5)
    means = torch.cat([torch.rand(400, 2, generator=gen, dtype=torch.float64) * 3.0 + 0.5,  # output 2..14
                       torch.rand(40, 2, generator=gen, dtype=torch.float64) * 1.0 + 8.5])  # output 34..38
    num = means.shape[0]
    sigmas = torch.rand(num, 2, generator=gen, dtype=torch.float64) * 0.3 + 0.2
    rhos = (torch.rand(num, generator=gen, dtype=torch.float64) * 2 - 1) * 0.8
    colors = torch.rand(num, 3, generator=gen, dtype=torch.float64)
    opacities = torch.rand(num, dtype=torch.float64, generator=gen) * 0.5 + 0.5
    official = check_gsplat(means, sigmas, rhos, colors, opacities, (10, 10), (40, 40))
    gsplat_args = to_gsplat(means, sigmas, rhos, (10, 10), (40, 40))
    uncapped = official_gsplat_sum(*gsplat_args, colors, opacities, 40, 40, cap=None)
    first = official_gsplat_sum(*[t[:256] for t in gsplat_args], colors[:256], opacities[:256], 40, 40, cap=None)
    torch.testing.assert_close(official[:16, :16], first[:16, :16], rtol=1e-12, atol=1e-12)
    assert (uncapped[:16, :16] - official[:16, :16]).abs().max() > 0.5  # the cap matters on the crowded tile
    torch.testing.assert_close(official[32:, 32:], uncapped[32:, 32:], rtol=1e-12, atol=1e-12)
    assert official[32:, 32:].abs().max() > 0.1


def test_gsplat_sum_batch_members_have_their_own_tile_lists():
    # image 0 crowds a tile past the cap, image 1 does not: each image is capped on its own list
    gen = torch.Generator().manual_seed(6)
    means = torch.rand(2, 300, 2, generator=gen, dtype=torch.float64) * 3.0 + 0.5
    means[1, 100:] += 5.0  # image 1 spreads over two tiles
    sigmas = torch.full((2, 300, 2), 0.5, dtype=torch.float64)
    rhos = torch.zeros(2, 300, dtype=torch.float64)
    colors = torch.rand(2, 300, 3, generator=gen, dtype=torch.float64)
    out = rasterize_gaussians(means, sigmas, rhos, colors, (10, 10), (40, 40), mode='gsplat_sum')
    for b in range(2):
        centers, l_el = to_gsplat(means[b], sigmas[b], rhos[b], (10, 10), (40, 40))
        ref = official_gsplat_sum(centers, l_el, colors[b], torch.ones(300, dtype=torch.float64), 40, 40)
        torch.testing.assert_close(out[b].permute(1, 2, 0), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('case', ['tile_borders', 'alpha_threshold', 'tiny_sigma', 'huge_sigma', 'anisotropic',
                                  'clamped_alpha'])
def test_gsplat_sum_edge_cases(case):
    lr_size, out_size = (8, 8), (32, 32)  # scale 4: output pixel j samples LR (j + 0.5) / 4
    gen = torch.Generator().manual_seed(7)
    num = 12
    rhos = (torch.rand(num, generator=gen, dtype=torch.float64) * 2 - 1) * 0.5
    colors = torch.randn(num, 3, generator=gen, dtype=torch.float64)
    opacities = torch.full((num,), 0.8, dtype=torch.float64)
    sigmas = torch.full((num, 2), 0.5, dtype=torch.float64)
    means = torch.rand(num, 2, generator=gen, dtype=torch.float64) * 8
    if case == 'tile_borders':
        # gsplat centres just either side of the tile edge at pixel 16 and of the image's edges
        centre = torch.tensor([15.999, 16.001, 15.5, 16.5, -0.49, 31.49, 0.01, 31.99, 12.0, 19.0, 3.0, 28.0],
                              dtype=torch.float64)
        means = torch.stack([(centre + 0.5) / 4, ((centre.flip(0) + 0.5) / 4)], 1)
        sigmas = torch.rand(num, 2, generator=gen, dtype=torch.float64) * 0.6 + 0.2
    elif case == 'alpha_threshold':
        # one pixel per Gaussian sits just above or just below 1/255; Gaussians 8 output pixels apart
        means = torch.tensor([[1.125 + 2.0 * (k % 4), 1.125 + 2.0 * (k // 4)] for k in range(num)],
                             dtype=torch.float64)  # centred on output pixels (4 + 8 i, 4 + 8 j)
        rhos = torch.zeros(num, dtype=torch.float64)
        sigmas = torch.full((num, 2), 0.25, dtype=torch.float64)  # one output pixel
        # the pixel 2 to the right sits at q = 4: weight opacity * e^-2; aim it at 1/255 * (1 +- 1e-6)
        factor = torch.tensor([1 + 1e-6, 1 - 1e-6] * (num // 2), dtype=torch.float64)
        opacities = factor * math.exp(2.0) / 255.0
    elif case == 'tiny_sigma':
        sigmas = torch.rand(num, 2, generator=gen, dtype=torch.float64) * 0.01 + 1e-3  # radius from the 0.1 floor
        # within a few hundredths of an output pixel of sample points, so that some pixels see them
        means = ((torch.randint(0, 32, (num, 2), generator=gen) + 0.5
                  + torch.randn(num, 2, generator=gen, dtype=torch.float64) * 0.02) / 4)
    elif case == 'huge_sigma':
        sigmas = torch.rand(num, 2, generator=gen, dtype=torch.float64) * 4 + 4  # radius > 48 px: every tile
    elif case == 'anisotropic':
        sigmas = torch.stack([torch.full((num,), 0.05, dtype=torch.float64),
                              torch.rand(num, generator=gen, dtype=torch.float64) * 2 + 1], 1)
        rhos = (torch.rand(num, generator=gen, dtype=torch.float64) * 2 - 1) * 0.97
    elif case == 'clamped_alpha':
        opacities = torch.rand(num, dtype=torch.float64, generator=gen) * 3 + 1.5  # min(1, .) clamps near centres
    official = check_gsplat(means, sigmas, rhos, colors, opacities, lr_size, out_size)
    assert official.abs().max() > 0
    if case == 'alpha_threshold':
        out = rasterize_gaussians(means[None], sigmas[None], rhos[None], torch.ones(1, num, 1, dtype=torch.float64),
                                  lr_size, out_size, mode='gsplat_sum', opacities=opacities[None])[0, 0]
        for k in range(num):
            row, col = 4 + 8 * (k // 4), 4 + 8 * (k % 4) + 2
            # other Gaussians are 6+ pixels away (far below 1/255): the pixel holds this one's weight or nothing
            if k % 2 == 0:
                assert out[row, col] == pytest.approx(float(opacities[k]) * math.exp(-2.0), rel=1e-9)
            else:
                assert out[row, col] == 0


def test_gsplat_sum_gradcheck():
    params = list(random_gaussians(1, 6, 2, (4, 5), sigma_range=(0.3, 1.0), rho_max=0.8))
    opacities = torch.rand(1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.4
    inputs = [p.clone().requires_grad_() for p in params + [opacities]]
    assert torch.autograd.gradcheck(
        lambda m, s, r, c, o: rasterize_gaussians(m, s, r, c, (4, 5), (23, 29), mode='gsplat_sum', opacities=o),
        inputs, eps=1e-7, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gsplat_sum_float32_matches_float64():
    params = random_gaussians(2, 80, 3, (8, 8), sigma_range=(0.2, 1.0))
    out64 = rasterize_gaussians(*params, (8, 8), (30, 34), mode='gsplat_sum')
    out32 = rasterize_gaussians(*[p.float() for p in params], (8, 8), (30, 34), mode='gsplat_sum')
    assert out32.dtype == torch.float32
    # pixels whose weight crosses 1/255 in float32 differ by at most one such weight times a colour
    close = torch.isclose(out32.double(), out64, rtol=1e-4, atol=1e-4)
    assert close.float().mean() > 0.995
    assert (out32.double() - out64).abs().max() < 0.05


# ----------------------------------------------------------------------------------------------------------------
# argument validation
# ----------------------------------------------------------------------------------------------------------------

def _good():
    return [torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2), torch.ones(1, 2, 3)]


@pytest.mark.parametrize('kwargs,exc,word', [
    (dict(mode='alpha'), ValueError, 'mode'),
    (dict(box_half_size=(1.0,)), TypeError, 'box_half_size'),
    (dict(box_half_size=(1.0, -1.0)), ValueError, 'box_half_size'),
    (dict(box_half_size=(1.0, float('nan'))), ValueError, 'box_half_size'),
    (dict(box_half_size=('1', 1.0)), TypeError, 'box_half_size'),
    (dict(box_half_size=(1.0, 1.0), cutoff=3.0), ValueError, 'cutoff'),
    (dict(box_half_size=(1.0, 1.0), mode='gsplat_sum'), ValueError, 'box_half_size'),
    (dict(mode='gsplat_sum', cutoff=3.0), ValueError, 'cutoff'),
    (dict(opacities=torch.ones(1, 2)), ValueError, 'opacities'),
    (dict(mode='gsplat_sum', opacities=torch.ones(1, 3)), ValueError, 'opacities'),
    (dict(mode='gsplat_sum', opacities=torch.ones(1, 2, dtype=torch.long)), TypeError, 'opacities'),
    (dict(mode='gsplat_sum', opacities=torch.tensor([[1.0, float('inf')]])), ValueError, 'opacities'),
    (dict(mode='gsplat_sum', opacities=[[1.0, 1.0]]), TypeError, 'opacities'),
])
def test_bad_mode_arguments_name_the_argument(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        rasterize_gaussians(*_good(), (4, 4), (8, 8), **kwargs)


def test_default_behaviour_unchanged_by_the_new_keywords():
    params = random_gaussians(2, 30, 3, (6, 6))
    plain = rasterize_gaussians(*params, (6, 6), (17, 19))
    explicit = rasterize_gaussians(*params, (6, 6), (17, 19), 3.5, mode='sum', box_half_size=None, opacities=None)
    assert torch.equal(plain, explicit)
