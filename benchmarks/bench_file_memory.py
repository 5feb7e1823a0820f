"""Host memory of ``Upscaler.upscale_file`` (what ``basicsr infer`` runs per image) per output pixel.

For each output format, a fresh process loads the network (``network_g`` of ``--opt``, random weights), writes
an LR photo (scikit-image's chelsea resized to ``--lr``), reads it once (so the libraries are loaded), then
upscales the file by ``--scale`` into that format. Its peak resident set (``ru_maxrss``) before and after the
call gives the bytes the call added per output pixel, beside the figure ``check_file_memory`` refuses by before
anything is decoded (the network's ``bytes_per_output_pixel()`` + ``api._FILE_BYTES_PER_OUTPUT_PIXEL``). The network's own working memory at LR size is
part of the added bytes, so small LR sizes against large scales show the output's share best.

Usage::

    python benchmarks/bench_file_memory.py                             # 200 x 150 LR x8 -> 1600 x 1200
    python benchmarks/bench_file_memory.py --lr 500 375 --scale 8 --formats png png16 tif
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = 'RESULT '
# --formats: (file suffix, input dtype written)
FORMATS = {'png': ('.png', 'uint8'), 'png16': ('.png', 'uint16'), 'jpg': ('.jpg', 'uint8'),
           'tif': ('.tif', 'float32')}


def worker(args: argparse.Namespace) -> int:
    """One measurement in this fresh process: prints RESULT {json}."""
    import resource

    import cv2
    import numpy as np
    import skimage.data
    import torch
    import yaml

    torch.set_num_threads(args.threads)
    import gsasr_plugin  # noqa: F401  (registers the networks)
    from basicsr.archs import build_network
    from gsasr_plugin.api import Upscaler
    from gsasr_plugin.utils.image_io import read_image

    def peak_bytes() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    suffix, dtype = FORMATS[args.format]
    folder = Path(tempfile.mkdtemp(prefix='bench_file_memory_'))
    photo = cv2.resize(skimage.data.chelsea(), (args.lr[0], args.lr[1]), interpolation=cv2.INTER_AREA)
    photo = photo.astype(np.float32) / 255 if dtype == 'float32' else photo.astype(dtype) * (257 if dtype == 'uint16'
                                                                                          else 1)
    source = folder / f'lr{".tif" if dtype == "float32" else ".png"}'
    cv2.imwrite(str(source), np.ascontiguousarray(photo[..., ::-1]))
    with open(args.opt, encoding='utf-8') as handle:
        network_opt = yaml.safe_load(handle)['network_g']
    torch.manual_seed(0)
    upscaler = Upscaler(build_network(dict(network_opt)).eval(), device='cpu')
    read_image(str(source))
    before = peak_bytes()
    start = time.process_time()
    written = upscaler.upscale_file(source, folder / f'sr{suffix}', scale=args.scale, tile_size=args.tile_size)
    seconds = time.process_time() - start
    out = cv2.imread(written.path, cv2.IMREAD_UNCHANGED)
    print(RESULT_PREFIX + json.dumps({'before': before, 'after': peak_bytes(), 'cpu': seconds,
                                      'out': [out.shape[1], out.shape[0]], 'dtype': str(out.dtype)}), flush=True)
    return 0


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', default=str(REPO / 'options/train_gsasr_demo.yml'),
                        help='option file whose network_g is used (default: the demo GSASR)')
    parser.add_argument('--lr', type=int, nargs=2, default=[200, 150], metavar=('W', 'H'), help='LR size')
    parser.add_argument('--scale', type=float, default=8.0)
    parser.add_argument('--formats', nargs='+', default=['png', 'png16', 'tif'], choices=sorted(FORMATS))
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads (default 1)')
    parser.add_argument('-t', '--tile-size', type=int, default=None,
                        help='LR tile side (default: chosen from free memory, as basicsr infer; 0: never tile)')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--format', default='png', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(REPO))
    import yaml

    import gsasr_plugin  # noqa: F401  (registers the networks)
    from basicsr.archs import build_network
    from gsasr_plugin.api import _FILE_BYTES_PER_OUTPUT_PIXEL

    with open(args.opt, encoding='utf-8') as handle:
        counted = build_network(dict(yaml.safe_load(handle)['network_g'])).bytes_per_output_pixel()
    tiles = 'tiles chosen from free memory' if args.tile_size is None else f'--tile-size {args.tile_size}'
    print(f'LR {args.lr[0]}x{args.lr[1]} x{args.scale:g}, network_g of {Path(args.opt).name}, {args.threads} '
          f'thread(s), {tiles}; check_file_memory counts {counted + _FILE_BYTES_PER_OUTPUT_PIXEL:g} B per output pixel\n')
    print('| output | size | peak RSS before | added by upscale_file | per output pixel | CPU s |')
    print('|---|---|---|---|---|---|')
    for name in args.formats:
        command = [sys.executable, str(Path(__file__).resolve()), '--worker', '--format', name, '--opt', args.opt,
                   '--lr', *map(str, args.lr), '--scale', str(args.scale), '--threads', str(args.threads)]
        command += [] if args.tile_size is None else ['--tile-size', str(args.tile_size)]
        lines = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout.splitlines()
        result = json.loads(next(line for line in lines if line.startswith(RESULT_PREFIX))[len(RESULT_PREFIX):])
        width, height = result['out']
        added = result['after'] - result['before']
        print(f"| {name} ({result['dtype']}) | {width}x{height} | {result['before'] / 2**20:,.0f} MiB | "
              f"{added / 2**20:,.0f} MiB | {added / (width * height):.1f} B | {result['cpu']:.1f} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
