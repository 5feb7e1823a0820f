// Tile-binned 2D Gaussian rasterizer (forward: per-pixel gather, backward: per-Gaussian gather).
//
// Contract (same as ops/_torch_impl.py): output pixel (u, v) samples the LR point
// x = (v + 0.5) * W / Wo, y = (u + 0.5) * H / Ho and receives colors[b, n, :] * exp(-q / 2) from every
// Gaussian n of batch b with q <= cutoff^2. q is evaluated in the whitened form
//   a = dx, b = (dy - rho * dx) / sqrt(1 - rho^2), q = a^2 + b^2,
// with dx = (x - mu_x) / sigma_x, dy = (y - mu_y) / sigma_y. Everything is float32.
//
// Forward:  1. per Gaussian, its pixel box (bounding box of the cutoff ellipse, clipped to the image) and
//              the number of 16x16 tiles it overlaps;
//           2. an exclusive prefix sum of those counts gives each Gaussian its slots in a list of
//              (batch * tiles + tile, gaussian) pairs, sorted by key with torch's sort;
//           3. one thread block per (tile, batch) loads its Gaussians into shared memory in batches and
//              each thread sums its own pixel (no atomics).
// Backward: one warp per Gaussian walks its own box, recomputes the weights, reduces the moments
//           sum G*dx, G*dy, G*dx^2, G*dy^2, G*dx*dy (G = w * <grad_out, color>) and sum w * grad_out
//           across the warp and writes the Gaussian's gradients directly (no atomics, deterministic).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int kTile = 16;
constexpr int kBlock = kTile * kTile;
constexpr int kChannelChunk = 4;   // colours kept in shared memory per forward pass
constexpr int kGradChunk = 8;      // colour gradients accumulated in registers per backward pass
constexpr double kBoxEps = 1e-4;   // same tolerance as the pure path; the q test decides

struct Sizes {
  int height, width, out_h, out_w;
  float cutoff_sq;
  double cutoff;
};

// Inclusive pixel box of one Gaussian along one axis, clipped to [0, out_len); empty when lo > hi.
__device__ __forceinline__ void axis_box(float centre, float sigma, double cutoff, int lr_len, int out_len,
                                         int& lo, int& hi) {
  const double scale = static_cast<double>(out_len) / lr_len;
  const double half = cutoff * static_cast<double>(sigma);
  double flo = ceil((static_cast<double>(centre) - half) * scale - 0.5 - kBoxEps);
  double fhi = floor((static_cast<double>(centre) + half) * scale - 0.5 + kBoxEps);
  flo = fmax(flo, 0.0);
  fhi = fmin(fhi, static_cast<double>(out_len - 1));
  if (flo > fhi) {
    lo = 0;
    hi = -1;
  } else {
    lo = static_cast<int>(flo);
    hi = static_cast<int>(fhi);
  }
}

__device__ __forceinline__ void pixel_box(const float* means, const float* sigmas, int64_t g, const Sizes& s,
                                          int4& box) {
  axis_box(means[2 * g], sigmas[2 * g], s.cutoff, s.width, s.out_w, box.x, box.z);
  axis_box(means[2 * g + 1], sigmas[2 * g + 1], s.cutoff, s.height, s.out_h, box.y, box.w);
}

__global__ void count_tiles_kernel(const float* __restrict__ means, const float* __restrict__ sigmas,
                                   int64_t total, Sizes s, int4* __restrict__ boxes,
                                   int64_t* __restrict__ counts) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= total) return;
  int4 box;
  pixel_box(means, sigmas, g, s, box);
  boxes[g] = box;
  if (box.x > box.z || box.y > box.w) {
    counts[g] = 0;
  } else {
    counts[g] = static_cast<int64_t>(box.z / kTile - box.x / kTile + 1) * (box.w / kTile - box.y / kTile + 1);
  }
}

__global__ void emit_pairs_kernel(const int4* __restrict__ boxes, const int64_t* __restrict__ ends,
                                  int64_t total, int64_t num_per_batch, int tiles_x, int64_t tiles_per_image,
                                  int64_t* __restrict__ keys, int32_t* __restrict__ values) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= total) return;
  const int4 box = boxes[g];
  if (box.x > box.z || box.y > box.w) return;
  const int64_t count = static_cast<int64_t>(box.z / kTile - box.x / kTile + 1) * (box.w / kTile - box.y / kTile + 1);
  int64_t slot = ends[g] - count;  // ends is the inclusive prefix sum
  const int64_t base = (g / num_per_batch) * tiles_per_image;
  for (int ty = box.y / kTile; ty <= box.w / kTile; ++ty) {
    for (int tx = box.x / kTile; tx <= box.z / kTile; ++tx) {
      keys[slot] = base + static_cast<int64_t>(ty) * tiles_x + tx;
      values[slot] = static_cast<int32_t>(g);
      ++slot;
    }
  }
}

