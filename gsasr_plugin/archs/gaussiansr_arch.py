"""GaussianSR: "High Fidelity 2D Gaussian Splatting for Arbitrary-Scale Image Super-Resolution"
(Hu et al., AAAI 2025, arXiv 2407.18046).

Every LR pixel's feature becomes a continuous Gaussian field instead of a point sample; an LTE-style
local texture decoder turns the rendered feature map into RGB.

Layout:

1. EDSR-baseline encoder without upsampler: (B, 64, h, w) features (any ``ENCODER_REGISTRY`` encoder).
2. Selective Gaussian splatting: a 3x3 conv classifies each LR pixel into one of ``num_kernels`` (100)
   learnable Gaussian kernels, (sigma_x, sigma_y) initialised on a 10 x 10 grid over ``sigma_init_range``
   LR pixels, rho 0, opacity sigmoid(1). Training draws the choice with straight-through Gumbel-softmax
   (tau 1: one-hot forward, soft gradient); evaluation takes the arg-max per pixel, deterministically
   (the official code still samples noise at test time and averages the chosen kernels over all
   patches).
3. Dual stream: the first ``splat_channels`` (8) feature channels are splatted at the output
   resolution by ``rasterize_gaussians`` (the features are the Gaussians' ``colors``, Gaussians at the
   LR pixel centres, amplitude times opacity; no per-patch ``grid_sample``, so no patch seams); the
   other 56 channels are upsampled bicubically; both are concatenated (the decoder's 3x3 convs fuse them).
4. Local texture decoder (LTE, Lee & Jin 2022): coefficient and frequency 3x3 convs to 256 channels; the
   frequencies (128 pairs) are projected on each output pixel's offset from its LR pixel centre, a
   phase is a linear map of the cell size (per axis), and ``coef * [cos, sin](pi * (freq . offset +
   phase))`` goes through an MLP 256 -> 256 x 4 -> 3; a bicubic upsampling of the LR image is added.

The Gaussians and the LR features do not depend on the scale (``field_depends_on_scale = False``): the
field is encoded once and each render runs the rasterizer, the bicubic upsampling and the decoder at the
output size (the decoder's phase uses that render's cell size). ~1.84 M parameters with the defaults.
"""
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.encoder_registry import build_encoder
from gsasr_plugin.archs.gaussian_field import GaussianField
from gsasr_plugin.utils.scale import ScaleLike, check_out_size, lr_size_of, resolve_scale_and_size

__all__ = ['GaussianSR', 'GaussianSRField', 'LocalTextureDecoder', 'Window', 'check_window', 'window_field',
           'sample_positions']

# A view of the LR image plane: (top, left, bottom, right) in LR pixels (the image is [0, H] x [0, W]).
Window = Tuple[float, float, float, float]


def check_window(window: Optional[Sequence[float]], lr_size: Tuple[int, int]) -> Window:
    """The whole image for None, else the window as floats with top < bottom and left < right."""
    if window is None:
        return 0.0, 0.0, float(lr_size[0]), float(lr_size[1])
    if not isinstance(window, (tuple, list)) or len(window) != 4:
        raise ValueError(f'window must be (top, left, bottom, right) in LR pixels, got {window!r}')
    top, left, bottom, right = (float(v) for v in window)
    if not (math.isfinite(top + left + bottom + right) and bottom > top and right > left):
        raise ValueError(f'window must have bottom > top and right > left, got {window!r}')
    return top, left, bottom, right


