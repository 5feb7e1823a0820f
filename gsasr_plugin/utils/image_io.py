"""Image files and arrays for inference: PNG, JPEG, TIFF, WebP, BMP (anything OpenCV reads), 8- or 16-bit (or
float TIFF), grayscale, RGB or RGBA.

The networks see RGB in [0, 1]: :func:`decode_image_array` / :func:`read_image` turn an array or a file into
that and an :class:`ImageMeta` (pixel type, gray, alpha); :func:`encode_image_array` / :func:`write_image` turn
a result back into the input's layout (grayscale averaged back, the alpha channel super-resolved separately by
the caller), as far as the output format holds it (:func:`output_layout`). Files are read with the bad-image
checks of :mod:`gsasr_plugin.utils.bad_data` and written atomically (:mod:`gsasr_plugin.utils.atomic_io`).
Used by the Python API (:mod:`gsasr_plugin.api`) and ``basicsr infer``.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from gsasr_plugin.utils.atomic_io import write_image_file
from gsasr_plugin.utils.bad_data import check_finite_pixels, check_not_truncated, header_size

__all__ = ['IMAGE_EXTENSIONS', 'OUTPUT_FORMATS', 'ImageMeta', 'decode_image_array', 'encode_image_array',
           'output_layout', 'read_image', 'write_image', 'DEFAULT_MAX_INPUT_PIXELS', 'ImageTooLargeError', 'megapixels',
           'check_input_pixels']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.webp', '.bmp')
# The largest input image read by default (width x height): a 10000 x 10000 photo (1.2 GB as float RGB). A file
# whose header declares more is refused before it is decoded (a "decompression bomb" declares 20000 x 20000 in a
# few bytes); ``basicsr infer --max-input-pixels`` / ``max_input_pixels=`` raise it, 0 lifts it.
DEFAULT_MAX_INPUT_PIXELS = 100_000_000


class ImageTooLargeError(ValueError):
    """An input image's header declares more pixels than allowed (or than memory holds).

    Args:
        message: the one line shown to the user.
        size: (height, width) the header declares (None: unknown).
        limit: the pixel limit it is over (None: memory, not a limit).
    """

    def __init__(self, message: str, size: Optional[Tuple[int, int]] = None, limit: Optional[int] = None):
        super().__init__(message)
        self.size = size
        self.limit = limit


# What each output format holds with OpenCV's encoders: the deepest pixel type and whether it keeps alpha.
OUTPUT_FORMATS: Dict[str, Tuple[np.dtype, bool]] = {
    '.png': (np.dtype(np.uint16), True),
    '.tif': (np.dtype(np.float32), True),
    '.tiff': (np.dtype(np.float32), True),
    '.jpg': (np.dtype(np.uint8), False),
    '.jpeg': (np.dtype(np.uint8), False),
    '.webp': (np.dtype(np.uint8), True),
    '.bmp': (np.dtype(np.uint8), True),
}
_DEPTH = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}
# pixels per strip of encode_image_array: its float temporaries (a few copies of 16 B per pixel) stay a few MB
_STRIP_PIXELS = 1 << 16


@dataclass
class ImageMeta:
    """What ``write_image`` needs to give the output the input's layout."""
    dtype: np.dtype  # uint8, uint16 or float32
    grayscale: bool
    alpha: Optional[np.ndarray]  # (H, W) float in [0, 1], or None


