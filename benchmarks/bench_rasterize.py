"""Speed and peak memory of ``gsasr_plugin.ops.rasterize_gaussians`` on the paper's cases (not a test).

    .venv/bin/python benchmarks/bench_rasterize.py                      # every case, default device
    .venv/bin/python benchmarks/bench_rasterize.py --cases crop48_b1 --repeat 5 --device cpu

Cases: the 48x48 LR x4 training crop with 16 Gaussians per LR pixel (batch 1 and 16) and 720x720 outputs
from x2, x4 and x12 LR inputs (16 Gaussians per LR pixel, sigma in [0.1, 0.8] LR pixels, |rho| <= 0.5).
Each case prints forward and forward+backward time and peak memory of the op, next to

* ``naive``: a per-Gaussian full-image PyTorch loop (every Gaussian evaluated at every output pixel, like
  the paper's op without its window), on sizes where that finishes (``--naive-limit`` evaluations);
* on CUDA, ``paper-r0.1``: a JIT-compiled kernel like the official GSASR op, one thread per Gaussian over a
  fixed window of r = 0.1 of the output image (per axis, centred on the Gaussian) with atomicAdd, and
  ``floor``: a kernel doing only the exp + C FMAs per (Gaussian, pixel-in-its-cutoff-box) pair that the
  tiled op evaluates, with no memory traffic -- the arithmetic lower bound.
"""
import argparse
import math
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from gsasr_plugin.ops import DEFAULT_CUTOFF, cuda_op_available, rasterize_gaussians

CASES: Dict[str, dict] = {
    'crop48_b1': dict(batch=1, lr=(48, 48), out=(192, 192)),
    'crop48_b16': dict(batch=16, lr=(48, 48), out=(192, 192)),
    'out720_x2': dict(batch=1, lr=(360, 360), out=(720, 720)),
    'out720_x4': dict(batch=1, lr=(180, 180), out=(720, 720)),
    'out720_x12': dict(batch=1, lr=(60, 60), out=(720, 720)),
}

BASELINE_SOURCE = r"""
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>

__global__ void paper_window_kernel(const float* means, const float* sigmas, const float* rhos,
                                    const float* colors, int64_t total, int64_t num, int channels, int height,
                                    int width, int out_h, int out_w, int half_h, int half_w, float* out) {
  int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (g >= total) return;
  const int64_t b = g / num;
  const float sx = (float)out_w / width, sy = (float)out_h / height;
  const float mx = means[2 * g], my = means[2 * g + 1];
  const float isx = 1.f / sigmas[2 * g], isy = 1.f / sigmas[2 * g + 1], rho = rhos[g];
  const float k = 1.f / (1.f - rho * rho);
  const int cx = (int)floorf(mx * sx), cy = (int)floorf(my * sy);
  const int64_t plane = (int64_t)out_h * out_w;
  for (int row = max(cy - half_h, 0); row <= min(cy + half_h, out_h - 1); ++row) {
    const float dy = ((row + 0.5f) / sy - my) * isy;
    for (int col = max(cx - half_w, 0); col <= min(cx + half_w, out_w - 1); ++col) {
      const float dx = ((col + 0.5f) / sx - mx) * isx;
      const float w = __expf(-0.5f * k * (dx * dx - 2.f * rho * dx * dy + dy * dy));
      for (int c = 0; c < channels; ++c)
        atomicAdd(out + (b * channels + c) * plane + (int64_t)row * out_w + col, w * colors[g * channels + c]);
    }
  }
}

__global__ void floor_kernel(int64_t evaluations, int channels, float* sink) {
  float acc = 0.f, x = threadIdx.x * 1e-7f;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < evaluations;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float w = __expf(-x);
    for (int c = 0; c < channels; ++c) acc = fmaf(w, x + c, acc);
    x += 1e-9f;
  }
  if (acc == 12345.f) sink[0] = acc;  // keeps the loop alive
}

torch::Tensor paper_window(torch::Tensor means, torch::Tensor sigmas, torch::Tensor rhos, torch::Tensor colors,
                           int64_t height, int64_t width, int64_t out_h, int64_t out_w, double r) {
  auto out = torch::zeros({colors.size(0), colors.size(2), out_h, out_w}, colors.options());
  const int64_t total = colors.size(0) * colors.size(1);
  const int half_h = (int)(r * out_h / 2), half_w = (int)(r * out_w / 2);
  paper_window_kernel<<<(total + 127) / 128, 128, 0, c10::cuda::getCurrentCUDAStream()>>>(
      means.data_ptr<float>(), sigmas.data_ptr<float>(), rhos.data_ptr<float>(), colors.data_ptr<float>(), total,
      colors.size(1), (int)colors.size(2), (int)height, (int)width, (int)out_h, (int)out_w, half_h, half_w,
      out.data_ptr<float>());
  return out;
}

void exp_fma_floor(int64_t evaluations, int64_t channels, torch::Tensor sink) {
  floor_kernel<<<1024, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(evaluations, (int)channels,
                                                                     sink.data_ptr<float>());
}
"""
BASELINE_CPP = """
torch::Tensor paper_window(torch::Tensor means, torch::Tensor sigmas, torch::Tensor rhos, torch::Tensor colors,
                           int64_t height, int64_t width, int64_t out_h, int64_t out_w, double r);
void exp_fma_floor(int64_t evaluations, int64_t channels, torch::Tensor sink);
"""


