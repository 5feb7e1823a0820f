// The rasterizer's arithmetic, shared by the CUDA kernel (rasterize.cu) and the CPU kernel (rasterize_cpu.cpp):
// the pixel box of a Gaussian for each footprint, the whitened q, the per-pixel weights, the per-pair gradient
// contributions and the tile binning. Everything here is an inline function of plain values, compiled for the
// host and (under nvcc) for the device; T is float or double.
//
// Contract (same as ops/_torch_impl.py): output pixel (u, v) samples the LR point x = (v + 0.5) * W / Wo,
// y = (u + 0.5) * H / Ho; dx = (x - mu_x) / sigma_x, dy = (y - mu_y) / sigma_y and
//   q = (dx^2 - 2 rho dx dy + dy^2) / (1 - rho^2) = dx^2 + ((dy - rho dx) / sqrt(1 - rho^2))^2   (whitened form).
// Footprints (which pixels a Gaussian reaches, and its weight there):
//   kEllipse: the box mu +- cutoff * sigma; inside it, exp(-q / 2) where q <= cutoff^2.
//   kBox:     exactly the pixels with |x - mu_x| <= half_w, |y - mu_y| <= half_h; exp(-q / 2) (GSASR's dmax kernel).
//   kGsplat:  the 16x16 tiles of gsplat's project_gaussians_2d box; min(1, opacity * exp(-q / 2)) where
//             opacity * exp(-q / 2) >= 1/255, and only on tiles where the Gaussian is among the first 256 of the
//             tile's list (gsplat's rasterize_forward_sum reads one batch of 256 and stops).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define GS_HD __host__ __device__ __forceinline__
#define GS_HOST __host__ inline
#elif defined(__GNUC__) || defined(__clang__)
// always inlined, so the CPU kernel's AVX2 clones compile these for AVX2 too
#define GS_HD inline __attribute__((always_inline))
#define GS_HOST GS_HD
#else
#define GS_HD inline
#define GS_HOST inline
#endif

