"""Arbitrary-scale SR datasets: random-scale training pairs and multi-scale validation/test pairs.

Both make LR images from HR images with MATLAB-style bicubic (the kernel of
``basicsr.utils.matlab_functions.imresize``, :mod:`gsasr_plugin.utils.resize`), resized to an exact output
size. Batches carry ``lq``, ``gt``, ``scale`` ((2,) float tensor per sample, (B, 2) after collation:
``(s_h, s_w)``), ``lq_path`` and ``gt_path`` (see docs/layout.md).
"""
import math
import os.path as osp
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils import data

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.data.data_util import paths_from_lmdb
from basicsr.utils import FileClient, img2tensor, scandir
from basicsr.utils.registry import DATASET_REGISTRY
from gsasr_plugin.utils.bad_data import (BadImageWarning, check_training_images, decode_image, to_float,
                                        warn_skipped)
from gsasr_plugin.utils.options import option_number
from gsasr_plugin.utils.resize import matlab_bicubic_resize, pil_bicubic_resize
from gsasr_plugin.utils.resume import batch_entropy
from gsasr_plugin.utils.scale import scale_from_option, scale_tag, scaled_size

__all__ = ['ArbitraryScaleTrainDataset', 'ArbitraryScaleTestDataset', 'DatasetFolderError']

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')


class DatasetFolderError(FileNotFoundError):
    """A dataset folder named in the options does not exist or holds no images."""


_LQ_RESIZERS = {'matlab': matlab_bicubic_resize, 'pil': pil_bicubic_resize}


def _lq_resizer(opt: Dict[str, Any]):
    name = opt.get('lq_resize', 'matlab')
    if name not in _LQ_RESIZERS:
        raise ValueError(f"'lq_resize' must be 'matlab' or 'pil', got {name!r}")
    return _LQ_RESIZERS[name]


def _check_folder(path: str, key: str, hint: str = '') -> str:
    if path is None:
        raise ValueError(f"dataset option '{key}' is required")
    path = osp.expanduser(str(path))
    if not osp.isdir(path):
        raise DatasetFolderError(f"{key}: folder '{path}' does not exist{hint}")
    return path


def _image_paths(folder: str, key: str, io_backend: str) -> List[str]:
    """Sorted image paths of a folder (disk) or keys of an lmdb (``meta_info.txt``)."""
    if io_backend == 'lmdb':
        if not osp.isfile(osp.join(folder, 'meta_info.txt')):
            raise DatasetFolderError(f"{key}: '{folder}' is not an lmdb made by basicsr (no meta_info.txt)")
        return sorted(paths_from_lmdb(folder))
    paths = sorted(osp.join(folder, p) for p in scandir(folder, recursive=True) if p.lower().endswith(IMG_EXTENSIONS))
    if not paths:
        raise DatasetFolderError(f"{key}: folder '{folder}' has no images ({', '.join(IMG_EXTENSIONS)})")
    return paths


def _image_files(root: Any) -> Optional[List[str]]:
    """``dataroot_gt`` or ``gt_files`` as a list of image files when it names one image or a list of them (else
    None: a folder).

    Raises:
        DatasetFolderError: naming the entry of a list that is not an image file.
    """
    listed = isinstance(root, (list, tuple))
    paths = [osp.expanduser(str(entry)) for entry in (root if listed else [root])]
    if not listed and not (osp.isfile(paths[0]) and paths[0].lower().endswith(IMG_EXTENSIONS)):
        return None
    for path in paths:
        if not (osp.isfile(path) and path.lower().endswith(IMG_EXTENSIONS)):
            raise DatasetFolderError(f"gt_files: '{path}' is not an image file ({', '.join(IMG_EXTENSIONS)})")
    if not paths:
        raise DatasetFolderError('gt_files: an empty list of images')
    return paths


