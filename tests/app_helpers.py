"""Tiny random-weight checkpoints and images for the browser-app tests (``test_app*.py``).

GSASR is the demo configuration (its ``lr_color_residual`` makes even random weights render an image that looks
like the input, which the browser test's screenshot check relies on); ContinuousSR is shrunk to a few channels.
"""
from pathlib import Path

import numpy as np
import torch
import yaml

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.archs import build_network
from gsasr_plugin.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONTINUOUSSR_G = {'type': 'ContinuousSR', 'encoder': {'type': 'EDSREncoder', 'num_feat': 16, 'num_block': 2},
                  'num_feat': 16, 'color_hidden': [32], 'offset_hidden': [32], 'key_hidden': [32], 'attn_dim': 32}


def gsasr_options():
    return yaml.safe_load((REPO / 'options' / 'train_gsasr_demo.yml').read_text())['network_g']


def write_checkpoints(folder: Path):
    """{'gsasr': path, 'continuoussr': path}: self-describing checkpoints of random networks (seeded)."""
    paths = {}
    for name, options in (('gsasr', gsasr_options()), ('continuoussr', CONTINUOUSSR_G)):
        torch.manual_seed(0)
        network = build_network(dict(options))
        paths[name] = folder / f'{name}_tiny.pth'
        save_checkpoint(str(paths[name]), network.state_dict(), options, source='random weights (test)')
    return paths


def write_photo(path: Path, size, kind: str = 'rgb', name: str = 'chelsea') -> Path:
    """A scikit-image photo shrunk to ``size`` (h, w), written as ``path``: 'rgb', 'gray', '16bit' or 'rgba'."""
    import cv2
    import skimage.data
    photo = getattr(skimage.data, name)()
    if photo.ndim == 2:
        photo = np.stack([photo] * 3, -1)
    small = cv2.resize(photo[..., :3], (size[1], size[0]), interpolation=cv2.INTER_AREA)[..., ::-1]  # BGR
    if kind == 'gray':
        image = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    elif kind == '16bit':
        image = small.astype(np.uint16) * 257
    elif kind == 'rgba':
        alpha = np.zeros(small.shape[:2], np.uint8)
        alpha[:, small.shape[1] // 2:] = 255
        image = np.dstack([small, alpha])
    else:
        image = small
    assert cv2.imwrite(str(path), np.ascontiguousarray(image))
    return path
