// Test-only: what rasterize.cu needs of CUDA, on the CPU, so that its kernels and launcher compile with a host
// C++ compiler (rasterize.cu includes this file when GSASR_CUDA_ON_HOST is defined) and run here thread by thread.
//
// Each launch runs every block's threads concurrently: as fibers (the default: one OS thread runs a block's
// fibers, a few OS threads run blocks in parallel) or as OS threads (CUDA_HOST_THREADS=os, for ThreadSanitizer).
//   __syncthreads()        a real barrier of the block; every live thread must reach the same call site;
//   __shfl_down_sync       a warp exchange with PTX's shfl.sync.down semantics (width segments, the offset's low
//                          5 bits, out-of-segment lanes keep their own value); every lane of the mask must be
//                          live and reach the same call site;
//   GSASR_SHARED           per-block shared memory, filled with 0xff bytes (NaN, -1) before each block;
//   atomicAdd              a real atomic read-modify-write (std::atomic_ref).
// Fibers run in an adversarial order between synchronisation points: by default a fresh seeded random
// permutation of the block's threads at every barrier, so that a missing barrier shows up as wrong values
// deterministically (for one seed); set_schedule() picks forward / reverse / random orders for tests.
// Broken CUDA rules (a barrier reached by some threads only, a shuffle with an exited lane or a lane outside the
// mask, too much shared memory) end the launch with an error instead of undefined behaviour.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <type_traits>

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};

struct alignas(16) int4 {
  int x, y, z, w;
};

inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
// __restrict__ is a GCC / Clang keyword already.

// CUDA's integer min/max overloads (device code calls them unqualified).
inline int min(int a, int b) { return a < b ? a : b; }
inline int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline int64_t max(int64_t a, int64_t b) { return a > b ? a : b; }

namespace cuda_host {

constexpr int kWarpSize = 32;
constexpr size_t kSharedLimit = 48 * 1024;  // static shared memory per block

// The CUDA thread being executed by the calling OS thread or fiber.
struct ThreadState {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  int linear;            // linear thread index in the block
  size_t shared_cursor;  // next GSASR_SHARED offset in the block's arena
  class Block* block;
};

extern thread_local ThreadState* current;

void sync_threads(int line);
uint64_t shfl_down_bits(int line, unsigned mask, uint64_t bits, unsigned delta, int width);
void* shared_alloc(size_t bytes, size_t align);
[[noreturn]] void fail(const std::string& message);

// Runs body() once per CUDA thread of grid x block (the body reads threadIdx etc. through `current`).
void launch(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body);

template <typename T>
T shfl_down(int line, unsigned mask, T var, unsigned delta, int width = kWarpSize) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a 1-8 byte value");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = shfl_down_bits(line, mask, bits, delta, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

template <typename T>
T* shared_array(size_t count) {
  return static_cast<T*>(shared_alloc(sizeof(T) * count, alignof(T)));
}

// kernel<<<grid, block, 0, stream>>>(args...) becomes Launch(...)(args...): each CUDA thread calls the kernel
// with its own copy of the arguments, as CUDA passes them by value.
template <typename Kernel>
struct Launch {
  const char* name;
  Kernel kernel;
  dim3 grid, block;
  template <typename... Args>
  void operator()(Args... args) const {
    const Kernel k = kernel;
    launch(name, grid, block, [&]() { k(args...); });
  }
};

template <typename Kernel>
Launch<Kernel> make_launch(const char* name, dim3 grid, dim3 block, Kernel kernel) {
  return Launch<Kernel>{name, kernel, grid, block};
}

// Test controls (see the module's set_schedule).
enum class Order { kRandom, kForward, kReverse };
void set_schedule(Order order, uint64_t seed);
void set_os_threads(bool os_threads);
void set_workers(int workers);

template <typename T>
T atomic_add(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}

}  // namespace cuda_host

#define threadIdx (::cuda_host::current->thread_idx)
#define blockIdx (::cuda_host::current->block_idx)
#define blockDim (::cuda_host::current->block_dim)
#define gridDim (::cuda_host::current->grid_dim)
#define warpSize (::cuda_host::kWarpSize)
#define __syncthreads() ::cuda_host::sync_threads(__LINE__)
#define __shfl_down_sync(mask, var, ...) ::cuda_host::shfl_down(__LINE__, mask, var, __VA_ARGS__)

template <typename T>
inline T atomicAdd(T* address, T value) {
  return ::cuda_host::atomic_add(address, value);
}

// rasterize.cu's launch and shared-memory macros, host versions.
#define GSASR_LAUNCH(grid, block, stream, ...) ::cuda_host::make_launch(#__VA_ARGS__, grid, block, __VA_ARGS__)
#define GSASR_SHARED(type, name, count) type* const name = ::cuda_host::shared_array<type>(count)
#define GSASR_KERNEL_DEVICE c10::kCPU

// The launcher's CUDA runtime calls, as no-ops.
namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
inline int getCurrentCUDAStream() { return 0; }
}  // namespace cuda
}  // namespace c10
#define C10_CUDA_KERNEL_LAUNCH_CHECK() ((void)0)