class _ImageReader:
    """Reads HxWx3 uint8 RGB images (8-bit files) through BasicSR's FileClient (disk or lmdb)."""

    def __init__(self, io_backend_opt: Dict[str, Any], roots: Dict[str, str]):
        self.io_backend_opt = dict(io_backend_opt or {'type': 'disk'})
        self.backend = self.io_backend_opt.get('type', 'disk')
        self.roots = roots
        self.client = None

    def __call__(self, path: str, key: str) -> np.ndarray:
        if self.client is None:  # created lazily: file handles must not cross worker processes
            opt = dict(self.io_backend_opt)
            backend = opt.pop('type', 'disk')
            if backend == 'lmdb':
                opt['db_paths'] = list(self.roots.values())
                opt['client_keys'] = list(self.roots.keys())
            self.client = FileClient(backend, **opt)
        try:
            img_bytes = self.client.get(path, key)
        except Exception as exc:  # missing/unreadable file, lmdb key error, ...
            raise ValueError(f"cannot read image '{path}': {exc}") from exc
        # stored type kept (uint8/uint16/float32): callers crop before converting to float; gray/alpha
        # handled; a corrupt file is a ValueError naming it (gsasr_plugin.utils.bad_data)
        img = decode_image(img_bytes, path)
        return img[:, :, ::-1]  # BGR -> RGB (a view)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return img2tensor(np.ascontiguousarray(img), bgr2rgb=False, float32=True)


