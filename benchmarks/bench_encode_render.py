"""What one more output scale costs: encode once / render many versus a full forward per scale.

For each network (``network_g`` of the given option files, randomly initialised: timing hardly depends on
the weights) and one LR image (a scikit-image photo), this times

* ``encode``: ``net.encode(lq)`` (for scale-conditioned GSASR: at the first scale),
* ``render``: ``net.render(field, size)`` per scale (GSASR: the decoder is re-run per scale, so its
  "extra scale" cost is encoder-free decode + render, timed as ``ZoomRenderer`` does it),
* ``forward``: ``net(lq, scale)`` per scale,

median of ``--runs`` runs after one warm-up, and prints a Markdown table with the parameter counts.

Usage::

    python benchmarks/bench_encode_render.py                       # CPU, 48 x 48 LR, x2 x3 x4
    python benchmarks/bench_encode_render.py --lr 64 --scales 2 4 8 --device cuda --runs 10
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OPTIONS = ['options/train_gsasr_edsr.yml', 'options/train_gaussiansr_edsr.yml',
                   'options/train_continuoussr_swinir.yml']


def _median_seconds(fn: Callable[[], object], runs: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', nargs='+', default=DEFAULT_OPTIONS, help='option files whose network_g to time')
    parser.add_argument('--lr', type=int, default=48, help='LR side in pixels (default 48)')
    parser.add_argument('--scales', type=float, nargs='+', default=[2.0, 3.0, 4.0])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import cv2
    import skimage.data
    import yaml

    import gsasr_plugin  # noqa: F401
    from basicsr.archs import build_network
    from gsasr_plugin.zoom import ZoomRenderer

    device = torch.device(args.device)
    image = cv2.resize(skimage.data.astronaut(), (args.lr, args.lr), interpolation=cv2.INTER_AREA)
    lq = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)
    rows = []
    for opt_file in args.opt:
        opt = yaml.safe_load((REPO / opt_file).read_text())['network_g']
        if isinstance(opt.get('encoder'), dict):
            opt['encoder'].pop('pretrained', None)
        net = build_network(opt).to(device).eval()
        params = sum(p.numel() for p in net.parameters())
        scale_free = not getattr(net, 'field_depends_on_scale', True)
        with torch.no_grad():
            encode = _median_seconds(lambda: net.encode(lq, args.scales[0]), args.runs, device)
            for scale in args.scales:
                size = (round(args.lr * scale), round(args.lr * scale))
                if scale_free:
                    field = net.encode(lq)
                    extra = _median_seconds(lambda: net.render(field, size), args.runs, device)
                else:  # encoder features cached, the scale-conditioned decoder + render per scale
                    renderer = ZoomRenderer(net, lq)
                    renderer.render(size)

                    def decode_and_render():
                        renderer.forget_fields()
                        return renderer.render(size)

                    extra = _median_seconds(decode_and_render, args.runs, device)
                forward = _median_seconds(lambda: net(lq, scale=scale), args.runs, device)
                rows.append((opt['type'], params, scale_free, scale, encode, extra, forward))
        print(f'{opt_file}: done', file=sys.stderr)
    print(f'\nLR {args.lr} x {args.lr}, device {device}, median of {args.runs} runs (ms)\n')
    print('| network | parameters | field scale-free | scale | encode | extra scale (render) | full forward |')
    print('| --- | ---: | :---: | ---: | ---: | ---: | ---: |')
    for name, params, free, scale, encode, extra, forward in rows:
        print(f'| {name} | {params / 1e6:.2f} M | {"yes" if free else "no"} | x{scale:g} | {encode * 1e3:.0f} | '
              f'{extra * 1e3:.0f} | {forward * 1e3:.0f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
