"""ContinuousSR: "Pixel to Gaussian: Ultra-Fast Continuous Super-Resolution with 2D Gaussian Modeling"
(Peng et al., 2025, arXiv 2503.06617).

The LR image is turned once into a scale-free field of 2D Gaussians; every output size is then one pass
of the rasterizer (encode once, render many).

Layout (as in the authors' reproduction, github peylnog/ContinuousSR):

1. A SwinIR or HAT encoder (any ``ENCODER_REGISTRY`` name) gives 64-channel LR features; a x4
   pixel-shuffle upsampler (SwinIR's / HAT's ``upsample``: conv 64 -> 256, PixelShuffle(2), twice) takes
   them to 4x the LR size; the final ``conv_last`` of those networks is not used.
2. PixelUnshuffle(2) folds the 4x map into (B, 256, 2h, 2w): one 256-d token per Gaussian, 4 Gaussians
   per LR pixel, their reference points at the centres of the 2 x 2 sub-cells of each LR pixel.
3. Colour Gaussian mapping: an MLP (256 -> 512 -> 1024 -> 256 -> 128 -> 64 -> 3) per token; opacity 1.
4. DGP-driven covariance weighting: a fixed dictionary of 730 Cholesky factors (l11, l21, l22), the
   Cartesian product of 9 values each plus the zero factor; keys are an MLP embedding of the entries
   (3 -> 256 -> 512 -> 512 -> 512 -> 512), queries a 3x3 conv (256 -> 512) + LeakyReLU of the token map;
   the softmax of query . key mixes the dictionary's factors into each Gaussian's factor.
5. Adaptive position drifting: offset = ``max_offset * tanh(MLP)`` LR pixels from the reference point.

Units of the covariance. The authors render with gsplat at the output size, in output pixels, after
multiplying the mixed factor by ``scale / 4`` per axis (l11 by s_w, l21 and l22 by s_h). Going back to LR
pixels (x / s_w, y / s_h) removes the scale exactly: ``L_lr = L_dict / 4``. So the dictionary is in
quarter-LR-pixel units (output pixels at x4) and the field in LR pixels is the same at every scale,
anisotropic ones included. Here ``Sigma = L_lr L_lr^T + min_sigma^2 I`` (the floor keeps the
degenerate dictionary entries renderable) is converted to ``sigma_x = sqrt(Sigma_xx)``,
``sigma_y = sqrt(Sigma_yy)``, ``rho = Sigma_xy / (sigma_x sigma_y)`` for ``rasterize_gaussians``.
"""
import itertools
from typing import Any, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.encoder_registry import build_encoder
from gsasr_plugin.archs.gaussian_field import GaussianField
from gsasr_plugin.utils.scale import ScaleLike, check_out_size, lr_size_of, resolve_scale_and_size

__all__ = ['ContinuousSR', 'DGP_CHOLESKY_VALUES', 'cholesky_dictionary', 'cholesky_to_sigma_rho', 'make_mlp']

# The Deep Gaussian Prior values of the official dictionary, per Cholesky entry (quarter LR pixels).
DGP_CHOLESKY_VALUES: Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]] = (
    (0.0, 0.41, 0.62, 0.98, 1.13, 1.29, 1.64, 1.85, 2.36),  # l11
    (-0.86, -0.36, -0.16, 0.19, 0.34, 0.49, 0.84, 1.04, 1.54),  # l21
    (0.0, 0.33, 0.53, 0.88, 1.03, 1.18, 1.53, 1.73, 2.23),  # l22
)


def cholesky_dictionary(values: Sequence[Sequence[float]] = DGP_CHOLESKY_VALUES) -> torch.Tensor:
    """(len(l11) * len(l21) * len(l22) + 1, 3) rows (l11, l21, l22): the Cartesian product plus zero."""
    if len(values) != 3 or any(len(v) == 0 for v in values):
        raise ValueError(f'dictionary_values must hold three non-empty lists (l11, l21, l22), got {values!r}')
    rows = list(itertools.product(*[[float(x) for x in v] for v in values])) + [(0.0, 0.0, 0.0)]
    return torch.tensor(rows, dtype=torch.float32)


