// Python bindings of the CUDA rasterizer: gsasr_plugin.ops._C.{forward, backward}.
#include <torch/extension.h>

#include <vector>

at::Tensor rasterize_forward_cuda(const at::Tensor& means, const at::Tensor& sigmas, const at::Tensor& rhos,
                                  const at::Tensor& colors, int64_t height, int64_t width, int64_t out_h,
                                  int64_t out_w, double cutoff);

std::vector<at::Tensor> rasterize_backward_cuda(const at::Tensor& means, const at::Tensor& sigmas,
                                                const at::Tensor& rhos, const at::Tensor& colors,
                                                const at::Tensor& grad_out, int64_t height, int64_t width,
                                                double cutoff);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &rasterize_forward_cuda,
        "Rasterize (B, N) Gaussians to (B, C, Ho, Wo): means, sigmas, rhos, colors, H, W, Ho, Wo, cutoff");
  m.def("backward", &rasterize_backward_cuda,
        "Gradients for means, sigmas, rhos, colors: means, sigmas, rhos, colors, grad_out, H, W, cutoff");
}