def decode_image_array(image: np.ndarray, name: str = 'image', bgr: bool = False) -> Tuple[np.ndarray, ImageMeta]:
    """An (H, W) or (H, W, C) array, C in 1..4 (gray, gray + alpha, colour, colour + alpha), uint8, uint16 or
    float in [0, 1] -> (H, W, 3) float32 RGB in [0, 1] and its ``ImageMeta``.

    ``bgr``: the colour channels are in OpenCV's B, G, R order. Float values are clipped to [0, 1].

    Raises:
        TypeError: for another pixel type.
        ValueError: for another shape (the message names ``name`` and the shape).
    """
    dtype = np.dtype(image.dtype)
    if dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    elif dtype == np.uint16:
        image = image.astype(np.float32) / 65535.0
    elif dtype.kind == 'f':
        image = np.clip(image.astype(np.float32), 0, 1)
        dtype = np.dtype(np.float32)
    else:
        raise TypeError(f'{name}: unsupported pixel type {dtype} (use uint8, uint16 or float in [0, 1])')
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        grayscale, rgb, alpha = True, np.repeat(image[..., None], 3, axis=2), None
    elif image.ndim == 3 and image.shape[2] in (2, 3, 4):
        grayscale = image.shape[2] == 2  # gray + alpha
        alpha = image[..., -1].copy() if image.shape[2] in (2, 4) else None
        if grayscale:
            rgb = np.repeat(image[..., :1], 3, axis=2)
        else:
            rgb = image[..., 2::-1] if bgr else image[..., :3]
    else:
        raise ValueError(f'{name}: unsupported image layout {image.shape}: expected (H, W) or (H, W, C) with C '
                         'channels last, C in 1..4' + (' (a (C, H, W) array? transpose it to (H, W, C))'
                                                       if image.ndim == 3 and image.shape[0] in (1, 3, 4) else ''))
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f'{name}: empty image {image.shape}')
    return np.ascontiguousarray(rgb), ImageMeta(dtype, grayscale, alpha)


