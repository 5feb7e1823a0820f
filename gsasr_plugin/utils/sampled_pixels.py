"""Sampled-pixel training (LIIF's ``sample_q``): a batch's loss on a random subset of its GT pixels.

``ArbitraryScaleTrainDataset`` with ``sample_q: Q`` adds ``sample_index`` (B, Q) flat pixel indices
(``row * width + column``) to each batch; ``ArbitraryScaleSRModel`` then compares the network's output at
those pixels with the GT there. Networks whose ``forward`` takes ``pixel_index`` (GaussianSR) decode only
those pixels; for the others the whole output is computed and the pixels are picked from it.
"""
import inspect

import torch
from torch import nn

__all__ = ['gather_pixels', 'accepts_pixel_index']


def gather_pixels(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images and (B, Q) flat pixel indices (row * W + column) -> (B, C, Q) those pixels."""
    if index.dim() != 2 or index.shape[0] != images.shape[0]:
        raise ValueError(f'pixel index must be (B, Q) = ({images.shape[0]}, Q) flat pixel indices, '
                         f'got shape {tuple(index.shape)}')
    flat = images.flatten(2)
    if index.numel() and index.device.type == 'cpu' and (int(index.min()) < 0 or int(index.max()) >= flat.shape[2]):
        raise ValueError(f'pixel index out of range for {images.shape[-2]}x{images.shape[-1]} images: '
                         f'[{int(index.min())}, {int(index.max())}]')
    return torch.gather(flat, 2, index.to(flat.device).long().unsqueeze(1).expand(-1, flat.shape[1], -1))


def accepts_pixel_index(net: nn.Module) -> bool:
    """Whether ``net.forward`` takes ``pixel_index`` (decodes only the sampled pixels)."""
    try:
        return 'pixel_index' in inspect.signature(net.forward).parameters
    except (TypeError, ValueError):
        return False
