"""Sampled-pixel training (LIIF's ``sample_q``): a batch's loss on a random subset of its GT pixels.

``ArbitraryScaleTrainDataset`` with ``sample_q: Q`` adds ``sample_index`` (B, Q) flat pixel indices
(``row * width + column``) to each batch; ``ArbitraryScaleSRModel`` then compares the network's output at
those pixels with the GT there. The SR networks take ``pixel_index`` in ``forward``
(``SRNetwork.render_pixels``: GaussianSR decodes only those pixels, the others pick them from the whole
output); for plain networks the model picks them.
"""
import torch

__all__ = ['gather_pixels']


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