def cholesky_to_sigma_rho(factors: torch.Tensor, min_sigma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lower-triangular factors (..., 3) = (l11, l21, l22) -> sigmas (..., 2) and rhos (...).

    ``Sigma = L L^T + min_sigma^2 I`` with ``L = [[l11, 0], [l21, l22]]`` (x first, as gsplat).
    """
    l11, l21, l22 = factors.unbind(-1)
    floor = min_sigma * min_sigma
    var_x = l11 * l11 + floor
    var_y = l21 * l21 + l22 * l22 + floor
    cov_xy = l11 * l21
    sigma_x, sigma_y = var_x.sqrt(), var_y.sqrt()
    rho = cov_xy / (sigma_x * sigma_y)
    # |rho| < 1 holds exactly (det Sigma >= floor^2 > 0); the clamp only guards float rounding
    return torch.stack((sigma_x, sigma_y), dim=-1), rho.clamp(-1 + 1e-6, 1 - 1e-6)


def make_mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """Linear-ReLU layers through ``hidden``, then a last Linear (the LIIF-style MLP)."""
    layers, width = [], in_features
    for size in hidden:
        layers += [nn.Linear(width, int(size)), nn.ReLU(inplace=True)]
        width = int(size)
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


@ARCH_REGISTRY.register()
class ContinuousSR(nn.Module):
    """ContinuousSR: a scale-free 2D Gaussian field from the LR image, rendered at any size.

    Args:
        encoder: Options of the LR encoder (``{'type': 'SwinIR', ...}`` or ``HAT``; any encoder with
            ``out_channels``). ``pretrained: PATH`` loads an official x4 checkpoint into it; with
            ``load_upsampler`` its ``upsample.0`` / ``upsample.2`` convs also initialise ours.
            Default: SwinIR (classical-SR size).
        num_feat: Channels of the 4x feature map (the upsampler's width). Default: 64.
        upscale: Upsampling of the encoder features before unshuffling; a power of 2. Default: 4.
        unshuffle: PixelUnshuffle factor; ``(upscale / unshuffle) ** 2`` Gaussians per LR pixel. Default: 2.
        color_hidden: Hidden widths of the colour MLP. Default: (512, 1024, 256, 128, 64).
        offset_hidden: Hidden widths of the offset MLP. Default: (512, 1024, 256, 128, 64).
        key_hidden: Hidden widths of the dictionary-embedding MLP. Default: (256, 512, 512, 512).
        attn_dim: Width of queries and keys. Default: 512.
        dictionary_values: Values of l11, l21, l22 whose Cartesian product (plus zero) is the dictionary,
            in units of ``dictionary_unit`` LR pixels. Default: the paper's DGP values.
        dictionary_unit: LR pixels per dictionary unit. Default: 0.25 (the official ``/ 4``).
        min_sigma: Isotropic floor of the standard deviation in LR pixels (added in variance). Default: 0.02.
        max_offset: Largest drift of a Gaussian from its reference point, LR pixels. Default: 1.
        load_upsampler: Initialise the upsampler from ``encoder: pretrained`` (keys ``upsample.0/2``).
            Default: True.
        cutoff: Rasterizer cutoff in standard deviations; None uses the rasterizer's default.
        num_colors: Output channels. Default: 3.
    """

    field_depends_on_scale = False

    def __init__(self, encoder: Optional[Mapping[str, Any]] = None, num_feat: int = 64, upscale: int = 4,
                 unshuffle: int = 2, color_hidden: Sequence[int] = (512, 1024, 256, 128, 64),
                 offset_hidden: Sequence[int] = (512, 1024, 256, 128, 64),
                 key_hidden: Sequence[int] = (256, 512, 512, 512), attn_dim: int = 512,
                 dictionary_values: Sequence[Sequence[float]] = DGP_CHOLESKY_VALUES, dictionary_unit: float = 0.25,
                 min_sigma: float = 0.02, max_offset: float = 1.0, load_upsampler: bool = True,
                 cutoff: Optional[float] = None, num_colors: int = 3):
        super().__init__()
        stages = self._check_options(upscale, unshuffle, num_feat, attn_dim, dictionary_unit, min_sigma, max_offset,
                                     cutoff)
        encoder_opt = dict(encoder) if encoder is not None else {'type': 'SwinIR'}
        self.encoder = build_encoder(encoder_opt)
        in_channels = getattr(self.encoder, 'out_channels', None)
        if not isinstance(in_channels, int):
            raise ValueError(f'encoder {type(self.encoder).__name__} must expose an int attribute out_channels')
        self.upscale, self.unshuffle = upscale, unshuffle
        self.gaussians_per_side = upscale // unshuffle
        self.dictionary_unit = float(dictionary_unit)
        self.min_sigma = float(min_sigma)
        self.max_offset = float(max_offset)
        self.cutoff = cutoff

        # SwinIR / HAT's pixel-shuffle upsampler (module indices match their ``upsample.0`` / ``upsample.2``)
        layers = []
        width = in_channels
        for _ in range(stages):
            layers += [nn.Conv2d(width, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
            width = num_feat
        self.upsample = nn.Sequential(*layers)
        token_dim = width * unshuffle * unshuffle
        self.token_dim = token_dim

        self.register_buffer('dictionary', cholesky_dictionary(dictionary_values), persistent=False)
        self.color_mlp = make_mlp(token_dim, color_hidden, num_colors)
        self.offset_mlp = make_mlp(token_dim, offset_hidden, 2)
        self.query = nn.Sequential(nn.Conv2d(token_dim, attn_dim, 3, 1, 1), nn.LeakyReLU(0.01, inplace=True))
        self.key_mlp = make_mlp(3, key_hidden, attn_dim)

        if encoder_opt.get('pretrained') and load_upsampler and stages:
            self._load_pretrained_upsampler(encoder_opt['pretrained'], encoder_opt.get('param_key'))

    @staticmethod
    def _check_options(upscale, unshuffle, num_feat, attn_dim, dictionary_unit, min_sigma, max_offset, cutoff) -> int:
        for name, value in (('upscale', upscale), ('unshuffle', unshuffle), ('num_feat', num_feat),
                            ('attn_dim', attn_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value!r}')
        stages = upscale.bit_length() - 1
        if 1 << stages != upscale:
            raise ValueError(f'upscale must be a power of 2 (1, 2, 4, 8), got {upscale}')
        if upscale % unshuffle:
            raise ValueError(f'unshuffle ({unshuffle}) must divide upscale ({upscale})')
        for name, value in (('dictionary_unit', dictionary_unit), ('min_sigma', min_sigma),
                            ('max_offset', max_offset)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f'{name} must be > 0, got {value!r}')
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f'cutoff must be > 0 or None, got {cutoff!r}')
        return stages

    def _load_pretrained_upsampler(self, path: str, param_key: Optional[str]) -> None:
        """Copy the official ``upsample.{0,2}`` convs of the encoder's checkpoint into ``self.upsample``."""
        from basicsr.utils import get_root_logger

        from gsasr_plugin.archs.pretrained import extract_state_dict
        from gsasr_plugin.utils.safe_load import load_torch_file
        checkpoint = load_torch_file(str(path), "encoder 'pretrained' checkpoint")
        state, _ = extract_state_dict(checkpoint, param_key, str(path))
        ours = self.upsample.state_dict()
        found = {key: state[f'upsample.{key}'] for key in ours if f'upsample.{key}' in state}
        logger = get_root_logger()
        if set(found) != set(ours):
            logger.warning(f'{path} has no x{self.upscale} pixel-shuffle upsampler (upsample.0 / upsample.2) '
                           'for ContinuousSR; the upsampler stays randomly initialised')
            return
        wrong = [f'upsample.{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}' for k, v in found.items()
                 if v.shape != ours[k].shape]
        if wrong:
            raise ValueError(f'{path}: the upsampler does not fit ContinuousSR (num_feat / upscale): '
                             + '; '.join(wrong))
        self.upsample.load_state_dict(found)
        logger.info(f'Loaded the x{self.upscale} upsampler of ContinuousSR from {path}')

    # ------------------------------------------------------------------ encode / render / forward
    def tokens(self, lq: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> per-Gaussian token map (B, token_dim, r h, r w), r = Gaussians per LR side."""
        feat = self.upsample(self.encoder(lq))
        return F.pixel_unshuffle(feat, self.unshuffle) if self.unshuffle > 1 else feat

    def covariance_factors(self, token_map: torch.Tensor) -> torch.Tensor:
        """DGP-driven covariance weighting: (B, D, H, W) -> mixed Cholesky factors (B, H * W, 3), LR pixels."""
        query = self.query(token_map).flatten(2).transpose(1, 2)  # (B, N, A)
        keys = self.key_mlp(self.dictionary.to(query.dtype))  # (K, A)
        weights = torch.softmax(query @ keys.t(), dim=-1)  # (B, N, K)
        return (weights @ self.dictionary.to(query.dtype)) * self.dictionary_unit

    def encode(self, lq: torch.Tensor, scale: Optional[ScaleLike] = None,
               out_size: Optional[Sequence[int]] = None) -> GaussianField:
        """Predict the scale-free Gaussian field of ``lq`` (B, 3, h, w): r^2 * h * w Gaussians in LR pixels.

        ``scale`` and ``out_size`` are accepted for interface compatibility and ignored (checked only).
        """
        lr_size = lr_size_of(lq)
        if scale is not None or out_size is not None:
            resolve_scale_and_size(lr_size, scale, out_size)  # validation only
        token_map = self.tokens(lq)
        batch, _, rows, cols = token_map.shape
        tokens = token_map.flatten(2).transpose(1, 2)  # (B, N, D), row-major
        colors = self.color_mlp(tokens)
        offsets = self.max_offset * torch.tanh(self.offset_mlp(tokens))
        sigmas, rhos = cholesky_to_sigma_rho(self.covariance_factors(token_map), self.min_sigma)
        side = self.gaussians_per_side
        ys = (torch.arange(rows, device=lq.device, dtype=tokens.dtype) + 0.5) / side
        xs = (torch.arange(cols, device=lq.device, dtype=tokens.dtype) + 0.5) / side
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')
        reference = torch.stack((grid_x, grid_y), dim=-1).view(1, rows * cols, 2)
        return GaussianField(means=reference + offsets, sigmas=sigmas, rhos=rhos, colors=colors, lr_size=lr_size,
                             opacities=torch.ones(batch, rows * cols, device=lq.device, dtype=tokens.dtype))

    def render(self, field: GaussianField, out_size: Sequence[int]) -> torch.Tensor:
        """Rasterize ``field`` to (B, C, Ho, Wo): the whole cost of one more output size."""
        return field.render(check_out_size(out_size), cutoff=self.cutoff)

    def forward(self, lq: torch.Tensor, scale: Optional[ScaleLike] = None,
                out_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Super-resolve ``lq`` to ``out_size`` or, without it, to (round(h * s_h), round(w * s_w))."""
        _, size = resolve_scale_and_size(lr_size_of(lq), scale, out_size)
        return self.render(self.encode(lq), size)
