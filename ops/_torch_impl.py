"""Pure-PyTorch 2D Gaussian rasterizer: the reference implementation and the fallback on every device.

Each Gaussian touches only the output pixels of its own pixel box, which depends on the footprint:

* ``'ellipse'`` (default): the bounding box of the cutoff ellipse ``q <= cutoff**2``, i.e. ``mu +- cutoff *
  sigma`` per axis (independent of rho), converted to output pixels and clipped; inside it, ``q`` decides.
* ``'box'`` (``box_half_size``, GSASR's official footprint): exactly the pixels whose sample point lies within
  ``|x - mu_x| <= half_w``, ``|y - mu_y| <= half_h``; every pixel of the box receives the Gaussian.
* ``'gsplat'`` (``mode='gsplat_sum'``, ContinuousSR's official renderer): the 16x16 tiles of gsplat's
  ``project_gaussians_2d`` bounding box; a pixel receives ``min(1, opacity * exp(-q / 2))`` when that is at
  least 1/255 and the Gaussian is among the first 256 of its tile's list (gsplat's sum kernel reads one
  batch of 256 Gaussians per tile).

Gaussians are grouped by (padded) box size so a patch of K_y x K_x pixels is not padded to the largest box
of the batch, and each group is processed in chunks whose temporaries stay below a fixed number of
elements (``B * N * Ho * Wo`` is never materialised). The backward recomputes the weights instead of
storing the patches.

The exponent is separable up to one cross term::

    q / 2 = a * dx^2 + a * dy^2 - 2 * a * rho * dx * dy,     a = 1 / (2 (1 - rho^2))

with ``dx`` depending on the pixel column only and ``dy`` on the row only, so three broadcast operations
on the (M, K_y, K_x) patch build it; pixels outside the image or the Gaussian's own box get ``+inf``
through the 1-D column/row terms.
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ['rasterize_gaussians_torch', 'RasterMode', 'DEFAULT_CUTOFF', 'GSPLAT_TILE', 'GSPLAT_TILE_CAP',
           'GSPLAT_ALPHA_MIN']

# GSASR's Gaussians are small (sigma of a fraction of an LR pixel to a few pixels). A peak-normalised
# Gaussian has value exp(-c^2/2) on its cutoff ellipse and the same fraction of its 2D mass lies beyond it:
# 0.22% at c = 3.5 (1.1% at c = 3.0), below half an 8-bit grey level for unit amplitudes, while the cost
# grows as c^2.
DEFAULT_CUTOFF = 3.5

# gsplat's sum renderer (ContinuousSR): 16x16 tiles, one shared-memory batch of 16 * 16 Gaussians read per
# tile, contributions below 1/255 skipped, a 3-sigma radius from the larger eigenvalue floored as below.
GSPLAT_TILE = 16
GSPLAT_TILE_CAP = GSPLAT_TILE * GSPLAT_TILE
GSPLAT_ALPHA_MIN = 1.0 / 255.0
GSPLAT_RADIUS_SIGMAS = 3.0
GSPLAT_EIG_FLOOR = 0.1  # gsplat takes sqrt(max(0.1, b^2 - det)) for the eigenvalue spread

# Padded box sizes (output pixels per axis). Consecutive sizes differ by at most ~25% above 8, so a
# patch wastes at most ~1.6x work in padding while the number of groups stays small.
_BOX_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 36, 40, 45, 50, 56, 64, 72, 80,
              90, 100, 112, 128, 144, 160, 180, 200, 224, 256, 288, 320, 360, 400, 448, 512, 576, 640, 720,
              800, 896, 1024)
# Upper bound on the number of elements of one (M, K_y, K_x) patch tensor (and M * K_y * K_x * C).
_CHUNK_ELEMENTS = 1 << 21
# Merged groups whose padded patches hold fewer elements than this are always merged.
_MERGE_ELEMENTS = 1 << 16
# Boxes are widened by this many output pixels' worth before rounding; the exact q <= cutoff^2 test
# decides, so the tolerance only guards against rounding at the box edge.
_BOX_EPS = 1e-4


@dataclass(frozen=True)
class RasterMode:
    """Which pixels a Gaussian reaches and with what weight (see the module docstring).

    Attributes:
        footprint: ``'ellipse'``, ``'box'`` or ``'gsplat'``.
        cutoff: Mahalanobis radius of the ellipse footprint.
        half_h, half_w: half-sizes of the box footprint in LR pixels.
    """
    footprint: str = 'ellipse'
    cutoff: float = DEFAULT_CUTOFF
    half_h: float = 0.0
    half_w: float = 0.0

    @staticmethod
    def of(cutoff: Optional[float], box_half_size: Optional[Sequence[float]], mode: str) -> 'RasterMode':
        """The mode of the public keyword arguments (already validated)."""
        if mode == 'gsplat_sum':
            return RasterMode('gsplat')
        if box_half_size is not None:
            return RasterMode('box', half_h=float(box_half_size[0]), half_w=float(box_half_size[1]))
        return RasterMode('ellipse', cutoff=DEFAULT_CUTOFF if cutoff is None else float(cutoff))


def _ellipse_boxes(centre: torch.Tensor, sigma: torch.Tensor, cutoff: float, lr_len: int,
                   out_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """First output pixel and box length (0 when empty) along one axis, clipped to the image.

    Output pixel ``v`` samples the LR coordinate ``(v + 0.5) * lr_len / out_len``; the Gaussian reaches
    ``centre +- cutoff * sigma``.
    """
    scale = out_len / lr_len
    centre = centre.double()
    half = cutoff * sigma.double()
    lo = torch.ceil((centre - half) * scale - 0.5 - _BOX_EPS)
    hi = torch.floor((centre + half) * scale - 0.5 + _BOX_EPS)
    lo = lo.clamp(min=0, max=out_len)
    hi = hi.clamp(min=-1, max=out_len - 1)
    length = (hi - lo + 1).clamp(min=0)
    return lo.long(), length.long()


def _half_size_boxes(centre: torch.Tensor, half: float, lr_len: int,
                     out_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """First pixel and length of exactly the pixels ``v`` with ``|(v + 0.5) * lr_len / out_len - centre| <=
    half``, evaluated in ``centre``'s dtype (the same arithmetic as the weights), clipped to the image."""
    scale = out_len / lr_len
    step = lr_len / out_len
    c64 = centre.double()
    lo = torch.ceil((c64 - half) * scale - 0.5 - _BOX_EPS).clamp(-2, out_len + 1).long()
    hi = torch.floor((c64 + half) * scale - 0.5 + _BOX_EPS).clamp(-2, out_len + 1).long()

    def inside(pix):
        return ((pix.to(centre.dtype) + 0.5) * step - centre).abs() <= half

    # the estimate is within one pixel of the exact ends; the test is monotone along the axis
    lo = lo - inside(lo - 1).long()
    lo = lo + (~inside(lo)).long()
    hi = hi + inside(hi + 1).long()
    hi = hi - (~inside(hi)).long()
    lo = lo.clamp(min=0, max=out_len)
    hi = hi.clamp(min=-1, max=out_len - 1)
    return lo, (hi - lo + 1).clamp(min=0)


