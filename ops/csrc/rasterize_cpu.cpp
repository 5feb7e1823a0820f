// CPU rasterizer: the CUDA kernel's organisation (same tile binning, gather forward per tile, per-Gaussian
// backward) with the same arithmetic from rasterize_math.h, in float32 or float64, threaded with
// at::parallel_for. Each tile or Gaussian is one work item with a fixed summation order, so results do not
// depend on the thread count.
//
// Forward:  1. per Gaussian, its pixel box and tile count (gaussian_box, box_tile_count);
//           2. per image, a counting sort of the (tile, Gaussian) pairs by tile, in Gaussian order (the stable
//              sort the GPU does), and for kGsplat the per-pair flag "among the first kGsplatTileCap of its tile";
//           3. per tile, every Gaussian of its list (the first kGsplatTileCap for kGsplat) adds itself to the tile's
//              pixels inside its box, in 16-lane tile rows so that the weight arithmetic vectorises.
// Backward: per Gaussian, its box in 16-lane row segments from each row's first column: the weights again, the
//           moments of G = grad_w * <grad_out, colour>, sum color_w * grad_out and (kGsplat)
//           sum opac_w * <grad_out, colour>, reduced over the lanes at the end.
// The hot loops are compiled once per footprint and dtype (plus a 3-channel version), as AVX-512, AVX2 and
// baseline clones on x86-64 with GCC >= 11 / Clang >= 14; the loader picks the clone for the CPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "rasterize_math.h"

#if defined(__GNUC__) || defined(__clang__)
#define GS_INLINE inline __attribute__((always_inline))
#define GS_RESTRICT __restrict__
#else
#define GS_INLINE inline
#define GS_RESTRICT __restrict
#endif