def window_field(field: GaussianField, window: Optional[Sequence[float]]) -> GaussianField:
    """The Gaussians seen through ``window``, mapped onto the whole LR plane [0, H] x [0, W].

    Rendering the result at (Ho, Wo) samples the window at Ho x Wo points: a zoom without re-encoding.
    An axis-wise affine map leaves each Gaussian's correlation unchanged.
    """
    height, width = field.lr_size
    top, left, bottom, right = check_window(window, (height, width))
    if (top, left, bottom, right) == (0.0, 0.0, float(height), float(width)):
        return field
    stretch = field.means.new_tensor([width / (right - left), height / (bottom - top)])
    origin = field.means.new_tensor([left, top])
    return GaussianField(means=(field.means - origin) * stretch, sigmas=field.sigmas * stretch, rhos=field.rhos,
                         colors=field.colors, lr_size=(height, width), opacities=field.opacities)


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
class GaussianSRField:
    """What GaussianSR encodes once: the splatted stream's Gaussians and the bicubic stream's features.

    Attributes:
        gaussians: one Gaussian per LR pixel (at its centre), ``colors`` = the first ``splat_channels``
            feature channels times opacity.
        features: (B, C - splat_channels, h, w) features of the bicubic stream.
        lq: (B, 3, h, w) the LR image (for the decoder's bicubic image skip).
        kernel_index: (B, h, w) arg-max kernel of each LR pixel, the evaluation choice (for inspection).
    """
    gaussians: GaussianField
    features: torch.Tensor
    lq: torch.Tensor
    kernel_index: Optional[torch.Tensor] = None

    @property
    def lr_size(self) -> Tuple[int, int]:
        return tuple(self.gaussians.lr_size)


