"""Speed and peak memory of ``gsasr_plugin.ops.rasterize_gaussians`` on the paper's cases (not a test).

    .venv/bin/python benchmarks/bench_rasterize.py                      # every case, default device
    .venv/bin/python benchmarks/bench_rasterize.py --device cpu --cases crop48_b1 crop48_b16 out720_x4 --threads 1

Cases: the 48x48 LR x4 training crop with 16 Gaussians per LR pixel (batch 1 and 16) and 720x720 outputs
from x2, x4 and x12 LR inputs (16 Gaussians per LR pixel, sigma in [0.1, 0.8] LR pixels, |rho| <= 0.5).
Each case prints forward and forward+backward time (best of ``--repeat``) and peak memory of, side by side:

* ``compiled``: the compiled op ``gsasr_plugin.ops._C`` on the device (CPU kernel or CUDA kernel);
* ``torch``: the pure-PyTorch path (``ops/_torch_impl.py``, the reference and the fallback);
* ``chunked``: a plain chunked PyTorch loop, what one writes first: every Gaussian on the same square window
  (the largest cutoff box of the batch) around its centre, Gaussians in chunks, ``index_add_`` into the image,
  autograd for the backward;
* ``naive``: every Gaussian evaluated at every output pixel, in chunks (forward only), on sizes where that
  finishes (``--naive-limit`` evaluations);
* on CUDA, ``paper-r0.1``: a JIT-compiled kernel like the official GSASR op, one thread per Gaussian over a
  fixed window of r = 0.1 of the output image (per axis, centred on the Gaussian) with atomicAdd, and
  ``floor``: a kernel doing only the exp + C FMAs per (Gaussian, pixel-in-its-cutoff-box) pair that the
  tiled op evaluates, with no memory traffic -- the arithmetic lower bound.

and the forward+backward speed-ups of ``compiled`` over ``torch`` and ``chunked``. On the CPU, process CPU time
(all threads) is printed beside wall time: it is robust to other load on a shared machine.
"""
import argparse
import math
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.utils.checkpoint

from gsasr_plugin.ops import DEFAULT_CUTOFF, cpu_op_available, cuda_op_available, rasterize_gaussians, use_backend

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


