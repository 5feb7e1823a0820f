"""ContinuousSR: "Pixel to Gaussian: Ultra-Fast Continuous Super-Resolution with 2D Gaussian Modeling"
(Peng et al., 2025, arXiv 2503.06617).

The LR image is turned once into a scale-free field of 2D Gaussians; every output size is then one pass
of the rasterizer (encode once, render many).

Layout (as in the authors' reproduction, github peylnog/ContinuousSR, ``models/gaussian.py``):

1. A SwinIR or HAT encoder (any ``ENCODER_REGISTRY`` name) gives 64-channel LR features; a x4
   pixel-shuffle upsampler (SwinIR's / HAT's ``upsample``: conv 64 -> 256, PixelShuffle(2), twice) takes
   them to 4x the LR size; the final ``conv_last`` of those networks is not used.
2. PixelUnshuffle(2) folds the 4x map into (B, 256, 2h, 2w): one 256-d token per Gaussian, 4 Gaussians
   per LR pixel, their reference points in the 2 x 2 sub-cells of each LR pixel.
3. Colour Gaussian mapping: an MLP (256 -> 512 -> 1024 -> 256 -> 128 -> 64 -> 3) per token; opacity 1.
4. DGP-driven covariance weighting: a fixed dictionary of 730 Cholesky factors (l11, l21, l22), the
   Cartesian product of 9 values each plus the zero factor; keys are an MLP embedding of the entries
   (3 -> 256 -> 512 -> 512 -> 512 -> 512), queries a 3x3 conv (256 -> 512) of the token map with a
   LeakyReLU(0.01); the softmax of query . key mixes the dictionary's factors into each Gaussian's factor.
5. Adaptive position drifting: offset = ``max_offset * tanh(MLP)`` LR pixels from the reference point.

Units of the covariance. The authors render with gsplat at the output size, in output pixels, after
multiplying the mixed factor by ``scale / 4`` per axis (l11 by s_w, l21 and l22 by s_h). Going back to LR
pixels (x / s_w, y / s_h) removes the scale exactly when the output size is ``scale`` times the LR size:
``L_lr = L_dict / 4``. So the dictionary is in quarter-LR-pixel units (output pixels at x4) and the field
in LR pixels is the same at every scale, anisotropic ones included. Here ``Sigma = L_lr L_lr^T +
min_sigma^2 I`` is converted to ``sigma_x = sqrt(Sigma_xx)``, ``sigma_y = sqrt(Sigma_yy)``,
``rho = Sigma_xy / (sigma_x sigma_y)`` for ``rasterize_gaussians``.

Reproducing the authors' forward. Our defaults are our own choices; each difference from their
``ContinuousGaussian`` is an option, and the released model's ``network_g`` (``gsasr_plugin.official.continuoussr``)
sets all of them (see the README, "Pretrained models"). With the same weights the Gaussians then agree to float
rounding (``tests/test_continuoussr_official.py``):

=========================  ==========================  ==================================================
option                     ours (default)              theirs
=========================  ==========================  ==================================================
``mlp_activation``         ``relu``                    ``gelu`` (their ``models/mlp.py`` default)
``head_activation``        ``after_query``             ``before_query_and_offset``: LeakyReLU(0.01) on the
                                                       tokens feeds the query conv and the offset MLP; the
                                                       colour MLP sees the raw tokens
``reference_points``       ``centers``                 ``corners``: ``get_coord`` puts the undrifted
                                                       Gaussian at the top-left corner of its sub-cell
``min_sigma``              0.02                        0 (``Sigma = L L^T``)
``crop_after_upsample``    false                       true: the window-padded features are upsampled,
                                                       then cropped to 4h x 4w
``covariance_scale``       ``output_size``             ``requested_scale``: the factor is stretched by the
                                                       requested scale, not by (output size / LR size)
``rasterizer``             ours, cutoff 3.5 sigma      gsplat fork's ``rasterize_gaussians_sum``
``mlp_init``               ``pytorch``                 ``xavier_uniform`` (training only)
encoder                    SwinIR with mean shift      HAT (x4), ``rgb_mean: ~`` (no mean shift)
=========================  ==========================  ==================================================
"""
import dataclasses
import itertools
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from gsasr_plugin import compat  # noqa: F401  (basicsr import on current torchvision)
from basicsr.utils import get_root_logger
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.gaussian_field import GaussianField, Window, check_window, reference_grid, window_field
from gsasr_plugin.archs.pretrained import read_foreign_weights
from gsasr_plugin.archs.sr_network import SRNetwork, activation_bytes
from gsasr_plugin.archs.pretrained import read_foreign_weights
from gsasr_plugin.archs.window_utils import pad_to_multiple
from gsasr_plugin.ops import RENDER_OPTIONS
from gsasr_plugin.utils.scale import Size, Target