class LocalTextureDecoder(nn.Module):
    """LTE-style decoder of a feature map sampled at output pixel centres.

    Args:
        in_channels: Channels of the rendered feature map.
        hidden_dim: Width of coef / freq (and of the MLP input). Default: 256.
        mlp_hidden: Hidden widths of the per-pixel MLP. Default: (256, 256, 256, 256).
        out_channels: Output channels. Default: 3.
    """

    def __init__(self, in_channels: int, hidden_dim: int = 256, mlp_hidden: Sequence[int] = (256, 256, 256, 256),
                 out_channels: int = 3):
        super().__init__()
        if hidden_dim < 2 or hidden_dim % 2:
            raise ValueError(f'decoder_dim must be an even integer >= 2, got {hidden_dim!r}')
        self.coef = nn.Conv2d(in_channels, hidden_dim, 3, 1, 1)
        self.freq = nn.Conv2d(in_channels, hidden_dim, 3, 1, 1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        layers, width = [], hidden_dim
        for size in mlp_hidden:  # an MLP per output pixel, as 1x1 convs
            layers += [nn.Conv2d(width, int(size), 1), nn.ReLU(inplace=True)]
            width = int(size)
        layers.append(nn.Conv2d(width, out_channels, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor, rel: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """feature (B, C, Ho, Wo); rel (2, Ho, Wo) offsets (x, y) from the LR pixel centre in half LR pixels
        (LTE's units, in [-1, 1)); cell (2,) = output pixel size (x, y) in the same units."""
        coef = self.coef(feature)
        freq = self.freq(feature)
        batch, channels, height, width = freq.shape
        freq = (freq.view(batch, channels // 2, 2, height, width) * rel.unsqueeze(0).unsqueeze(0)).sum(2)
        freq = freq + self.phase(cell.to(freq.dtype)).view(1, -1, 1, 1)
        waves = torch.cat((torch.cos(math.pi * freq), torch.sin(math.pi * freq)), dim=1)
        return self.mlp(coef * waves)


@ARCH_REGISTRY.register()
class GaussianSR(nn.Module):
    """GaussianSR: per-pixel Gaussian feature fields, splatted at any size, decoded by an LTE decoder.

    Args:
        encoder: Options of the LR feature encoder. Default: ``{'type': 'EDSRBaseline'}``.
        num_kernels: Size of the learnable Gaussian kernel bank; a square for the init grid. Default: 100.
        sigma_init_range: (min, max) of the initial sigma grid, LR pixels. Default: (0.2, 3.0).
        opacity_init_logit: Initial opacity logit of every kernel (opacity = sigmoid). Default: 1.
        splat_channels: Feature channels rendered by splatting; the rest are upsampled bicubically. Default: 8.
        gumbel_tau: Gumbel-softmax temperature while training. Default: 1.
        gumbel_hard: Straight-through one-hot choices while training (the evaluation choice is one-hot
            too); False mixes the kernels' parameters by the soft Gumbel weights. Default: True.
        rho_max: Kernel correlations are ``rho_max * tanh``. Default: 0.99.
        decoder_dim: Width of the LTE coef / freq maps. Default: 256.
        mlp_hidden: Hidden widths of the decoder MLP. Default: (256, 256, 256, 256).
        image_skip: Add the bicubic upsampling of the LR image to the decoder output (LTE). Default: True.
        cutoff: Rasterizer cutoff in standard deviations; None uses the rasterizer's default.
        num_colors: Output channels. Default: 3.
    """

    field_depends_on_scale = False
    field_class = GaussianSRField  # what encode returns (not a plain GaussianField)

    def __init__(self, encoder: Optional[Mapping[str, Any]] = None, num_kernels: int = 100,
                 sigma_init_range: Sequence[float] = (0.2, 3.0), opacity_init_logit: float = 1.0,
                 splat_channels: int = 8, gumbel_tau: float = 1.0, gumbel_hard: bool = True, rho_max: float = 0.99,
                 decoder_dim: int = 256, mlp_hidden: Sequence[int] = (256, 256, 256, 256), image_skip: bool = True,
                 cutoff: Optional[float] = None, num_colors: int = 3):
        super().__init__()
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
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f'cutoff must be > 0 or None, got {cutoff!r}')
        self.encoder = build_encoder(encoder if encoder is not None else {'type': 'EDSRBaseline'})
        channels = getattr(self.encoder, 'out_channels', None)
        if not isinstance(channels, int):
            raise ValueError(f'encoder {type(self.encoder).__name__} must expose an int attribute out_channels')
        if isinstance(splat_channels, bool) or not isinstance(splat_channels, int) or not 0 < splat_channels < channels:
            raise ValueError(f'splat_channels must be an integer in [1, {channels - 1}] (encoder out_channels - 1), '
                             f'got {splat_channels!r}')
        self.splat_channels = splat_channels
        self.gumbel_tau = float(gumbel_tau)
        self.gumbel_hard = bool(gumbel_hard)
        self.rho_max = float(rho_max)
        self.image_skip = bool(image_skip)
        self.cutoff = cutoff

        self.classifier = nn.Conv2d(channels, num_kernels, 3, 1, 1)
        grid = torch.linspace(float(sigma_init_range[0]), float(sigma_init_range[1]), side)
        sigma_y, sigma_x = torch.meshgrid(grid, grid, indexing='ij')
        sigmas = torch.stack((sigma_x.reshape(-1), sigma_y.reshape(-1)), dim=-1)
        # softplus keeps sigma > 0 while learning; initialised to the exact grid values
        self.kernel_sigma = nn.Parameter(sigmas + torch.log(-torch.expm1(-sigmas)))
        self.kernel_rho = nn.Parameter(torch.zeros(num_kernels))
        self.kernel_opacity = nn.Parameter(torch.full((num_kernels, ), float(opacity_init_logit)))
        self.decoder = LocalTextureDecoder(channels, decoder_dim, mlp_hidden, num_colors)

    # --------------------------------------------------------------------------------- kernel bank
    def kernel_bank(self) -> torch.Tensor:
        """(K, 4) kernel parameters (sigma_x, sigma_y, rho, opacity) after their activations."""
        return torch.cat((F.softplus(self.kernel_sigma), self.rho_max * torch.tanh(self.kernel_rho).unsqueeze(-1),
                          torch.sigmoid(self.kernel_opacity).unsqueeze(-1)), dim=-1)

    def kernel_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) logits -> (B, K, h, w) choice weights: Gumbel-softmax in training, arg-max one-hot else."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.gumbel_tau, hard=self.gumbel_hard, dim=1)
        return F.one_hot(logits.argmax(dim=1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)

    # ------------------------------------------------------------------ encode / render / forward
    def encode(self, lq: torch.Tensor, scale: Optional[ScaleLike] = None,
               out_size: Optional[Sequence[int]] = None) -> GaussianSRField:
        """Encode ``lq`` (B, 3, h, w) into its scale-free field (one Gaussian per LR pixel + LR features).

        ``scale`` / ``out_size`` are accepted for interface compatibility and only validated.
        """
        height, width = lr_size_of(lq)
        batch = lq.shape[0]
        if scale is not None or out_size is not None:
            resolve_scale_and_size((height, width), scale, out_size)  # validation only
        feat = self.encoder(lq)
        logits = self.classifier(feat)
        weights = self.kernel_weights(logits).flatten(2).transpose(1, 2)  # (B, h * w, K)
        params = weights @ self.kernel_bank().to(weights.dtype)  # (B, h * w, 4)
        ys = torch.arange(height, device=lq.device, dtype=feat.dtype) + 0.5
        xs = torch.arange(width, device=lq.device, dtype=feat.dtype) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        means = torch.stack((grid_x, grid_y), dim=-1).view(1, height * width, 2).expand(batch, -1, -1)
        opacity = params[..., 3]
        colors = feat[:, :self.splat_channels].flatten(2).transpose(1, 2) * opacity.unsqueeze(-1)
        gaussians = GaussianField(means=means, sigmas=params[..., :2], rhos=params[..., 2], colors=colors,
                                  lr_size=(height, width), opacities=opacity)
        return GaussianSRField(gaussians=gaussians, features=feat[:, self.splat_channels:], lq=lq,
                               kernel_index=logits.argmax(dim=1))

    def render(self, field: GaussianSRField, out_size: Sequence[int],
               window: Optional[Sequence[float]] = None) -> torch.Tensor:
        """Render ``field`` at ``out_size`` (B, 3, Ho, Wo): splat, bicubic stream, decoder, image skip.

        ``window`` (top, left, bottom, right) in LR pixels renders only that part of the image plane
        (a zoom); None renders the whole image.
        """
        if not isinstance(field, GaussianSRField):
            raise TypeError(f'field must be a GaussianSRField from GaussianSR.encode, got {type(field).__name__}')
        size = check_out_size(out_size)
        view = check_window(window, field.lr_size)
        splat = window_field(field.gaussians, view).render(size, cutoff=self.cutoff)
        ys, xs = sample_positions(view, size, splat.device, torch.float32)
        feature = torch.cat((splat, _bicubic_at(field.features, ys, xs).to(splat.dtype)), dim=1)
        # offsets from the nearest LR pixel centre and the cell size, in LTE's half-LR-pixel units
        rel_y = 2 * (ys - torch.floor(ys) - 0.5)
        rel_x = 2 * (xs - torch.floor(xs) - 0.5)
        rel = torch.stack(torch.meshgrid(rel_x, rel_y, indexing='xy'), dim=0).to(feature.dtype)  # (2, Ho, Wo)
        top, left, bottom, right = view
        cell = feature.new_tensor([2 * (right - left) / size[1], 2 * (bottom - top) / size[0]])
        out = self.decoder(feature, rel, cell)
        if self.image_skip:
            out = out + _bicubic_at(field.lq, ys, xs).to(out.dtype)
        return out

    def forward(self, lq: torch.Tensor, scale: Optional[ScaleLike] = None,
                out_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Super-resolve ``lq`` to ``out_size`` or, without it, to (round(h * s_h), round(w * s_w))."""
        _, size = resolve_scale_and_size(lr_size_of(lq), scale, out_size)
        return self.render(self.encode(lq), size)
