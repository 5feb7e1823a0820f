"""GaussianSR: "High Fidelity 2D Gaussian Splatting for Arbitrary-Scale Image Super-Resolution"
(Hu et al., AAAI 2025, arXiv 2407.18046).

Every LR pixel's feature becomes a continuous Gaussian field instead of a point sample; an LTE-style
local texture decoder turns the rendered feature map into RGB.

Layout:

1. EDSR-baseline encoder without upsampler: (B, 64, h, w) features (any ``ENCODER_REGISTRY`` encoder).
2. Selective Gaussian splatting: a 3x3 conv classifies each LR pixel into one of ``num_kernels`` (100)
   learnable Gaussian kernels, (sigma_x, sigma_y) initialised on a 10 x 10 grid over ``sigma_init_range``,
   rho 0, opacity sigmoid(1). Training draws the choice with Gumbel-softmax (tau 1; straight-through
   one-hot by default, the soft weights with ``gumbel_hard: false``); evaluation takes the arg-max per
   pixel, deterministically (``kernel_choice_eval``).
3. Dual stream: the first ``splat_channels`` (8) feature channels are splatted at the output resolution,
   the other 56 are upsampled bicubically; both are concatenated (the decoder's 3x3 convs fuse them).
   By default (``splatting: rasterizer``) the features are the ``colors`` of one Gaussian at each LR pixel
   centre (sigma in LR pixels), rendered by ``rasterize_gaussians``: no patches, no seams.
4. Local texture decoder (LTE, Lee & Jin 2022): coefficient and frequency 3x3 convs to 256 channels; the
   frequencies (128 pairs) are projected on each output pixel's offset from its LR pixel centre, a
   phase is a linear map of the cell size (per axis), and ``coef * [cos, sin](pi * (freq . offset +
   phase))`` goes through an MLP 256 -> 256 x 4 -> 3; a bicubic upsampling of the LR image is added.

The official code (tljxyys/GaussianSR) differs in several places; each difference is an option here, and
``options/*_gaussiansr_edsr_official.yml`` set them all (see the README, "GaussianSR details"):
``splatting: patches`` (its per-7x7-patch splatting of sampled kernels, :mod:`gaussiansr_patches`),
``kernel_param: raw``, ``kernel_sharing: patch_mean``, ``gumbel_hard: false``, ``kernel_choice_eval``,
``splat_clamp``, ``mlp_act: gelu``, ``decoder_coords: liif``, ``image_skip: false``, ``norm_mean`` /
``norm_std`` and ``encoder: {rgb_mean: ~}``. Their checkpoints convert with
:mod:`gsasr_plugin.official.gaussiansr`.

The Gaussians and the LR features do not depend on the scale (``field_depends_on_scale = False``): the
field is encoded once and each render runs the splatting, the bicubic upsampling and the decoder at the
output size (the decoder's phase uses that render's cell size). ~1.84 M parameters with the defaults.
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.gaussian_field import (GaussianField, Window, check_window, reference_grid, whole_window,
                                               window_field)
from gsasr_plugin.archs.gaussiansr_patches import (liif_offsets_and_cell, patch_parameters, resample_to_patch_grid,
                                                   splat_patches)
from gsasr_plugin.archs.sr_network import SRNetwork
from gsasr_plugin.utils.sampled_pixels import gather_pixels
from gsasr_plugin.utils.scale import ScaleLike, ScalePair, Size, Target, to_scale_pair

__all__ = ['GaussianSR', 'GaussianSRField', 'PatchGaussians', 'LocalTextureDecoder', 'sample_positions', 'in_row_bands']


def sample_positions(window: Window, out_size: Tuple[int, int], device, dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """LR coordinates (y (Ho,), x (Wo,)) of the output pixel centres of a render of ``window``."""
    top, left, bottom, right = window
    ys = top + (torch.arange(out_size[0], device=device, dtype=dtype) + 0.5) * ((bottom - top) / out_size[0])
    xs = left + (torch.arange(out_size[1], device=device, dtype=dtype) + 0.5) * ((right - left) / out_size[1])
    return ys, xs


def _bicubic_at(image: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Bicubic samples of (B, C, h, w) at LR points ys x xs (pixel centres at i + 0.5), border-clamped."""
    height, width = image.shape[-2:]
    grid_y, grid_x = torch.meshgrid(2 * ys / height - 1, 2 * xs / width - 1, indexing='ij')
    grid = torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0).expand(image.shape[0], -1, -1, -1)
    return F.grid_sample(image, grid.to(image.dtype), mode='bicubic', padding_mode='border', align_corners=False)