__all__ = ['ContinuousSR', 'DGP_CHOLESKY_VALUES', 'cholesky_dictionary', 'cholesky_to_sigma_rho', 'make_mlp']

# The Deep Gaussian Prior values of the official dictionary, per Cholesky entry (quarter LR pixels).
DGP_CHOLESKY_VALUES: Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]] = (
    (0.0, 0.41, 0.62, 0.98, 1.13, 1.29, 1.64, 1.85, 2.36),  # l11
    (-0.86, -0.36, -0.16, 0.19, 0.34, 0.49, 0.84, 1.04, 1.54),  # l21
    (0.0, 0.33, 0.53, 0.88, 1.03, 1.18, 1.53, 1.73, 2.23),  # l22
)

_ACTIVATIONS = {'relu': lambda: nn.ReLU(inplace=True), 'gelu': nn.GELU}
_HEAD_ACTIVATIONS = ('after_query', 'before_query_and_offset')
_REFERENCE_POINTS = ('centers', 'corners')
_COVARIANCE_SCALES = ('output_size', 'requested_scale')
_MLP_INITS = ('pytorch', 'xavier_uniform')


def cholesky_dictionary(values: Sequence[Sequence[float]] = DGP_CHOLESKY_VALUES) -> torch.Tensor:
    """(len(l11) * len(l21) * len(l22) + 1, 3) rows (l11, l21, l22): the Cartesian product plus zero."""
    if len(values) != 3 or any(len(v) == 0 for v in values):
        raise ValueError(f'dictionary_values must hold three non-empty lists (l11, l21, l22), got {values!r}')
    rows = list(itertools.product(*[[float(x) for x in v] for v in values])) + [(0.0, 0.0, 0.0)]
    return torch.tensor(rows, dtype=torch.float32)


def cholesky_to_sigma_rho(factors: torch.Tensor, min_sigma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lower-triangular factors (..., 3) = (l11, l21, l22) -> sigmas (..., 2) and rhos (...).

    ``Sigma = L L^T + min_sigma^2 I`` with ``L = [[l11, 0], [l21, l22]]`` (x first, as gsplat). With
    ``min_sigma`` 0 the factors must have l11 > 0 and l22 > 0 (softmax mixtures of the DGP dictionary do).
    """
    l11, l21, l22 = factors.unbind(-1)
    floor = min_sigma * min_sigma
    var_x = l11 * l11 + floor
    var_y = l21 * l21 + l22 * l22 + floor
    cov_xy = l11 * l21
    sigma_x, sigma_y = var_x.sqrt(), var_y.sqrt()
    rho = cov_xy / (sigma_x * sigma_y)
    # |rho| < 1 holds exactly (det Sigma > 0); the clamp only guards float rounding
    return torch.stack((sigma_x, sigma_y), dim=-1), rho.clamp(-1 + 1e-6, 1 - 1e-6)


def make_mlp(in_features: int, hidden: Sequence[int], out_features: int, activation: str = 'relu') -> nn.Sequential:
    """Linear-activation layers through ``hidden``, then a last Linear (the LIIF-style MLP)."""
    layers, width = [], in_features
    for size in hidden:
        layers += [nn.Linear(width, int(size)), _ACTIVATIONS[activation]()]
        width = int(size)
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def _rasterizer_keywords(options: Optional[Mapping[str, Any]], cutoff: Optional[float]) -> Dict[str, Any]:
    """Check ``rasterizer`` options against ``rasterize_gaussians``' keywords; merge ``cutoff``."""
    options = dict(options or {})
    accepted = set(RENDER_OPTIONS)  # the tensors (opacities included) come from the field
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f'rasterizer options {unknown} are not keywords of gsasr_plugin.ops.rasterize_gaussians '
                         f'(it takes {sorted(accepted)})')
    if cutoff is not None:
        if 'cutoff' in options:
            raise ValueError('give cutoff either as the option cutoff or inside rasterizer, not both')
        options['cutoff'] = cutoff
    return options