def gsplat_tile_boxes(means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor, lr_size: Tuple[int, int],
                      out_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gsplat's ``project_gaussians_2d`` tile box of flat (M, 2) Gaussians in LR units, in their dtype.

    Returns (tile_min (M, 2) x, y; tile_max (M, 2) exclusive; visible (M,) bool). In output pixels the
    centre is ``mu * Wo / W - 0.5`` (gsplat samples pixel j at coordinate j) and the covariance that of
    ``sigma * Wo / W`` (x), ``sigma * Ho / H`` (y), rho; the radius is ``ceil(3 sqrt(b + sqrt(max(0.1, b^2 -
    det))))`` with ``b`` half the trace; the box is ``trunc(c / 16 - r / 16)`` to ``trunc(c / 16 + r / 16 +
    1)``, clipped to the tile grid; Gaussians with det == 0 are dropped, as gsplat does.
    """
    height, width = lr_size
    out_h, out_w = out_size
    scale = torch.tensor([out_w / width, out_h / height], dtype=means.dtype, device=means.device)
    centre = means * scale - 0.5
    s_out = sigmas * scale
    cxx, cyy = s_out[:, 0] * s_out[:, 0], s_out[:, 1] * s_out[:, 1]
    cxy = rhos * s_out[:, 0] * s_out[:, 1]
    det = cxx * cyy - cxy * cxy
    half_trace = 0.5 * (cxx + cyy)
    big_eig = half_trace + torch.sqrt(torch.clamp(half_trace * half_trace - det, min=GSPLAT_EIG_FLOOR))
    radius = torch.ceil(GSPLAT_RADIUS_SIGMAS * torch.sqrt(big_eig))
    tile_centre = centre / GSPLAT_TILE
    tile_radius = radius / GSPLAT_TILE
    bounds = torch.tensor([(out_w + GSPLAT_TILE - 1) // GSPLAT_TILE, (out_h + GSPLAT_TILE - 1) // GSPLAT_TILE],
                          dtype=means.dtype, device=means.device)
    # C's (int) truncates toward zero; clamping first keeps the conversion in range
    lo = torch.trunc((tile_centre - tile_radius[:, None]).clamp(-1, bounds.max() + 1))
    hi = torch.trunc(((tile_centre + tile_radius[:, None]) + 1).clamp(-1, bounds.max() + 1))
    lo = torch.minimum(lo.clamp(min=0), bounds).long()
    hi = torch.minimum(hi.clamp(min=0), bounds).long()
    visible = (det != 0) & (hi > lo).all(1)
    return lo, hi, visible


def _bucket(lengths: torch.Tensor) -> torch.Tensor:
    """Index into ``_BOX_SIZES`` of the smallest padded size >= length (lengths above the list pad to
    multiples of 128 via extra buckets)."""
    sizes = torch.tensor(_BOX_SIZES, device=lengths.device)
    idx = torch.bucketize(lengths, sizes)
    big = lengths > _BOX_SIZES[-1]
    if bool(big.any()):
        idx = torch.where(big, len(_BOX_SIZES) + (lengths - _BOX_SIZES[-1] + 127) // 128, idx)
    return idx


def _bucket_size(index: int) -> int:
    if index < len(_BOX_SIZES):
        return _BOX_SIZES[index]
    return _BOX_SIZES[-1] + 128 * (index - len(_BOX_SIZES))


class _TileCap:
    """Which (Gaussian, tile) pairs of the gsplat footprint fall beyond the first ``GSPLAT_TILE_CAP`` of their
    tile's list (ordered by Gaussian index within each image, as gsplat's stable sort of tile keys leaves
    them). ``allowed[offset[g] + (ty - ty0[g]) * ntx[g] + (tx - tx0[g])]`` tells whether Gaussian ``g``
    counts on tile (ty, tx)."""

    def __init__(self, ids, tile_lo, tile_hi, batch_n, tiles_x, tiles_y):
        self.tx0, self.ty0 = tile_lo[:, 0], tile_lo[:, 1]
        ntx = (tile_hi[:, 0] - tile_lo[:, 0]).clamp(min=0)
        nty = (tile_hi[:, 1] - tile_lo[:, 1]).clamp(min=0)
        self.ntx = ntx
        areas = torch.zeros_like(ntx)
        areas[ids] = ntx[ids] * nty[ids]  # invisible Gaussians hold no pairs
        self.offset = torch.cumsum(areas, 0) - areas
        total = int(areas.sum())
        self.active = False
        if total == 0:
            return
        owner = torch.repeat_interleave(torch.arange(areas.numel(), device=areas.device), areas)
        local = torch.arange(total, device=areas.device) - self.offset[owner]
        tile_y = self.ty0[owner] + torch.div(local, ntx[owner], rounding_mode='floor')
        tile_x = self.tx0[owner] + local % ntx[owner]
        key = torch.div(owner, batch_n, rounding_mode='floor') * (tiles_x * tiles_y) + tile_y * tiles_x + tile_x
        counts = torch.bincount(key)
        if int(counts.max()) <= GSPLAT_TILE_CAP:
            return
        sorted_key, order = torch.sort(key, stable=True)  # pairs are emitted in Gaussian order
        first = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(total, device=key.device) - first[sorted_key]
        self.allowed = rank < GSPLAT_TILE_CAP
        self.active = True

    def pixel_mask(self, ids, rows, cols):
        """(M, Ky, Kx) bool: pixel (rows, cols) of Gaussian ``ids`` lies on a tile where it counts."""
        ty = torch.div(rows, GSPLAT_TILE, rounding_mode='floor') - self.ty0[ids, None]
        tx = torch.div(cols, GSPLAT_TILE, rounding_mode='floor') - self.tx0[ids, None]
        index = self.offset[ids, None, None] + ty[:, :, None] * self.ntx[ids, None, None] + tx[:, None, :]
        return self.allowed[index.clamp(0, self.allowed.numel() - 1)]


class _Plan:
    """Per-Gaussian boxes and the groups/chunks to process them in (shared by forward and backward)."""

    def __init__(self, means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor, lr_size: Tuple[int, int],
                 out_size: Tuple[int, int], mode: RasterMode):
        height, width = lr_size
        out_h, out_w = out_size
        num = means.shape[0] * means.shape[1]
        flat_means = means.reshape(num, 2)
        flat_sigmas = sigmas.reshape(num, 2)
        self.cap = None
        if mode.footprint == 'ellipse':
            x0, len_x = _ellipse_boxes(flat_means[:, 0], flat_sigmas[:, 0], mode.cutoff, width, out_w)
            y0, len_y = _ellipse_boxes(flat_means[:, 1], flat_sigmas[:, 1], mode.cutoff, height, out_h)
            visible = (len_x > 0) & (len_y > 0)
        elif mode.footprint == 'box':
            x0, len_x = _half_size_boxes(flat_means[:, 0], mode.half_w, width, out_w)
            y0, len_y = _half_size_boxes(flat_means[:, 1], mode.half_h, height, out_h)
            visible = (len_x > 0) & (len_y > 0)
        else:
            tile_lo, tile_hi, visible = gsplat_tile_boxes(flat_means, flat_sigmas, rhos.reshape(num), lr_size,
                                                          out_size)
            x0, y0 = tile_lo[:, 0] * GSPLAT_TILE, tile_lo[:, 1] * GSPLAT_TILE
            len_x = torch.clamp_max(tile_hi[:, 0] * GSPLAT_TILE, out_w) - x0
            len_y = torch.clamp_max(tile_hi[:, 1] * GSPLAT_TILE, out_h) - y0
            len_x = torch.where(visible, len_x, 0)
            len_y = torch.where(visible, len_y, 0)
        ids = torch.nonzero(visible).squeeze(1)
        if mode.footprint == 'gsplat':
            cap = _TileCap(ids, tile_lo, tile_hi, means.shape[1], (out_w + GSPLAT_TILE - 1) // GSPLAT_TILE,
                           (out_h + GSPLAT_TILE - 1) // GSPLAT_TILE)
            self.cap = cap if cap.active else None
        bx, by = _bucket(len_x[ids]), _bucket(len_y[ids])
        n_bx = int(bx.max()) + 1 if ids.numel() else 1
        key = by * n_bx + bx
        key, order = torch.sort(key, stable=True)
        self.ids = ids[order]
        self.x0, self.y0 = x0, y0
        self.len_x, self.len_y = len_x, len_y
        self.chunks: List[Tuple[torch.Tensor, int, int]] = []
        if self.ids.numel() == 0:
            return
        keys, counts = torch.unique_consecutive(key, return_counts=True)
        # Adjacent groups (in key order) are merged while the merged patch costs little: under
        # _MERGE_ELEMENTS in all or at most 1.25x the unpadded work. Small inputs then need few chunks
        # (Python overhead), large ones keep tight boxes.
        groups = []  # [count, size_y, size_x, work]
        for k, count in zip(keys.tolist(), counts.tolist()):
            size_y, size_x = _bucket_size(k // n_bx), _bucket_size(k % n_bx)
            if groups:
                last = groups[-1]
                merged_y, merged_x = max(last[1], size_y), max(last[2], size_x)
                merged_count = last[0] + count
                work = last[3] + count * size_y * size_x
                padded = merged_count * merged_y * merged_x
                if padded <= _MERGE_ELEMENTS or padded <= 1.25 * work:
                    groups[-1] = [merged_count, merged_y, merged_x, work]
                    continue
            groups.append([count, size_y, size_x, count * size_y * size_x])
        start = 0
        for count, size_y, size_x, _ in groups:
            step = max(1, _CHUNK_ELEMENTS // (size_x * size_y))
            for s in range(start, start + count, step):
                self.chunks.append((self.ids[s:min(s + step, start + count)], size_y, size_x))
            start += count


def _chunk_terms(ids, size_y, size_x, plan, means, sigmas, rhos, opacities, batch_n, lr_size, out_size, mode):
    """Weights of one chunk and what the backward needs.

    Returns ``(weights, grad_weights, opacity_weights, pix, dx, dy, inv, rho)``: ``weights`` (M, Ky, Kx)
    multiply the colours in the forward; ``grad_weights`` is the weight the gradients of the geometry follow:
    ``opacity * exp(-q / 2)`` unclamped in the gsplat footprint (gsplat's backward ignores its ``min(1, .)``),
    else ``weights`` itself; ``opacity_weights`` (gsplat only, else None) is ``exp(-q / 2)`` where the pixel
    counts, the derivative of ``grad_weights`` by the opacity.
    """
    height, width = lr_size
    out_h, out_w = out_size
    dtype = means.dtype
    dev = means.device
    flat_means = means.reshape(-1, 2)[ids]
    flat_sigmas = sigmas.reshape(-1, 2)[ids]
    rho = rhos.reshape(-1)[ids]
    ar_x = torch.arange(size_x, device=dev)
    ar_y = torch.arange(size_y, device=dev)
    cols = plan.x0[ids, None] + ar_x  # (M, Kx)
    rows = plan.y0[ids, None] + ar_y  # (M, Ky)
    col_ok = ar_x < plan.len_x[ids, None]
    row_ok = ar_y < plan.len_y[ids, None]
    cols = torch.where(col_ok, cols, 0)
    rows = torch.where(row_ok, rows, 0)
    px = (cols.to(dtype) + 0.5) * (width / out_w)
    py = (rows.to(dtype) + 0.5) * (height / out_h)
    dx = (px - flat_means[:, 0:1]) / flat_sigmas[:, 0:1]
    dy = (py - flat_means[:, 1:2]) / flat_sigmas[:, 1:2]
    inv = 1.0 / (1.0 - rho * rho)  # k = 1 / (1 - rho^2)
    half_k = (0.5 * inv)[:, None]
    term_x = torch.where(col_ok, half_k * dx * dx, float('inf'))
    term_y = torch.where(row_ok, half_k * dy * dy, float('inf'))
    cross = (-inv * rho)[:, None] * dy  # (M, Ky): times dx gives -k rho dx dy
    half_q = (term_y[:, :, None] + term_x[:, None, :]).addcmul_(cross[:, :, None], dx[:, None, :])
    weights = torch.exp(-half_q)
    grad_weights = weights
    opacity_weights = None
    if mode.footprint == 'ellipse':
        weights.masked_fill_(half_q > 0.5 * mode.cutoff * mode.cutoff, 0.0)
    elif mode.footprint == 'gsplat':
        grad_weights = weights * opacities.reshape(-1)[ids][:, None, None]
        keep = grad_weights >= GSPLAT_ALPHA_MIN
        if plan.cap is not None:
            keep &= plan.cap.pixel_mask(ids, rows, cols)
        opacity_weights = weights * keep
        grad_weights = grad_weights * keep
        weights = grad_weights.clamp(max=1.0)
    batch = torch.div(ids, batch_n, rounding_mode='floor')
    pix = (batch * (out_h * out_w))[:, None, None] + (rows * out_w)[:, :, None] + cols[:, None, :]
    return weights, grad_weights, opacity_weights, pix, dx, dy, inv, rho


class _RasterizeTorch(torch.autograd.Function):

    @staticmethod
    def forward(ctx, means, sigmas, rhos, colors, opacities, lr_size, out_size, mode):
        bsz, num, chans = colors.shape
        out_h, out_w = out_size
        plan = _Plan(means, sigmas, rhos, lr_size, out_size, mode)
        out = torch.zeros(bsz * out_h * out_w, chans, dtype=colors.dtype, device=colors.device)
        flat_colors = colors.reshape(-1, chans)
        for ids, size_y, size_x in plan.chunks:
            weights, _, _, pix, *_ = _chunk_terms(ids, size_y, size_x, plan, means, sigmas, rhos, opacities, num,
                                               lr_size, out_size, mode)
            contrib = weights[..., None] * flat_colors[ids][:, None, None, :]
            out.index_add_(0, pix.reshape(-1), contrib.reshape(-1, chans))
        ctx.save_for_backward(means, sigmas, rhos, colors, opacities)
        ctx.plan = plan
        ctx.sizes = (lr_size, out_size, mode)
        return out.view(bsz, out_h, out_w, chans).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        means, sigmas, rhos, colors, opacities = ctx.saved_tensors
        plan = ctx.plan
        lr_size, out_size, mode = ctx.sizes
        bsz, num, chans = colors.shape
        grad_flat = grad_out.permute(0, 2, 3, 1).reshape(-1, chans)
        flat_colors = colors.reshape(-1, chans)
        g_means = torch.zeros(bsz * num, 2, dtype=means.dtype, device=means.device)
        g_sigmas = torch.zeros_like(g_means)
        g_rhos = torch.zeros(bsz * num, dtype=rhos.dtype, device=rhos.device)
        g_colors = torch.zeros(bsz * num, chans, dtype=colors.dtype, device=colors.device)
        g_opacities = torch.zeros(bsz * num, dtype=colors.dtype, device=colors.device) \
            if mode.footprint == 'gsplat' else None
        for ids, size_y, size_x in plan.chunks:
            weights, grad_weights, opacity_weights, pix, dx, dy, inv, rho = _chunk_terms(
                ids, size_y, size_x, plan, means, sigmas, rhos, opacities, num, lr_size, out_size, mode)
            m = ids.numel()
            grads = grad_flat[pix.reshape(-1)].view(m, size_y * size_x, chans)
            w_flat = weights.view(m, 1, size_y * size_x)
            g_colors[ids] = torch.bmm(w_flat, grads).squeeze(1)
            # G = w * dL/dout_pixel . color; then dL/dq = -G / 2 summed via the separable moments
            grad_dot_color = torch.bmm(grads, flat_colors[ids][:, :, None]).view(m, size_y, size_x)
            if g_opacities is not None:
                g_opacities[ids] = (grad_dot_color * opacity_weights).sum((1, 2))
            big_g = grad_dot_color.mul_(grad_weights)
            g_x = big_g.sum(1)  # (M, Kx)
            g_y = big_g.sum(2)  # (M, Ky)
            s_x = (g_x * dx).sum(1)
            s_xx = (g_x * dx * dx).sum(1)
            s_y = (g_y * dy).sum(1)
            s_yy = (g_y * dy * dy).sum(1)
            s_xy = (torch.bmm(big_g, dx[:, :, None]).squeeze(2) * dy).sum(1)
            sig = sigmas.reshape(-1, 2)[ids]
            g_means[ids, 0] = inv * (s_x - rho * s_y) / sig[:, 0]
            g_means[ids, 1] = inv * (s_y - rho * s_x) / sig[:, 1]
            g_sigmas[ids, 0] = inv * (s_xx - rho * s_xy) / sig[:, 0]
            g_sigmas[ids, 1] = inv * (s_yy - rho * s_xy) / sig[:, 1]
            s_q = inv * (s_xx - 2 * rho * s_xy + s_yy)
            g_rhos[ids] = inv * (s_xy - rho * s_q)
        g_opacities = None if g_opacities is None else g_opacities.view(bsz, num)
        return (g_means.view_as(means), g_sigmas.view_as(sigmas), g_rhos.view_as(rhos),
                g_colors.view_as(colors), g_opacities, None, None, None)


def rasterize_gaussians_torch(means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor,
                              colors: torch.Tensor, lr_size: Sequence[int], out_size: Sequence[int],
                              cutoff: Optional[float] = None, *, box_half_size: Optional[Sequence[float]] = None,
                              mode: str = 'sum', opacities: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pure-PyTorch rasterization; same signature and contract as ``gsasr_plugin.ops.rasterize_gaussians``
    (inputs are not validated here: call the public function).

    Computes in float64 when any input is float64, else float32, and returns ``colors.dtype``.
    """
    raster_mode = RasterMode.of(cutoff, box_half_size, mode)
    tensors = [means, sigmas, rhos, colors] + ([opacities] if opacities is not None else [])
    compute = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
    if raster_mode.footprint == 'gsplat' and opacities is None:
        opacities = torch.ones(means.shape[:2], dtype=compute, device=means.device)
    opacity_arg = None if opacities is None or raster_mode.footprint != 'gsplat' else opacities.to(compute)
    out = _RasterizeTorch.apply(means.to(compute), sigmas.to(compute), rhos.to(compute), colors.to(compute),
                                opacity_arg, (int(lr_size[0]), int(lr_size[1])),
                                (int(out_size[0]), int(out_size[1])), raster_mode)
    return out.to(colors.dtype)
