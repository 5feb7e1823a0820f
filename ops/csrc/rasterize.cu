// CUDA rasterizer: tile-binned gather forward, per-Gaussian gather backward. The arithmetic (boxes, whitened q,
// weights of each footprint, gradient contributions, tile binning) lives in rasterize_math.h, shared with the
// CPU kernel (rasterize_cpu.cpp); this file only organises it into launches. Everything is float32.
//
// Forward:  1. per Gaussian, its pixel box (gaussian_box) and the number of 16x16 tiles the box overlaps;
//           2. an exclusive prefix sum of those counts gives each Gaussian its slots in a list of
//              (batch * tiles + tile, gaussian) pairs, emitted in Gaussian order and sorted stably by key
//              (so each tile lists its Gaussians in index order, as gsplat's sort leaves them);
//           3. kGsplat: a pair counts when it is among the first kGsplatTileCap of its tile (flag per pair);
//           4. one thread block per (tile, batch) loads its Gaussians into shared memory in batches and each
//              thread sums its own pixel over the Gaussians whose box holds it (no atomics).
// Backward: a group of GROUP lanes per Gaussian walks its box, recomputes the weights, reduces the moments
//           sum G*dx, G*dy, G*dx^2, G*dy^2, G*dx*dy (G = grad_w * <grad_out, color>), sum color_w * grad_out and
//           (kGsplat) sum opac_w * <grad_out, color> across the group, and writes the Gaussian's gradients
//           directly (no atomics, deterministic). GROUP (8, 16 or 32) follows the mean box area.
//
// The same source also builds for the CPU, for tests only (GSASR_CUDA_ON_HOST, tests/cuda_host): launches,
// shared memory and the launcher's device check go through the GSASR_* macros below, which the host build
// defines its own way; the CUDA build expands them to plain CUDA.
#include <ATen/ATen.h>
#ifdef GSASR_CUDA_ON_HOST
#include "cuda_on_host.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#define GSASR_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#define GSASR_SHARED(type, name, count) __shared__ type name[count]
#define GSASR_KERNEL_DEVICE at::kCUDA
#endif

#include <cstdint>
#include <type_traits>
#include <vector>

#include "rasterize_math.h"

namespace {

using gsasr::kTile;
using gsasr::Params;
using gsasr::PixelBox;

constexpr int kBlock = kTile * kTile;
constexpr int kChannelChunk = 4;  // colours kept in shared memory per forward pass
constexpr int kGradChunk = 8;     // colour gradients accumulated in registers per backward pass

__device__ __forceinline__ PixelBox load_box(const int4* boxes, int64_t g) {
  const int4 v = boxes[g];
  return PixelBox{v.x, v.y, v.z, v.w};
}

__global__ void setup_kernel(const float* __restrict__ means, const float* __restrict__ sigmas,
                             const float* __restrict__ rhos, int64_t total, Params p, int4* __restrict__ boxes,
                             int64_t* __restrict__ counts, int64_t* __restrict__ areas) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= total) return;
  const PixelBox b = gsasr::gaussian_box<float>(means[2 * g], means[2 * g + 1], sigmas[2 * g], sigmas[2 * g + 1],
                                                rhos[g], p);
  boxes[g] = make_int4(b.x0, b.y0, b.x1, b.y1);
  counts[g] = gsasr::box_tile_count(b);
  areas[g] = gsasr::box_area(b);
}

__global__ void emit_pairs_kernel(const int4* __restrict__ boxes, const int64_t* __restrict__ slot_starts,
                                  int64_t total, int64_t num_per_batch, Params p, int64_t* __restrict__ keys,
                                  int32_t* __restrict__ values) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= total) return;
  const PixelBox b = load_box(boxes, g);
  if (gsasr::box_empty(b)) return;
  int tx0, ty0, tx1, ty1;
  gsasr::box_tiles(b, tx0, ty0, tx1, ty1);
  int64_t slot = slot_starts[g];
  const int64_t image = g / num_per_batch;
  for (int ty = ty0; ty <= ty1; ++ty) {
    for (int tx = tx0; tx <= tx1; ++tx) {
      keys[slot] = gsasr::tile_key(image, p, tx, ty);
      values[slot] = static_cast<int32_t>(g);
      ++slot;
    }
  }
}