@ARCH_REGISTRY.register()
class ContinuousSR(SRNetwork):
    """ContinuousSR: a scale-free 2D Gaussian field from the LR image, rendered at any size.

    Args:
        encoder: Options of the LR encoder (``{'type': 'SwinIREncoder', ...}`` or ``HATEncoder``; any encoder with
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
        min_sigma: Isotropic floor of the standard deviation in LR pixels (added in variance); 0 for none
            (the official). Default: 0.02.
        max_offset: Largest drift of a Gaussian from its reference point, LR pixels. Default: 1.
        load_upsampler: Initialise the upsampler from ``encoder: pretrained`` (keys ``upsample.0/2``).
            Default: True.
        cutoff: Rasterizer cutoff in standard deviations; None uses the rasterizer's default.
        num_colors: Output channels. Default: 3.
        mlp_activation: Activation between the layers of the colour, offset and key MLPs: 'relu' or
            'gelu' (the official). Default: 'relu'.
        head_activation: Where the LeakyReLU(0.01) of the heads sits. 'after_query': after the query conv
            only. 'before_query_and_offset' (the official): on the token map, feeding both the query conv
            and the offset MLP (the colour MLP still takes the raw tokens). Default: 'after_query'.
        reference_points: Where a Gaussian sits before drifting. 'centers': the centre of its sub-cell,
            ((j + 0.5) / r, (i + 0.5) / r) LR pixels. 'corners' (the official ``get_coord`` grid): the
            top-left corner of the sub-cell, (j / r, i / r). Default: 'centers'.
        crop_after_upsample: Pad the input to the encoder's ``window_size`` multiple here, upsample the
            padded features and crop the 4x map (the official SwinIR / HAT forward). False: the encoder
            crops its LR features before our upsampler, whose border convs then see zero padding.
            Default: False.
        covariance_scale: How a field made for a requested scale is stretched. 'output_size': the field is
            scale-free in LR pixels, rendered at any output size (covariance scaled by output size / LR
            size). 'requested_scale' (the official): the covariance follows the requested scale ``s``
            while the output has round(h * s) rows, so ``encode(lq, scale)`` multiplies sigma_x by
            s_w * w / Wo and sigma_y by s_h * h / Ho (1 whenever h * s is an integer). Default: 'output_size'.
        rasterizer: Extra keyword arguments of ``gsasr_plugin.ops.rasterize_gaussians`` used by ``render``
            (e.g. the gsplat-compatible mode for the official checkpoint). Default: none.
        mlp_init: Initialisation of the three MLPs: 'pytorch' (nn.Linear's default) or 'xavier_uniform'
            with zero biases (the official). Default: 'pytorch'.
        size_rule: The output size for a scale alone, ``rule(s * h)``: ``'round'`` (the official
            ``query_output``), ``'floor'`` or ``'ceil'`` (``utils.scale.scaled_size``). Default: 'round'.
    """

    field_depends_on_scale = False

    def __init__(self, encoder: Optional[Mapping[str, Any]] = None, num_feat: int = 64, upscale: int = 4,
                 unshuffle: int = 2, color_hidden: Sequence[int] = (512, 1024, 256, 128, 64),
                 offset_hidden: Sequence[int] = (512, 1024, 256, 128, 64),
                 key_hidden: Sequence[int] = (256, 512, 512, 512), attn_dim: int = 512,
                 dictionary_values: Sequence[Sequence[float]] = DGP_CHOLESKY_VALUES, dictionary_unit: float = 0.25,
                 min_sigma: float = 0.02, max_offset: float = 1.0, load_upsampler: bool = True,
                 cutoff: Optional[float] = None, num_colors: int = 3, mlp_activation: str = 'relu',
                 head_activation: str = 'after_query', reference_points: str = 'centers',
                 crop_after_upsample: bool = False, covariance_scale: str = 'output_size',
                 rasterizer: Optional[Mapping[str, Any]] = None, mlp_init: str = 'pytorch',
                 size_rule: str = 'round'):
        super().__init__(size_rule)
        stages = self._check_options(upscale, unshuffle, num_feat, attn_dim, dictionary_unit, min_sigma, max_offset,
                                     cutoff)
        for name, value, allowed in (('mlp_activation', mlp_activation, tuple(_ACTIVATIONS)),
                                     ('head_activation', head_activation, _HEAD_ACTIVATIONS),
                                     ('reference_points', reference_points, _REFERENCE_POINTS),
                                     ('covariance_scale', covariance_scale, _COVARIANCE_SCALES),
                                     ('mlp_init', mlp_init, _MLP_INITS)):
            if value not in allowed:
                raise ValueError(f'{name} must be one of {list(allowed)}, got {value!r}')
        if not isinstance(crop_after_upsample, bool):
            raise ValueError(f'crop_after_upsample must be true or false, got {crop_after_upsample!r}')
        encoder_opt = dict(encoder) if encoder is not None else {'type': 'SwinIREncoder'}
        in_channels = self.build_encoder(encoder_opt, 'SwinIREncoder')
        self.upscale, self.unshuffle = upscale, unshuffle
        self.gaussians_per_side = upscale // unshuffle
        self.dictionary_unit = float(dictionary_unit)
        self.min_sigma = float(min_sigma)
        self.max_offset = float(max_offset)
        self.cutoff = cutoff
        self.head_activation = head_activation
        # not self.reference_points: that is the SRNetwork method tiled inference calls
        self.reference_offset = 0.5 if reference_points == 'centers' else 0.0
        self.crop_after_upsample = crop_after_upsample
        self.covariance_scale = covariance_scale
        # the official covariance follows the requested scale, so its field is valid for that scale only
        self.field_depends_on_scale = covariance_scale == 'requested_scale'
        self.rasterizer_options = _rasterizer_keywords(rasterizer, cutoff)

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
        self.color_mlp = make_mlp(token_dim, color_hidden, num_colors, mlp_activation)
        self.offset_mlp = make_mlp(token_dim, offset_hidden, 2, mlp_activation)
        # a Sequential so that the conv's keys stay ``query.0.*`` whatever head_activation is
        self.query = nn.Sequential(nn.Conv2d(token_dim, attn_dim, 3, 1, 1))
        self.head_act = nn.LeakyReLU(0.01)
        self.key_mlp = make_mlp(3, key_hidden, attn_dim, mlp_activation)
        if mlp_init == 'xavier_uniform':
            for mlp in (self.color_mlp, self.offset_mlp, self.key_mlp):
                for layer in mlp:
                    if isinstance(layer, nn.Linear):
                        nn.init.xavier_uniform_(layer.weight)
                        nn.init.zeros_(layer.bias)

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
        for name, value in (('dictionary_unit', dictionary_unit), ('max_offset', max_offset)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f'{name} must be > 0, got {value!r}')
        if not isinstance(min_sigma, (int, float)) or isinstance(min_sigma, bool) or not min_sigma >= 0:
            raise ValueError(f'min_sigma must be >= 0, got {min_sigma!r}')
        SRNetwork.check_cutoff(cutoff)
        return stages

    def _load_pretrained_upsampler(self, path: str, param_key: Optional[str]) -> None:
        """Copy the official ``upsample.{0,2}`` convs of the encoder's checkpoint into ``self.upsample``."""
        state, _ = read_foreign_weights(path, param_key)
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
        if self.crop_after_upsample:
            height, width = lq.shape[-2:]
            padded = pad_to_multiple(lq, self.encoder.alignment, mode=getattr(self.encoder, 'pad_mode', 'reflect'))
            feat = self.upsample(self.encoder(padded))[..., :height * self.upscale, :width * self.upscale]
        else:
            feat = self.upsample(self.encoder(lq))
        return F.pixel_unshuffle(feat, self.unshuffle) if self.unshuffle > 1 else feat

    def covariance_factors(self, token_map: torch.Tensor) -> torch.Tensor:
        """DGP-driven covariance weighting: (B, D, H, W) -> mixed Cholesky factors (B, H * W, 3), LR pixels.

        ``token_map`` is what the query conv sees (the activated tokens when ``head_activation`` is
        'before_query_and_offset').
        """
        query = self.query(token_map)
        if self.head_activation == 'after_query':
            query = self.head_act(query)
        query = query.flatten(2).transpose(1, 2)  # (B, N, A)
        keys = self.key_mlp(self.dictionary.to(query.dtype))  # (K, A)
        weights = torch.softmax(query @ keys.t(), dim=-1)  # (B, N, K)
        return (weights @ self.dictionary.to(query.dtype)) * self.dictionary_unit

    def reference_grid(self, rows: int, cols: int, device=None, dtype=None) -> torch.Tensor:
        """(1, rows * cols, 2) undrifted positions (x, y) in LR pixels, row-major over the token map."""
        return reference_grid(rows, cols, self.gaussians_per_side, self.reference_offset, device, dtype)

    def encode_features(self, lq: torch.Tensor) -> GaussianField:
        """The scale-free Gaussian field of ``lq`` (B, 3, h, w): r^2 * h * w Gaussians in LR pixels."""
        lr_size = (int(lq.shape[-2]), int(lq.shape[-1]))
        token_map = self.tokens(lq)
        batch, _, rows, cols = token_map.shape
        activated = self.head_act(token_map) if self.head_activation == 'before_query_and_offset' else token_map
        colors = self.color_mlp(token_map.flatten(2).transpose(1, 2))  # (B, N, C), row-major
        offsets = self.max_offset * torch.tanh(self.offset_mlp(activated.flatten(2).transpose(1, 2)))
        sigmas, rhos = cholesky_to_sigma_rho(self.covariance_factors(activated), self.min_sigma)
        reference = self.reference_grid(rows, cols, lq.device, token_map.dtype)
        return GaussianField(means=reference + offsets, sigmas=sigmas, rhos=rhos, colors=colors, lr_size=lr_size,
                             opacities=torch.ones(batch, rows * cols, device=lq.device, dtype=token_map.dtype))

    def decode_field(self, features: GaussianField, target: Optional[Target]) -> GaussianField:
        """The field itself, whatever the target, except with ``covariance_scale: requested_scale``: for a target
        (s, (Ho, Wo)) the covariances are stretched as the official renderer does, sigma_x by s_w * w / Wo and
        sigma_y by s_h * h / Ho (1 whenever h * s is an integer)."""
        if target is None or self.covariance_scale != 'requested_scale':
            return features
        (s_h, s_w), (out_h, out_w) = target
        height, width = features.lr_size
        stretch = features.sigmas.new_tensor((s_w * width / out_w, s_h * height / out_h))
        return dataclasses.replace(features, sigmas=features.sigmas * stretch)

    def render(self, field: GaussianField, out_size: Size, window: Optional[Window] = None) -> torch.Tensor:
        """Rasterize ``field`` (of ``window`` of the LR plane, None: all) to (B, C, Ho, Wo): the whole cost of
        one more output size."""
        if window is not None:
            field = window_field(field, check_window(window, field.lr_size))
        return field.render(out_size, **self.rasterizer_options)

    def bytes_per_lr_pixel(self) -> float:
        return activation_bytes(64, self.gaussians_per_side)

    def reference_points(self, field: GaussianField) -> torch.Tensor:
        """The undrifted positions of the field's plane (the offsets cannot move them)."""
        rows, cols = (n * self.gaussians_per_side for n in field.lr_size)
        return self.reference_grid(rows, cols, field.means.device, field.means.dtype)