def make_gaussians(batch: int, lr: tuple, per_pixel: int = 16, sigma_max: float = 0.8, channels: int = 3,
                   device: str = 'cpu') -> List[torch.Tensor]:
    """GSASR-like Gaussians: ``per_pixel`` per LR pixel near its centre, sigma in [0.1, sigma_max]."""
    gen = torch.Generator().manual_seed(0)
    height, width = lr
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing='ij')
    centres = torch.stack([xs, ys], -1).reshape(1, -1, 1, 2).expand(batch, -1, per_pixel, 2).reshape(batch, -1, 2)
    num = centres.shape[1]
    means = centres + torch.rand(batch, num, 2, generator=gen) - 0.5
    sigmas = torch.rand(batch, num, 2, generator=gen) * (sigma_max - 0.1) + 0.1
    rhos = torch.rand(batch, num, generator=gen) - 0.5
    colors = torch.rand(batch, num, channels, generator=gen) * (4.0 / per_pixel)
    return [t.to(device) for t in (means, sigmas, rhos, colors)]


def naive_loop(means, sigmas, rhos, colors, lr, out, cutoff=DEFAULT_CUTOFF, chunk_pixels=1 << 24):
    """Every Gaussian at every output pixel, Gaussians in chunks (the cost of a window-free per-Gaussian op)."""
    height, width = lr
    out_h, out_w = out
    x = (torch.arange(out_w, device=means.device) + 0.5) * width / out_w
    y = (torch.arange(out_h, device=means.device) + 0.5) * height / out_h
    result = 0
    step = max(1, chunk_pixels // (out_h * out_w))
    for s in range(0, means.shape[1], step):
        m, sg, r, c = means[:, s:s + step], sigmas[:, s:s + step], rhos[:, s:s + step], colors[:, s:s + step]
        dx = (x - m[..., 0, None]) / sg[..., 0, None]
        dy = (y - m[..., 1, None]) / sg[..., 1, None]
        rr = r[..., None, None]
        q = (dx[:, :, None, :] ** 2 - 2 * rr * dx[:, :, None, :] * dy[..., None] + dy[..., None] ** 2) / (1 - rr * rr)
        w = torch.exp(-q / 2) * (q <= cutoff ** 2)
        result = result + torch.einsum('bnyx,bnc->bcyx', w, c)
    return result


def sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def measure(fn: Callable[[], None], device: str, repeat: int) -> tuple:
    """(best seconds, peak bytes or None) over ``repeat`` runs after one warm-up."""
    fn()
    sync(device)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import resource
        base = None
    best = best_cpu = math.inf
    for _ in range(repeat):
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    measure.last_cpu_seconds = best_cpu
    if device.startswith('cuda'):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # process high-water mark
    return best, peak


def fmt(seconds: Optional[float], peak: Optional[int]) -> str:
    if seconds is None:
        return 'skipped'
    mem = '' if peak is None else f' / {peak / 2 ** 20:.0f} MiB'
    return f'{seconds * 1e3:9.1f} ms{mem}'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cases', nargs='*', default=list(CASES), choices=list(CASES))
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--cutoff', type=float, default=DEFAULT_CUTOFF)
    parser.add_argument('--naive-limit', type=float, default=None,
                        help='largest B*N*Ho*Wo the naive loop runs (default 2e9 on CUDA, 3e8 on CPU)')
    parser.add_argument('--no-baselines', action='store_true', help='only the op itself')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    args = parser.parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    naive_limit = args.naive_limit or (2e9 if device.startswith('cuda') else 3e8)
    print(f'device: {torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"} '
          f'({torch.get_num_threads()} threads); compiled CUDA op: {cuda_op_available()}; cutoff {args.cutoff}')
    if device == 'cpu':
        print('peak memory on the CPU is the process high-water mark (ru_maxrss), not per case')
    baseline = None
    if device.startswith('cuda') and not args.no_baselines:
        from torch.utils.cpp_extension import load_inline
        baseline = load_inline('gsasr_bench_baselines', cpp_sources=BASELINE_CPP, cuda_sources=BASELINE_SOURCE,
                               functions=['paper_window', 'exp_fma_floor'], extra_cuda_cflags=['-O3'])

    header = f'{"case":12} {"gaussians":>10} {"out":>11} | {"forward":>20} | {"forward+backward":>20} | baselines (fwd)'
    print(header)
    print('-' * len(header))
    for name in args.cases:
        case = CASES[name]
        lr, out = case['lr'], case['out']
        params = make_gaussians(case['batch'], lr, device=device)
        num = params[0].shape[0] * params[0].shape[1]

        def forward():
            with torch.no_grad():
                rasterize_gaussians(*params, lr, out, cutoff=args.cutoff)

        grads = [p.clone().requires_grad_() for p in params]

        def forward_backward():
            for g in grads:
                g.grad = None
            rasterize_gaussians(*grads, lr, out, cutoff=args.cutoff).square().mean().backward()

        fwd = measure(forward, device, args.repeat)
        fwd_cpu = measure.last_cpu_seconds
        fwdbwd = measure(forward_backward, device, args.repeat)
        extras = []
        if device == 'cpu':  # CPU seconds of all threads: robust to other load on a shared machine
            extras.append(f'process CPU time fwd {fwd_cpu:.2f} s, fwd+bwd {measure.last_cpu_seconds:.2f} s')
        if not args.no_baselines:
            work = num * out[0] * out[1]
            if work <= naive_limit:
                def naive():
                    with torch.no_grad():
                        naive_loop(*params, lr, out, args.cutoff)
                extras.append(f'naive {fmt(*measure(naive, device, 1))}')
            else:
                extras.append('naive skipped')
            if baseline is not None:
                def paper():
                    baseline.paper_window(*params, lr[0], lr[1], out[0], out[1], 0.1)
                extras.append(f'paper-r0.1 {fmt(*measure(paper, device, args.repeat))}')
                scale_x, scale_y = out[1] / lr[1], out[0] / lr[0]
                box = ((2 * args.cutoff * params[1][..., 0] * scale_x + 1)
                       * (2 * args.cutoff * params[1][..., 1] * scale_y + 1))
                evaluations = int(box.sum())
                sink = torch.zeros(1, device=device)

                def floor():
                    baseline.exp_fma_floor(evaluations, params[3].shape[-1], sink)
                extras.append(f'floor {fmt(measure(floor, device, args.repeat)[0], None)}')
        print(f'{name:12} {num:>10} {out[0]:>5}x{out[1]:<5} | {fmt(*fwd):>20} | {fmt(*fwdbwd):>20} | '
              + ', '.join(extras), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
