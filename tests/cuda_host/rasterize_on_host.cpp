// Test-only: ops/csrc/rasterize.cu (kernels and launcher, unchanged) compiled for the CPU on top of
// cuda_on_host.h, as a Python module with _C's forward/backward signature plus the execution layer's controls.
// Built by tests/cuda_on_host.py from the checkout's rasterize.cu (include path ops/csrc).
#define GSASR_CUDA_ON_HOST 1
#include "rasterize.cu"

#include <torch/python.h>

// rasterize_cpu.cpp, compiled into this module with the same flags: the reference whose weights round alike.
std::vector<at::Tensor> rasterize_forward_cpu(const at::Tensor& means, const at::Tensor& sigmas,
                                              const at::Tensor& rhos, const at::Tensor& colors,
                                              const at::Tensor& opacities, int64_t height, int64_t width,
                                              int64_t out_h, int64_t out_w, int64_t footprint, double cutoff,
                                              double half_h, double half_w);
std::vector<at::Tensor> rasterize_backward_cpu(const at::Tensor& means, const at::Tensor& sigmas,
                                               const at::Tensor& rhos, const at::Tensor& colors,
                                               const at::Tensor& opacities, const at::Tensor& grad_out,
                                               const at::Tensor& boxes, const at::Tensor& slot_starts,
                                               const at::Tensor& allowed, int64_t height, int64_t width,
                                               int64_t footprint, double cutoff, double half_h, double half_w);

// --- kernels that probe the execution layer itself (shuffle semantics, barriers, CUDA-rule violations, atomics),
// launched like rasterize.cu's

namespace {

__global__ void shfl_down_kernel(const int* in, unsigned delta, int width, int* out) {
  const int t = threadIdx.x + blockIdx.x * blockDim.x;
  out[t] = __shfl_down_sync(0xffffffffu, in[t], delta, width);
}

// every thread writes its slot, then reads its neighbour's (a barrier in between, or not)
__global__ void neighbour_kernel(bool barrier, int* out) {
  GSASR_SHARED(int, slots, 256);
  const int t = threadIdx.x;
  slots[t] = t;
  if (barrier) __syncthreads();
  out[blockIdx.x * blockDim.x + t] = slots[(t + 1) % blockDim.x];
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void exited_lane_kernel(int* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1, 32);
}

__global__ void atomic_kernel(int* count, float* sum) {
  atomicAdd(count, 1);
  atomicAdd(sum, 0.5f);
}

}  // namespace

at::Tensor probe_shfl_down(const at::Tensor& in, int64_t delta, int64_t width) {
  TORCH_CHECK(in.scalar_type() == at::kInt && in.is_contiguous() && in.numel() % 32 == 0);
  auto out = at::empty_like(in);
  GSASR_LAUNCH(static_cast<unsigned>(in.numel() / 64), 64, 0, shfl_down_kernel)(
      in.data_ptr<int>(), static_cast<unsigned>(delta), static_cast<int>(width), out.data_ptr<int>());
  return out;
}

at::Tensor probe_neighbour(bool barrier, int64_t blocks) {
  auto out = at::empty({blocks, 256}, at::kInt);
  GSASR_LAUNCH(static_cast<unsigned>(blocks), 256, 0, neighbour_kernel)(barrier, out.data_ptr<int>());
  return out;
}

void probe_divergent_barrier() {
  auto out = at::zeros({128}, at::kInt);
  GSASR_LAUNCH(1, 128, 0, divergent_barrier_kernel)(out.data_ptr<int>());
}

void probe_exited_lane() {
  auto out = at::zeros({32}, at::kInt);
  GSASR_LAUNCH(1, 32, 0, exited_lane_kernel)(out.data_ptr<int>());
}

std::vector<at::Tensor> probe_atomics(int64_t blocks) {
  auto count = at::zeros({1}, at::kInt);
  auto sum = at::zeros({1}, at::kFloat);
  GSASR_LAUNCH(static_cast<unsigned>(blocks), 256, 0, atomic_kernel)(count.data_ptr<int>(), sum.data_ptr<float>());
  return {count, sum};
}

namespace {

void set_schedule(const std::string& order, uint64_t seed) {
  if (order == "random") {
    cuda_host::set_schedule(cuda_host::Order::kRandom, seed);
  } else if (order == "forward") {
    cuda_host::set_schedule(cuda_host::Order::kForward, seed);
  } else if (order == "reverse") {
    cuda_host::set_schedule(cuda_host::Order::kReverse, seed);
  } else {
    TORCH_CHECK(false, "order must be random, forward or reverse, got ", order);
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &rasterize_forward_cuda, "rasterize.cu's forward launcher, run on the CPU (CPU float32 tensors)");
  m.def("backward", &rasterize_backward_cuda, "rasterize.cu's backward launcher, run on the CPU");
  m.def("cpu_forward", &rasterize_forward_cpu, "rasterize_cpu.cpp's forward, built with this module's flags");
  m.def("cpu_backward", &rasterize_backward_cpu, "rasterize_cpu.cpp's backward, built with this module's flags");
  m.def("probe_shfl_down", &probe_shfl_down, "execution-layer probe: __shfl_down_sync over blocks of 64");
  m.def("probe_neighbour", &probe_neighbour, "execution-layer probe: read a neighbour's shared slot");
  m.def("probe_divergent_barrier", &probe_divergent_barrier, "execution-layer probe: two barriers, split block");
  m.def("probe_exited_lane", &probe_exited_lane, "execution-layer probe: a shuffle whose mask names an exited lane");
  m.def("probe_atomics", &probe_atomics, "execution-layer probe: atomicAdd from every thread");
  m.def("set_schedule", &set_schedule, "order of a block's threads between barriers: random (seeded), forward, "
        "reverse");
  m.def("set_os_threads", &cuda_host::set_os_threads, "one OS thread per CUDA thread (for ThreadSanitizer) "
        "instead of fibers");
  m.def("set_workers", &cuda_host::set_workers, "OS threads running blocks in parallel with fibers (0: default)");
}