namespace {

using gsasr::kTile;
using gsasr::Params;
using gsasr::PixelBox;

template <typename T>
struct Inputs {
  const T* means;
  const T* sigmas;
  const T* rhos;
  const T* colors;
  const T* opacities;  // kGsplat only
  const gsasr::Shape<T>* shapes;  // forward: per-Gaussian constants, computed once (a Gaussian meets several tiles)
  int64_t batch, num, channels;
  Params p;
  T cutoff_sq;
};

PixelBox load_box(const int32_t* boxes, int64_t g) {
  return PixelBox{boxes[4 * g], boxes[4 * g + 1], boxes[4 * g + 2], boxes[4 * g + 3]};
}

template <typename T>
gsasr::Shape<T> shape_of(const Inputs<T>& in, int64_t g) {
  return gsasr::make_shape<T>(in.means[2 * g], in.means[2 * g + 1], in.sigmas[2 * g], in.sigmas[2 * g + 1],
                              in.rhos[g]);
}

// Build switches for experiments (defaults are what ships): exact ellipse row spans on wide boxes, and the
// 3-channel specialisation of the inner loops.
#ifndef GS_USE_SPANS
#define GS_USE_SPANS 1
#endif
#ifndef GS_SPECIALIZE_NC
#define GS_SPECIALIZE_NC 1
#endif
// Lanes per row segment: a row of a tile in the forward (one AVX-512 vector of floats), up to kSeg columns of a
// Gaussian's row in the backward.
constexpr int kSeg = 16;
// Boxes at least this wide (pixels) use exact row spans of the ellipse: below it, the scalar span arithmetic per
// row costs more than the lanes it saves.
constexpr int kSpanMinWidth = GS_USE_SPANS ? 32 : (1 << 30);
static_assert(kSeg == kTile && kTile < kSpanMinWidth, "the forward works on whole tile rows, without spans");

// --- forward: one tile ---------------------------------------------------------------------------------------

// NC > 0: the channel count known at compile time (the accumulation joins the weight loop); 0: any count.
template <int FP, int NC, typename T>
GS_INLINE void render_tile(const Inputs<T>& in, const int32_t* boxes, const int64_t* tile_starts,
                           const int32_t* order, int64_t tile, T* GS_RESTRICT acc, T* out) {
  const Params& p = in.p;
  const int64_t tiles = static_cast<int64_t>(p.tiles_x) * p.tiles_y;
  const int64_t image = tile / tiles;
  const int tile_y = static_cast<int>((tile % tiles) / p.tiles_x);
  const int tile_x = static_cast<int>((tile % tiles) % p.tiles_x);
  const int col0 = tile_x * kTile, row0 = tile_y * kTile;
  const int64_t channels = in.channels;
  std::fill(acc, acc + channels * kTile * kTile, static_cast<T>(0));
  const int64_t start = tile_starts[tile];
  int64_t end = tile_starts[tile + 1];
  if (FP == gsasr::kGsplat && end - start > gsasr::kGsplatTileCap) end = start + gsasr::kGsplatTileCap;
  alignas(64) T w[kSeg];
  for (int64_t k = start; k < end; ++k) {
    const int64_t g = order[k];
    const PixelBox b = load_box(boxes, g);
    const int r0 = std::max(b.y0, row0), r1 = std::min(b.y1, row0 + kTile - 1);
    const int c0 = std::max(b.x0, col0), c1 = std::min(b.x1, col0 + kTile - 1);
    const gsasr::Shape<T> s = in.shapes[g];
    const T opacity = FP == gsasr::kGsplat ? in.opacities[g] : static_cast<T>(1);
    bool bounded;
    const T q_max = gsasr::reach_q<FP, T>(in.cutoff_sq, opacity, bounded);
    if (bounded && q_max < static_cast<T>(0)) continue;
    const T* color = in.colors + g * channels;
    T cc[NC > 0 ? NC : 1];
    for (int c = 0; c < NC; ++c) cc[c] = color[c];
    // One segment per row: the tile's row (kSeg == kTile). A tile row is narrower than kSpanMinWidth, so the
    // ellipse's row spans are not used here; the lanes outside [c0, c1] get weight 0.
    for (int r = r0; r <= r1; ++r) {
      const T py = gsasr::sample_coord<T>(r, p.step_y);
      T* GS_RESTRICT row_acc = acc + (r - row0) * kTile;
      if (NC > 0) {
        for (int l = 0; l < kSeg; ++l) {
          T dx, dy;
          const int col = col0 + l;
          const T q = gsasr::whitened_q(s, gsasr::sample_coord<T>(col, p.step_x), py, dx, dy);
          const T wl = gsasr::pair_weights<FP, T>(q, in.cutoff_sq, opacity).color_w;
          const T wm = (col >= c0 && col <= c1) ? wl : static_cast<T>(0);
          for (int c = 0; c < NC; ++c) row_acc[c * kTile * kTile + l] += wm * cc[c];
        }
        continue;
      }
      for (int l = 0; l < kSeg; ++l) {
        T dx, dy;
        const int col = col0 + l;
        const T q = gsasr::whitened_q(s, gsasr::sample_coord<T>(col, p.step_x), py, dx, dy);
        const T wl = gsasr::pair_weights<FP, T>(q, in.cutoff_sq, opacity).color_w;
        w[l] = (col >= c0 && col <= c1) ? wl : static_cast<T>(0);
      }
      for (int64_t c = 0; c < channels; ++c) {
        const T cv = color[c];
        T* GS_RESTRICT a = row_acc + c * kTile * kTile;
#pragma GCC unroll 1  // fully unrolled before vectorisation, GCC leaves these lanes scalar
        for (int l = 0; l < kSeg; ++l) a[l] += w[l] * cv;
      }
    }
  }
  const int64_t plane = static_cast<int64_t>(p.out_h) * p.out_w;
  const int rows = std::min(kTile, p.out_h - row0), ncols = std::min(kTile, p.out_w - col0);
  for (int64_t c = 0; c < channels; ++c) {
    T* dst = out + (image * channels + c) * plane + static_cast<int64_t>(row0) * p.out_w + col0;
    const T* src = acc + c * kTile * kTile;
    for (int r = 0; r < rows; ++r) std::copy(src + r * kTile, src + r * kTile + ncols, dst + r * p.out_w);
  }
}

// --- backward: one Gaussian ----------------------------------------------------------------------------------

template <typename T>
struct BackwardOut {
  T* g_means;
  T* g_sigmas;
  T* g_rhos;
  T* g_colors;
  T* g_opacities;
};

// Moments of the backward, one per lane, summed over the lanes at the end.
template <typename T>
struct LaneMoments {
  alignas(64) T x[kSeg], y[kSeg], xx[kSeg], yy[kSeg], xy[kSeg], opac[kSeg];
};

// One row segment of the backward for NC (compile-time) channels: lanes base + [0, kSeg), pixels [lo, hi] of it.
template <int FP, int NC, typename T>
GS_INLINE void backward_segment(const gsasr::Shape<T>& s, double step_x, T cutoff_sq, T opacity, const T* cc,
                                int base, int lo, int hi, T py, const T* gp_row, int64_t channel_stride,
                                T (*GS_RESTRICT acc_nc)[kSeg], LaneMoments<T>& m) {
#pragma GCC unroll 1
  for (int l = 0; l < kSeg; ++l) {
    T dx, dy;
    const T q = gsasr::whitened_q(s, gsasr::sample_coord<T>(base + l, step_x), py, dx, dy);
    const gsasr::PairWeights<T> pw = gsasr::pair_weights<FP, T>(q, cutoff_sq, opacity);
    const bool inside = base + l >= lo && base + l <= hi;
    T gd = static_cast<T>(0);
    for (int c = 0; c < NC; ++c) {
      const T gv = gp_row[c * channel_stride + base + l];
      gd += cc[c] * gv;
      acc_nc[c][l] += (inside ? pw.color_w : static_cast<T>(0)) * gv;
    }
    const T big_g = (inside ? pw.grad_w : static_cast<T>(0)) * gd;
    gsasr::add_pair(m.x[l], m.y[l], m.xx[l], m.yy[l], m.xy[l], big_g, dx, dy);
    if (FP == gsasr::kGsplat) m.opac[l] += (inside ? pw.opac_w : static_cast<T>(0)) * gd;
  }
}

// grad: (B, C, Ho, row_stride) with row_stride = tiles_x * kTile, zero beyond Wo (lanes past the image read 0).
template <int FP, int NC, typename T>
GS_INLINE void gaussian_backward(const Inputs<T>& in, const int32_t* boxes, const int64_t* slot_starts,
                                 const uint8_t* allowed, const T* grad, int64_t row_stride, int64_t g,
                                 T* GS_RESTRICT lane_acc, const BackwardOut<T>& o) {
  const PixelBox b = load_box(boxes, g);
  if (gsasr::box_empty(b)) return;
  const Params& p = in.p;
  const int64_t channels = in.channels;
  const gsasr::Shape<T> s = shape_of(in, g);
  const T sx = in.sigmas[2 * g];
  const T opacity = FP == gsasr::kGsplat ? in.opacities[g] : static_cast<T>(1);
  bool bounded;
  const T q_max = gsasr::reach_q<FP, T>(in.cutoff_sq, opacity, bounded);
  if (bounded && q_max < static_cast<T>(0)) return;  // gradients stay 0
  const T* color = in.colors + g * channels;
  const int64_t image = g / in.num;
  const T* grad_b = grad + image * channels * p.out_h * row_stride;
  const int64_t channel_stride = static_cast<int64_t>(p.out_h) * row_stride;
  std::fill(lane_acc, lane_acc + channels * kSeg, static_cast<T>(0));
  LaneMoments<T> lm;
  for (int l = 0; l < kSeg; ++l) lm.x[l] = lm.y[l] = lm.xx[l] = lm.yy[l] = lm.xy[l] = lm.opac[l] = static_cast<T>(0);
  alignas(64) T cw[kSeg], gw[kSeg], ow[kSeg], dxl[kSeg], dyl[kSeg], gdot[kSeg];
  const int64_t slot0 = FP == gsasr::kGsplat ? slot_starts[g] : 0;
  T cc[NC > 0 ? NC : 1];
  alignas(64) T acc_nc[NC > 0 ? NC : 1][kSeg];
  for (int c = 0; c < NC; ++c) {
    cc[c] = color[c];
    for (int l = 0; l < kSeg; ++l) acc_nc[c][l] = static_cast<T>(0);
  }
  const bool spans = bounded && b.x1 - b.x0 >= kSpanMinWidth;
  if (NC > 0 && FP != gsasr::kGsplat && b.x1 - b.x0 < kSeg) {
    // a box up to kSeg wide: every row is one segment from the box's first column (no span, no segment loop)
    for (int r = b.y0; r <= b.y1; ++r) {
      backward_segment<FP, NC, T>(s, p.step_x, in.cutoff_sq, opacity, cc, b.x0, b.x0, b.x1,
                                  gsasr::sample_coord<T>(r, p.step_y), grad_b + static_cast<int64_t>(r) * row_stride,
                                  channel_stride, acc_nc, lm);
    }
  } else {
    for (int r = b.y0; r <= b.y1; ++r) {
      const T py = gsasr::sample_coord<T>(r, p.step_y);
      int lo = b.x0, hi = b.x1;
      if (spans) gsasr::row_span(s, sx, py, q_max, p.scale_x, b.x0, b.x1, lo, hi);
      if (lo > hi) continue;
      const int ty = r / kTile;
      const T* gp_row = grad_b + static_cast<int64_t>(r) * row_stride;
      // Segments start at the row's first column (a box up to kSeg wide is one segment); for kGsplat they start at
      // multiples of kSeg so that they never straddle a tile (kTile is a multiple of kSeg): one cap flag per segment.
      for (int base = FP == gsasr::kGsplat ? lo / kSeg * kSeg : lo; base <= hi; base += kSeg) {
        if (FP == gsasr::kGsplat && !allowed[slot0 + gsasr::box_tile_index(b, base / kTile, ty)]) continue;
        if (NC > 0) {
          backward_segment<FP, NC, T>(s, p.step_x, in.cutoff_sq, opacity, cc, base, lo, hi, py, gp_row, channel_stride,
                                      acc_nc, lm);
          continue;
        }
        for (int l = 0; l < kSeg; ++l) {
          T dx, dy;
          const T q = gsasr::whitened_q(s, gsasr::sample_coord<T>(base + l, p.step_x), py, dx, dy);
          const gsasr::PairWeights<T> pw = gsasr::pair_weights<FP, T>(q, in.cutoff_sq, opacity);
          const bool inside = base + l >= lo && base + l <= hi;
          cw[l] = inside ? pw.color_w : static_cast<T>(0);
          gw[l] = inside ? pw.grad_w : static_cast<T>(0);
          ow[l] = inside ? pw.opac_w : static_cast<T>(0);
          dxl[l] = dx;
          dyl[l] = dy;
          gdot[l] = static_cast<T>(0);
        }
        for (int64_t c = 0; c < channels; ++c) {
          const T* GS_RESTRICT gp = gp_row + c * channel_stride + base;
          const T cc = color[c];
          T* GS_RESTRICT a = lane_acc + c * kSeg;
#pragma GCC unroll 1
          for (int l = 0; l < kSeg; ++l) {
            gdot[l] += cc * gp[l];
            a[l] += cw[l] * gp[l];
          }
        }
#pragma GCC unroll 1
        for (int l = 0; l < kSeg; ++l) {
          gsasr::add_pair(lm.x[l], lm.y[l], lm.xx[l], lm.yy[l], lm.xy[l], gw[l] * gdot[l], dxl[l], dyl[l]);
          if (FP == gsasr::kGsplat) lm.opac[l] += ow[l] * gdot[l];
        }
      }
    }
  }
  gsasr::Moments<T> m{0, 0, 0, 0, 0};
  T m_opac = 0;
  for (int l = 0; l < kSeg; ++l) {
    m.x += lm.x[l];
    m.y += lm.y[l];
    m.xx += lm.xx[l];
    m.yy += lm.yy[l];
    m.xy += lm.xy[l];
    m_opac += lm.opac[l];
  }
  T gmx, gmy, gsx, gsy, grho;
  gsasr::gaussian_gradients(s, m, gmx, gmy, gsx, gsy, grho);
  o.g_means[2 * g] = gmx;
  o.g_means[2 * g + 1] = gmy;
  o.g_sigmas[2 * g] = gsx;
  o.g_sigmas[2 * g + 1] = gsy;
  o.g_rhos[g] = grho;
  for (int64_t c = 0; c < channels; ++c) {
    T v = 0;
    for (int l = 0; l < kSeg; ++l) v += NC > 0 ? acc_nc[c][l] : lane_acc[c * kSeg + l];
    o.g_colors[g * channels + c] = v;
  }
  if (FP == gsasr::kGsplat) o.g_opacities[g] = m_opac;
}

// --- the hot loops as plain functions, cloned for AVX2 on x86-64 (picked at load time by the CPU) -----------

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__APPLE__) && __GNUC__ >= 11
#define GS_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__clang__) && __clang_major__ >= 14 && !defined(__APPLE__)
#define GS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GS_CLONES
#endif

