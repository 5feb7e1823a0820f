"""How much the gsplat fork's 256-Gaussians-per-tile cap changes ContinuousSR images, per scale.

The authors' released ContinuousSR renders with ``rasterize_gaussians_sum`` of github XingtongGe/gsplat,
which renders only the first 256 Gaussians listed for each 16 x 16 output tile
(``gsasr_plugin.ops.rasterize_gaussians(mode='gsplat_sum')`` reproduces it). The same Gaussians rendered by
our sum cut at the fork's alpha threshold (``cutoff = sqrt(2 ln 255)``, opacity 1) are the fork's image
without the cap (and without its tile-granular boxes, which change pixels by < 1e-3).

Their checkpoint cannot be downloaded here, so the field is a stand-in with ContinuousSR's layout: 4
Gaussians per LR pixel on their corner grid, isotropic sigma (0.29 LR pixels is the DGP dictionary's
average factor / 4; 0.4 a wider one), colours from a 2x bicubic enlargement of the LR image normalised to
unit total weight. The count of Gaussians per tile, and so what the cap drops, depends only on the
geometry; a trained model's colours change the size of the damage, not where it happens.

    .venv/bin/python benchmarks/continuoussr_tile_cap.py [--images DIR_OR_FILES ...] [--scales 1 2 3 4 6 8]

Without ``--images`` it uses scikit-image's astronaut, chelsea and coffee (downscaled x4 with OpenCV's
INTER_AREA to make the LR image).
"""
import argparse
import glob
import itertools
import math
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch

from gsasr_plugin.ops import rasterize_gaussians

ALPHA_CUTOFF = math.sqrt(2 * math.log(255.0))  # exp(-q/2) >= 1/255
TILE, CAP = 16, 256


def proxy_field(lr: np.ndarray, sigma: float, drift: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(1, N, 2) means on the official corner grid (plus seeded uniform drifts in [-drift, drift] LR pixels)
    and (1, N, 3) colours of a (h, w, 3) LR image."""
    h, w = lr.shape[:2]
    up = cv2.resize(lr, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.meshgrid(np.arange(2 * h) / 2.0, np.arange(2 * w) / 2.0, indexing='ij')
    grid = np.stack([xs.ravel(), ys.ravel()], -1)
    grid = grid + np.random.default_rng(0).uniform(-drift, drift, grid.shape) if drift else grid
    means = torch.tensor(grid, dtype=torch.float32)[None]
    colors = torch.tensor(up.reshape(-1, 3) / (8 * math.pi * sigma**2), dtype=torch.float32)[None]
    return means, colors


def dropped_fraction(means: torch.Tensor, sigma: float, lr_size, out_size) -> float:
    """Share of the fork's (tile, Gaussian) entries beyond 256 in their tile (its radius and tile boxes)."""
    (h, w), (height, width) = lr_size, out_size
    centre = torch.stack([means[0, :, 0] * width / w - 0.5, means[0, :, 1] * height / h - 0.5], -1)
    sxx, syy = (sigma * width / w)**2, (sigma * height / h)**2
    b = 0.5 * (sxx + syy)
    radius = math.ceil(3 * math.sqrt(b + math.sqrt(max(0.1, b * b - sxx * syy))))
    tiles = torch.tensor([(width + TILE - 1) // TILE, (height + TILE - 1) // TILE])
    low = torch.trunc(centre / TILE - radius / TILE).long().clamp(min=0)
    low = torch.minimum(low, tiles)
    high = torch.minimum(torch.trunc(centre / TILE + radius / TILE + 1).long().clamp(min=0), tiles)
    counts = torch.zeros(int(tiles[1]), int(tiles[0]))
    for dy in range(int((high - low)[:, 1].max())):
        for dx in range(int((high - low)[:, 0].max())):
            inside = (low[:, 0] + dx < high[:, 0]) & (low[:, 1] + dy < high[:, 1])
            counts.index_put_((low[inside, 1] + dy, low[inside, 0] + dx), torch.ones(int(inside.sum())),
                              accumulate=True)
    return float((counts - CAP).clamp(min=0).sum() / counts.sum())


def _db(value: float) -> str:
    return '> 100 dB' if value > 100 else f'{value:.2f} dB'


def load_images(specs: Sequence[str]) -> List[Tuple[str, np.ndarray]]:
    if not specs:
        from skimage import data
        return [(name, getattr(data, name)().astype(np.float32) / 255) for name in ('astronaut', 'chelsea', 'coffee')]
    paths = []
    for spec in specs:
        paths += sorted(glob.glob(str(Path(spec) / '*.png'))) if Path(spec).is_dir() else [spec]
    return [(Path(p).stem, cv2.imread(p, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--images', nargs='*', default=[], help='HR images or folders of PNGs')
    parser.add_argument('--scales', nargs='*', type=float, default=[1, 2, 3, 4, 6, 8])
    parser.add_argument('--sigmas', nargs='*', type=float, default=[0.29, 0.4])
    parser.add_argument('--drifts', nargs='*', type=float, default=[0.0, 0.5],
                        help='uniform random drift of each Gaussian from its grid point, LR pixels (max 1)')
    args = parser.parse_args()
    images = load_images(args.images)
    print(f'{len(images)} images; PSNR between the capped (fork) and uncapped renders, on [0, 1]')
    print('| sigma (LR px) | drift (LR px) | scale | entries dropped | pixels changed > 1/255 | PSNR capped vs '
          'uncapped (mean / min) | max change |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for sigma, drift, scale in itertools.product(args.sigmas, args.drifts, args.scales):
        rows = []
        for _, hr in images:
            h, w = hr.shape[0] // 4, hr.shape[1] // 4
            lr = cv2.resize(np.ascontiguousarray(hr[:4 * h, :4 * w]), (w, h), interpolation=cv2.INTER_AREA)
            means, colors = proxy_field(lr, sigma, drift)
            sigmas = torch.full_like(means, sigma)
            rhos = torch.zeros(means.shape[:2])
            size = (round(h * scale), round(w * scale))
            capped = rasterize_gaussians(means, sigmas, rhos, colors, (h, w), size, mode='gsplat_sum')
            free = rasterize_gaussians(means, sigmas, rhos, colors, (h, w), size, cutoff=ALPHA_CUTOFF)
            change = (capped - free).abs().amax(1)
            mse = float(((capped.clamp(0, 1) - free.clamp(0, 1))**2).mean())
            rows.append((10 * math.log10(1 / mse) if mse else math.inf, float((change > 1 / 255).float().mean()),
                         dropped_fraction(means, sigma, (h, w), size), float(change.max())))
        psnr, changed, dropped, worst = (np.array(c) for c in zip(*rows))
        print(f'| {sigma} | {drift} | x{scale:g} | {dropped.mean():.1%} | {changed.mean():.1%} | '
              f'{_db(np.mean(psnr))} / {_db(psnr.min())} | {worst.max():.3f} |', flush=True)


if __name__ == '__main__':
    main()