namespace gsasr {

constexpr int kTile = 16;                       // tile side in output pixels (GPU thread block, CPU work unit)
constexpr int kGsplatTileCap = kTile * kTile;   // Gaussians gsplat's sum kernel reads per tile
constexpr double kGsplatAlphaMin = 1.0 / 255.0;
constexpr double kGsplatEigFloor = 0.1;         // gsplat: sqrt(max(0.1, b^2 - det))
constexpr double kGsplatRadiusSigmas = 3.0;
constexpr double kBoxEps = 1e-4;                // box rounding guard (output pixels); exact tests decide

enum Footprint : int { kEllipse = 0, kBox = 1, kGsplat = 2 };

// Per-call constants, built once on the host (make_params) and passed by value.
struct Params {
  int height, width, out_h, out_w;
  int tiles_x, tiles_y;
  int footprint;
  double cutoff;          // kEllipse
  double half_h, half_w;  // kBox, LR pixels
  double step_x, step_y;  // LR pixels per output pixel: W / Wo, H / Ho
  double scale_x, scale_y;  // output pixels per LR pixel: Wo / W, Ho / H
};

inline Params make_params(int64_t height, int64_t width, int64_t out_h, int64_t out_w, int footprint, double cutoff,
                          double half_h, double half_w) {
  Params p;
  p.height = static_cast<int>(height);
  p.width = static_cast<int>(width);
  p.out_h = static_cast<int>(out_h);
  p.out_w = static_cast<int>(out_w);
  p.tiles_x = static_cast<int>((out_w + kTile - 1) / kTile);
  p.tiles_y = static_cast<int>((out_h + kTile - 1) / kTile);
  p.footprint = footprint;
  p.cutoff = cutoff;
  p.half_h = half_h;
  p.half_w = half_w;
  p.step_x = static_cast<double>(width) / static_cast<double>(out_w);
  p.step_y = static_cast<double>(height) / static_cast<double>(out_h);
  p.scale_x = static_cast<double>(out_w) / static_cast<double>(width);
  p.scale_y = static_cast<double>(out_h) / static_cast<double>(height);
  return p;
}

// Inclusive pixel box; empty when x0 > x1 or y0 > y1.
struct PixelBox {
  int x0, y0, x1, y1;
};

GS_HD bool box_empty(const PixelBox& b) { return b.x0 > b.x1 || b.y0 > b.y1; }

GS_HD int64_t box_area(const PixelBox& b) {
  return box_empty(b) ? 0 : static_cast<int64_t>(b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1);
}

// The LR coordinate output pixel j samples, in T's arithmetic (the pure path: (j + 0.5) * (W / Wo)).
template <typename T>
GS_HD T sample_coord(int j, double step) {
  return (static_cast<T>(j) + static_cast<T>(0.5)) * static_cast<T>(step);
}

GS_HD double clamp_d(double v, double lo, double hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Math overloads that resolve to the float or double C function on host and device alike.
GS_HD float gs_sqrt(float v) { return sqrtf(v); }
GS_HD double gs_sqrt(double v) { return sqrt(v); }
GS_HD float gs_ceil(float v) { return ceilf(v); }
GS_HD double gs_ceil(double v) { return ceil(v); }
GS_HD float gs_log(float v) { return logf(v); }
GS_HD double gs_log(double v) { return log(v); }

template <typename T>
GS_HD T machine_eps() {
  return static_cast<T>(sizeof(T) == 4 ? 1.1920929e-7 : 2.220446049250313e-16);
}

// kEllipse, one axis: pixels whose sample point lies within centre +- reach (double arithmetic, widened by
// kBoxEps output pixels; the q test decides inside), clipped to [0, out_len).
GS_HD void reach_range(double centre, double reach, double scale, int out_len, int& lo, int& hi) {
  const double flo = clamp_d(ceil((centre - reach) * scale - 0.5 - kBoxEps), 0.0, static_cast<double>(out_len));
  const double fhi = clamp_d(floor((centre + reach) * scale - 0.5 + kBoxEps), -1.0, static_cast<double>(out_len - 1));
  lo = static_cast<int>(flo);
  hi = static_cast<int>(fhi);
}

// kBox, one axis: exactly the pixels j with |sample_coord<T>(j) - centre| <= half in T's arithmetic (an interval:
// the test is monotone in j), clipped to [0, out_len).
template <typename T>
GS_HD void half_size_range(T centre, double half, double step, double scale, int out_len, int& lo, int& hi) {
  const T t_half = static_cast<T>(half);
  const double c = static_cast<double>(centre);
  int a = static_cast<int>(clamp_d(ceil((c - half) * scale - 0.5 - kBoxEps), -2.0, out_len + 1.0));
  int b = static_cast<int>(clamp_d(floor((c + half) * scale - 0.5 + kBoxEps), -2.0, out_len + 1.0));
  auto inside = [&](int j) {
    const T d = sample_coord<T>(j, step) - centre;
    return (d < 0 ? -d : d) <= t_half;
  };
  if (inside(a - 1)) --a;
  if (!inside(a)) ++a;
  if (inside(b + 1)) ++b;
  if (!inside(b)) --b;
  lo = a < 0 ? 0 : (a > out_len ? out_len : a);
  hi = b < -1 ? -1 : (b > out_len - 1 ? out_len - 1 : b);
}

// C's (int) of a float after clamping into [lo, hi] (truncation toward zero, as gsplat's get_bbox does).
template <typename T>
GS_HD int trunc_clamped(T v, T lo, T hi) {
  v = v < lo ? lo : (v > hi ? hi : v);
  return static_cast<int>(v);
}

// kGsplat: gsplat's tile box [tmin, tmax) of a Gaussian in our LR units (centre mu * Wo / W - 0.5 output pixels,
// covariance of sigma_x * Wo / W, sigma_y * Ho / H, rho); false when gsplat drops it (det == 0) or it misses the
// image. Same operation order as ops/_torch_impl.py::gsplat_tile_boxes.
template <typename T>
GS_HD bool gsplat_tile_box(T mx, T my, T sx, T sy, T rho, const Params& p, int& tx0, int& ty0, int& tx1, int& ty1) {
  const T scale_x = static_cast<T>(static_cast<double>(p.out_w) / p.width);
  const T scale_y = static_cast<T>(static_cast<double>(p.out_h) / p.height);
  const T cx = mx * scale_x - static_cast<T>(0.5);
  const T cy = my * scale_y - static_cast<T>(0.5);
  const T sxo = sx * scale_x, syo = sy * scale_y;
  const T cxx = sxo * sxo, cyy = syo * syo;
  const T cxy = rho * sxo * syo;
  const T det = cxx * cyy - cxy * cxy;
  if (det == static_cast<T>(0)) return false;
  const T half_trace = static_cast<T>(0.5) * (cxx + cyy);
  T spread = half_trace * half_trace - det;
  spread = spread < static_cast<T>(kGsplatEigFloor) ? static_cast<T>(kGsplatEigFloor) : spread;
  const T big_eig = half_trace + gs_sqrt(spread);
  const T radius = gs_ceil(static_cast<T>(kGsplatRadiusSigmas) * gs_sqrt(big_eig));
  const T tile_radius = radius / static_cast<T>(kTile);
  const T tcx = cx / static_cast<T>(kTile), tcy = cy / static_cast<T>(kTile);
  const T bound = static_cast<T>((p.tiles_x > p.tiles_y ? p.tiles_x : p.tiles_y) + 1);
  const T low = static_cast<T>(-1);
  tx0 = trunc_clamped<T>(tcx - tile_radius, low, bound);
  ty0 = trunc_clamped<T>(tcy - tile_radius, low, bound);
  tx1 = trunc_clamped<T>((tcx + tile_radius) + static_cast<T>(1), low, bound);
  ty1 = trunc_clamped<T>((tcy + tile_radius) + static_cast<T>(1), low, bound);
  tx0 = tx0 < 0 ? 0 : (tx0 > p.tiles_x ? p.tiles_x : tx0);
  tx1 = tx1 < 0 ? 0 : (tx1 > p.tiles_x ? p.tiles_x : tx1);
  ty0 = ty0 < 0 ? 0 : (ty0 > p.tiles_y ? p.tiles_y : ty0);
  ty1 = ty1 < 0 ? 0 : (ty1 > p.tiles_y ? p.tiles_y : ty1);
  return tx1 > tx0 && ty1 > ty0;
}

// The pixel box of one Gaussian (empty when it reaches no pixel).
template <typename T>
GS_HD PixelBox gaussian_box(T mx, T my, T sx, T sy, T rho, const Params& p) {
  PixelBox b;
  if (p.footprint == kEllipse) {
    reach_range(static_cast<double>(mx), p.cutoff * static_cast<double>(sx), p.scale_x, p.out_w, b.x0, b.x1);
    reach_range(static_cast<double>(my), p.cutoff * static_cast<double>(sy), p.scale_y, p.out_h, b.y0, b.y1);
  } else if (p.footprint == kBox) {
    half_size_range<T>(mx, p.half_w, p.step_x, p.scale_x, p.out_w, b.x0, b.x1);
    half_size_range<T>(my, p.half_h, p.step_y, p.scale_y, p.out_h, b.y0, b.y1);
  } else {
    int tx0, ty0, tx1, ty1;
    if (!gsplat_tile_box<T>(mx, my, sx, sy, rho, p, tx0, ty0, tx1, ty1)) {
      b.x0 = b.y0 = 0;
      b.x1 = b.y1 = -1;
      return b;
    }
    b.x0 = tx0 * kTile;
    b.y0 = ty0 * kTile;
    b.x1 = (tx1 * kTile < p.out_w ? tx1 * kTile : p.out_w) - 1;
    b.y1 = (ty1 * kTile < p.out_h ? ty1 * kTile : p.out_h) - 1;
  }
  if (box_empty(b)) {
    b.x0 = b.y0 = 0;
    b.x1 = b.y1 = -1;
  }
  return b;
}

// Tile binning: the tiles a (non-empty) box overlaps, [tx0, tx1] x [ty0, ty1] inclusive, and their count.
GS_HD void box_tiles(const PixelBox& b, int& tx0, int& ty0, int& tx1, int& ty1) {
  tx0 = b.x0 / kTile;
  ty0 = b.y0 / kTile;
  tx1 = b.x1 / kTile;
  ty1 = b.y1 / kTile;
}

GS_HD int64_t box_tile_count(const PixelBox& b) {
  if (box_empty(b)) return 0;
  return static_cast<int64_t>(b.x1 / kTile - b.x0 / kTile + 1) * (b.y1 / kTile - b.y0 / kTile + 1);
}

// Index of tile (tx, ty) among the box's tiles in emission order (row-major over the box's tiles).
GS_HD int64_t box_tile_index(const PixelBox& b, int tx, int ty) {
  return static_cast<int64_t>(ty - b.y0 / kTile) * (b.x1 / kTile - b.x0 / kTile + 1) + (tx - b.x0 / kTile);
}

// Key of a (batch image, tile) pair in the sorted pair list.
GS_HD int64_t tile_key(int64_t batch_index, const Params& p, int tx, int ty) {
  return batch_index * (static_cast<int64_t>(p.tiles_x) * p.tiles_y) + static_cast<int64_t>(ty) * p.tiles_x + tx;
}

// exp: the device's fast exponential (what the GPU kernel has always used); on the host std::exp for double and a
// vectorisable float exp accurate to a few ulp (glibc's expf does not vectorise).
GS_HOST float host_expf(float x) {
  // exp(x) = 2^n * exp(r), n = round(x / ln 2), |r| <= ln 2 / 2, exp(r) by Cephes' expf polynomial; branch-free
  // so loops over pixels vectorise. Results below exp(-86) (< 4.5e-38) flush to 0; x > 88 is not needed here.
  const float xc = x < -86.0f ? -86.0f : (x > 88.0f ? 88.0f : x);
  const float t = xc * 1.44269504088896341f;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low mantissa bits
  const float shifted = t + magic;
  const float n = shifted - magic;
  const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  int32_t pbits;
  std::memcpy(&pbits, &p, sizeof(pbits));
  pbits += (bits - 0x4B400000) << 23;  // add n to the exponent
  float out;
  std::memcpy(&out, &pbits, sizeof(out));
  return x < -86.0f ? 0.0f : out;
}

GS_HD float gs_exp(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return host_expf(x);
#endif
}

GS_HD double gs_exp(double x) { return exp(x); }

// Per-Gaussian constants of the whitened form.
template <typename T>
struct Shape {
  T mx, my;   // centre, LR pixels
  T isx, isy; // 1 / sigma
  T rho;
  T irs;      // 1 / sqrt(1 - rho^2)
  T k;        // 1 / (1 - rho^2)
};

template <typename T>
GS_HD Shape<T> make_shape(T mx, T my, T sx, T sy, T rho) {
  Shape<T> s;
  s.mx = mx;
  s.my = my;
  s.isx = static_cast<T>(1) / sx;
  s.isy = static_cast<T>(1) / sy;
  s.rho = rho;
  T one_minus = static_cast<T>(1) - rho * rho;
  one_minus = one_minus < static_cast<T>(1e-12) ? static_cast<T>(1e-12) : one_minus;
  s.irs = static_cast<T>(1) / gs_sqrt(one_minus);
  s.k = static_cast<T>(1) / one_minus;
  return s;
}

// q at the sample point (px, py), with dx, dy (in sigmas) for the gradients.
template <typename T>
GS_HD T whitened_q(const Shape<T>& s, T px, T py, T& dx, T& dy) {
  dx = (px - s.mx) * s.isx;
  dy = (py - s.my) * s.isy;
  const T b = (dy - s.rho * dx) * s.irs;
  return dx * dx + b * b;
}

// The largest q at which a pixel can still count: cutoff^2 (kEllipse), q where opacity * exp(-q / 2) = 1/255
// (kGsplat; negative when no pixel can count), or a negative/"unbounded" marker via `bounded` (kBox: no limit).
template <int FP, typename T>
GS_HD T reach_q(T cutoff_sq, T opacity, bool& bounded) {
  bounded = FP != kBox;
  if (FP == kEllipse) return cutoff_sq;
  if (FP == kGsplat) {
    const T scaled = opacity / static_cast<T>(kGsplatAlphaMin);
    return scaled > static_cast<T>(0) ? static_cast<T>(2) * gs_log(scaled) : static_cast<T>(-1);
  }
  return static_cast<T>(0);
}

// The columns [lo, hi] of the output row sampled at py where q <= q_max can hold, within [x0, x1] (lo > hi when
// none). A superset: margins cover T's rounding, the per-pixel weight decides. For fixed dy, q is smallest (= dy^2)
// at dx = rho dy and q <= q_max for |dx - rho dy| <= sqrt((1 - rho^2)(q_max - dy^2)). CPU kernel only.
template <typename T>
GS_HD void row_span(const Shape<T>& s, T sx, T py, T q_max, double scale, int x0, int x1, int& lo, int& hi) {
  const T eps = machine_eps<T>();
  const T dy = (py - s.my) * s.isy;
  const T tol = static_cast<T>(64) * eps * (q_max > static_cast<T>(1) ? q_max : static_cast<T>(1));
  const T rem = q_max - dy * dy;
  if (rem < -tol) {
    lo = 1;
    hi = 0;
    return;
  }
  const T half = gs_sqrt((rem > static_cast<T>(0) ? rem : static_cast<T>(0)) / s.k + tol);
  const T t_scale = static_cast<T>(scale);
  const T lo_x = (s.mx + sx * (s.rho * dy - half)) * t_scale;
  const T hi_x = (s.mx + sx * (s.rho * dy + half)) * t_scale;
  const T abs_lo = lo_x < 0 ? -lo_x : lo_x, abs_hi = hi_x < 0 ? -hi_x : hi_x;
  const T margin = static_cast<T>(1e-3) + static_cast<T>(16) * eps * (abs_lo + abs_hi);
  const T a = gs_ceil(lo_x - static_cast<T>(0.5) - margin);
  const T b = -gs_ceil(-(hi_x - static_cast<T>(0.5) + margin));  // floor
  lo = a < static_cast<T>(x0) ? x0 : (a > static_cast<T>(x1) ? x1 + 1 : static_cast<int>(a));
  hi = b > static_cast<T>(x1) ? x1 : (b < static_cast<T>(x0) ? x0 - 1 : static_cast<int>(b));
}

// The weights of one (Gaussian, pixel) pair inside the Gaussian's box (a tile's cap is decided by the caller):
//   color_w  multiplies the colour in the forward (0 where the pixel does not count),
//   grad_w   is what the geometry's gradients follow: G = grad_w * <dL/dout, colour>, dL/dq = -G / 2 (gsplat's
//            backward ignores its min(1, .) clamp, so grad_w is opacity * exp(-q / 2) unclamped there),
//   opac_w   is d grad_w / d opacity = exp(-q / 2) where the pixel counts (kGsplat only).
template <typename T>
struct PairWeights {
  T color_w, grad_w, opac_w;
};

template <int FP, typename T>
GS_HD PairWeights<T> pair_weights(T q, T cutoff_sq, T opacity) {
  PairWeights<T> w;
  const T e = gs_exp(static_cast<T>(-0.5) * q);
  if (FP == kEllipse) {
    w.color_w = q <= cutoff_sq ? e : static_cast<T>(0);
    w.grad_w = w.color_w;
    w.opac_w = static_cast<T>(0);
  } else if (FP == kBox) {
    w.color_w = e;
    w.grad_w = e;
    w.opac_w = static_cast<T>(0);
  } else {
    const T a = opacity * e;
    const bool keep = a >= static_cast<T>(kGsplatAlphaMin);
    w.grad_w = keep ? a : static_cast<T>(0);
    w.color_w = w.grad_w < static_cast<T>(1) ? w.grad_w : static_cast<T>(1);
    w.opac_w = keep ? e : static_cast<T>(0);
  }
  return w;
}

// Sums over a Gaussian's pixels of G * (dx, dy, dx^2, dy^2, dx dy), G = grad_w * <dL/dout, colour>.
template <typename T>
struct Moments {
  T x, y, xx, yy, xy;
};

template <typename T>
GS_HD void add_pair(T& x, T& y, T& xx, T& yy, T& xy, T big_g, T dx, T dy) {
  x += big_g * dx;
  y += big_g * dy;
  xx += big_g * dx * dx;
  yy += big_g * dy * dy;
  xy += big_g * dx * dy;
}

template <typename T>
GS_HD void add_pair(Moments<T>& m, T big_g, T dx, T dy) {
  add_pair(m.x, m.y, m.xx, m.yy, m.xy, big_g, dx, dy);
}

// Gradients of one Gaussian from its moments: with q = k (dx^2 - 2 rho dx dy + dy^2), k = 1 / (1 - rho^2) and
// dL/dq = -G / 2 per pixel (see ops/_torch_impl.py).
template <typename T>
GS_HD void gaussian_gradients(const Shape<T>& s, const Moments<T>& m, T& g_mx, T& g_my, T& g_sx, T& g_sy, T& g_rho) {
  g_mx = s.k * (m.x - s.rho * m.y) * s.isx;
  g_my = s.k * (m.y - s.rho * m.x) * s.isy;
  g_sx = s.k * (m.xx - s.rho * m.xy) * s.isx;
  g_sy = s.k * (m.yy - s.rho * m.xy) * s.isy;
  const T m_q = s.k * (m.xx - static_cast<T>(2) * s.rho * m.xy + m.yy);
  g_rho = s.k * (m.xy - s.rho * m_q);
}

}  // namespace gsasr