#define GS_DEFINE_LOOPS(FP, T, SUFFIX)                                                                              \
  GS_CLONES void render_tiles_##SUFFIX(const Inputs<T>& in, const int32_t* boxes, const int64_t* tile_starts,     \
                                       const int32_t* order, int64_t begin, int64_t end, T* acc, T* out) {        \
    if (GS_SPECIALIZE_NC && in.channels == 3) {                                                                   \
      for (int64_t t = begin; t < end; ++t) render_tile<FP, 3, T>(in, boxes, tile_starts, order, t, acc, out);    \
    } else {                                                                                                      \
      for (int64_t t = begin; t < end; ++t) render_tile<FP, 0, T>(in, boxes, tile_starts, order, t, acc, out);    \
    }                                                                                                             \
  }                                                                                                               \
  GS_CLONES void backward_gaussians_##SUFFIX(const Inputs<T>& in, const int32_t* boxes, const int64_t* slots,     \
                                             const uint8_t* allowed, const T* grad, int64_t row_stride,           \
                                             int64_t begin, int64_t end, T* lane_acc, const BackwardOut<T>& o) {  \
    for (int64_t g = begin; g < end; ++g) {                                                                       \
      if (GS_SPECIALIZE_NC && in.channels == 3) {                                                                 \
        gaussian_backward<FP, 3, T>(in, boxes, slots, allowed, grad, row_stride, g, lane_acc, o);                 \
      } else {                                                                                                    \
        gaussian_backward<FP, 0, T>(in, boxes, slots, allowed, grad, row_stride, g, lane_acc, o);                 \
      }                                                                                                           \
    }                                                                                                             \
  }

