"""Edges of a trained model against MATLAB bicubic over many LR sizes (after ``bash scripts/demo.sh``).

For each LR size (crops of a validation photo, window multiples and not) and scale, the mean of
``bicubic - SR`` in grey levels (0..255) over each of the outermost two rows and columns of the output; a
positive value is an edge darker than bicubic. Prints one line per case and the worst; exits 1 when an edge is
darker than ``--limit`` grey levels on average (issue 26: dark right / bottom edges when the LR side was not a
multiple of the decoder's window).

    .venv/bin/python scripts/demo_edges.py -opt options/train_gsasr_demo.yml \\
        --weights experiments/train_GSASR_demo/models/net_g_latest.pth
"""
import argparse
import sys

import cv2
import numpy as np
import torch


def edge_means(sr: np.ndarray, bicubic: np.ndarray) -> dict:
    """Mean bicubic - SR per edge line: last / second-last row and column, first row and column."""
    d = bicubic.astype(np.float64) - sr.astype(np.float64)
    return {'last_row': d[-1].mean(), 'row_2': d[-2].mean(), 'last_col': d[:, -1].mean(), 'col_2': d[:, -2].mean(),
            'first_row': d[0].mean(), 'first_col': d[:, 0].mean()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-opt', default='options/train_gsasr_demo.yml')
    parser.add_argument('--weights', default='experiments/train_GSASR_demo/models/net_g_latest.pth')
    parser.add_argument('--image', default='demo_data/val/chelsea.png')
    parser.add_argument('--scales', default='2,3.5,4,6')
    parser.add_argument('--sizes', default='300x451,40x41,41x43,42x45,43x47,44x49,45x51,46x53,47x55,48x57,49x59,'
                        '50x61,51x63,52x65,53x67,54x69,55x71,56x73', help='LR sizes HxW (crops of --image)')
    parser.add_argument('--tile', type=int, default=0, help='LR tile side (0: whole images)')
    parser.add_argument('--limit', type=float, default=3.0, help='grey levels an edge may be darker on average')
    args = parser.parse_args(argv)

    from gsasr_plugin import load_model
    from gsasr_plugin.utils.resize import matlab_bicubic_resize
    torch.set_num_threads(2)
    model = load_model(args.weights, opt=args.opt, device='cpu')
    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    if image is None:
        print(f'cannot read {args.image} (run bash scripts/demo.sh first)', file=sys.stderr)
        return 2
    worst, where = -np.inf, ''
    for size in args.sizes.split(','):
        height, width = (int(v) for v in size.split('x'))
        lq = np.ascontiguousarray(image[:height, :width, ::-1])
        for scale in (float(s) for s in args.scales.split(',')):
            sr = model.upscale(lq, scale=scale, tile_size=args.tile)
            bicubic = np.clip(matlab_bicubic_resize(lq.astype(np.float32) / 255, sr.shape[:2]), 0, 1) * 255
            means = edge_means(sr, bicubic.round())
            print(f'LR {height}x{width} x{scale:g}: ' + ' '.join(f'{k} {v:+5.1f}' for k, v in means.items()), flush=True)
            key = max(means, key=means.get)
            if means[key] > worst:
                worst, where = means[key], f'{key} of LR {height}x{width} x{scale:g}'
    print(f'worst: {worst:+.2f} grey levels ({where}); limit {args.limit:g}')
    return 1 if worst > args.limit else 0


if __name__ == '__main__':
    sys.exit(main())
