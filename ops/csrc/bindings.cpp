// Python bindings of the rasterizer: gsasr_plugin.ops._C.{forward, backward, has_cuda}. forward/backward run the
// CPU kernel (rasterize_cpu.cpp) on CPU tensors and, when built with CUDA (GSASR_WITH_CUDA), the CUDA kernel
// (rasterize.cu) on CUDA tensors; both take and return the same tensors.
#include <torch/extension.h>

#include <vector>

#define GS_FORWARD_ARGS                                                                                      \
  const at::Tensor &means, const at::Tensor &sigmas, const at::Tensor &rhos, const at::Tensor &colors,       \
      const at::Tensor &opacities, int64_t height, int64_t width, int64_t out_h, int64_t out_w,              \
      int64_t footprint, double cutoff, double half_h, double half_w
#define GS_BACKWARD_ARGS                                                                                     \
  const at::Tensor &means, const at::Tensor &sigmas, const at::Tensor &rhos, const at::Tensor &colors,       \
      const at::Tensor &opacities, const at::Tensor &grad_out, const at::Tensor &boxes,                      \
      const at::Tensor &slot_starts, const at::Tensor &allowed, int64_t height, int64_t width,               \
      int64_t footprint, double cutoff, double half_h, double half_w

std::vector<at::Tensor> rasterize_forward_cpu(GS_FORWARD_ARGS);
std::vector<at::Tensor> rasterize_backward_cpu(GS_BACKWARD_ARGS);
#ifdef GSASR_WITH_CUDA
std::vector<at::Tensor> rasterize_forward_cuda(GS_FORWARD_ARGS);
std::vector<at::Tensor> rasterize_backward_cuda(GS_BACKWARD_ARGS, double mean_area);
#endif

// Returns [out (B, C, Ho, Wo), boxes (B*N, 4) int32, slot_starts (B*N,) int64, allowed (pairs,) uint8 (footprint
// 2, else empty), stats (2,) int64 on the CPU: number of (tile, Gaussian) pairs, sum of box areas].
std::vector<at::Tensor> forward(GS_FORWARD_ARGS) {
  if (means.is_cuda()) {
#ifdef GSASR_WITH_CUDA
    return rasterize_forward_cuda(means, sigmas, rhos, colors, opacities, height, width, out_h, out_w, footprint,
                                  cutoff, half_h, half_w);
#else
    TORCH_CHECK(false, "gsasr_plugin.ops._C was built without CUDA");
#endif
  }
  return rasterize_forward_cpu(means, sigmas, rhos, colors, opacities, height, width, out_h, out_w, footprint,
                               cutoff, half_h, half_w);
}

// Returns [g_means, g_sigmas, g_rhos, g_colors, g_opacities (footprint 2, else empty)].
std::vector<at::Tensor> backward(GS_BACKWARD_ARGS, double mean_area) {
  if (means.is_cuda()) {
#ifdef GSASR_WITH_CUDA
    return rasterize_backward_cuda(means, sigmas, rhos, colors, opacities, grad_out, boxes, slot_starts, allowed,
                                   height, width, footprint, cutoff, half_h, half_w, mean_area);
#else
    TORCH_CHECK(false, "gsasr_plugin.ops._C was built without CUDA");
#endif
  }
  return rasterize_backward_cpu(means, sigmas, rhos, colors, opacities, grad_out, boxes, slot_starts, allowed,
                                height, width, footprint, cutoff, half_h, half_w);
}

bool has_cuda() {
#ifdef GSASR_WITH_CUDA
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward,
        "Rasterize (B, N) Gaussians: means, sigmas, rhos, colors, opacities, H, W, Ho, Wo, footprint (0 ellipse, "
        "1 box, 2 gsplat), cutoff, half_h, half_w -> [out, boxes, slot_starts, allowed, stats]");
  m.def("backward", &backward,
        "Gradients: means, sigmas, rhos, colors, opacities, grad_out, boxes, slot_starts, allowed, H, W, "
        "footprint, cutoff, half_h, half_w, mean_area -> [g_means, g_sigmas, g_rhos, g_colors, g_opacities]");
  m.def("has_cuda", &has_cuda, "whether this build has the CUDA kernel");
}