def chunked_loop(means, sigmas, rhos, colors, lr, out, cutoff=DEFAULT_CUTOFF, chunk_elements=1 << 22):
    """A plain chunked PyTorch loop: each Gaussian on one square window (the largest cutoff box of the batch,
    output pixels) around its centre, Gaussians in chunks, ``index_add`` into the image; autograd differentiates
    it, each chunk checkpointed (recomputed in the backward) so memory stays bounded. Same result as the op
    (pixels outside a Gaussian's ellipse get weight 0)."""
    height, width = lr
    out_h, out_w = out
    bsz, num, chans = colors.shape
    scale = torch.tensor([out_w / width, out_h / height], device=means.device)
    with torch.no_grad():
        size = (2 * cutoff * sigmas.detach() * scale).amax((0, 1)).ceil().long() + 2  # (x, y) window
    win_x, win_y = int(size[0]), int(size[1])
    flat = [t.reshape(bsz * num, -1) for t in (means, sigmas, rhos[..., None], colors)]
    image = torch.zeros(bsz * out_h * out_w, chans, device=means.device, dtype=colors.dtype)
    step = max(1, chunk_elements // (win_x * win_y))
    ar_x = torch.arange(win_x, device=means.device)
    ar_y = torch.arange(win_y, device=means.device)

    def chunk(mean, sigma, rho, color, batch):
        with torch.no_grad():
            first = torch.floor(mean.detach() * scale - 0.5).long() - size // 2 + 1  # (M, 2) window corners
        cols = first[:, 0:1] + ar_x
        rows = first[:, 1:2] + ar_y
        dx = ((cols + 0.5) / scale[0] - mean[:, 0:1]) / sigma[:, 0:1]
        dy = ((rows + 0.5) / scale[1] - mean[:, 1:2]) / sigma[:, 1:2]
        q = (dx[:, None, :] ** 2 - 2 * rho[:, :, None] * dx[:, None, :] * dy[:, :, None] + dy[:, :, None] ** 2) \
            / (1 - rho[:, :, None] ** 2)
        inside = ((cols >= 0) & (cols < out_w))[:, None, :] & ((rows >= 0) & (rows < out_h))[:, :, None]
        weight = torch.exp(-q / 2) * ((q <= cutoff ** 2) & inside)
        pix = batch[:, None, None] * (out_h * out_w) + rows.clamp(0, out_h - 1)[:, :, None] * out_w \
            + cols.clamp(0, out_w - 1)[:, None, :]
        return torch.zeros_like(image).index_add_(0, pix.reshape(-1),
                                                  (weight[..., None] * color[:, None, None, :]).reshape(-1, chans))

    for s in range(0, bsz * num, step):
        args = [t[s:s + step] for t in flat]
        args.append(torch.div(torch.arange(s, s + args[0].shape[0], device=means.device), num, rounding_mode='floor'))
        if torch.is_grad_enabled() and any(t.requires_grad for t in args):
            image = image + torch.utils.checkpoint.checkpoint(chunk, *args, use_reentrant=False)
        else:
            image = image + chunk(*args)
    return image.view(bsz, out_h, out_w, chans).permute(0, 3, 1, 2)


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
    parser.add_argument('--impls', nargs='*', default=['compiled', 'torch', 'chunked'],
                        choices=['compiled', 'torch', 'chunked'])
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--cutoff', type=float, default=DEFAULT_CUTOFF)
    parser.add_argument('--naive-limit', type=float, default=None,
                        help='largest B*N*Ho*Wo the naive loop runs (default 2e9 on CUDA, 3e8 on CPU; 0: never)')
    parser.add_argument('--no-baselines', action='store_true', help='no naive loop and no CUDA baseline kernels')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    args = parser.parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    naive_limit = args.naive_limit if args.naive_limit is not None else (2e9 if device.startswith('cuda') else 3e8)
    compiled_ok = cuda_op_available() if device.startswith('cuda') else cpu_op_available()
    impls = [i for i in args.impls if i != 'compiled' or compiled_ok]
    print(f'device: {torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"} '
          f'({torch.get_num_threads()} threads); compiled op for this device: {compiled_ok}; cutoff {args.cutoff}; '
          f'best of {args.repeat}')
    if device == 'cpu':
        print('peak memory on the CPU is the process high-water mark (ru_maxrss), not per case')
    baseline = None
    if device.startswith('cuda') and not args.no_baselines:
        from torch.utils.cpp_extension import load_inline
        baseline = load_inline('gsasr_bench_baselines', cpp_sources=BASELINE_CPP, cuda_sources=BASELINE_SOURCE,
                               functions=['paper_window', 'exp_fma_floor'], extra_cuda_cflags=['-O3'])

    header = (f'{"case":12} {"impl":9} {"gaussians":>10} {"out":>11} | {"forward":>22} | {"forward+backward":>22}'
              + (' | CPU s fwd / fwd+bwd' if device == 'cpu' else ''))
    print(header)
    print('-' * len(header))
    for name in args.cases:
        case = CASES[name]
        lr, out = case['lr'], case['out']
        params = make_gaussians(case['batch'], lr, device=device)
        num = params[0].shape[0] * params[0].shape[1]
        results = {}
        for impl in impls:
            def run(tensors, impl=impl):
                if impl == 'chunked':
                    return chunked_loop(*tensors, lr, out, args.cutoff)
                with use_backend('compiled' if impl == 'compiled' else 'torch'):
                    return rasterize_gaussians(*tensors, lr, out, cutoff=args.cutoff)

            def forward(run=run):
                with torch.no_grad():
                    run(params)

            grads = [p.clone().requires_grad_() for p in params]

            def forward_backward(run=run, grads=grads):
                for g in grads:
                    g.grad = None
                run(grads).square().mean().backward()

            fwd = measure(forward, device, args.repeat)
            fwd_cpu = measure.last_cpu_seconds
            fwdbwd = measure(forward_backward, device, args.repeat)
            results[impl] = (fwd[0], fwdbwd[0])
            cpu = f' | {fwd_cpu:6.3f} / {measure.last_cpu_seconds:6.3f}' if device == 'cpu' else ''
            print(f'{name:12} {impl:9} {num:>10} {out[0]:>5}x{out[1]:<5} | {fmt(*fwd):>22} | {fmt(*fwdbwd):>22}{cpu}',
                  flush=True)
        extras = []
        if 'compiled' in results:
            for other in ('torch', 'chunked'):
                if other in results:
                    extras.append(f'compiled is {results[other][0] / results["compiled"][0]:.1f}x (fwd) and '
                                  f'{results[other][1] / results["compiled"][1]:.1f}x (fwd+bwd) faster than {other}')
        if not args.no_baselines:
            work = num * out[0] * out[1]
            if work <= naive_limit:
                def naive():
                    with torch.no_grad():
                        naive_loop(*params, lr, out, args.cutoff)
                extras.append(f'naive fwd {fmt(*measure(naive, device, 1))}')
            if baseline is not None:
                def paper():
                    baseline.paper_window(*params, lr[0], lr[1], out[0], out[1], 0.1)
                extras.append(f'paper-r0.1 fwd {fmt(*measure(paper, device, args.repeat))}')
                scale_x, scale_y = out[1] / lr[1], out[0] / lr[0]
                box = ((2 * args.cutoff * params[1][..., 0] * scale_x + 1)
                       * (2 * args.cutoff * params[1][..., 1] * scale_y + 1))
                evaluations = int(box.sum())
                sink = torch.zeros(1, device=device)

                def floor():
                    baseline.exp_fma_floor(evaluations, params[3].shape[-1], sink)
                extras.append(f'floor fwd {fmt(measure(floor, device, args.repeat)[0], None)}')
        for line in extras:
            print(f'{"":12} {line}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
