"""Runs the host-executed CUDA kernels under ThreadSanitizer (through tsan.sh, which preloads libtsan): the host
build compiled with -fsanitize=thread, every CUDA thread an OS thread, forward and backward of each footprint on a
case with several shared-memory batches per tile, two colour chunks, two gradient chunks and partial tiles. Checks
the results against the CPU kernel (built alike) and prints one line per launch pair; ThreadSanitizer prints any
race it sees and the process then exits with 66."""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cuda_on_host import load_cuda_on_host  # noqa: E402
from rasterize_helpers import make  # noqa: E402

FOOTPRINTS = {'ellipse': 0, 'box': 1, 'gsplat': 2}


def main():
    os.environ.pop('LD_PRELOAD', None)  # this process keeps libtsan; the compiler and ninja must not get it
    torch.set_num_threads(1)  # the CPU reference's OpenMP runtime is not instrumented
    host = load_cuda_on_host(sanitize='thread')
    host.set_os_threads(True)
    means, sigmas, rhos, colors = make(1, 600, 9, (2, 2), sigma_range=(0.1, 0.5), margin=0.0)
    opacities = torch.rand(1, 600, generator=torch.Generator().manual_seed(2)) * 1.2
    for name, code in FOOTPRINTS.items():
        opac = opacities if name == 'gsplat' else torch.empty(0)
        args = [means, sigmas, rhos, colors, opac, 4, 4, 24, 20, code, 3.5, 1.2, 0.7]
        fwd = host.forward(*args)
        ref = host.cpu_forward(*args)
        grad_out = torch.randn(fwd[0].shape, generator=torch.Generator().manual_seed(3))
        mean_area = float(ref[4][1]) / 600
        grads = host.backward(*args[:5], grad_out, *fwd[1:4], 4, 4, code, 3.5, 1.2, 0.7, mean_area)
        ref_grads = host.cpu_backward(*args[:5], grad_out, *ref[1:4], 4, 4, code, 3.5, 1.2, 0.7)
        worst = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                    for a, b in zip(grads, ref_grads) if b.numel())
        tiles = int(fwd[4][0])
        print(f'{name}: forward {"bit-equal" if torch.equal(fwd[0], ref[0]) else "DIFFERS"} to the CPU kernel, '
              f'backward within {worst:.1e} of it ({tiles} tile pairs, mean box area {mean_area:.0f})', flush=True)
        if not torch.equal(fwd[0], ref[0]) or worst > 1e-4:
            return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
