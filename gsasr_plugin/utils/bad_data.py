"""Training images that cannot be used: corrupt, truncated or unreadable files, non-finite pixels, images
smaller than the largest crop.

By default each is an error naming the file (at start-up when the header already shows it, otherwise
when the image is first read). With the dataset option ``skip_bad_images: true`` such images are left
out with a warning naming them and a running count instead (at start-up: dropped from the list; during
training: the sample is replaced by the next readable image).

:func:`decode_image` also reads what ``basicsr.utils.imfrombytes`` gets wrong or refuses: 16-bit images
keep their precision (:func:`to_float` scales them by 1/65535), grayscale becomes 3 channels, alpha is dropped.
It refuses what OpenCV would decode silently but wrongly: a JPEG or PNG cut off before its end marker
(OpenCV returns the part it has, grey below) and float images holding NaN or inf.
"""
import warnings
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ['decode_image', 'to_float', 'image_size', 'header_size', 'check_training_images', 'BadImageWarning', 'warn_skipped',
           'check_not_truncated', 'check_finite_pixels']


class BadImageWarning(UserWarning):
    """A training image was skipped (``skip_bad_images: true``)."""


def check_not_truncated(content: bytes, path: str) -> None:
    """Raise ValueError naming ``path`` when a JPEG or PNG file ends before its end marker.

    OpenCV decodes such a file without an error and fills the missing rows; JPEG's end-of-image marker
    (FF D9) can only appear after the last scan (entropy-coded data stuffs every FF byte), PNG's IEND
    chunk after the last IDAT.
    """
    if content[:3] == b'\xff\xd8\xff':
        last_scan = content.rfind(b'\xff\xda')
        if last_scan < 0 or content.find(b'\xff\xd9', last_scan) < 0:
            raise ValueError(f"cannot decode image '{path}': the file is truncated (the JPEG data ends before "
                             'its end marker)')
    elif content[:8] == b'\x89PNG\r\n\x1a\n':
        if content.rfind(b'IEND') < max(content.rfind(b'IDAT'), 8):
            raise ValueError(f"cannot decode image '{path}': the file is truncated (the PNG data ends before "
                             'its IEND chunk)')


def check_finite_pixels(img: np.ndarray, path: str) -> None:
    """Raise ValueError naming ``path`` when a float image holds NaN or infinite values."""
    if img.dtype.kind == 'f' and not np.isfinite(img).all():
        count = int(img.size - np.isfinite(img).sum())
        raise ValueError(f"image '{path}' holds {count} NaN/inf value(s); a network cannot learn from or "
                         'super-resolve them')


def decode_image(content: bytes, path: str) -> np.ndarray:
    """Encoded image bytes -> HxWx3 BGR array, kept in its stored type (uint8, uint16 or float32).

    Gray and gray+alpha become 3 channels, BGRA loses its alpha; :func:`to_float` scales to [0, 1].

    Raises:
        ValueError: naming ``path`` when the bytes are not a decodable image, are cut off, or hold NaN/inf.
    """
    img = None
    if content:
        check_not_truncated(content, path)
        img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"cannot decode image '{path}': the file is corrupt, truncated or not an image")
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    check_finite_pixels(img, path)
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"image '{path}' has unsupported pixel type {img.dtype} (use 8/16-bit or float images)")
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels in (1, 2):  # gray (+ alpha)
        img = np.repeat(img[:, :, :1], 3, axis=2)
    elif channels == 4:  # BGRA
        img = img[:, :, :3]
    elif channels != 3:
        raise ValueError(f"image '{path}' has {channels} channels; expected 1 to 4")
    return img


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 (/255), uint16 (/65535) or float image -> contiguous float32 in [0, 1]."""
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img, dtype=np.float32) / 255.0
    if img.dtype == np.uint16:
        return np.ascontiguousarray(img, dtype=np.float32) / 65535.0
    return np.clip(np.ascontiguousarray(img, dtype=np.float32), 0, 1)


def header_size(path: str) -> Optional[Tuple[int, int]]:
    """(height, width) from the file's header alone (Pillow, nothing decoded, whatever the size: PIL's
    decompression-bomb limit guards decoding, which this never does), or None when Pillow cannot read it."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    width, height = img.size
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except Exception:  # noqa: BLE001  (PIL raises UnidentifiedImageError, OSError, SyntaxError, ...)
        return None
    return int(height), int(width)


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) from the file's header, without decoding the pixels where Pillow reads the header.

    Raises:
        ValueError: naming ``path`` when the file cannot be opened as an image.
    """
    size = header_size(path)
    if size is not None:
        return size
    # PIL cannot open some files OpenCV reads (e.g. 3-channel float32 TIFFs that OpenCV wrote): decode
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"cannot read image '{path}': not an image, or a corrupt or unsupported one")
    return int(img.shape[0]), int(img.shape[1])


def warn_skipped(path: str, reason: str, count: int) -> None:
    warnings.warn(f"skipping training image '{path}': {reason} (skip_bad_images: true; {count} skipped so far)",
                  BadImageWarning, stacklevel=3)


def check_training_images(paths: Sequence[str], min_size: int, skip: bool,
                          crop_rule: str = 'round(lq_size * scale_max)',
                          crop_keys: str = 'lq_size/scale_max') -> Tuple[List[str], List[str]]:
    """Check headers before training: readable and at least ``min_size`` x ``min_size`` pixels.

    ``crop_rule`` (how ``min_size`` follows from the options) and ``crop_keys`` (the option keys that
    lower it) only word the error message.

    Returns:
        (usable paths, skipped paths); skipped ones only with ``skip``.

    Raises:
        ValueError: naming the file (and the needed size) for the first bad image when not ``skip``.
    """
    kept, skipped = [], []
    for path in paths:
        try:
            height, width = image_size(path)
            if height < min_size or width < min_size:
                raise ValueError(
                    f"training image '{path}' is {height}x{width}, smaller than the largest crop {min_size}x{min_size} "
                    f'({crop_rule}); remove it, lower {crop_keys}, or set skip_bad_images: true')
        except ValueError as exc:
            if not skip:
                raise
            skipped.append(path)
            warn_skipped(path, str(exc), len(skipped))
            continue
        kept.append(path)
    if not kept:
        raise ValueError(f'no usable training image among {len(paths)} (all skipped: corrupt or smaller than '
                         f'{min_size}x{min_size})')
    return kept, skipped