// allowed[unsorted slot] = whether the pair is among the first kGsplatTileCap of its tile's (sorted) list.
__global__ void tile_cap_kernel(const int64_t* __restrict__ sorted_keys, const int64_t* __restrict__ perm,
                                const int64_t* __restrict__ tile_starts, int64_t num_pairs,
                                uint8_t* __restrict__ allowed) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= num_pairs) return;
  allowed[perm[i]] = (i - tile_starts[sorted_keys[i]]) < gsasr::kGsplatTileCap ? 1 : 0;
}

// grid (tiles_x, tiles_y, batch), block kTile x kTile.
template <int FP>
__global__ void render_forward_kernel(const float* __restrict__ means, const float* __restrict__ sigmas,
                                      const float* __restrict__ rhos, const float* __restrict__ colors,
                                      const float* __restrict__ opacities, const int4* __restrict__ boxes,
                                      const int64_t* __restrict__ tile_starts, const int32_t* __restrict__ order,
                                      int channels, Params p, float cutoff_sq, float* __restrict__ out) {
  GSASR_SHARED(float, sh_mx, kBlock);
  GSASR_SHARED(float, sh_my, kBlock);
  GSASR_SHARED(float, sh_isx, kBlock);
  GSASR_SHARED(float, sh_isy, kBlock);
  GSASR_SHARED(float, sh_rho, kBlock);
  GSASR_SHARED(float, sh_irs, kBlock);
  GSASR_SHARED(float, sh_opac, kBlock);
  GSASR_SHARED(int4, sh_box, kBlock);
  GSASR_SHARED(float, sh_col, kBlock * kChannelChunk);

  const int b = blockIdx.z;
  const int64_t tile = static_cast<int64_t>(b) * gridDim.x * gridDim.y + blockIdx.y * gridDim.x + blockIdx.x;
  const int64_t start = tile_starts[tile];
  int64_t end = tile_starts[tile + 1];
  if (FP == gsasr::kGsplat && end - start > gsasr::kGsplatTileCap) end = start + gsasr::kGsplatTileCap;
  const int col = blockIdx.x * kTile + threadIdx.x;
  const int row = blockIdx.y * kTile + threadIdx.y;
  const int tid = threadIdx.y * kTile + threadIdx.x;
  const bool inside = col < p.out_w && row < p.out_h;
  const float px = gsasr::sample_coord<float>(col, p.step_x);
  const float py = gsasr::sample_coord<float>(row, p.step_y);
  const int64_t plane = static_cast<int64_t>(p.out_h) * p.out_w;

  for (int c0 = 0; c0 < channels; c0 += kChannelChunk) {
    const int nc = min(kChannelChunk, channels - c0);
    float acc[kChannelChunk] = {0.f, 0.f, 0.f, 0.f};
    for (int64_t batch_start = start; batch_start < end; batch_start += kBlock) {
      const int64_t k = batch_start + tid;
      __syncthreads();  // the previous batch is no longer being read
      if (k < end) {
        const int64_t g = order[k];
        const gsasr::Shape<float> s =
            gsasr::make_shape<float>(means[2 * g], means[2 * g + 1], sigmas[2 * g], sigmas[2 * g + 1], rhos[g]);
        sh_mx[tid] = s.mx;
        sh_my[tid] = s.my;
        sh_isx[tid] = s.isx;
        sh_isy[tid] = s.isy;
        sh_rho[tid] = s.rho;
        sh_irs[tid] = s.irs;
        sh_opac[tid] = FP == gsasr::kGsplat ? opacities[g] : 1.f;
        sh_box[tid] = boxes[g];
        for (int c = 0; c < nc; ++c) sh_col[tid * kChannelChunk + c] = colors[g * channels + c0 + c];
      }
      __syncthreads();
      const int n_batch = static_cast<int>(min(static_cast<int64_t>(kBlock), end - batch_start));
      if (inside) {
        for (int j = 0; j < n_batch; ++j) {
          const int4 bx = sh_box[j];
          if (col < bx.x || col > bx.z || row < bx.y || row > bx.w) continue;  // the Gaussian's own box
          const gsasr::Shape<float> s{sh_mx[j], sh_my[j], sh_isx[j], sh_isy[j], sh_rho[j], sh_irs[j], 0.f};
          float dx, dy;
          const float q = gsasr::whitened_q(s, px, py, dx, dy);
          const float w = gsasr::pair_weights<FP, float>(q, cutoff_sq, sh_opac[j]).color_w;
          if (w == 0.f) continue;
          for (int c = 0; c < nc; ++c) acc[c] += w * sh_col[j * kChannelChunk + c];
        }
      }
    }
    if (inside) {
      const int64_t pix = static_cast<int64_t>(row) * p.out_w + col;
      for (int c = 0; c < nc; ++c) out[(static_cast<int64_t>(b) * channels + c0 + c) * plane + pix] = acc[c];
    }
  }
}