GS_DEFINE_LOOPS(gsasr::kEllipse, float, ellipse_f)
GS_DEFINE_LOOPS(gsasr::kBox, float, box_f)
GS_DEFINE_LOOPS(gsasr::kGsplat, float, gsplat_f)
GS_DEFINE_LOOPS(gsasr::kEllipse, double, ellipse_d)
GS_DEFINE_LOOPS(gsasr::kBox, double, box_d)
GS_DEFINE_LOOPS(gsasr::kGsplat, double, gsplat_d)

// Loops<T>::render / ::backward: the clone for the footprint (a run-time value) and T.
template <typename T>
struct Loops;

#define GS_DEFINE_DISPATCH(T, SUF)                                                                            \
  template <>                                                                                                \
  struct Loops<T> {                                                                                          \
    static void render(int fp, const Inputs<T>& in, const int32_t* boxes, const int64_t* starts,             \
                       const int32_t* order, int64_t begin, int64_t end, T* acc, T* out) {                   \
      if (fp == gsasr::kEllipse) {                                                                           \
        render_tiles_ellipse_##SUF(in, boxes, starts, order, begin, end, acc, out);                          \
      } else if (fp == gsasr::kBox) {                                                                        \
        render_tiles_box_##SUF(in, boxes, starts, order, begin, end, acc, out);                              \
      } else {                                                                                               \
        render_tiles_gsplat_##SUF(in, boxes, starts, order, begin, end, acc, out);                           \
      }                                                                                                      \
    }                                                                                                        \
    static void backward(int fp, const Inputs<T>& in, const int32_t* boxes, const int64_t* slots,            \
                         const uint8_t* allowed, const T* grad, int64_t stride, int64_t begin, int64_t end,   \
                         T* lane_acc, const BackwardOut<T>& o) {                                             \
      if (fp == gsasr::kEllipse) {                                                                           \
        backward_gaussians_ellipse_##SUF(in, boxes, slots, allowed, grad, stride, begin, end, lane_acc, o);  \
      } else if (fp == gsasr::kBox) {                                                                        \
        backward_gaussians_box_##SUF(in, boxes, slots, allowed, grad, stride, begin, end, lane_acc, o);      \
      } else {                                                                                               \
        backward_gaussians_gsplat_##SUF(in, boxes, slots, allowed, grad, stride, begin, end, lane_acc, o);   \
      }                                                                                                      \
    }                                                                                                        \
  };

