"""The input mean shift of the SR feature encoders (EDSR-baseline, RDN, SwinIR, HAT)."""
from typing import Optional, Sequence

import torch

__all__ = ['DIV2K_RGB_MEAN', 'MeanShiftInput']

# DIV2K RGB mean, subtracted by EDSR / RDN / SwinIR / HAT before the head conv.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShiftInput:
    """Mixin for ``nn.Module`` encoders: ``(x - rgb_mean) * img_range`` before the head conv (EDSR's MeanShift)."""

    def _init_mean_shift(self, num_in_ch: int, rgb_mean: Optional[Sequence[float]], img_range: float) -> None:
        """Check ``rgb_mean`` (None: zeros) against ``num_in_ch`` and store it and ``img_range``."""
        rgb_mean = [0.] * num_in_ch if rgb_mean is None else list(rgb_mean)
        if len(rgb_mean) != num_in_ch:
            raise ValueError(f'rgb_mean needs {num_in_ch} values (num_in_ch), got {rgb_mean}')
        self.img_range = float(img_range)
        # Not a parameter and not saved: it is fixed by the options, like EDSR's MeanShift.
        self.register_buffer('mean', torch.tensor(rgb_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def shift_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(B, num_in_ch, h, w) image in [0, 1] -> mean-subtracted, scaled by ``img_range``."""
        return (x - self.mean.to(x.dtype)) * self.img_range