template <int GROUP>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int offset = GROUP / 2; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset, GROUP);
  return v;
}

// GROUP lanes per Gaussian; blockDim.x is a multiple of 32.
template <int FP, int GROUP>
__global__ void render_backward_kernel(const float* __restrict__ means, const float* __restrict__ sigmas,
                                       const float* __restrict__ rhos, const float* __restrict__ colors,
                                       const float* __restrict__ opacities, const int4* __restrict__ boxes,
                                       const int64_t* __restrict__ slot_starts, const uint8_t* __restrict__ allowed,
                                       const float* __restrict__ grad_out, int64_t total, int64_t num_per_batch,
                                       int channels, Params p, float cutoff_sq, float* __restrict__ g_means,
                                       float* __restrict__ g_sigmas, float* __restrict__ g_rhos,
                                       float* __restrict__ g_colors, float* __restrict__ g_opacities) {
  const int lane = threadIdx.x % GROUP;
  const int64_t g = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / GROUP;
  const bool valid = g < total;  // no early return: every lane of the warp takes part in the shuffles
  const int64_t gi = valid ? g : 0;
  PixelBox box = load_box(boxes, gi);
  if (!valid) box = PixelBox{0, 0, -1, -1};
  const int len_x = box.x1 - box.x0 + 1;
  const int64_t area = gsasr::box_area(box);
  const gsasr::Shape<float> s =
      gsasr::make_shape<float>(means[2 * gi], means[2 * gi + 1], sigmas[2 * gi], sigmas[2 * gi + 1], rhos[gi]);
  const float opacity = FP == gsasr::kGsplat ? opacities[gi] : 1.f;
  const int64_t slot0 = FP == gsasr::kGsplat ? slot_starts[gi] : 0;
  const int64_t image = gi / num_per_batch;
  const int64_t plane = static_cast<int64_t>(p.out_h) * p.out_w;
  const float* grad_b = grad_out + image * channels * plane;
  const float* col = colors + gi * channels;

  gsasr::Moments<float> m{0.f, 0.f, 0.f, 0.f, 0.f};
  float m_opac = 0.f;
  for (int c0 = 0; c0 < channels; c0 += kGradChunk) {
    const int nc = min(kGradChunk, channels - c0);
    float acc[kGradChunk];
#pragma unroll
    for (int c = 0; c < kGradChunk; ++c) acc[c] = 0.f;
    for (int64_t idx = lane; idx < area; idx += GROUP) {
      const int ky = static_cast<int>(idx / len_x);
      const int kx = static_cast<int>(idx - static_cast<int64_t>(ky) * len_x);
      const int row = box.y0 + ky, colx = box.x0 + kx;
      if (FP == gsasr::kGsplat && !allowed[slot0 + gsasr::box_tile_index(box, colx / kTile, row / kTile)]) continue;
      float dx, dy;
      const float q = gsasr::whitened_q(s, gsasr::sample_coord<float>(colx, p.step_x),
                                        gsasr::sample_coord<float>(row, p.step_y), dx, dy);
      const gsasr::PairWeights<float> w = gsasr::pair_weights<FP, float>(q, cutoff_sq, opacity);
      if (w.color_w == 0.f && w.grad_w == 0.f) continue;
      const float* gp = grad_b + static_cast<int64_t>(row) * p.out_w + colx;
      for (int c = 0; c < nc; ++c) acc[c] += w.color_w * gp[(c0 + c) * plane];
      if (c0 == 0) {
        float gw = 0.f;
        for (int c = 0; c < channels; ++c) gw += col[c] * gp[c * plane];
        gsasr::add_pair(m, w.grad_w * gw, dx, dy);
        if (FP == gsasr::kGsplat) m_opac += w.opac_w * gw;
      }
    }
    for (int c = 0; c < nc; ++c) {
      const float v = group_sum<GROUP>(acc[c]);
      if (lane == 0 && valid) g_colors[gi * channels + c0 + c] = v;
    }
  }
  m.x = group_sum<GROUP>(m.x);
  m.y = group_sum<GROUP>(m.y);
  m.xx = group_sum<GROUP>(m.xx);
  m.yy = group_sum<GROUP>(m.yy);
  m.xy = group_sum<GROUP>(m.xy);
  if (FP == gsasr::kGsplat) m_opac = group_sum<GROUP>(m_opac);
  if (lane == 0 && valid) {
    float gmx, gmy, gsx, gsy, grho;
    gsasr::gaussian_gradients(s, m, gmx, gmy, gsx, gsy, grho);
    g_means[2 * gi] = gmx;
    g_means[2 * gi + 1] = gmy;
    g_sigmas[2 * gi] = gsx;
    g_sigmas[2 * gi + 1] = gsy;
    g_rhos[gi] = grho;
    if (FP == gsasr::kGsplat) g_opacities[gi] = m_opac;
  }
}

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().type() == GSASR_KERNEL_DEVICE, name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_inputs(const at::Tensor& means, const at::Tensor& sigmas, const at::Tensor& rhos,
                  const at::Tensor& colors, const at::Tensor& opacities, int footprint) {
  check_input(means, "means");
  check_input(sigmas, "sigmas");
  check_input(rhos, "rhos");
  check_input(colors, "colors");
  TORCH_CHECK(footprint >= gsasr::kEllipse && footprint <= gsasr::kGsplat, "unknown footprint ", footprint);
  if (footprint == gsasr::kGsplat) {
    check_input(opacities, "opacities");
    TORCH_CHECK(opacities.numel() == rhos.numel(), "opacities must have shape (B, N)");
  }
}