GS_DEFINE_DISPATCH(float, f)
GS_DEFINE_DISPATCH(double, d)

// --- host side -----------------------------------------------------------------------------------------------

void check_cpu_input(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have the dtype of means");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_cpu_inputs(const at::Tensor& means, const at::Tensor& sigmas, const at::Tensor& rhos,
                      const at::Tensor& colors, const at::Tensor& opacities, int64_t footprint) {
  const auto dtype = means.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "means must be float32 or float64");
  check_cpu_input(means, "means", dtype);
  check_cpu_input(sigmas, "sigmas", dtype);
  check_cpu_input(rhos, "rhos", dtype);
  check_cpu_input(colors, "colors", dtype);
  TORCH_CHECK(footprint >= gsasr::kEllipse && footprint <= gsasr::kGsplat, "unknown footprint ", footprint);
  TORCH_CHECK(means.dim() == 3 && means.size(2) == 2, "means must have shape (B, N, 2)");
  TORCH_CHECK(colors.dim() == 3 && colors.size(0) == means.size(0) && colors.size(1) == means.size(1),
              "colors must have shape (B, N, C)");
  TORCH_CHECK(sigmas.numel() == means.numel() && rhos.numel() * 2 == means.numel(), "sigmas/rhos shape mismatch");
  if (footprint == gsasr::kGsplat) {
    check_cpu_input(opacities, "opacities", dtype);
    TORCH_CHECK(opacities.numel() == rhos.numel(), "opacities must have shape (B, N)");
  }
}