@dataclass
class PatchGaussians:
    """The Gaussians of ``splatting: patches`` (the official code's), ready to splat at any scale.

    Attributes:
        features: (B, splat_channels, rows * ph, cols * pw) splatted features resampled to the patch grid.
        params: (B, 1 or L, ph * pw, 4) (sigma_x, sigma_y, rho, opacity) of each patch position; one set
            per image with ``kernel_sharing: patch_mean``, one per patch with ``pixel``.
        patch_size: (ph, pw).
    """
    features: torch.Tensor
    params: torch.Tensor
    patch_size: Tuple[int, int]


@dataclass
class GaussianSRField:
    """What GaussianSR encodes once: the splatted stream's Gaussians and the bicubic stream's features.

    Attributes:
        gaussians: one Gaussian per LR pixel (at its centre), ``colors`` = the first ``splat_channels``
            feature channels times opacity; None with ``splatting: patches``.
        features: (B, C - splat_channels, h, w) features of the bicubic stream.
        lq: (B, 3, h, w) the (normalised) LR image, for the decoder's bicubic image skip.
        kernel_index: (B, h, w) arg-max kernel of each LR pixel (for inspection).
        patches: the Gaussians of ``splatting: patches``, else None.
        target: the scale and output size the field was decoded for (``splatting: patches`` sizes its patches
            by that scale when rendered at that size: ``round`` in an output size may not give the scale back
            exactly), or None.
    """
    gaussians: Optional[GaussianField]
    features: torch.Tensor
    lq: torch.Tensor
    kernel_index: Optional[torch.Tensor] = None
    patches: Optional[PatchGaussians] = None
    target: Optional[Target] = None

    @property
    def lr_size(self) -> Tuple[int, int]:
        return int(self.features.shape[-2]), int(self.features.shape[-1])


