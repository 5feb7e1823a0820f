"""Regenerate the README's example figure in docs/ from scikit-image photos (no trained model, no data sets).

    .venv/bin/python scripts/make_example_figures.py

* ``docs/gaussians_example.png``: the ``--save-gaussians`` drawing, for Gaussians fitted directly (by gradient
  descent through the rasterizer) to a 12 x 12 LR crop of scikit-image's ``chelsea`` so that they render its
  x4 HR crop: the kind of field a trained GSASR predicts, without needing one.
"""
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fitted_field(lr_side: int = 12, scale: int = 4, per_side: int = 2, steps: int = 300, seed: int = 0):
    """Gaussians (``per_side``^2 per LR pixel) fitted to an HR crop of ``chelsea``; returns (field, lr, hr)."""
    import cv2
    import skimage.data

    from gsasr_plugin.archs.gaussian_field import GaussianField
    torch.manual_seed(seed)
    photo = skimage.data.chelsea()
    hr_side = lr_side * scale
    gray = photo.mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1]
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    window = (integral[hr_side:, hr_side:] - integral[:-hr_side, hr_side:] - integral[hr_side:, :-hr_side] +
              integral[:-hr_side, :-hr_side])
    top, left = np.unravel_index(np.argmax(window), window.shape)  # the most detailed crop (an eye)
    hr = photo[top:top + hr_side, left:left + hr_side].astype(np.float32) / 255.0
    lr = cv2.resize(hr, (lr_side, lr_side), interpolation=cv2.INTER_AREA)
    target = torch.from_numpy(hr).permute(2, 0, 1)[None]
    rows = lr_side * per_side
    centres = (torch.arange(rows, dtype=torch.float32) + 0.5) / per_side
    gy, gx = torch.meshgrid(centres, centres, indexing='ij')
    reference = torch.stack((gx, gy), -1).view(1, -1, 2)
    n = reference.shape[1]
    colour_init = torch.from_numpy(cv2.resize(lr, (rows, rows), interpolation=cv2.INTER_NEAREST)).view(1, n, 3)
    params = {
        'offset': torch.zeros(1, n, 2, requires_grad=True),
        'log_sigma': torch.full((1, n, 2), float(np.log(0.35)), requires_grad=True),
        'rho': torch.zeros(1, n, requires_grad=True),
        'colour': torch.logit(colour_init.clamp(0.02, 0.98)).requires_grad_(),
        'opacity': (0.5 * torch.randn(1, n)).requires_grad_(),
    }
    optimizer = torch.optim.Adam(params.values(), lr=0.05)

    def build():
        opacity = torch.sigmoid(params['opacity'])
        return GaussianField(means=reference + 0.75 * torch.tanh(params['offset']),
                             sigmas=params['log_sigma'].exp().clamp(0.05, 1.2),
                             rhos=0.95 * torch.tanh(params['rho']),
                             colors=torch.sigmoid(params['colour']) * opacity[..., None],
                             lr_size=(lr_side, lr_side), opacities=opacity)

    for _ in range(steps):
        optimizer.zero_grad()
        loss = (build().render((hr_side, hr_side)) - target).abs().mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        field = build()
    print(f'fitted {n} Gaussians, L1 {loss.item():.4f}')
    return field, lr, hr


def gaussians_figure(path: Path) -> None:
    from gsasr_plugin.visualize_gaussians import draw_gaussians
    field, lr, _ = fitted_field()
    draw_gaussians(field, lr, str(path), crop=None, render_scale=8)


def main() -> int:
    import matplotlib
    matplotlib.rcParams['savefig.dpi'] = 64  # a small PNG for the README
    docs = REPO / 'docs'
    docs.mkdir(exist_ok=True)
    gaussians_figure(docs / 'gaussians_example.png')
    print('wrote docs/gaussians_example.png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