template <typename T>
Inputs<T> make_inputs(const at::Tensor& means, const at::Tensor& sigmas, const at::Tensor& rhos,
                      const at::Tensor& colors, const at::Tensor& opacities, const Params& p, double cutoff) {
  Inputs<T> in;
  in.means = means.data_ptr<T>();
  in.sigmas = sigmas.data_ptr<T>();
  in.rhos = rhos.data_ptr<T>();
  in.colors = colors.data_ptr<T>();
  in.opacities = p.footprint == gsasr::kGsplat ? opacities.data_ptr<T>() : nullptr;
  in.shapes = nullptr;
  in.batch = colors.size(0);
  in.num = colors.size(1);
  in.channels = colors.size(2);
  in.p = p;
  in.cutoff_sq = static_cast<T>(cutoff * cutoff);
  return in;
}

template <typename T>
std::vector<at::Tensor> forward_impl(const at::Tensor& means, const at::Tensor& sigmas, const at::Tensor& rhos,
                                     const at::Tensor& colors, const at::Tensor& opacities, const Params& p,
                                     double cutoff) {
  Inputs<T> in = make_inputs<T>(means, sigmas, rhos, colors, opacities, p, cutoff);
  const int64_t batch = in.batch, num = in.num, channels = in.channels, total = batch * num;
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  auto out = at::zeros({batch, channels, p.out_h, p.out_w}, colors.options());
  auto boxes = at::empty({total, 4}, at::TensorOptions().dtype(at::kInt));
  auto slot_starts = at::empty({total}, long_opts);
  auto allowed = at::empty({0}, at::TensorOptions().dtype(at::kByte));
  auto stats = at::zeros({2}, long_opts);
  if (total == 0) return {out, boxes, slot_starts, allowed, stats};
  int32_t* bx = boxes.data_ptr<int32_t>();
  int64_t* slots = slot_starts.data_ptr<int64_t>();
  std::vector<int64_t> counts(total);
  std::vector<int64_t> areas(total);
  std::vector<gsasr::Shape<T>> shapes(total);
  in.shapes = shapes.data();
  at::parallel_for(0, total, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      shapes[g] = shape_of(in, g);
      const PixelBox b = gsasr::gaussian_box<T>(in.means[2 * g], in.means[2 * g + 1], in.sigmas[2 * g],
                                                in.sigmas[2 * g + 1], in.rhos[g], p);
      bx[4 * g] = b.x0;
      bx[4 * g + 1] = b.y0;
      bx[4 * g + 2] = b.x1;
      bx[4 * g + 3] = b.y1;
      counts[g] = gsasr::box_tile_count(b);
      areas[g] = gsasr::box_area(b);
    }
  });
  int64_t num_pairs = 0, area_sum = 0;
  for (int64_t g = 0; g < total; ++g) {
    slots[g] = num_pairs;
    num_pairs += counts[g];
    area_sum += areas[g];
  }
  stats.data_ptr<int64_t>()[0] = num_pairs;
  stats.data_ptr<int64_t>()[1] = area_sum;
  if (num_pairs == 0) return {out, boxes, slot_starts, allowed, stats};

  // Counting sort of each image's pairs by tile, in Gaussian order; image b's pairs keep their slot range.
  const int64_t tiles = static_cast<int64_t>(p.tiles_x) * p.tiles_y;
  auto tile_starts_t = at::empty({batch * tiles + 1}, long_opts);
  int64_t* tile_starts = tile_starts_t.data_ptr<int64_t>();
  auto order_t = at::empty({num_pairs}, at::TensorOptions().dtype(at::kInt));
  int32_t* order = order_t.data_ptr<int32_t>();
  const bool gsplat = p.footprint == gsasr::kGsplat;
  if (gsplat) allowed = at::empty({num_pairs}, at::TensorOptions().dtype(at::kByte));
  uint8_t* allow = gsplat ? allowed.data_ptr<uint8_t>() : nullptr;
  tile_starts[batch * tiles] = num_pairs;
  // Pairs of Gaussian g in tile order (its boxes' tiles, row-major), calling visit(tile index in the image, slot).
  auto for_each_tile = [&](int64_t g, auto&& visit) {
    const PixelBox b = load_box(bx, g);
    if (gsasr::box_empty(b)) return;
    int tx0, ty0, tx1, ty1;
    gsasr::box_tiles(b, tx0, ty0, tx1, ty1);
    int64_t slot = slots[g];
    for (int ty = ty0; ty <= ty1; ++ty)
      for (int tx = tx0; tx <= tx1; ++tx, ++slot) visit(static_cast<int64_t>(ty) * p.tiles_x + tx, slot);
  };
  // Each image's Gaussians in `chunks` consecutive ranges: every range counts its pairs per tile, the counts give
  // each (tile, range) its first position (ranges in order within a tile: the stable order), then every range
  // places its pairs. Images run in parallel when there are enough of them, else the ranges of one image do.
  const int64_t chunks = batch >= at::get_num_threads() ? 1 : std::max<int64_t>(1, std::min<int64_t>(
                                                                    at::get_num_threads(), num / 4096));
  auto sort_image = [&](int64_t image, std::vector<int64_t>& cursor, bool parallel) {
    const int64_t g0 = image * num, len = (num + chunks - 1) / chunks;
    std::fill(cursor.begin(), cursor.end(), 0);
    auto each_chunk = [&](auto&& body) {
      if (parallel) {
        at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
          for (int64_t c = begin; c < end; ++c) body(c);
        });
      } else {
        for (int64_t c = 0; c < chunks; ++c) body(c);
      }
    };
    each_chunk([&](int64_t c) {
      int64_t* count = cursor.data() + c * tiles;
      for (int64_t g = g0 + c * len; g < std::min(g0 + num, g0 + (c + 1) * len); ++g)
        for_each_tile(g, [&](int64_t t, int64_t) { ++count[t]; });
    });
    int64_t pos = slots[g0];  // the image's first slot
    for (int64_t t = 0; t < tiles; ++t) {
      tile_starts[image * tiles + t] = pos;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t n = cursor[c * tiles + t];
        cursor[c * tiles + t] = pos;
        pos += n;
      }
    }
    each_chunk([&](int64_t c) {
      int64_t* next = cursor.data() + c * tiles;
      for (int64_t g = g0 + c * len; g < std::min(g0 + num, g0 + (c + 1) * len); ++g) {
        for_each_tile(g, [&](int64_t t, int64_t slot) {
          const int64_t at_pos = next[t]++;
          order[at_pos] = static_cast<int32_t>(g);
          if (gsplat) allow[slot] = (at_pos - tile_starts[image * tiles + t]) < gsasr::kGsplatTileCap ? 1 : 0;
        });
      }
    });
  };
  if (chunks > 1) {
    std::vector<int64_t> cursor(chunks * tiles);
    for (int64_t image = 0; image < batch; ++image) sort_image(image, cursor, true);
  } else {
    at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
      std::vector<int64_t> cursor(tiles);
      for (int64_t image = begin; image < end; ++image) sort_image(image, cursor, false);
    });
  }

  T* out_ptr = out.data_ptr<T>();
  at::parallel_for(0, batch * tiles, 4, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(channels * kTile * kTile);
    Loops<T>::render(p.footprint, in, bx, tile_starts, order, begin, end, acc.data(), out_ptr);
  });
  return {out, boxes, slot_starts, allowed, stats};
}

