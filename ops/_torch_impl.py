"""Pure-PyTorch 2D Gaussian rasterizer: the reference implementation and the fallback on every device.

Each Gaussian touches only the output pixels inside the bounding box of its cutoff ellipse
``q <= cutoff**2``. That box is ``mu +- cutoff * sigma`` per axis (independent of rho), converted to
output pixels with the per-axis scale and clipped to the image. Gaussians are grouped by (padded) box
size so a patch of K_y x K_x pixels is not padded to the largest box of the batch, and each group is
processed in chunks whose temporaries stay below a fixed number of elements (``B * N * Ho * Wo`` is
never materialised). The backward recomputes the weights instead of storing the patches.

The exponent is separable up to one cross term::

    q / 2 = a * dx^2 + a * dy^2 - 2 * a * rho * dx * dy,     a = 1 / (2 (1 - rho^2))

with ``dx`` depending on the pixel column only and ``dy`` on the row only, so three broadcast operations
on the (M, K_y, K_x) patch build it; pixels outside the image or the Gaussian's own box get ``+inf``
through the 1-D column/row terms.
"""
from typing import List, Sequence, Tuple

import torch

__all__ = ['rasterize_gaussians_torch']

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


def _pixel_boxes(centre: torch.Tensor, sigma: torch.Tensor, cutoff: float, lr_len: int,
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


class _Plan:
    """Per-Gaussian boxes and the groups/chunks to process them in (shared by forward and backward)."""

    def __init__(self, means: torch.Tensor, sigmas: torch.Tensor, lr_size: Tuple[int, int],
                 out_size: Tuple[int, int], cutoff: float):
        height, width = lr_size
        out_h, out_w = out_size
        num = means.shape[0] * means.shape[1]
        flat_means = means.reshape(num, 2)
        flat_sigmas = sigmas.reshape(num, 2)
        x0, len_x = _pixel_boxes(flat_means[:, 0], flat_sigmas[:, 0], cutoff, width, out_w)
        y0, len_y = _pixel_boxes(flat_means[:, 1], flat_sigmas[:, 1], cutoff, height, out_h)
        visible = (len_x > 0) & (len_y > 0)
        ids = torch.nonzero(visible).squeeze(1)
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


def _chunk_terms(ids, size_y, size_x, plan, means, sigmas, rhos, batch_n, lr_size, out_size, cutoff):
    """Weights (M, Ky, Kx) of one chunk and what the backward needs: pixel indices, dx, dy, k."""
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
    weights.masked_fill_(half_q > 0.5 * cutoff * cutoff, 0.0)
    batch = torch.div(ids, batch_n, rounding_mode='floor')
    pix = (batch * (out_h * out_w))[:, None, None] + (rows * out_w)[:, :, None] + cols[:, None, :]
    return weights, pix, dx, dy, inv, rho


class _RasterizeTorch(torch.autograd.Function):

    @staticmethod
    def forward(ctx, means, sigmas, rhos, colors, lr_size, out_size, cutoff):
        bsz, num, chans = colors.shape
        out_h, out_w = out_size
        plan = _Plan(means, sigmas, lr_size, out_size, cutoff)
        out = torch.zeros(bsz * out_h * out_w, chans, dtype=colors.dtype, device=colors.device)
        flat_colors = colors.reshape(-1, chans)
        for ids, size_y, size_x in plan.chunks:
            weights, pix, *_ = _chunk_terms(ids, size_y, size_x, plan, means, sigmas, rhos, num, lr_size,
                                            out_size, cutoff)
            contrib = weights[..., None] * flat_colors[ids][:, None, None, :]
            out.index_add_(0, pix.reshape(-1), contrib.reshape(-1, chans))
        ctx.save_for_backward(means, sigmas, rhos, colors)
        ctx.plan = plan
        ctx.sizes = (lr_size, out_size, cutoff)
        return out.view(bsz, out_h, out_w, chans).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad_out):
        means, sigmas, rhos, colors = ctx.saved_tensors
        plan = ctx.plan
        lr_size, out_size, cutoff = ctx.sizes
        bsz, num, chans = colors.shape
        grad_flat = grad_out.permute(0, 2, 3, 1).reshape(-1, chans)
        flat_colors = colors.reshape(-1, chans)
        g_means = torch.zeros(bsz * num, 2, dtype=means.dtype, device=means.device)
        g_sigmas = torch.zeros_like(g_means)
        g_rhos = torch.zeros(bsz * num, dtype=rhos.dtype, device=rhos.device)
        g_colors = torch.zeros(bsz * num, chans, dtype=colors.dtype, device=colors.device)
        for ids, size_y, size_x in plan.chunks:
            weights, pix, dx, dy, inv, rho = _chunk_terms(ids, size_y, size_x, plan, means, sigmas, rhos, num,
                                                          lr_size, out_size, cutoff)
            m = ids.numel()
            grads = grad_flat[pix.reshape(-1)].view(m, size_y * size_x, chans)
            w_flat = weights.view(m, 1, size_y * size_x)
            g_colors[ids] = torch.bmm(w_flat, grads).squeeze(1)
            # G = w * dL/dout_pixel . color; then dL/dq = -G / 2 summed via the separable moments
            big_g = torch.bmm(grads, flat_colors[ids][:, :, None]).view(m, size_y, size_x).mul_(weights)
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
        return (g_means.view_as(means), g_sigmas.view_as(sigmas), g_rhos.view_as(rhos),
                g_colors.view_as(colors), None, None, None)


def rasterize_gaussians_torch(means: torch.Tensor, sigmas: torch.Tensor, rhos: torch.Tensor,
                              colors: torch.Tensor, lr_size: Sequence[int], out_size: Sequence[int],
                              cutoff: float = 3.5) -> torch.Tensor:
    """Pure-PyTorch rasterization; same signature and contract as ``gsasr_plugin.ops.rasterize_gaussians``
    (inputs are not validated here: call the public function).

    Computes in float64 when any input is float64, else float32, and returns ``colors.dtype``.
    """
    compute = torch.float64 if any(t.dtype == torch.float64 for t in (means, sigmas, rhos, colors)) \
        else torch.float32
    out = _RasterizeTorch.apply(means.to(compute), sigmas.to(compute), rhos.to(compute), colors.to(compute),
                                (int(lr_size[0]), int(lr_size[1])), (int(out_size[0]), int(out_size[1])),
                                float(cutoff))
    return out.to(colors.dtype)