@DATASET_REGISTRY.register()
class ArbitraryScaleTrainDataset(data.Dataset):
    """Random-scale training pairs cut from HR images; every batch shares one scale.

    For each batch, :meth:`__getitems__` draws one ``s`` uniformly from ``[scale_min, scale_max]``; every
    sample of the batch then takes a random square GT crop, makes its LR from it with MATLAB-style bicubic
    to an exact size, and is flipped/rotated randomly. One of the two patch sides is fixed:

    * ``lq_size`` (the default mode, GSASR's setup): GT ``round(lq_size * s)``, LR ``lq_size`` pixels;
    * ``gt_size`` (ContinuousSR's setup): GT ``gt_size``, LR ``round(gt_size / s)`` pixels.

    Because ``round`` changes the ratio a little, the batch's true scale is GT size / LR size on both axes
    (``round(lq_size * s) / lq_size`` or ``gt_size / round(gt_size / s)``); that is what ``scale`` holds,
    the ratio the network must render.

    Under ``basicsr train`` the sampler's indices carry (seed + rank, epoch, position) and each batch's
    generator is seeded from those alone (``gsasr_plugin.utils.resume``), so a resumed run draws exactly
    what the uninterrupted one would have. Otherwise randomness comes from a generator seeded per batch
    from ``torch.initial_seed()`` (different in every
    DataLoader worker and, as workers are re-created, in every epoch), a per-process batch counter and the
    batch's indices, so scales and crops do not repeat from epoch to epoch and BasicSR's ``manual_seed``
    makes runs reproducible.

    Args (``opt`` keys):
        dataroot_gt (str): folder of HR images (or an ``.lmdb`` with ``io_backend: {type: lmdb}``).
        io_backend (dict): BasicSR io backend, ``{type: disk}`` (default) or ``{type: lmdb}``.
        lq_size (int): LR patch size; the GT patch is ``round(lq_size * s)``. Default: 48 (when ``gt_size``
            is not given).
        gt_size (int): GT patch size instead; the LR patch is ``round(gt_size / s)``. Give ``lq_size`` or
            ``gt_size``, not both. Default: not set.
        scale_min, scale_max (float): range of the per-batch scale. Default: 1 and 4.
        use_hflip (bool): random horizontal flips. Default: True.
        use_rot (bool): random rotations by multiples of 90 degrees, made of a random vertical flip and a
            random transpose (BasicSR's ``augment``); with ``use_hflip``, all eight flips and rotations.
            Default: True.
        lq_resize (str): how the LR patch is made from the GT patch: ``'matlab'`` (MATLAB-style bicubic on
            floats) or ``'pil'`` (LIIF's / the official GaussianSR's: 8-bit PIL bicubic). Default: 'matlab'.
        sample_q (int): also return ``sample_index``, ``sample_q`` distinct GT pixels (flat indices
            ``row * width + column``) drawn uniformly per sample: the model then computes the loss on those
            pixels only (LIIF's / the official GaussianSR's sampled-pixel training, 2304 per 48x48 crop).
            At most the GT pixels of the smallest crop (at ``scale_min``). Default: not set (whole crops).
        skip_bad_images (bool): skip corrupt/unreadable images and images smaller than the largest crop
            (``round(lq_size * scale_max)``, or ``gt_size``) with a warning and a count (``skipped_images``)
            instead of raising a ValueError naming the file. Sizes are checked from the headers at start-up.
            Default: False.
    """

    option_keys = ('dataroot_gt', 'io_backend', 'lq_size', 'gt_size', 'scale_min', 'scale_max', 'use_hflip', 'use_rot',
                   'skip_bad_images', 'lq_resize', 'sample_q')

    @classmethod
    def check_options(cls, opt: Dict[str, Any]) -> Dict[str, Any]:
        """The patch-size and scale options, validated without touching any file (``basicsr train`` calls this
        before it creates anything); a ValueError names the key."""
        if opt.get('lq_size') is not None and opt.get('gt_size') is not None:
            raise ValueError(f"dataset options 'lq_size' ({opt['lq_size']!r}) and 'gt_size' ({opt['gt_size']!r}) "
                             "are mutually exclusive: 'lq_size' fixes the LR patch, 'gt_size' the GT patch; give one")
        # exactly one of the two is set: the patch side that stays fixed while the scale varies
        values = {'gt_size': None, 'lq_size': None}
        if opt.get('gt_size') is not None:
            values['gt_size'] = option_number(opt, 'gt_size', integer=True, above=0)
        else:
            values['lq_size'] = option_number(opt, 'lq_size', 48, integer=True, above=0)
        values['scale_min'] = float(option_number(opt, 'scale_min', 1.0, above=0))
        values['scale_max'] = float(option_number(opt, 'scale_max', 4.0, above=0))
        if values['scale_min'] > values['scale_max']:
            raise ValueError(f"need 'scale_min' <= 'scale_max', got scale_min={values['scale_min']}, "
                             f"scale_max={values['scale_max']}")
        if values['gt_size'] is not None and round(values['gt_size'] / values['scale_max']) < 1:
            raise ValueError(f"'gt_size' {values['gt_size']} at 'scale_max' {values['scale_max']} leaves an empty LR "
                             'patch (round(gt_size / scale_max) = 0); raise gt_size or lower scale_max')
        values['resize_lq'] = _lq_resizer(opt)
        sample_q = opt.get('sample_q')
        if sample_q is not None:
            smallest = (values['gt_size'] if values['gt_size'] is not None else
                        int(round(values['lq_size'] * values['scale_min'])))
            if isinstance(sample_q, bool) or not isinstance(sample_q, int) or not 0 < sample_q:
                raise ValueError(f"'sample_q' must be a positive integer (GT pixels per crop), got {sample_q!r}")
            if sample_q > smallest * smallest:
                raise ValueError(f"'sample_q' {sample_q} is more than the {smallest}x{smallest} = "
                                 f"{smallest * smallest} GT pixels of a crop at 'scale_min' {values['scale_min']}")
        for key in ('use_hflip', 'use_rot', 'skip_bad_images'):
            if not isinstance(opt.get(key, False), bool):
                raise ValueError(f"'{key}' must be true or false, got {opt.get(key)!r}")
        return values

    def __init__(self, opt: Dict[str, Any]):
        super().__init__()
        self.opt = opt
        values = self.check_options(opt)
        self.gt_size, self.lq_size = values['gt_size'], values['lq_size']
        self.scale_min, self.scale_max = values['scale_min'], values['scale_max']
        self.resize_lq = values['resize_lq']
        self.sample_q = opt.get('sample_q')
        self.use_hflip = bool(opt.get('use_hflip', True))
        self.use_rot = bool(opt.get('use_rot', True))
        io_backend = dict(opt.get('io_backend') or {'type': 'disk'})
        self.gt_folder = _check_folder(
            opt.get('dataroot_gt'), 'dataroot_gt',
            '; put the training HR images there (for DIV2K: datasets/DIV2K/DIV2K_train_HR, see the README)')
        self.paths = _image_paths(self.gt_folder, 'dataroot_gt', io_backend.get('type', 'disk'))
        self.reader = _ImageReader(io_backend, {'gt': self.gt_folder})
        self._batches_drawn = 0
        # bad images (gsasr_plugin.utils.bad_data): an error naming the file, or skipped and counted
        self.skip_bad_images = bool(opt.get('skip_bad_images', False))
        self.max_gt_size = self.crop_sizes(self.scale_max)[0]  # gt_size, or round(lq_size * scale_max)
        self.skipped_images = []
        if io_backend.get('type', 'disk') == 'disk':  # headers only: start-up errors, not hours later
            self.paths, self.skipped_images = self._check_headers(self.paths, values, self.skip_bad_images)

    @classmethod
    def check_files(cls, opt: Dict[str, Any]) -> None:
        """The training images' headers (disk backend), as the dataset checks them when built: readable and at
        least as large as the largest crop. ``basicsr train`` calls this before it creates anything, so a bad
        image is one line naming it instead of an error after ``experiments/<name>/`` exists."""
        values = cls.check_options(opt)
        if dict(opt.get('io_backend') or {'type': 'disk'}).get('type', 'disk') != 'disk':
            return
        folder = _check_folder(opt.get('dataroot_gt'), 'dataroot_gt')
        with warnings.catch_warnings():  # skipped images are reported once, when the dataset is built
            warnings.simplefilter('ignore', BadImageWarning)
            cls._check_headers(_image_paths(folder, 'dataroot_gt', 'disk'), values, bool(opt.get('skip_bad_images')))

    @staticmethod
    def _check_headers(paths: List[str], values: Dict[str, Any], skip: bool) -> Tuple[List[str], List[str]]:
        if values['gt_size'] is not None:
            largest, crop_rule, crop_keys = values['gt_size'], 'gt_size', 'gt_size'
        else:
            largest = int(round(values['lq_size'] * values['scale_max']))
            crop_rule, crop_keys = 'round(lq_size * scale_max)', 'lq_size/scale_max'
        return check_training_images(paths, largest, skip, crop_rule, crop_keys)

    def crop_sizes(self, scale: float) -> Tuple[int, int]:
        """(GT, LR) square patch sides at scale ``s``: the fixed side and the other one rounded."""
        if self.gt_size is not None:
            return self.gt_size, int(round(self.gt_size / scale))
        return int(round(self.lq_size * scale)), self.lq_size

    def __len__(self) -> int:
        return len(self.paths)

    def _batch_rng(self, indices: Sequence[int]) -> np.random.Generator:
        entropy = batch_entropy(indices)
        if entropy is not None:  # drawn by ResumableSampler: a function of (seed + rank, epoch, position)
            return np.random.default_rng(np.random.SeedSequence(entropy))
        self._batches_drawn += 1
        entropy = [torch.initial_seed() % (2**63), self._batches_drawn, *[int(i) for i in indices]]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        rng = self._batch_rng(indices)
        scale = float(rng.uniform(self.scale_min, self.scale_max))
        return [self._make_pair_or_substitute(int(i), scale, rng) for i in indices]

    def _make_pair_or_substitute(self, index: int, scale: float, rng: np.random.Generator) -> Dict[str, Any]:
        """``_make_pair``; with ``skip_bad_images`` an unreadable image is replaced by the next good one."""
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if self.paths[candidate] in self.skipped_images:
                continue
            try:
                return self._make_pair(candidate, scale, rng)
            except ValueError as exc:
                if not self.skip_bad_images:
                    raise
                self.skipped_images.append(self.paths[candidate])
                warn_skipped(self.paths[candidate], str(exc), len(self.skipped_images))
        raise ValueError(f"no readable training image left in '{self.gt_folder}'")

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.__getitems__([index])[0]

    def _make_pair(self, index: int, scale: float, rng: np.random.Generator) -> Dict[str, Any]:
        gt_path = self.paths[index]
        img = self.reader(gt_path, 'gt')
        gt_size, lq_size = self.crop_sizes(scale)
        h, w = img.shape[:2]
        if h < gt_size or w < gt_size:
            fixed = f'gt_size {self.gt_size}' if self.gt_size is not None else f'lq_size {self.lq_size}'
            raise ValueError(f'training image {gt_path} is {h}x{w}, smaller than the {gt_size}x{gt_size} crop '
                             f"needed at scale {scale:.3f} ({fixed}, scale_max {self.scale_max})")
        top = int(rng.integers(0, h - gt_size + 1))
        left = int(rng.integers(0, w - gt_size + 1))
        gt = img[top:top + gt_size, left:left + gt_size]
        if self.use_hflip and rng.random() < 0.5:
            gt = gt[:, ::-1]
        if self.use_rot and rng.random() < 0.5:  # a rotation is a vertical flip and a transpose (as BasicSR)
            gt = gt[::-1, :]
        if self.use_rot and rng.random() < 0.5:
            gt = gt.transpose(1, 0, 2)
        gt = to_float(gt)
        lq = np.clip(self.resize_lq(gt, (lq_size, lq_size)), 0, 1)
        true_scale = gt_size / lq_size
        pair = {
            'lq': _to_tensor(lq),
            'gt': _to_tensor(gt),
            'scale': torch.tensor([true_scale, true_scale], dtype=torch.float32),
            'lq_path': gt_path,
            'gt_path': gt_path,
        }
        if self.sample_q is not None:  # distinct pixels, uniformly (LIIF: np.random.choice(..., replace=False))
            pair['sample_index'] = torch.from_numpy(rng.choice(gt_size * gt_size, self.sample_q, replace=False))
        return pair


