"""What the scale slider of ``basicsr app`` costs against a full forward at the same output size (CPU time).

For each network (``network_g`` of the given option files, randomly initialised and saved as a checkpoint) and
one LR photo (scikit-image's chelsea, shrunk), the app's engine first upscales at x4 (the page's first
result: a full forward, which fills the caches); then, side by side, in CPU seconds of this process (all
threads; the machine is shared, wall times swing):

* ``preview``: for GSASR, the first image the page shows after a move (``Engine.preview``: the nearest kept
  field rendered at the new size, while the decoder runs; the scale-free networks need none),
* ``slider``: the engine moved to a new scale (``Engine.upscale``, everything the page waits for but the
  transfer: the render, plus GSASR's decoder, plus writing the result, the bicubic view and the download),
* ``slider again``: the same scale once more (a kept field: render and files only),
* ``zoom``: a 512-pixel zoom frame at magnification 4 (same cache),
* ``forward``: ``Upscaler.upscale_rgb(lq, scale)``, the whole network at that scale (no files), as
  ``basicsr infer`` or the authors' demo run it for every slider position,
* ``stop points``: that forward again with the page's stop button armed (a stop check before each module of
  the network, ``_stop_points``), as extra time over the plain forward,

median of ``--runs`` runs (each ``slider`` run uses a fresh scale), and prints a Markdown table.
The rasterizer's share depends on the Gaussians' sizes, which random weights only approximate.

Usage::

    python benchmarks/bench_app_slider.py                              # 64 x 96 LR, x3.7
    python benchmarks/bench_app_slider.py --lr 96 144 --scale 6.3 --runs 5 --threads 2
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OPTIONS = ['options/train_gsasr_edsr.yml', 'options/train_continuoussr_swinir.yml',
                   'options/train_gaussiansr_edsr.yml']


def _cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', nargs='+', default=DEFAULT_OPTIONS, help='option files whose network_g to time')
    parser.add_argument('--lr', type=int, nargs=2, default=[64, 96], metavar=('H', 'W'), help='LR size')
    parser.add_argument('--scale', type=float, default=3.7, help='the slider position timed (default 3.7)')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import cv2
    import skimage.data
    import yaml

    sys.path.insert(0, str(REPO))
    from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
    from basicsr.archs import build_network
    import threading

    from gsasr_plugin.app.engine import Engine, _stop_points
    from gsasr_plugin.checkpoint import save_checkpoint
    from gsasr_plugin.utils.scale import resolve_scale_and_size

    folder = Path(tempfile.mkdtemp(prefix='bench_app_'))
    photo = cv2.resize(skimage.data.chelsea(), (args.lr[1], args.lr[0]), interpolation=cv2.INTER_AREA)
    image_path = folder / 'chelsea.png'
    cv2.imwrite(str(image_path), photo[..., ::-1])
    size = resolve_scale_and_size(tuple(args.lr), args.scale).size
    print(f'LR {args.lr[1]}x{args.lr[0]}, slider at x{args.scale:g} -> {size[1]}x{size[0]}; CPU seconds '
          f'(process_time, {torch.get_num_threads()} threads), median of {args.runs}\n')
    print('| network | params | preview | slider (what runs) | slider again | zoom 512 px | full forward | '
          'forward / slider | stop points |')
    print('|---|---|---|---|---|---|---|---|---|')
    for opt_path in args.opt:
        network_g = yaml.safe_load((REPO / opt_path).read_text())['network_g']
        torch.manual_seed(0)
        network = build_network(dict(network_g)).eval()
        checkpoint = folder / f'{Path(opt_path).stem}.pth'
        save_checkpoint(str(checkpoint), network.state_dict(), network_g, source='random weights (benchmark)')
        engine = Engine([str(checkpoint)], device='cpu', workdir=str(folder / 'work'), tile_size=0)
        spec = str(checkpoint)
        engine.upscale(spec, str(image_path), 4.0)  # the first result fills the caches
        preview, slider, again, zoom, forward, stoppable = [], [], [], [], [], []
        stop = threading.Event()  # what the page's stop button sets; never set here
        works = set()
        upscaler = engine.model(spec)
        lq = torch.from_numpy(engine.image(str(image_path)).rgb).permute(2, 0, 1)[None]
        for run in range(args.runs):
            scale = args.scale + 0.01 * run  # a scale not seen before (GSASR decodes each once)
            results = []
            if network.field_depends_on_scale:
                preview.append(_cpu_seconds(lambda: engine.preview(spec, str(image_path), scale)))
            slider.append(_cpu_seconds(lambda: results.append(engine.upscale(spec, str(image_path), scale))))
            works.add(results[-1].work)
            again.append(_cpu_seconds(lambda: engine.upscale(spec, str(image_path), scale)))
            zoom.append(_cpu_seconds(lambda: engine.zoom(spec, str(image_path), (0.5, 0.5), 4.0)))
            forward.append(_cpu_seconds(lambda: upscaler.upscale_rgb(lq, scale=scale, tile_size=0)))
            with _stop_points(upscaler.network, stop.is_set):
                stoppable.append(_cpu_seconds(lambda: upscaler.upscale_rgb(lq, scale=scale, tile_size=0)))
        params = sum(p.numel() for p in network.parameters()) / 1e6
        med = {name: statistics.median(values) for name, values in
               (('slider', slider), ('again', again), ('zoom', zoom), ('forward', forward),
                ('stoppable', stoppable))}
        shown = f'{statistics.median(preview):.3f} s' if preview else '-'
        print(f"| {network_g['type']} ({Path(opt_path).name}) | {params:.2f} M | {shown} | {med['slider']:.3f} s "
              f"({', '.join(sorted(works))}) | {med['again']:.3f} s | {med['zoom']:.3f} s | {med['forward']:.3f} s | "
              f"{med['forward'] / med['slider']:.1f}x | {100 * (med['stoppable'] / med['forward'] - 1):+.1f} % "
              f"({len(list(upscaler.network.modules()))} modules) |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
