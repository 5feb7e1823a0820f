"""Resizing images to an exact size: MATLAB's bicubic (``imresize``) and LIIF's 8-bit PIL bicubic.

Both take an HxWxC float image and give exactly ``out_size`` = (h, w) pixels: what the datasets make LR images
with (``lq_resize``), and the bicubic baseline of validation (``ArbitraryScaleSRModel``).
"""
from typing import Tuple

import numpy as np
import torch

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.utils.matlab_functions import calculate_weights_indices

__all__ = ['matlab_bicubic_resize', 'pil_bicubic_resize']


def _resize_matrix(in_length: int, out_length: int) -> torch.Tensor:
    """(out_length, in_length) matrix of MATLAB bicubic (antialiased when shrinking, symmetric borders).

    The weights come from ``basicsr.utils.matlab_functions.calculate_weights_indices`` with the exact
    size ratio ``out_length / in_length`` as the scale, so the output has exactly ``out_length`` pixels.
    """
    weights, indices, sym_start, _ = calculate_weights_indices(in_length, out_length, out_length / in_length,
                                                               'cubic', 4, True)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    taps = torch.arange(weights.size(1))
    # Positions in the symmetrically padded signal -> positions in the original one.
    pos = (indices[:, :1].long() + taps[None, :]) - sym_start
    pos = torch.where(pos < 0, -pos - 1, pos)
    pos = torch.where(pos >= in_length, 2 * in_length - 1 - pos, pos)
    matrix.scatter_add_(1, pos, weights.double())
    return matrix


def matlab_bicubic_resize(img: np.ndarray, out_size: Tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC float image to exactly ``out_size`` = (h, w) with MATLAB-style bicubic.

    Same kernel, antialiasing and border handling as ``basicsr.utils.matlab_functions.imresize``, but
    each axis uses its own exact ratio (imresize takes one scale and sizes its output with ceil).
    """
    out_h, out_w = int(out_size[0]), int(out_size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f'out_size must be positive, got {out_size}')
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    m_h = _resize_matrix(img.shape[0], out_h)
    m_w = _resize_matrix(img.shape[1], out_w)
    src = torch.from_numpy(np.ascontiguousarray(img)).double()
    rows = (m_h @ src.reshape(src.shape[0], -1)).reshape(out_h, src.shape[1], src.shape[2])  # H axis
    out = torch.einsum('pw,owc->opc', m_w, rows)  # W axis
    out = out.numpy().astype(img.dtype if img.dtype in (np.float32, np.float64) else np.float32)
    return out[:, :, 0] if squeeze else out


def pil_bicubic_resize(img: np.ndarray, out_size: Tuple[int, int]) -> np.ndarray:
    """LIIF's ``resize_fn`` (also the official GaussianSR's): an HxWx3 float image in [0, 1] to 8 bits as
    torchvision's ``ToPILImage`` does (``* 255``, truncated), PIL's antialiased bicubic to exactly
    ``out_size`` = (h, w), back to float32 / 255."""
    from PIL import Image
    out_h, out_w = int(out_size[0]), int(out_size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f'out_size must be positive, got {out_size}')
    quantised = (np.clip(img, 0, 1).astype(np.float32) * np.float32(255)).astype(np.uint8)
    resized = Image.fromarray(np.ascontiguousarray(quantised)).resize((out_w, out_h), Image.BICUBIC)
    return np.asarray(resized, dtype=np.float32) / np.float32(255)