@DATASET_REGISTRY.register()
class ArbitraryScaleTestDataset(data.Dataset):
    """Validation/test pairs at a list of scales: LR made on the fly from HR, or read from LR folders.

    Items are ordered scale by scale (all images at the first scale, then the next...). At scale
    ``(s_h, s_w)`` an HR image of ``H x W`` gives an LR of ``floor(H / s_h) x floor(W / s_w)`` and the GT
    is the HR cropped to ``round(h * s_h) x round(w * s_w)`` (top-left), the LIIF/GSASR convention. With
    ``dataroot_lq`` the LR is read instead (file ``filename_tmpl.format(stem)`` with the GT's extension or
    any image extension) and the GT is cropped the same way from the LR's size.

    Args (``opt`` keys):
        dataroot_gt (str): folder of HR images, or one HR image.
        gt_files (list): HR image files instead of ``dataroot_gt`` (disk only).
        scales (list): scales, each a number or ``[s_h, s_w]``, e.g. ``[2, 3.5, 4]``. Default: ``[4]``.
        dataroot_lq (str, optional): LR folder; may contain ``{scale}`` (replaced by ``2``, ``3.5``, ...)
            to give one folder per scale, otherwise ``scales`` must have one entry.
        filename_tmpl (str): LR file stem from the GT stem, may use ``{scale}``. Default: ``'{}'``.
        lq_resize (str): LR made on the fly by ``'matlab'`` (MATLAB-style bicubic) or ``'pil'`` (LIIF's 8-bit
            PIL bicubic). Default: 'matlab'.
        lq_bits (int, optional): round the LR images made on the fly to this many bits per channel (8: as an
            LR PNG file would hold them, the benchmark protocol of the GSASR paper). Default: none (float).
        io_backend (dict): ``{type: disk}`` (default) or lmdb.
    """

    option_keys = ('dataroot_gt', 'gt_files', 'dataroot_lq', 'scales', 'filename_tmpl', 'io_backend', 'lq_resize',
                   'lq_bits')

    @classmethod
    def check_options(cls, opt: Dict[str, Any]) -> List[Tuple[float, float]]:
        """``scales``, ``lq_bits`` and ``lq_resize`` validated without touching any file; a ValueError names the
        key."""
        lq_bits = opt.get('lq_bits')
        if lq_bits is not None and (isinstance(lq_bits, bool) or not isinstance(lq_bits, int)
                                    or not 1 <= lq_bits <= 16):
            raise ValueError(f"'lq_bits' must be an integer in [1, 16] or ~, got {lq_bits!r}")
        _lq_resizer(opt)
        scales = opt.get('scales', [4])
        if not isinstance(scales, (list, tuple)) or not scales:
            raise ValueError(f"'scales' must be a non-empty list of scales, got {scales!r}")
        return [scale_from_option(s, f'scales[{i}]') for i, s in enumerate(scales)]

    def __init__(self, opt: Dict[str, Any]):
        super().__init__()
        self.opt = opt
        self.scales = self.check_options(opt)
        self.lq_bits = opt.get('lq_bits')
        io_backend = dict(opt.get('io_backend') or {'type': 'disk'})
        backend = io_backend.get('type', 'disk')
        name = opt.get('name', 'dataset')
        images = _image_files(opt.get('gt_files') or opt.get('dataroot_gt')) if backend == 'disk' else None
        if images is not None:  # one image, or a list of images
            self.gt_folder, self.gt_paths = osp.dirname(images[0]) or '.', images
        else:
            self.gt_folder = _check_folder(opt.get('dataroot_gt'), 'dataroot_gt',
                                           f" (HR images of '{name}'; see the README's Testing section)")
            self.gt_paths = _image_paths(self.gt_folder, 'dataroot_gt', backend)
        self.filename_tmpl = opt.get('filename_tmpl', '{}')
        self.resize_lq = _lq_resizer(opt)
        roots = {'gt': self.gt_folder}
        self.lq_paths = None
        lq_root = opt.get('dataroot_lq')
        if lq_root is not None:
            if '{scale}' not in str(lq_root) and len(self.scales) != 1:
                raise ValueError("'dataroot_lq' without '{scale}' needs exactly one entry in 'scales', "
                                 f'got {len(self.scales)}')
            self.lq_paths = {}
            for scale in self.scales:
                folder = _check_folder(str(lq_root).replace('{scale}', scale_tag(scale)), 'dataroot_lq',
                                       f" (LR images of '{name}' at x{scale_tag(scale)})")
                self.lq_paths[scale] = [self._lq_path(folder, p, scale) for p in self.gt_paths]
                roots[f'lq_x{scale_tag(scale)}'] = folder
        self.reader = _ImageReader(io_backend, roots)

    def _lq_path(self, folder: str, gt_path: str, scale: Tuple[float, float]) -> str:
        stem, ext = osp.splitext(osp.basename(gt_path))
        lq_stem = self.filename_tmpl.replace('{scale}', scale_tag(scale)).format(stem)
        for candidate_ext in (ext, ) + IMG_EXTENSIONS:
            candidate = osp.join(folder, lq_stem + candidate_ext)
            if osp.isfile(candidate):
                return candidate
        raise DatasetFolderError(f"dataroot_lq: no LR image '{lq_stem}{ext}' in '{folder}' for {gt_path}")

    def __len__(self) -> int:
        return len(self.gt_paths) * len(self.scales)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        scale = self.scales[index // len(self.gt_paths)]
        gt_path = self.gt_paths[index % len(self.gt_paths)]
        hr = self.reader(gt_path, 'gt')
        if self.lq_paths is None:
            lq_h = int(math.floor(hr.shape[0] / scale[0] + 1e-9))
            lq_w = int(math.floor(hr.shape[1] / scale[1] + 1e-9))
            if lq_h < 1 or lq_w < 1:
                raise ValueError(f'{gt_path} ({hr.shape[0]}x{hr.shape[1]}) is too small for scale {scale}')
            lq = None
            lq_path = gt_path
        else:
            lq_path = self.lq_paths[scale][index % len(self.gt_paths)]
            lq = to_float(self.reader(lq_path, f'lq_x{scale_tag(scale)}'))
            lq_h, lq_w = lq.shape[:2]
        gt_h, gt_w = scaled_size((lq_h, lq_w), scale)
        if gt_h > hr.shape[0] or gt_w > hr.shape[1]:
            raise ValueError(f'LR {lq_path} ({lq_h}x{lq_w}) at scale {scale} needs a {gt_h}x{gt_w} GT but '
                             f'{gt_path} is {hr.shape[0]}x{hr.shape[1]}')
        gt = to_float(hr[:gt_h, :gt_w])
        if lq is None:
            lq = np.clip(self.resize_lq(gt, (lq_h, lq_w)), 0, 1)
            if self.lq_bits is not None:
                levels = float(2**self.lq_bits - 1)
                lq = (np.round(lq * levels) / levels).astype(lq.dtype)
        return {
            'lq': _to_tensor(lq),
            'gt': _to_tensor(gt),
            'scale': torch.tensor(scale, dtype=torch.float32),
            'lq_path': lq_path,
            'gt_path': gt_path,
        }