class LocalTextureDecoder(nn.Module):
    """LTE-style decoder of a feature map sampled at output pixel centres.

    Args:
        in_channels: Channels of the rendered feature map.
        hidden_dim: Width of coef / freq (and of the MLP input). Default: 256.
        mlp_hidden: Hidden widths of the per-pixel MLP. Default: (256, 256, 256, 256).
        out_channels: Output channels. Default: 3.
        act: Activation of the MLP, ``'relu'`` or ``'gelu'`` (the official GaussianSR's MLP). Default: 'relu'.
    """

    def __init__(self, in_channels: int, hidden_dim: int = 256, mlp_hidden: Sequence[int] = (256, 256, 256, 256),
                 out_channels: int = 3, act: str = 'relu'):
        super().__init__()
        if hidden_dim < 2 or hidden_dim % 2:
            raise ValueError(f'decoder_dim must be an even integer >= 2, got {hidden_dim!r}')
        if act not in _ACTIVATIONS:
            raise ValueError(f"mlp_act must be one of {sorted(_ACTIVATIONS)}, got {act!r}")
        self.coef = nn.Conv2d(in_channels, hidden_dim, 3, 1, 1)
        self.freq = nn.Conv2d(in_channels, hidden_dim, 3, 1, 1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        layers, width = [], hidden_dim
        for size in mlp_hidden:  # an MLP per output pixel, as 1x1 convs
            layers += [nn.Conv2d(width, int(size), 1), _ACTIVATIONS[act]()]
            width = int(size)
        layers.append(nn.Conv2d(width, out_channels, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor, rel: torch.Tensor, cell: torch.Tensor,
                pixel_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """feature (B, C, Ho, Wo); rel (2, Ho, Wo) offsets (x, y) from the LR pixel centre in half LR pixels
        (LTE's units, in [-1, 1)); cell (2,) = output pixel size (x, y) in the same units. With
        ``pixel_index`` (B, Q) the MLP runs on those pixels only and the result is (B, C_out, Q).

        Without autograd, an output of more than ``DECODER_BAND_PIXELS`` pixels is decoded in bands of rows (with
        the 3x3 convolutions' row of context above and below): the MLP holds ~1 KB per pixel and layer, so a
        whole 1600 x 1200 output took 9 GB at once."""
        height, width = feature.shape[-2:]
        if pixel_index is None and not torch.is_grad_enabled() and height * width > DECODER_BAND_PIXELS:
            return self._decode_in_bands(feature, rel, cell)
        return self._decode(feature, rel, cell, pixel_index)

    def _decode_in_bands(self, feature: torch.Tensor, rel: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        height, width = feature.shape[-2:]
        return in_row_bands(height, max(1, DECODER_BAND_PIXELS // width), self.context_rows,
                            lambda lo, hi: self._decode(feature[..., lo:hi, :], rel[..., lo:hi, :], cell))

    @property
    def context_rows(self) -> int:
        """Rows the 3 x 3 convolutions read beyond a band of output rows."""
        return self.coef.kernel_size[0] // 2

    def _decode(self, feature: torch.Tensor, rel: torch.Tensor, cell: torch.Tensor,
                pixel_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        coef = self.coef(feature)
        freq = self.freq(feature)
        batch, channels, height, width = freq.shape
        freq = (freq.view(batch, channels // 2, 2, height, width) * rel.unsqueeze(0).unsqueeze(0)).sum(2)
        freq = freq + self.phase(cell.to(freq.dtype)).view(1, -1, 1, 1)
        waves = coef * torch.cat((torch.cos(math.pi * freq), torch.sin(math.pi * freq)), dim=1)
        if pixel_index is None:
            return self.mlp(waves)
        return self.mlp(gather_pixels(waves, pixel_index).unsqueeze(2)).squeeze(2)


def in_row_bands(height: int, rows: int, context: int, compute: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """(B, C, height, W) assembled from bands of ``rows`` rows: ``compute(lo, hi)`` gives rows [lo, hi) of the
    result, a band with ``context`` rows on each side (clipped to the image), of which the band's own are kept."""
    out = None
    for first in range(0, height, rows):
        stop = min(height, first + rows)
        lo, hi = max(0, first - context), min(height, stop + context)
        band = compute(lo, hi)
        if out is None:
            out = band.new_empty(*band.shape[:-2], height, band.shape[-1])
        out[..., first:stop, :] = band[..., first - lo:stop - lo, :]
    return out


# the most output pixels GaussianSR renders (rasterizer, centres) or decodes (otherwise) at once without autograd:
# ~650 MB of decoder activations
DECODER_BAND_PIXELS = 1 << 17
_ACTIVATIONS = {'relu': lambda: nn.ReLU(inplace=True), 'gelu': nn.GELU}
_SPLATTING = ('rasterizer', 'patches')
_KERNEL_PARAMS = ('activated', 'raw')
_KERNEL_SHARING = ('pixel', 'patch_mean')
_EVAL_CHOICES = ('argmax', 'softmax', 'gumbel')
_DECODER_COORDS = ('centres', 'liif')


def _choice(value: Any, allowed: Sequence[str], key: str) -> str:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def _channel_values(value: Union[float, Sequence[float]], channels: int, key: str) -> torch.Tensor:
    """A scalar or ``channels`` numbers as a (1, channels, 1, 1) tensor."""
    values = [float(value)] * channels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != channels:
        raise ValueError(f'{key} needs 1 or {channels} values, got {value!r}')
    return torch.tensor(values).view(1, channels, 1, 1)


@ARCH_REGISTRY.register()
class GaussianSR(SRNetwork):
    """GaussianSR: per-pixel Gaussian feature fields, splatted at any size, decoded by an LTE decoder.

    Args:
        encoder: Options of the LR feature encoder. Default: ``{'type': 'EDSREncoder'}``.
        num_kernels: Size of the learnable Gaussian kernel bank; a square for the init grid. Default: 100.
        sigma_init_range: (min, max) of the initial sigma grid (LR pixels; with ``splatting: patches`` the
            official kernel units, 2.5 output pixels per unit at ``kernel_size`` 5). Default: (0.2, 3.0).
        opacity_init_logit: Initial opacity logit of every kernel (opacity = sigmoid). Default: 1.
        splat_channels: Feature channels rendered by splatting; the rest are upsampled bicubically. Default: 8.
        gumbel_tau: Gumbel-softmax temperature while training (and for ``kernel_choice_eval: gumbel``).
            Default: 1.
        gumbel_hard: Straight-through one-hot choices while training; False mixes the kernels' parameters by
            the soft Gumbel weights (the official code). Default: True.
        kernel_choice_eval: Kernel choice in evaluation: ``'argmax'`` (one-hot, deterministic), ``'softmax'``
            (the softmax weights, deterministic: the expectation of the official sampled choice) or
            ``'gumbel'`` (a hard Gumbel-softmax sample, as the official test code: stochastic). Default: 'argmax'.
        kernel_param: ``'activated'``: sigma = softplus, rho = ``rho_max`` tanh, opacity = sigmoid of the
            stored values; ``'raw'``: the stored values are used as they are (the official code). Default:
            'activated'.
        kernel_sharing: ``'pixel'``: every LR pixel uses its own chosen kernel; ``'patch_mean'``: every
            patch position uses the chosen kernels averaged over all patches of the batch (the official code;
            ``splatting: patches`` only). Default: 'pixel'.
        patch_mean_images: With ``patch_mean``, average over groups of this many consecutive images of a
            batch (4 reproduces the official batch 16 on 4 GPUs with DataParallel); 0 = the whole batch.
            Default: 0.
        splatting: ``'rasterizer'`` (analytic Gaussians at LR pixel centres, ``rasterize_gaussians``) or
            ``'patches'`` (the official per-patch sampled kernels, :mod:`gaussiansr_patches`).
            Default: 'rasterizer'.
        patch_size: (rows, columns) of a patch for ``splatting: patches``. Default: (7, 7).
        kernel_size: Side of the sampled kernel in output pixels for ``splatting: patches``. Default: 5.
        splat_clamp: (low, high) clamp of the splatted features (the official code clamps to [0, 1]);
            None for none. Default: None.
        rho_max: Kernel correlations are ``rho_max * tanh`` (``kernel_param: activated``). Default: 0.99.
        decoder_dim: Width of the LTE coef / freq maps. Default: 256.
        mlp_hidden: Hidden widths of the decoder MLP. Default: (256, 256, 256, 256).
        mlp_act: Activation of the decoder MLP, ``'relu'`` or ``'gelu'`` (official). Default: 'relu'.
        decoder_coords: How the decoder finds an output pixel's LR pixel and offset: ``'centres'`` (the LR
            pixel whose cell holds the output pixel centre; any window) or ``'liif'`` (LIIF's make_coord and
            nearest ``grid_sample``: ties between two LR pixels go to the even index; whole images only).
            Default: 'centres'.
        image_skip: Add the bicubic upsampling of the LR image to the decoder output (LTE). Default: True.
        norm_mean, norm_std: The network sees ``(lq - norm_mean) / norm_std`` and returns
            ``out * norm_std + norm_mean`` (the official data_norm is 0.5 / 0.5); a number or one per channel.
            Default: 0, 1.
        cutoff: Rasterizer cutoff in standard deviations; None uses the rasterizer's default.
        num_colors: Output channels. Default: 3.
        size_rule: The output size for a scale alone, ``rule(s * h)``: ``'round'`` (LIIF's, hence the official
            code's), ``'floor'`` or ``'ceil'`` (``utils.scale.scaled_size``). Default: 'round'.
    """

    field_depends_on_scale = False

    def __init__(self, encoder: Optional[Mapping[str, Any]] = None, num_kernels: int = 100,
                 sigma_init_range: Sequence[float] = (0.2, 3.0), opacity_init_logit: float = 1.0,
                 splat_channels: int = 8, gumbel_tau: float = 1.0, gumbel_hard: bool = True,
                 kernel_choice_eval: str = 'argmax', kernel_param: str = 'activated', kernel_sharing: str = 'pixel',
                 patch_mean_images: int = 0, splatting: str = 'rasterizer', patch_size: Sequence[int] = (7, 7),
                 kernel_size: int = 5, splat_clamp: Optional[Sequence[float]] = None, rho_max: float = 0.99,
                 decoder_dim: int = 256, mlp_hidden: Sequence[int] = (256, 256, 256, 256), mlp_act: str = 'relu',
                 decoder_coords: str = 'centres', image_skip: bool = True,
                 norm_mean: Union[float, Sequence[float]] = 0.0, norm_std: Union[float, Sequence[float]] = 1.0,
                 cutoff: Optional[float] = None, num_colors: int = 3, size_rule: str = 'round'):
        super().__init__(size_rule)
        side = math.isqrt(num_kernels) if isinstance(num_kernels, int) and num_kernels > 0 else 0
        if side * side != num_kernels or isinstance(num_kernels, bool):
            raise ValueError('num_kernels must be a positive square (the sigma grid is side x side), '
                             f'got {num_kernels!r}')
        if len(sigma_init_range) != 2 or not 0 < sigma_init_range[0] <= sigma_init_range[1]:
            raise ValueError(f'sigma_init_range must be (min, max) with 0 < min <= max, got {sigma_init_range!r}')
        if not gumbel_tau > 0:
            raise ValueError(f'gumbel_tau must be > 0, got {gumbel_tau!r}')
        if not 0 < rho_max < 1:
            raise ValueError(f'rho_max must be in (0, 1), got {rho_max!r}')
        self.check_cutoff(cutoff)
        self.kernel_choice_eval = _choice(kernel_choice_eval, _EVAL_CHOICES, 'kernel_choice_eval')
        self.kernel_param = _choice(kernel_param, _KERNEL_PARAMS, 'kernel_param')
        self.kernel_sharing = _choice(kernel_sharing, _KERNEL_SHARING, 'kernel_sharing')
        self.splatting = _choice(splatting, _SPLATTING, 'splatting')
        self.decoder_coords = _choice(decoder_coords, _DECODER_COORDS, 'decoder_coords')
        if self.kernel_sharing == 'patch_mean' and self.splatting != 'patches':
            raise ValueError("kernel_sharing: 'patch_mean' averages over patches: it needs splatting: 'patches'")
        if isinstance(patch_mean_images, bool) or not isinstance(patch_mean_images, int) or patch_mean_images < 0:
            raise ValueError('patch_mean_images must be an integer >= 0 (0: the whole batch), '
                             f'got {patch_mean_images!r}')
        if len(patch_size) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch_size):
            raise ValueError(f'patch_size must be two positive integers (rows, columns), got {patch_size!r}')
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f'kernel_size must be a positive integer, got {kernel_size!r}')
        if splat_clamp is not None and (len(splat_clamp) != 2 or not float(splat_clamp[0]) < float(splat_clamp[1])):
            raise ValueError(f'splat_clamp must be (low, high) with low < high, or None, got {splat_clamp!r}')
        channels = self.build_encoder(encoder, 'EDSREncoder')
        if isinstance(splat_channels, bool) or not isinstance(splat_channels, int) or not 0 < splat_channels < channels:
            raise ValueError(f'splat_channels must be an integer in [1, {channels - 1}] (encoder out_channels - 1), '
                             f'got {splat_channels!r}')
        self.splat_channels = splat_channels
        self.gumbel_tau = float(gumbel_tau)
        self.gumbel_hard = bool(gumbel_hard)
        self.patch_mean_images = patch_mean_images
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.kernel_size = kernel_size
        self.splat_clamp = None if splat_clamp is None else (float(splat_clamp[0]), float(splat_clamp[1]))
        self.rho_max = float(rho_max)
        self.image_skip = bool(image_skip)
        self.cutoff = cutoff
        # not saved: fixed by the options (the official checkpoints do not hold them either)
        self.register_buffer('norm_mean', _channel_values(norm_mean, 3, 'norm_mean'), persistent=False)
        self.register_buffer('norm_std', _channel_values(norm_std, 3, 'norm_std'), persistent=False)
        if not bool((self.norm_std != 0).all()):
            raise ValueError(f'norm_std must not be 0, got {norm_std!r}')
        self._normalises = bool((self.norm_mean != 0).any() or (self.norm_std != 1).any())

        self.classifier = nn.Conv2d(channels, num_kernels, 3, 1, 1)
        grid = torch.linspace(float(sigma_init_range[0]), float(sigma_init_range[1]), side)
        sigma_y, sigma_x = torch.meshgrid(grid, grid, indexing='ij')
        sigmas = torch.stack((sigma_x.reshape(-1), sigma_y.reshape(-1)), dim=-1)
        opacity = torch.full((num_kernels, ), float(opacity_init_logit))
        if self.kernel_param == 'raw':  # stored as used: the official parametrisation
            self.kernel_sigma = nn.Parameter(sigmas)
            self.kernel_opacity = nn.Parameter(torch.sigmoid(opacity))
        else:  # softplus keeps sigma > 0 while learning; initialised to the exact grid values
            self.kernel_sigma = nn.Parameter(sigmas + torch.log(-torch.expm1(-sigmas)))
            self.kernel_opacity = nn.Parameter(opacity)
        self.kernel_rho = nn.Parameter(torch.zeros(num_kernels))
        self.decoder = LocalTextureDecoder(channels, decoder_dim, mlp_hidden, num_colors, mlp_act)

    # --------------------------------------------------------------------------------- kernel bank
    def kernel_bank(self) -> torch.Tensor:
        """(K, 4) kernel parameters (sigma_x, sigma_y, rho, opacity) after their activations."""
        if self.kernel_param == 'raw':
            return torch.cat((self.kernel_sigma, self.kernel_rho.unsqueeze(-1), self.kernel_opacity.unsqueeze(-1)),
                             dim=-1)
        return torch.cat((F.softplus(self.kernel_sigma), self.rho_max * torch.tanh(self.kernel_rho).unsqueeze(-1),
                          torch.sigmoid(self.kernel_opacity).unsqueeze(-1)), dim=-1)

    def kernel_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) logits -> (B, K, h, w) choice weights.

        Training: Gumbel-softmax (``gumbel_tau``, ``gumbel_hard``). Evaluation: ``kernel_choice_eval``.
        The Gumbel noise is drawn for the (B * h * w, K) layout the official code uses, so the same seed
        gives the same choices.
        """
        if self.training or self.kernel_choice_eval == 'gumbel':
            batch, num_kernels, height, width = logits.shape
            flat = logits.permute(0, 2, 3, 1).contiguous().view(-1, num_kernels)
            hard = self.gumbel_hard if self.training else True
            sample = F.gumbel_softmax(flat, tau=self.gumbel_tau, hard=hard)
            return sample.view(batch, height, width, num_kernels).permute(0, 3, 1, 2).contiguous()
        if self.kernel_choice_eval == 'softmax':
            return torch.softmax(logits, dim=1)
        return F.one_hot(logits.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)

    # ------------------------------------------------------------------------------ normalisation
    def normalise(self, lq: torch.Tensor) -> torch.Tensor:
        """``(lq - norm_mean) / norm_std`` (identity with the defaults)."""
        if not self._normalises:
            return lq
        return (lq - self.norm_mean.to(lq.dtype)) / self.norm_std.to(lq.dtype)

    def denormalise(self, out: torch.Tensor) -> torch.Tensor:
        """``out * norm_std + norm_mean`` for (B, 3, ...) outputs (identity with the defaults)."""
        if not self._normalises:
            return out
        shape = (1, -1) + (1, ) * (out.dim() - 2)
        return out * self.norm_std.to(out.dtype).view(shape) + self.norm_mean.to(out.dtype).view(shape)

    # ------------------------------------------------------------------------------- encode / render
    def encode_features(self, lq: torch.Tensor) -> GaussianSRField:
        """Encode ``lq`` (B, 3, h, w) into its scale-free field (the splatted stream's Gaussians + LR features)."""
        height, width = int(lq.shape[-2]), int(lq.shape[-1])
        batch = lq.shape[0]
        lq = self.normalise(lq)
        feat = self.encoder(lq)
        logits = self.classifier(feat)
        weights = self.kernel_weights(logits)
        bank = self.kernel_bank()
        splat_feat, stream = feat[:, :self.splat_channels], feat[:, self.splat_channels:]
        if self.splatting == 'patches':
            params = patch_parameters(resample_to_patch_grid(weights, self.patch_size), bank, self.patch_size,
                                      self.kernel_sharing, self.patch_mean_images)
            patches = PatchGaussians(resample_to_patch_grid(splat_feat, self.patch_size), params, self.patch_size)
            return GaussianSRField(gaussians=None, features=stream, lq=lq, kernel_index=logits.argmax(dim=1),
                                   patches=patches)
        params = weights.flatten(2).transpose(1, 2) @ bank.to(weights.dtype)  # (B, h * w, 4)
        means = reference_grid(height, width, device=lq.device, dtype=feat.dtype).expand(batch, -1, -1)
        opacity = params[..., 3]
        colors = splat_feat.flatten(2).transpose(1, 2) * opacity.unsqueeze(-1)
        gaussians = GaussianField(means=means, sigmas=params[..., :2], rhos=params[..., 2], colors=colors,
                                  lr_size=(height, width), opacities=opacity)
        return GaussianSRField(gaussians=gaussians, features=stream, lq=lq, kernel_index=logits.argmax(dim=1))

    def decode_field(self, features: GaussianSRField, target: Optional[Target]) -> GaussianSRField:
        """The scale-free field, remembering ``target`` (``splatting: patches`` sizes its patches by its scale)."""
        return dataclasses.replace(features, target=target)

    def _patch_scale(self, field: GaussianSRField, size: Size, scale: Optional[ScaleLike]) -> ScalePair:
        """The scale that sizes the patches: ``scale``, else the field's target scale when rendered at the target's
        size, else size / LR."""
        if scale is not None:
            return to_scale_pair(scale)
        if field.target is not None and tuple(field.target.size) == tuple(size):
            return field.target.scale
        return size[0] / field.lr_size[0], size[1] / field.lr_size[1]

    def render(self, field: GaussianSRField, out_size: Size, window: Optional[Window] = None,
               scale: Optional[ScaleLike] = None, pixel_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Render ``field`` at ``out_size`` (B, 3, Ho, Wo): splat, bicubic stream, decoder, image skip.

        ``window`` (top, left, bottom, right) in LR pixels renders only that part of the image plane
        (a zoom; ``splatting: rasterizer`` and ``decoder_coords: centres`` only); None renders the whole
        image. ``scale`` sizes the patches of ``splatting: patches`` (default: the field's target scale at its
        size, else out_size / LR size). With ``pixel_index`` (B, Q) flat indices into the (Ho, Wo) output, only
        those pixels are decoded and the result is (B, 3, Q) (sampled-pixel training).
        """
        if not isinstance(field, GaussianSRField):
            raise TypeError(f'field must be a GaussianSRField from GaussianSR.encode, got {type(field).__name__}')
        size = (int(out_size[0]), int(out_size[1]))
        view = check_window(window, field.lr_size)
        if view != whole_window(field.lr_size) and not self.has_window_renders:
            raise ValueError("a window render needs splatting: 'rasterizer' and decoder_coords: 'centres' "
                             f'(this network renders whole images only), got window {window!r}')
        if (pixel_index is None and not torch.is_grad_enabled() and self.has_window_renders
                and size[0] * size[1] > DECODER_BAND_PIXELS):
            return self._render_in_bands(field, size, view)
        return self._render_view(field, size, view, scale, pixel_index)

    def _render_in_bands(self, field: GaussianSRField, size: Size, view: Window) -> torch.Tensor:
        """:meth:`render` of a large output band by band of rows, each a window render (the same sample points)
        with the decoder's row of context above and below: no output-sized feature map is ever held."""
        height, width = size
        top, left, bottom, right = view
        pitch = (bottom - top) / height  # LR rows per output row
        context = self.decoder.context_rows
        rows = max(1, DECODER_BAND_PIXELS // width - 2 * context)  # a band and its context: one decoder pass

        def band(lo: int, hi: int) -> torch.Tensor:
            band_view = (top + lo * pitch, left, bottom if hi == height else top + hi * pitch, right)
            return self._render_view(field, (hi - lo, width), band_view, None, None)

        return in_row_bands(height, rows, context, band)

    def _render_view(self, field: GaussianSRField, size: Size, view: Window, scale: Optional[ScaleLike],
                     pixel_index: Optional[torch.Tensor]) -> torch.Tensor:
        ys, xs = sample_positions(view, size, field.features.device, torch.float32)
        if field.patches is not None:
            patches = field.patches
            splat = splat_patches(patches.features, patches.params, patches.patch_size, self.kernel_size,
                                  self._patch_scale(field, size, scale), size, self.splat_clamp)
            stream = F.interpolate(field.features, size=size, mode='bicubic', align_corners=False)
        else:
            splat = window_field(field.gaussians, view).render(size, cutoff=self.cutoff)
            if self.splat_clamp is not None:
                splat = torch.clamp(splat, *self.splat_clamp)
            stream = _bicubic_at(field.features, ys, xs)
        feature = torch.cat((splat, stream.to(splat.dtype)), dim=1)
        del splat, stream  # output-sized: gone before the decoder runs
        if self.decoder_coords == 'liif':
            rel, cell = liif_offsets_and_cell(field.lr_size, size, feature.device)
            rel, cell = rel.to(feature.dtype), cell.to(feature.dtype)
        else:  # offsets from the nearest LR pixel centre and the cell size, in LTE's half-LR-pixel units
            rel_y = 2 * (ys - torch.floor(ys) - 0.5)
            rel_x = 2 * (xs - torch.floor(xs) - 0.5)
            rel = torch.stack(torch.meshgrid(rel_x, rel_y, indexing='xy'), dim=0).to(feature.dtype)  # (2, Ho, Wo)
            top, left, bottom, right = view
            cell = feature.new_tensor([2 * (right - left) / size[1], 2 * (bottom - top) / size[0]])
        out = self.decoder(feature, rel, cell, pixel_index)
        if self.image_skip:
            skip = _bicubic_at(field.lq, ys, xs).to(out.dtype)
            out = out + (skip if pixel_index is None else gather_pixels(skip, pixel_index))
        return self.denormalise(out)

    @property
    def has_window_renders(self) -> bool:
        """Whether :meth:`render` takes a window (rasterizer splatting with centre coordinates), and so renders a
        large output band by band of rows."""
        return self.splatting == 'rasterizer' and self.decoder_coords == 'centres'

    def bytes_per_output_pixel(self) -> float:
        """The output-sized maps of :meth:`render` without autograd. Rasterizer splatting with centre coordinates
        renders large outputs in bands: the float result alone (and slack). Otherwise (the official patches and
        LIIF coordinates): the decoder's input features, the splatted and bicubic streams they are concatenated
        from, offsets, skip and result (the decoder itself runs in bands)."""
        if self.has_window_renders:
            return 16.0
        return 4.0 * (2 * self.decoder.coef.in_channels + 16)

    def gaussians(self, field: GaussianSRField) -> Optional[GaussianField]:
        """The splatted stream's Gaussians (one per LR pixel; None with ``splatting: patches``)."""
        return field.gaussians

    def render_pixels(self, field: GaussianSRField, out_size: Size, pixel_index: torch.Tensor) -> torch.Tensor:
        """Only the pixels ``pixel_index`` (B, Q) are decoded (the splatting still covers the whole output)."""
        return self.render(field, out_size, pixel_index=pixel_index)
