"""Agreement sweep of the compiled rasterizer on large random cases (not a test; gpu_check.sh runs it on a GPU).

    python benchmarks/rasterize_sweep.py --device cuda            # CUDA vs pure path (float64) and vs the CPU kernel
    python benchmarks/rasterize_sweep.py --device cpu --tiny      # dry run: the CPU kernel vs the pure path

For every footprint (ellipse, box, gsplat) and several sizes it compares the compiled op on ``--device`` (float32)
with the float64 pure path and, on CUDA, with the CPU kernel (float32): forward within 1e-5 of the largest output
(pixels within rounding of a footprint boundary left out), gradients within 1e-3 of the largest gradient (5e-3 at
x30); then bf16 autocast, empty tiles, Gaussians far outside, batch vs loop. Prints one line per check and a
summary; the exit status is the number of failures.
"""
import argparse
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))

from rasterize_helpers import compare, make  # noqa: E402

from gsasr_plugin.ops import cpu_op_available, rasterize_gaussians, use_backend  # noqa: E402

MODES = {'ellipse': {}, 'box': {'box_half_size': (1.1, 0.8)}, 'gsplat': {'mode': 'gsplat_sum'}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--tiny', action='store_true', help='small sizes (dry run)')
    args = parser.parse_args(argv)
    device = args.device
    num = 300 if args.tiny else 4000
    sizes = [((12, 10), (31, 47)), ((20, 16), (9, 7)), ((17, 23), (33, 70))]
    if not args.tiny:
        sizes += [((48, 48), (192, 192)), ((3, 4), (90, 120)), ((64, 64), (256, 256)), ((90, 90), (180, 180))]
    failures = []

    def check(name, fn):
        try:
            fn()
            print(f'ok    {name}', flush=True)
        except Exception:  # noqa: BLE001 (report and go on)
            failures.append(name)
            print(f'FAIL  {name}\n{traceback.format_exc()}', flush=True)

    references = ['pure']
    if device.startswith('cuda') and cpu_op_available():
        references.append('cpu-kernel')
    for mode, kwargs in MODES.items():
        for lr_size, out_size in sizes:
            params = make(2, num, 3, lr_size, sigma_range=(0.05, 1.5), seed=hash((mode, lr_size)) % 1000)
            opacities = torch.rand(2, num, generator=torch.Generator().manual_seed(4)) if mode == 'gsplat' else None
            grad_rel = 5e-3 if out_size[0] > 10 * lr_size[0] else (3e-3 if mode == 'gsplat' else 1e-3)
            for ref in references:
                reference = None
                if ref == 'cpu-kernel':
                    def reference(tensors, kw, lr_size=lr_size, out_size=out_size):
                        extra = {'opacities': tensors[4].float()} if len(tensors) > 4 else {}
                        with use_backend('compiled'):
                            return rasterize_gaussians(*[t.float() for t in tensors[:4]], lr_size, out_size, **kw,
                                                       **extra)
                check(f'{device} vs {ref:10} {mode:7} {lr_size} -> {out_size}',
                      lambda p=params, o=opacities, r=reference, lr=lr_size, out=out_size, g=grad_rel, kw=kwargs:
                      compare(p, lr, out, device, grad_rel=g, opacities=o, reference=r, **kw))

    def bf16_autocast():
        params = [p.to(device) for p in make(2, num, 3, (12, 12), sigma_range=(0.2, 1.0))]
        half = [p.bfloat16().requires_grad_() for p in params]
        with torch.autocast(device_type=device.split(':')[0], dtype=torch.bfloat16), use_backend('compiled'):
            out = rasterize_gaussians(*half, (12, 12), (40, 40))
        assert out.dtype == torch.bfloat16
        ref = rasterize_gaussians(*[p.bfloat16().float() for p in params], (12, 12), (40, 40))
        torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()))
        out.float().sum().backward()
        assert all(torch.isfinite(p.grad.float()).all() for p in half)

    def empty_tiles_and_far_away():
        params = make(2, num, 3, (4, 4), sigma_range=(0.1, 0.5), margin=0.0)
        far = make(2, 50, 3, (4, 4))
        far[0] = far[0] + torch.tensor([1e4, -1e4])
        params = [torch.cat([a, b], 1) for a, b in zip(params, far)]
        for kwargs in MODES.values():
            compare(params, (64, 64), (256, 256), device, grad_rel=3e-3, **kwargs)
            with use_backend('compiled'):
                out = rasterize_gaussians(*[p.to(device) for p in params], (64, 64), (256, 256), **kwargs)
            assert out[:, :, 48:, :].abs().max() == 0 and out[:, :, :, 48:].abs().max() == 0

    def batch_equals_loop():
        params = [p.to(device) for p in make(4, num, 3, (16, 16))]
        for kwargs in MODES.values():
            with use_backend('compiled'):
                out = rasterize_gaussians(*params, (16, 16), (50, 61), **kwargs)
                for b in range(4):
                    single = rasterize_gaussians(*[p[b:b + 1] for p in params], (16, 16), (50, 61), **kwargs)
                    torch.testing.assert_close(out[b:b + 1], single, rtol=1e-6, atol=1e-6)

    check(f'{device} bf16 autocast', bf16_autocast)
    check(f'{device} empty tiles, Gaussians far outside (all modes)', empty_tiles_and_far_away)
    check(f'{device} batch equals loop (all modes)', batch_equals_loop)
    print(f'{len(failures)} failure(s)' + (': ' + '; '.join(failures) if failures else ''))
    return len(failures)


if __name__ == '__main__':
    sys.exit(main())
