// Python bindings of the rasterizer: gsasr_plugin.ops._C.{forward, backward} (see rasterize.cu for the outputs).
#include <torch/extension.h>

#include <vector>

std::vector<at::Tensor> rasterize_forward_cuda(const at::Tensor& means, const at::Tensor& sigmas,
                                               const at::Tensor& rhos, const at::Tensor& colors,
                                               const at::Tensor& opacities, int64_t height, int64_t width,
                                               int64_t out_h, int64_t out_w, int64_t footprint, double cutoff,
                                               double half_h, double half_w);

std::vector<at::Tensor> rasterize_backward_cuda(const at::Tensor& means, const at::Tensor& sigmas,
                                                const at::Tensor& rhos, const at::Tensor& colors,
                                                const at::Tensor& opacities, const at::Tensor& grad_out,
                                                const at::Tensor& boxes, const at::Tensor& slot_starts,
                                                const at::Tensor& allowed, int64_t height, int64_t width,
                                                int64_t footprint, double cutoff, double half_h, double half_w,
                                                double mean_area);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &rasterize_forward_cuda,
        "Rasterize (B, N) Gaussians: means, sigmas, rhos, colors, opacities, H, W, Ho, Wo, footprint (0 ellipse, "
        "1 box, 2 gsplat), cutoff, half_h, half_w -> [out, boxes, slot_starts, allowed, stats]");
  m.def("backward", &rasterize_backward_cuda,
        "Gradients: means, sigmas, rhos, colors, opacities, grad_out, boxes, slot_starts, allowed, H, W, "
        "footprint, cutoff, half_h, half_w, mean_area -> [g_means, g_sigmas, g_rhos, g_colors, g_opacities]");
}