// grid (tiles_x, tiles_y, batch), block kTile x kTile.
__global__ void render_forward_kernel(const float* __restrict__ means, const float* __restrict__ sigmas,
                                      const float* __restrict__ rhos, const float* __restrict__ colors,
                                      const int64_t* __restrict__ tile_starts, const int32_t* __restrict__ order,
                                      int channels, Sizes s, float* __restrict__ out) {
  __shared__ float sh_mx[kBlock], sh_my[kBlock], sh_isx[kBlock], sh_isy[kBlock], sh_rho[kBlock],
      sh_irs[kBlock];
  __shared__ float sh_col[kBlock * kChannelChunk];

  const int b = blockIdx.z;
  const int64_t tile = static_cast<int64_t>(b) * gridDim.x * gridDim.y + blockIdx.y * gridDim.x + blockIdx.x;
  const int64_t start = tile_starts[tile];
  const int64_t end = tile_starts[tile + 1];
  const int col = blockIdx.x * kTile + threadIdx.x;
  const int row = blockIdx.y * kTile + threadIdx.y;
  const int tid = threadIdx.y * kTile + threadIdx.x;
  const bool inside = col < s.out_w && row < s.out_h;
  const float px = (col + 0.5f) * (static_cast<float>(s.width) / s.out_w);
  const float py = (row + 0.5f) * (static_cast<float>(s.height) / s.out_h);
  const int64_t plane = static_cast<int64_t>(s.out_h) * s.out_w;

  for (int c0 = 0; c0 < channels; c0 += kChannelChunk) {
    const int nc = min(kChannelChunk, channels - c0);
    float acc[kChannelChunk] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t batch_start = start; batch_start < end; batch_start += kBlock) {
      const int64_t k = batch_start + tid;
      __syncthreads();  // the previous batch is no longer being read
      if (k < end) {
        const int64_t g = order[k];
        const float rho = rhos[g];
        sh_mx[tid] = means[2 * g];
        sh_my[tid] = means[2 * g + 1];
        sh_isx[tid] = 1.f / sigmas[2 * g];
        sh_isy[tid] = 1.f / sigmas[2 * g + 1];
        sh_rho[tid] = rho;
        sh_irs[tid] = rsqrtf(fmaxf(1.f - rho * rho, 1e-12f));
        for (int c = 0; c < nc; ++c) sh_col[tid * kChannelChunk + c] = colors[g * channels + c0 + c];
      }
      __syncthreads();
      const int n_batch = static_cast<int>(min(static_cast<int64_t>(kBlock), end - batch_start));
      if (inside) {
        for (int j = 0; j < n_batch; ++j) {
          const float a = (px - sh_mx[j]) * sh_isx[j];
          const float dy = (py - sh_my[j]) * sh_isy[j];
          const float bq = (dy - sh_rho[j] * a) * sh_irs[j];
          const float q = a * a + bq * bq;
          if (q <= s.cutoff_sq) {
            const float w = __expf(-0.5f * q);
            for (int c = 0; c < nc; ++c) acc[c] += w * sh_col[j * kChannelChunk + c];
          }
        }
      }
    }
    if (inside) {
      const int64_t pix = static_cast<int64_t>(row) * s.out_w + col;
      for (int c = 0; c < nc; ++c) out[(static_cast<int64_t>(b) * channels + c0 + c) * plane + pix] = acc[c];
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// One warp per Gaussian; blockDim.x is a multiple of 32.
__global__ void render_backward_kernel(const float* __restrict__ means, const float* __restrict__ sigmas,
                                       const float* __restrict__ rhos, const float* __restrict__ colors,
                                       const float* __restrict__ grad_out, int64_t total, int64_t num_per_batch,
                                       int channels, Sizes s, float* __restrict__ g_means,
                                       float* __restrict__ g_sigmas, float* __restrict__ g_rhos,
                                       float* __restrict__ g_colors) {
  const int lane = threadIdx.x & 31;
  const int64_t g = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  if (g >= total) return;  // whole warps exit together
  int4 box;
  pixel_box(means, sigmas, g, s, box);
  const int len_x = box.z - box.x + 1;
  const int len_y = box.w - box.y + 1;
  const int64_t area = (box.x > box.z || box.y > box.w) ? 0 : static_cast<int64_t>(len_x) * len_y;
  const float mx = means[2 * g], my = means[2 * g + 1];
  const float sx = sigmas[2 * g], sy = sigmas[2 * g + 1];
  const float isx = 1.f / sx, isy = 1.f / sy;
  const float rho = rhos[g];
  const float one_minus = fmaxf(1.f - rho * rho, 1e-12f);
  const float irs = rsqrtf(one_minus);
  const float step_x = static_cast<float>(s.width) / s.out_w;
  const float step_y = static_cast<float>(s.height) / s.out_h;
  const int64_t b = g / num_per_batch;
  const int64_t plane = static_cast<int64_t>(s.out_h) * s.out_w;
  const float* grad_b = grad_out + b * channels * plane;
  const float* col = colors + g * channels;

  float m_x = 0.f, m_y = 0.f, m_xx = 0.f, m_yy = 0.f, m_xy = 0.f;
  for (int c0 = 0; c0 < channels; c0 += kGradChunk) {
    const int nc = min(kGradChunk, channels - c0);
    float acc[kGradChunk];
#pragma unroll
    for (int c = 0; c < kGradChunk; ++c) acc[c] = 0.f;
    for (int64_t idx = lane; idx < area; idx += 32) {
      const int ky = static_cast<int>(idx / len_x);
      const int kx = static_cast<int>(idx - static_cast<int64_t>(ky) * len_x);
      const int row = box.y + ky, colx = box.x + kx;
      const float dx = ((colx + 0.5f) * step_x - mx) * isx;
      const float dy = ((row + 0.5f) * step_y - my) * isy;
      const float bq = (dy - rho * dx) * irs;
      const float q = dx * dx + bq * bq;
      if (q > s.cutoff_sq) continue;
      const float w = __expf(-0.5f * q);
      const float* gp = grad_b + static_cast<int64_t>(row) * s.out_w + colx;
      for (int c = 0; c < nc; ++c) acc[c] += w * gp[(c0 + c) * plane];
      if (c0 == 0) {
        float gw = 0.f;
        for (int c = 0; c < channels; ++c) gw += col[c] * gp[c * plane];
        const float big_g = gw * w;
        m_x += big_g * dx;
        m_y += big_g * dy;
        m_xx += big_g * dx * dx;
        m_yy += big_g * dy * dy;
        m_xy += big_g * dx * dy;
      }
    }
    for (int c = 0; c < nc; ++c) {
      const float v = warp_sum(acc[c]);
      if (lane == 0) g_colors[g * channels + c0 + c] = v;
    }
  }
  m_x = warp_sum(m_x);
  m_y = warp_sum(m_y);
  m_xx = warp_sum(m_xx);
  m_yy = warp_sum(m_yy);
  m_xy = warp_sum(m_xy);
  if (lane == 0) {
    // dL/dq = -G/2 with q = k (dx^2 - 2 rho dx dy + dy^2), k = 1 / (1 - rho^2): see _torch_impl.py
    const float k = 1.f / one_minus;
    g_means[2 * g] = k * (m_x - rho * m_y) * isx;
    g_means[2 * g + 1] = k * (m_y - rho * m_x) * isy;
    g_sigmas[2 * g] = k * (m_xx - rho * m_xy) * isx;
    g_sigmas[2 * g + 1] = k * (m_yy - rho * m_xy) * isy;
    const float m_q = k * (m_xx - 2.f * rho * m_xy + m_yy);
    g_rhos[g] = k * (m_xy - rho * m_q);
  }
}

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

Sizes make_sizes(int64_t height, int64_t width, int64_t out_h, int64_t out_w, double cutoff) {
  Sizes s;
  s.height = static_cast<int>(height);
  s.width = static_cast<int>(width);
  s.out_h = static_cast<int>(out_h);
  s.out_w = static_cast<int>(out_w);
  s.cutoff = cutoff;
  s.cutoff_sq = static_cast<float>(cutoff * cutoff);
  return s;
}

}  // namespace

at::Tensor rasterize_forward_cuda(const at::Tensor& means, const at::Tensor& sigmas, const at::Tensor& rhos,
                                  const at::Tensor& colors, int64_t height, int64_t width, int64_t out_h,
                                  int64_t out_w, double cutoff) {
  check_input(means, "means");
  check_input(sigmas, "sigmas");
  check_input(rhos, "rhos");
  check_input(colors, "colors");
  const c10::cuda::CUDAGuard guard(means.device());
  const int64_t batch = colors.size(0), num = colors.size(1), channels = colors.size(2);
  auto out = at::zeros({batch, channels, out_h, out_w}, colors.options());
  const int64_t total = batch * num;
  if (total == 0 || batch == 0) return out;
  TORCH_CHECK(total < (int64_t(1) << 31), "too many Gaussians for int32 indices");
  const Sizes s = make_sizes(height, width, out_h, out_w, cutoff);
  const int tiles_x = static_cast<int>((out_w + kTile - 1) / kTile);
  const int tiles_y = static_cast<int>((out_h + kTile - 1) / kTile);
  const int64_t tiles_per_image = static_cast<int64_t>(tiles_x) * tiles_y;
  TORCH_CHECK(batch <= 65535, "batch too large for one launch");
  auto stream = c10::cuda::getCurrentCUDAStream();
  auto long_opts = means.options().dtype(at::kLong);

  auto boxes = at::empty({total, 4}, means.options().dtype(at::kInt));
  auto counts = at::empty({total}, long_opts);
  const int threads = 256;
  const int blocks = static_cast<int>((total + threads - 1) / threads);
  count_tiles_kernel<<<blocks, threads, 0, stream>>>(means.data_ptr<float>(), sigmas.data_ptr<float>(), total, s,
                                                     reinterpret_cast<int4*>(boxes.data_ptr<int>()),
                                                     counts.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto ends = at::cumsum(counts, 0);
  const int64_t num_pairs = ends[-1].item<int64_t>();
  if (num_pairs == 0) return out;
  auto keys = at::empty({num_pairs}, long_opts);
  auto values = at::empty({num_pairs}, means.options().dtype(at::kInt));
  emit_pairs_kernel<<<blocks, threads, 0, stream>>>(reinterpret_cast<const int4*>(boxes.data_ptr<int>()),
                                                    ends.data_ptr<int64_t>(), total, num, tiles_x,
                                                    tiles_per_image, keys.data_ptr<int64_t>(),
                                                    values.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto sorted_keys = std::get<0>(sorted);
  auto order = values.index_select(0, std::get<1>(sorted)).contiguous();
  // tile_starts[t] = first slot of tile t; tile_starts[B * T] = num_pairs
  auto tile_ids = at::arange(batch * tiles_per_image + 1, long_opts);
  auto tile_starts = at::searchsorted(sorted_keys, tile_ids).contiguous();

  const dim3 grid(tiles_x, tiles_y, static_cast<unsigned>(batch));
  const dim3 block(kTile, kTile);
  render_forward_kernel<<<grid, block, 0, stream>>>(means.data_ptr<float>(), sigmas.data_ptr<float>(),
                                                    rhos.data_ptr<float>(), colors.data_ptr<float>(),
                                                    tile_starts.data_ptr<int64_t>(), order.data_ptr<int32_t>(),
                                                    static_cast<int>(channels), s, out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> rasterize_backward_cuda(const at::Tensor& means, const at::Tensor& sigmas,
                                                const at::Tensor& rhos, const at::Tensor& colors,
                                                const at::Tensor& grad_out, int64_t height, int64_t width,
                                                double cutoff) {
  check_input(means, "means");
  check_input(sigmas, "sigmas");
  check_input(rhos, "rhos");
  check_input(colors, "colors");
  check_input(grad_out, "grad_out");
  const c10::cuda::CUDAGuard guard(means.device());
  const int64_t batch = colors.size(0), num = colors.size(1), channels = colors.size(2);
  auto g_means = at::zeros_like(means);
  auto g_sigmas = at::zeros_like(sigmas);
  auto g_rhos = at::zeros_like(rhos);
  auto g_colors = at::zeros_like(colors);
  const int64_t total = batch * num;
  if (total > 0) {
    const Sizes s = make_sizes(height, width, grad_out.size(2), grad_out.size(3), cutoff);
    const int threads = 256;
    const int64_t blocks = (total * 32 + threads - 1) / threads;
    TORCH_CHECK(blocks < (int64_t(1) << 31), "too many Gaussians for one launch");
    render_backward_kernel<<<static_cast<unsigned>(blocks), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        means.data_ptr<float>(), sigmas.data_ptr<float>(), rhos.data_ptr<float>(), colors.data_ptr<float>(),
        grad_out.data_ptr<float>(), total, num, static_cast<int>(channels), s, g_means.data_ptr<float>(),
        g_sigmas.data_ptr<float>(), g_rhos.data_ptr<float>(), g_colors.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {g_means, g_sigmas, g_rhos, g_colors};
}
