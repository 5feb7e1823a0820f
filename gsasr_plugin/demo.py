"""The self-contained demo: photos that ship with scikit-image, and super-resolving one with a trained net.

    python -m gsasr_plugin.demo write-data demo_data
    python -m gsasr_plugin.demo upscale -opt options/train_gsasr_demo.yml --input demo_data/val/chelsea.png \
        --scale 3.5 --output demo_output/chelsea_x3.5.png

``scripts/demo.sh`` runs both around ``basicsr train -opt options/train_gsasr_demo.yml``.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import cv2
import numpy as np

from gsasr_plugin.api import load_model
from gsasr_plugin.utils.atomic_io import write_image_file
from gsasr_plugin.utils.options import load_option_file
from gsasr_plugin.utils.resize import matlab_bicubic_resize

__all__ = ['TRAIN_PHOTOS', 'VAL_PHOTOS', 'write_demo_data', 'upscale_image', 'main']

# Photos bundled with scikit-image (no download). Training and validation photos differ.
TRAIN_PHOTOS = ('astronaut', 'coffee', 'rocket', 'immunohistochemistry')
VAL_PHOTOS = {'chelsea': None, 'camera': (256, 256)}  # name -> resize (h, w) or None


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data
    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def write_demo_data(root: str) -> Dict[str, List[str]]:
    """Write the training photos to ``root/train`` and the validation photos to ``root/val`` (PNG)."""
    written = {'train': [], 'val': []}
    for split, names in (('train', {n: None for n in TRAIN_PHOTOS}), ('val', VAL_PHOTOS)):
        folder = osp.join(root, split)
        os.makedirs(folder, exist_ok=True)
        for name, size in names.items():
            image = _skimage_photo(name)
            if size is not None:
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            path = osp.join(folder, f'{name}.png')
            write_image_file(path, np.ascontiguousarray(image[:, :, ::-1]))
            written[split].append(path)
    return written


def upscale_image(opt_path: str, input_path: str, scale: float, output_path: str,
                  weights: Optional[str] = None) -> str:
    """Super-resolve ``input_path`` by ``scale`` with the ``network_g`` of ``opt_path`` and its latest weights.

    Also writes the MATLAB-bicubic upscaling beside it (``*_bicubic.png``) for comparison.
    """
    if not scale > 0:
        raise ValueError(f'scale must be > 0, got {scale}')
    opt = load_option_file(opt_path)
    weights = weights or osp.join('experiments', opt['name'], 'models', 'net_g_latest.pth')
    if not osp.isfile(weights):
        raise FileNotFoundError(f"weights '{weights}' do not exist: train first (basicsr train -opt {opt_path})")
    model = load_model(weights, opt=opt_path, device='cpu')
    image = cv2.imread(input_path, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image '{input_path}'")
    sr = model.upscale(image, scale=scale, bgr=True)
    write_image_file(output_path, sr)
    lq = image[:, :, ::-1].astype(np.float32) / 255
    out_size = sr.shape[:2]
    bicubic = (np.clip(matlab_bicubic_resize(lq, out_size), 0, 1) * 255).round().astype(np.uint8)
    write_image_file(osp.splitext(output_path)[0] + '_bicubic.png', np.ascontiguousarray(bicubic[:, :, ::-1]))
    return output_path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m gsasr_plugin.demo', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    data = sub.add_parser('write-data', help='write the scikit-image photos to ROOT/train and ROOT/val')
    data.add_argument('root', nargs='?', default='demo_data')
    up = sub.add_parser('upscale', help='super-resolve one image with a trained network')
    up.add_argument('-opt', required=True, help='the option file the network was trained with')
    up.add_argument('--input', required=True)
    up.add_argument('--scale', type=float, default=4.0)
    up.add_argument('--output', required=True)
    up.add_argument('--weights', default=None, help='default: experiments/<name>/models/net_g_latest.pth')
    args = parser.parse_args(argv)
    try:
        if args.command == 'write-data':
            written = write_demo_data(args.root)
            print(f"wrote {len(written['train'])} training and {len(written['val'])} validation photos to {args.root}/")
        else:
            path = upscale_image(args.opt, args.input, args.scale, args.output, args.weights)
            h, w = _png_size(path)
            print(f'super-resolved x{args.scale:g} ({w}x{h}): {path}  (bicubic: '
                  f'{osp.splitext(path)[0]}_bicubic.png)')
    except (OSError, ValueError) as exc:  # missing/bad files, WriteError (disk full, read-only)
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


def _png_size(path: str):
    image = cv2.imread(path)
    return image.shape[0], image.shape[1]


if __name__ == '__main__':
    sys.exit(main())