def encode_image_array(rgb: np.ndarray, meta: ImageMeta, alpha: Optional[np.ndarray] = None,
                       dtype: Optional[np.dtype] = None, bgr: bool = False) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] (and optional (H, W) alpha) -> an array in the layout ``meta`` describes:
    (H, W) gray, (H, W, 2) gray + alpha, (H, W, 3) colour or (H, W, 4) colour + alpha, of ``dtype``
    (default ``meta.dtype``); colour in B, G, R order when ``bgr``.

    ``rgb`` may be any strided view (a permuted CHW tensor's array): it is converted in strips of rows, so the
    float temporaries stay a few MB whatever the image's size; only the result is allocated whole."""
    dtype = np.dtype(dtype if dtype is not None else meta.dtype)
    height, width = rgb.shape[:2]
    channels = (1 if meta.grayscale else 3) + (alpha is not None)
    image = np.empty((height, width, channels), dtype)
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        strip = slice(top, top + rows)
        image[strip] = _encode_strip(rgb[strip], None if alpha is None else alpha[strip], meta.grayscale, dtype,
                                     bgr)
    return image[..., 0] if channels == 1 else image


def _encode_strip(rgb: np.ndarray, alpha: Optional[np.ndarray], grayscale: bool, dtype: np.dtype,
                  bgr: bool) -> np.ndarray:
    """:func:`encode_image_array`'s arithmetic on a few rows."""
    if grayscale:
        image = rgb.mean(axis=2, keepdims=True)
    else:
        image = rgb[..., ::-1] if bgr else rgb
    if alpha is not None:
        image = np.concatenate([image, alpha[..., None]], axis=2)
    image = np.clip(image, 0, 1)
    if dtype == np.uint8:
        return (image * 255.0).round().astype(np.uint8)
    if dtype == np.uint16:
        return (image * 65535.0).round().astype(np.uint16)
    return image.astype(dtype)


def output_layout(suffix: str, meta: ImageMeta) -> Tuple[np.dtype, bool]:
    """(pixel type, keeps alpha) of an image with ``meta`` written as ``suffix`` ('.png', '.jpg', ...)."""
    deepest, holds_alpha = OUTPUT_FORMATS.get(suffix.lower(), (np.dtype(np.uint8), False))
    dtype = meta.dtype if _DEPTH.get(np.dtype(meta.dtype), 8) <= _DEPTH[deepest] else deepest
    return np.dtype(dtype), holds_alpha and meta.alpha is not None


def check_input_pixels(path: str, size: Optional[Tuple[int, int]],
                       max_pixels: Optional[int] = DEFAULT_MAX_INPUT_PIXELS) -> None:
    """Raise :class:`ImageTooLargeError` naming ``path``, its size and the limit when ``size`` (height, width; None:
    unknown) has more than ``max_pixels`` pixels (None or 0: no limit)."""
    if not max_pixels or size is None or size[0] * size[1] <= max_pixels:
        return
    raise ImageTooLargeError(f'{path}: {size[1]}x{size[0]} pixels ({megapixels(size[0] * size[1])}) is over the '
                             f'limit for an input image of {megapixels(max_pixels)}; refused before decoding it (a '
                             'damaged or hostile file can declare any size). If the image is real, raise the limit '
                             '(basicsr infer --max-input-pixels N; Python: max_input_pixels=N; 0: no limit): large '
                             'images are encoded in tiles', size=(size[0], size[1]), limit=max_pixels)


def megapixels(count: int) -> str:
    """``count`` pixels in words: '12.3 MP', or '4,096 pixels' below 0.1 MP."""
    return f'{count / 1e6:,.1f} MP' if count >= 100_000 else f'{count:,} pixels'


def read_image(path: str, max_pixels: Optional[int] = DEFAULT_MAX_INPUT_PIXELS) -> Tuple[np.ndarray, ImageMeta]:
    """``path`` -> (H, W, 3) float32 RGB in [0, 1] and its ``ImageMeta``.

    ``max_pixels``: the largest width x height read; the header is checked before the pixels are decoded
    (:data:`DEFAULT_MAX_INPUT_PIXELS`; None or 0: no limit).

    Raises:
        FileNotFoundError: if the file does not exist.
        ImageTooLargeError: if its header declares more than ``max_pixels`` pixels.
        ValueError: if OpenCV cannot decode it, it is cut off (JPEG/PNG without their end marker), it holds
            NaN/inf pixels, or its layout is unsupported.
    """
    import cv2

    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such file')
    check_input_pixels(str(path), header_size(str(path)), max_pixels)
    with open(path, 'rb') as handle:
        content = handle.read()
    check_not_truncated(content, str(path))
    try:
        image = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED) if content else None
    except cv2.error as error:  # OpenCV's own size limit, or a decoder that gave up on damaged data
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else 'cv2.error'
        raise ValueError(f'{path}: OpenCV cannot decode it ({reason})') from None
    if image is None:
        raise ValueError(f'{path}: not a readable image (supported: {", ".join(IMAGE_EXTENSIONS)})')
    check_finite_pixels(image, str(path))
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    try:
        return decode_image_array(image, str(path), bgr=True)
    except TypeError as error:
        raise ValueError(f'{error} (use 8- or 16-bit images)') from None


def write_image(path: str, rgb: np.ndarray, meta: ImageMeta, alpha: Optional[np.ndarray] = None) -> None:
    """Write (H, W, 3) RGB in [0, 1] (and optional (H, W) alpha) with the input's depth and channels, as far
    as the format holds them (:func:`output_layout`: JPEG, WebP and BMP hold 8 bits, JPEG no alpha).

    The file is written atomically (``gsasr_plugin.utils.atomic_io``): a complete image or none.

    Raises:
        ValueError: when the format cannot hold this image (named with the file).
        WriteError: when the file cannot be written (read-only folder, disk full, ...), saying which.
    """
    dtype, keep_alpha = output_layout(Path(path).suffix, ImageMeta(meta.dtype, meta.grayscale, alpha))
    alpha = alpha if keep_alpha else None
    if meta.grayscale and alpha is not None:  # no encoder writes gray + alpha: write it as BGRA
        rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
        meta = ImageMeta(meta.dtype, False, meta.alpha)
    image = encode_image_array(rgb, meta, alpha, dtype, bgr=True)
    write_image_file(str(path), np.ascontiguousarray(image))