template <typename F>
void dispatch_footprint(int footprint, F&& f) {
  if (footprint == gsasr::kEllipse) {
    f(std::integral_constant<int, gsasr::kEllipse>());
  } else if (footprint == gsasr::kBox) {
    f(std::integral_constant<int, gsasr::kBox>());
  } else {
    f(std::integral_constant<int, gsasr::kGsplat>());
  }
}

}  // namespace

// Returns {out (B, C, Ho, Wo), boxes (B*N, 4) int32, slot_starts (B*N) int64, allowed (pairs) uint8 (kGsplat,
// else empty), stats (2,) int64 on the CPU: number of pairs, sum of box areas}.
std::vector<at::Tensor> rasterize_forward_cuda(const at::Tensor& means, const at::Tensor& sigmas,
                                               const at::Tensor& rhos, const at::Tensor& colors,
                                               const at::Tensor& opacities, int64_t height, int64_t width,
                                               int64_t out_h, int64_t out_w, int64_t footprint, double cutoff,
                                               double half_h, double half_w) {
  check_inputs(means, sigmas, rhos, colors, opacities, static_cast<int>(footprint));
  const c10::cuda::CUDAGuard guard(means.device());
  const int64_t batch = colors.size(0), num = colors.size(1), channels = colors.size(2);
  const int64_t total = batch * num;
  auto long_opts = means.options().dtype(at::kLong);
  auto out = at::zeros({batch, channels, out_h, out_w}, colors.options());
  auto boxes = at::empty({total, 4}, means.options().dtype(at::kInt));
  auto allowed = at::empty({0}, means.options().dtype(at::kByte));
  auto stats = at::zeros({2}, at::TensorOptions().dtype(at::kLong));
  if (total == 0) return {out, boxes, at::zeros({0}, long_opts), allowed, stats};
  TORCH_CHECK(total < (int64_t(1) << 31), "too many Gaussians for int32 indices");
  TORCH_CHECK(batch <= 65535, "batch too large for one launch");
  const Params p = gsasr::make_params(height, width, out_h, out_w, static_cast<int>(footprint), cutoff, half_h,
                                      half_w);
  const float cutoff_sq = static_cast<float>(cutoff * cutoff);
  const int64_t tiles_per_image = static_cast<int64_t>(p.tiles_x) * p.tiles_y;
  auto stream = c10::cuda::getCurrentCUDAStream();

  auto counts = at::empty({total}, long_opts);
  auto areas = at::empty({total}, long_opts);
  const int threads = 256;
  const int blocks = static_cast<int>((total + threads - 1) / threads);
  GSASR_LAUNCH(blocks, threads, stream, setup_kernel)(
      means.data_ptr<float>(), sigmas.data_ptr<float>(), rhos.data_ptr<float>(), total, p,
      reinterpret_cast<int4*>(boxes.data_ptr<int>()), counts.data_ptr<int64_t>(), areas.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto ends = at::cumsum(counts, 0);
  auto slot_starts = ends - counts;
  stats = at::stack({ends[-1], areas.sum()}).cpu();  // one sync for both
  const int64_t num_pairs = stats[0].item<int64_t>();
  if (num_pairs == 0) return {out, boxes, slot_starts, allowed, stats};
  TORCH_CHECK(num_pairs < (int64_t(1) << 40), "too many (tile, Gaussian) pairs");
  auto keys = at::empty({num_pairs}, long_opts);
  auto values = at::empty({num_pairs}, means.options().dtype(at::kInt));
  GSASR_LAUNCH(blocks, threads, stream, emit_pairs_kernel)(
      reinterpret_cast<const int4*>(boxes.data_ptr<int>()), slot_starts.data_ptr<int64_t>(), total, num, p,
      keys.data_ptr<int64_t>(), values.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  auto sorted_keys = std::get<0>(sorted).contiguous();
  auto perm = std::get<1>(sorted).contiguous();
  auto order = values.index_select(0, perm).contiguous();
  // tile_starts[t] = first slot of tile t; tile_starts[B * T] = num_pairs
  auto tile_ids = at::arange(batch * tiles_per_image + 1, long_opts);
  auto tile_starts = at::searchsorted(sorted_keys, tile_ids).contiguous();
  if (footprint == gsasr::kGsplat) {
    allowed = at::empty({num_pairs}, means.options().dtype(at::kByte));
    const int pair_blocks = static_cast<int>((num_pairs + threads - 1) / threads);
    GSASR_LAUNCH(pair_blocks, threads, stream, tile_cap_kernel)(
        sorted_keys.data_ptr<int64_t>(), perm.data_ptr<int64_t>(), tile_starts.data_ptr<int64_t>(), num_pairs,
        allowed.data_ptr<uint8_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  const dim3 grid(p.tiles_x, p.tiles_y, static_cast<unsigned>(batch));
  const dim3 block(kTile, kTile);
  const float* opac_ptr = footprint == gsasr::kGsplat ? opacities.data_ptr<float>() : nullptr;
  dispatch_footprint(static_cast<int>(footprint), [&](auto fp) {
    GSASR_LAUNCH(grid, block, stream, render_forward_kernel<decltype(fp)::value>)(
        means.data_ptr<float>(), sigmas.data_ptr<float>(), rhos.data_ptr<float>(), colors.data_ptr<float>(),
        opac_ptr, reinterpret_cast<const int4*>(boxes.data_ptr<int>()), tile_starts.data_ptr<int64_t>(),
        order.data_ptr<int32_t>(), static_cast<int>(channels), p, cutoff_sq, out.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, boxes, slot_starts, allowed, stats};
}

// Returns {g_means, g_sigmas, g_rhos, g_colors, g_opacities (kGsplat, else empty)}.
std::vector<at::Tensor> rasterize_backward_cuda(const at::Tensor& means, const at::Tensor& sigmas,
                                                const at::Tensor& rhos, const at::Tensor& colors,
                                                const at::Tensor& opacities, const at::Tensor& grad_out,
                                                const at::Tensor& boxes, const at::Tensor& slot_starts,
                                                const at::Tensor& allowed, int64_t height, int64_t width,
                                                int64_t footprint, double cutoff, double half_h, double half_w,
                                                double mean_area) {
  check_inputs(means, sigmas, rhos, colors, opacities, static_cast<int>(footprint));
  check_input(grad_out, "grad_out");
  const c10::cuda::CUDAGuard guard(means.device());
  const int64_t batch = colors.size(0), num = colors.size(1), channels = colors.size(2);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == batch && grad_out.size(1) == channels,
              "grad_out must have shape (B, C, Ho, Wo)");
  auto g_means = at::zeros_like(means);
  auto g_sigmas = at::zeros_like(sigmas);
  auto g_rhos = at::zeros_like(rhos);
  auto g_colors = at::zeros_like(colors);
  auto g_opacities = footprint == gsasr::kGsplat ? at::zeros_like(opacities) : at::empty({0}, means.options());
  const int64_t total = batch * num;
  if (total == 0) return {g_means, g_sigmas, g_rhos, g_colors, g_opacities};
  TORCH_CHECK(boxes.device().type() == GSASR_KERNEL_DEVICE && boxes.scalar_type() == at::kInt &&
                  boxes.numel() == 4 * total,
              "boxes must be the forward's (B*N, 4) int32 tensor");
  if (footprint == gsasr::kGsplat) {
    TORCH_CHECK(slot_starts.numel() == total && slot_starts.scalar_type() == at::kLong,
                "slot_starts must be the forward's");
    TORCH_CHECK(allowed.scalar_type() == at::kByte, "allowed must be the forward's uint8 tensor");
  }
  const Params p = gsasr::make_params(height, width, grad_out.size(2), grad_out.size(3), static_cast<int>(footprint),
                                      cutoff, half_h, half_w);
  const float cutoff_sq = static_cast<float>(cutoff * cutoff);
  const int threads = 256;
  auto stream = c10::cuda::getCurrentCUDAStream();
  const float* opac_ptr = footprint == gsasr::kGsplat ? opacities.data_ptr<float>() : nullptr;
  const int64_t* slot_ptr = footprint == gsasr::kGsplat ? slot_starts.data_ptr<int64_t>() : nullptr;
  const uint8_t* allowed_ptr = footprint == gsasr::kGsplat && allowed.numel() ? allowed.data_ptr<uint8_t>() : nullptr;
  float* g_opac_ptr = footprint == gsasr::kGsplat ? g_opacities.data_ptr<float>() : nullptr;
  auto launch = [&](auto fp, auto group) {
    constexpr int kGroup = decltype(group)::value;
    const int64_t blocks = (total * kGroup + threads - 1) / threads;
    TORCH_CHECK(blocks < (int64_t(1) << 31), "too many Gaussians for one launch");
    constexpr int kFootprint = decltype(fp)::value;
    GSASR_LAUNCH(static_cast<unsigned>(blocks), threads, stream, render_backward_kernel<kFootprint, kGroup>)(
        means.data_ptr<float>(), sigmas.data_ptr<float>(), rhos.data_ptr<float>(), colors.data_ptr<float>(),
        opac_ptr, reinterpret_cast<const int4*>(boxes.data_ptr<int>()), slot_ptr, allowed_ptr,
        grad_out.data_ptr<float>(), total, num, static_cast<int>(channels), p, cutoff_sq, g_means.data_ptr<float>(),
        g_sigmas.data_ptr<float>(), g_rhos.data_ptr<float>(), g_colors.data_ptr<float>(), g_opac_ptr);
  };
  dispatch_footprint(static_cast<int>(footprint), [&](auto fp) {
    // lanes per Gaussian: about one pass over the box (fewer idle lanes on small boxes)
    if (mean_area > 96.0) {
      launch(fp, std::integral_constant<int, 32>());
    } else if (mean_area > 24.0) {
      launch(fp, std::integral_constant<int, 16>());
    } else {
      launch(fp, std::integral_constant<int, 8>());
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {g_means, g_sigmas, g_rhos, g_colors, g_opacities};
}