template <typename T>
std::vector<at::Tensor> backward_impl(const at::Tensor& means, const at::Tensor& sigmas, const at::Tensor& rhos,
                                      const at::Tensor& colors, const at::Tensor& opacities,
                                      const at::Tensor& grad_out, const at::Tensor& boxes,
                                      const at::Tensor& slot_starts, const at::Tensor& allowed, const Params& p,
                                      double cutoff) {
  const Inputs<T> in = make_inputs<T>(means, sigmas, rhos, colors, opacities, p, cutoff);
  const int64_t batch = in.batch, num = in.num, channels = in.channels, total = batch * num;
  auto g_means = at::zeros_like(means);
  auto g_sigmas = at::zeros_like(sigmas);
  auto g_rhos = at::zeros_like(rhos);
  auto g_colors = at::zeros_like(colors);
  const bool gsplat = p.footprint == gsasr::kGsplat;
  auto g_opacities = gsplat ? at::zeros_like(opacities) : at::empty({0}, means.options());
  if (total == 0) return {g_means, g_sigmas, g_rhos, g_colors, g_opacities};
  TORCH_CHECK(boxes.scalar_type() == at::kInt && boxes.numel() == 4 * total && boxes.is_contiguous(),
              "boxes must be the forward's (B*N, 4) int32 tensor");
  if (gsplat) {
    TORCH_CHECK(slot_starts.scalar_type() == at::kLong && slot_starts.numel() == total, "slot_starts mismatch");
    TORCH_CHECK(allowed.scalar_type() == at::kByte && allowed.is_contiguous(), "allowed mismatch");
  }
  // the gradient with rows padded with zeros to whole tiles plus one segment, so that a segment starting at any
  // column of the image never reads past its row
  const int64_t row_stride = static_cast<int64_t>(p.tiles_x) * kTile + kSeg;
  auto grad = at::zeros({batch, channels, p.out_h, row_stride}, grad_out.options().dtype(means.scalar_type()));
  grad.narrow(3, 0, p.out_w).copy_(grad_out);
  BackwardOut<T> o{g_means.data_ptr<T>(), g_sigmas.data_ptr<T>(), g_rhos.data_ptr<T>(), g_colors.data_ptr<T>(),
                   gsplat ? g_opacities.data_ptr<T>() : nullptr};
  const int32_t* bx = boxes.data_ptr<int32_t>();
  const int64_t* slots = gsplat ? slot_starts.data_ptr<int64_t>() : nullptr;
  const uint8_t* allow = gsplat && allowed.numel() ? allowed.data_ptr<uint8_t>() : nullptr;
  const T* grad_ptr = grad.data_ptr<T>();
  at::parallel_for(0, total, 64, [&](int64_t begin, int64_t end) {
    std::vector<T> lane_acc(channels * kSeg);
    Loops<T>::backward(p.footprint, in, bx, slots, allow, grad_ptr, row_stride, begin, end, lane_acc.data(), o);
  });
  return {g_means, g_sigmas, g_rhos, g_colors, g_opacities};
}

}  // namespace

std::vector<at::Tensor> rasterize_forward_cpu(const at::Tensor& means, const at::Tensor& sigmas,
                                              const at::Tensor& rhos, const at::Tensor& colors,
                                              const at::Tensor& opacities, int64_t height, int64_t width,
                                              int64_t out_h, int64_t out_w, int64_t footprint, double cutoff,
                                              double half_h, double half_w) {
  check_cpu_inputs(means, sigmas, rhos, colors, opacities, footprint);
  TORCH_CHECK(height > 0 && width > 0 && out_h > 0 && out_w > 0, "sizes must be positive");
  TORCH_CHECK(means.size(0) * means.size(1) < (int64_t(1) << 31), "too many Gaussians for int32 indices");
  const Params p = gsasr::make_params(height, width, out_h, out_w, static_cast<int>(footprint), cutoff, half_h,
                                      half_w);
  if (means.scalar_type() == at::kDouble) {
    return forward_impl<double>(means, sigmas, rhos, colors, opacities, p, cutoff);
  }
  return forward_impl<float>(means, sigmas, rhos, colors, opacities, p, cutoff);
}

std::vector<at::Tensor> rasterize_backward_cpu(const at::Tensor& means, const at::Tensor& sigmas,
                                               const at::Tensor& rhos, const at::Tensor& colors,
                                               const at::Tensor& opacities, const at::Tensor& grad_out,
                                               const at::Tensor& boxes, const at::Tensor& slot_starts,
                                               const at::Tensor& allowed, int64_t height, int64_t width,
                                               int64_t footprint, double cutoff, double half_h, double half_w) {
  check_cpu_inputs(means, sigmas, rhos, colors, opacities, footprint);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == colors.size(0) && grad_out.size(1) == colors.size(2),
              "grad_out must have shape (B, C, Ho, Wo)");
  TORCH_CHECK(grad_out.device().is_cpu(), "grad_out must be a CPU tensor");
  const Params p = gsasr::make_params(height, width, grad_out.size(2), grad_out.size(3), static_cast<int>(footprint),
                                      cutoff, half_h, half_w);
  if (means.scalar_type() == at::kDouble) {
    return backward_impl<double>(means, sigmas, rhos, colors, opacities, grad_out, boxes, slot_starts, allowed, p,
                                 cutoff);
  }
  return backward_impl<float>(means, sigmas, rhos, colors, opacities, grad_out, boxes, slot_starts, allowed, p,
                              cutoff);
}
