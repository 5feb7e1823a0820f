"""The Python API: load a model (ours or a released one), upscale images by any scale or to any size.

    from gsasr_plugin import load_model
    model = load_model('experiments/train_GSASR_demo/models/net_g_latest.pth')   # or 'official:<name>'
    sr = model.upscale(image, scale=3.7)      # or out_size=(1080, 1920)

``image`` is a numpy array (H, W) or (H, W, C), channels last, C = 1 (gray), 2 (gray + alpha), 3 (RGB)
or 4 (RGBA), of uint8, uint16 or float in [0, 1], or a torch tensor (C, H, W) / (B, C, H, W), uint8 or
float in [0, 1]. The result has the input's type, dtype, channels and (for tensors) device. The network
sees RGB in [0, 1]: gray is replicated to three channels and averaged back, and alpha is super-resolved
separately as a gray image. ``basicsr infer`` is a thin layer over :class:`Upscaler`.
"""
import os
import warnings
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from gsasr_plugin.archs.sr_network import SRNetwork
from gsasr_plugin.checkpoint import MissingNetworkOptions, build_with_weights, describe_weights, load_weights
from gsasr_plugin.inference import resolve_requests, super_resolve_many
from gsasr_plugin.utils.bad_data import header_size
from gsasr_plugin.utils.image_io import (DEFAULT_MAX_INPUT_PIXELS, ImageTooLargeError, check_input_pixels,
                                         decode_image_array, encode_image_array, output_layout, read_image,
                                         write_image)
from gsasr_plugin.utils.memory import available_memory
from gsasr_plugin.utils.options import load_option_file
from gsasr_plugin.utils.precision import bf16_fallback_reason
from gsasr_plugin.utils.scale import ScaleLike

__all__ = ['Upscaler', 'UpscaledFile', 'load_model', 'network_options_from', 'bf16_notice', 'MissingNetworkOptions',
           'SlowPrecisionWarning', 'ImageTooLargeError', 'check_file_memory']

PathLike = Union[str, os.PathLike]
# Float images a little outside [0, 1] (e.g. overshoot of an earlier filter) are clipped; further out
# they are most likely 0..255 data in a float array, which would give garbage.
_FLOAT_SLACK = 0.05
# Host bytes per pixel while a file is upscaled: the decoded input (up to 4 channels of 32 bits) and its float RGB
# copies. Per output pixel, the network's render (SRNetwork.bytes_per_output_pixel) and the float colour result kept
# meanwhile: while an alpha channel renders, and while the file is encoded (encode_image_array converts in strips,
# so the encoded array and the encoder's buffer, up to 2 x 16 B for float RGBA, come after the render's memory).
_BYTES_PER_INPUT_PIXEL = 32
_FILE_BYTES_PER_OUTPUT_PIXEL = 12


class SlowPrecisionWarning(UserWarning):
    """bfloat16 asked for where it is slower than float32 (most CPUs): float32 is used."""


class UpscaledFile(NamedTuple):
    """What :meth:`Upscaler.upscale_file` wrote: the file, the input's and the output's pixel type, whether
    the input had alpha that the output format could not hold, and the Gaussian field that was rendered."""
    path: str
    input_dtype: np.dtype
    output_dtype: np.dtype
    alpha_dropped: bool
    field: Any


def bf16_notice(device: torch.device) -> Optional[str]:
    """The note shown when bfloat16 is asked for on a device where it is slower than float32 (a CPU without native
    bfloat16 arithmetic, ``utils.precision``), where float32 is used instead; None where bfloat16 is used."""
    reason = bf16_fallback_reason(device)
    return None if reason is None else f'float32 is used instead of bfloat16: {reason}'


# ------------------------------------------------------------------------------------------ loading
def network_options_from(opt: Union[PathLike, Mapping[str, Any]]) -> Dict[str, Any]:
    """``network_g`` from an option file path, a whole options dict, or a ``network_g`` dict itself.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not YAML (or holds Python tags) or has no ``network_g`` (the message names the
            file).
    """
    if isinstance(opt, Mapping):
        if isinstance(opt.get('network_g'), Mapping):
            return dict(opt['network_g'])
        if 'type' in opt:
            return dict(opt)
        raise ValueError("opt: a dict of options needs a 'network_g' section (or is network_g itself, with 'type')")
    path = os.fspath(opt)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'options {path}: no such file')
    loaded = load_option_file(path)  # OptionError (a ValueError) naming the file and line
    if not isinstance(loaded.get('network_g'), Mapping):
        raise ValueError(f'options {path}: no network_g section')
    return dict(loaded['network_g'])


def _default_device() -> torch.device:
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def _device(device: Optional[Union[str, torch.device]]) -> torch.device:
    if device is None:
        return _default_device()
    device = torch.device(device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'device {device}: CUDA is not available here')
    return device


def load_model(model: Union[PathLike, str], opt: Optional[Union[PathLike, Mapping[str, Any]]] = None,
               device: Optional[Union[str, torch.device]] = None, param_key: Optional[str] = None) -> 'Upscaler':
    """Load a trained network for :meth:`Upscaler.upscale`.

    Args:
        model: anything :func:`gsasr_plugin.checkpoint.load_weights` reads: a checkpoint file (one written
            by ``basicsr train`` or ``basicsr convert`` carries its network options and needs nothing else; a
            BasicSR checkpoint (``params_ema`` / ``params``) or a bare state dict needs ``opt``);
            ``'official:<name>'``, a released model of :mod:`gsasr_plugin.official.hub` (downloaded once into the
            Hugging Face cache, then converted); a folder holding a released model's official files, or
            those files joined by commas.
        opt: the option file (or options dict) whose ``network_g`` builds the network; wins over the
            weights' own options.
        device: where to run (default: CUDA when available, else the CPU).
        param_key: the checkpoint key to load (default: ``params_ema``, then ``params``).

    Raises:
        FileNotFoundError: a missing checkpoint, folder or option file.
        MissingNetworkOptions: a checkpoint without network options and no ``opt`` (a ValueError).
        ValueError: an unreadable checkpoint, or weights that do not fit the network (one line naming both).
        gsasr_plugin.official.hub.WeightsUnavailableError: a released model that is neither cached nor downloadable.
    """
    device = _device(device)
    name = os.fspath(model)
    network_g, where = None, None  # where: the options' origin when they do not come with the weights
    if opt is not None:
        network_g = network_options_from(opt)
        where = os.fspath(opt) if not isinstance(opt, Mapping) else 'the given options'
    weights = load_weights(name, network_g, param_key)
    network = build_with_weights(weights, describe_weights(name), where)
    return Upscaler(network.to(device).eval(), device=device, network_options=weights.network_g,
                    source=weights.meta.get('source', name))


# ------------------------------------------------------------------------------------------ upscaling
class Upscaler:
    """A Gaussian-splatting SR network ready to upscale images; usually made by :func:`load_model`.

    Args:
        network: ``GSASR``, ``GaussianSR``, ``ContinuousSR``: an :class:`~gsasr_plugin.archs.sr_network.SRNetwork`.
        device: where the network runs (default: where its parameters are).
        network_options: the ``network_g`` it was built from (informative).
        source: where its weights came from (informative).
    """

    def __init__(self, network: SRNetwork, device: Optional[Union[str, torch.device]] = None,
                 network_options: Optional[Mapping[str, Any]] = None, source: Optional[str] = None):
        if not isinstance(network, SRNetwork):
            raise TypeError(f'network_g {type(network).__name__} has no encode(): not a Gaussian-splatting SR '
                            'network (gsasr_plugin.archs.sr_network.SRNetwork)')
        if device is None:
            parameter = next(network.parameters(), None)
            device = parameter.device if parameter is not None else torch.device('cpu')
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.network_options = dict(network_options) if network_options is not None else None
        self.source = source

    def __repr__(self) -> str:
        return f'Upscaler({type(self.network).__name__}, device={self.device}, source={self.source!r})'

    # ------------------------------------------------------------------------------------- core
    def upscale_rgb(self, rgb: torch.Tensor, alpha: Optional[torch.Tensor] = None,
                    scale: Optional[ScaleLike] = None, out_size: Optional[Sequence[int]] = None,
                    tile_size: Optional[int] = None, tile_pad: Optional[int] = None, bf16: bool = False,
                    progress: bool = False,
                    size_rule: Optional[str] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor], Any]:
        """The core: (1, 3, h, w) float RGB in [0, 1] on any device (and an optional (1, 1, h, w) alpha)
        -> (SR RGB (1, 3, Ho, Wo), SR alpha (1, 1, Ho, Wo) or None, the Gaussian field), on ``self.device``.

        ``tile_size``: None picks tiles from free memory (none if the image fits), 0 never tiles, N uses N x N
        LR tiles with ``tile_pad`` LR pixels of context. ``bf16``: bfloat16 autocast for the network where it is
        faster than float32 (CUDA, CPUs with AVX512-BF16 / AMX: ``utils.precision``); elsewhere float32, with a
        :class:`SlowPrecisionWarning`. ``size_rule``: the output size of a scale alone (``'round'``, ``'floor'``,
        ``'ceil'``; None: the network's, which for a released model is its authors' rule; ``utils.scale.scaled_size``).
        """
        return next(self.upscale_rgb_many(rgb, alpha, [(scale, out_size)], tile_size=tile_size, tile_pad=tile_pad,
                                          bf16=bf16, progress=progress, size_rule=size_rule))

    def upscale_rgb_many(self, rgb: torch.Tensor, alpha: Optional[torch.Tensor],
                         requests: Sequence[Tuple[Optional[ScaleLike], Optional[Sequence[int]]]], *,
                         tile_size: Optional[int] = None, tile_pad: Optional[int] = None, bf16: bool = False,
                         progress: bool = False, size_rule: Optional[str] = None
                         ) -> Iterator[Tuple[torch.Tensor, Optional[torch.Tensor], Any]]:
        """:meth:`upscale_rgb` for several ``(scale, out_size)`` requests of one image, one result at a time:
        the image is encoded once when it is not tiled, and each result equals :meth:`upscale_rgb`'s for its
        request alone. The requests are all validated before anything runs."""
        if bf16:
            notice = bf16_notice(self.device)
            if notice:
                warnings.warn(notice, SlowPrecisionWarning, stacklevel=3)
                bf16 = False
        rgb = rgb.detach().to(self.device, torch.float32)
        targets = resolve_requests(self.network, rgb.shape[-2:], requests, size_rule)
        options = dict(tile_size=tile_size, tile_pad=tile_pad, bf16=bf16, progress=progress)
        with torch.no_grad():  # no autograd: the results never require grad
            colors = super_resolve_many(self.network, rgb, targets, **options)
            alphas = None
            if alpha is not None:
                gray = alpha.detach().to(self.device, torch.float32).expand(-1, 3, -1, -1).contiguous()
                alphas = super_resolve_many(self.network, gray, targets, **options)
            for sr, field in colors:
                sr_alpha = None if alphas is None else next(alphas)[0].mean(1, keepdim=True)
                yield sr, sr_alpha, field

    # ---------------------------------------------------------------------------------- arrays
    def upscale(self, image: Union[np.ndarray, torch.Tensor], scale: Optional[ScaleLike] = None,
                out_size: Optional[Sequence[int]] = None, *, tile_size: Optional[int] = None,
                tile_pad: Optional[int] = None, bf16: bool = False, bgr: bool = False,
                progress: bool = False, size_rule: Optional[str] = None) -> Union[np.ndarray, torch.Tensor]:
        """Upscale ``image`` by ``scale`` (a number or (s_h, s_w)) or to ``out_size`` = (height, width).

        Args:
            image: numpy (H, W) / (H, W, C), channels last, or a tensor (C, H, W) / (B, C, H, W); C in 1..4
                (gray, gray + alpha, RGB, RGBA); uint8, uint16 or float in [0, 1].
            scale: any positive factor, e.g. 3.7, or a pair (s_h, s_w) differing per axis.
            out_size: the exact output size (height, width) instead; its implied scale conditions the network.
            tile_size: None picks tiles from free memory, 0 never tiles, N uses N x N LR tiles.
            tile_pad: LR pixels of context around each tile (default: two attention windows, >= 8).
            bf16: bfloat16 autocast for the network where it is faster (CUDA GPUs, CPUs with AVX512-BF16 or AMX);
                elsewhere float32 is used, with a :class:`SlowPrecisionWarning`.
            bgr: the colour channels are in OpenCV's B, G, R order (numpy input; the output keeps it).
            progress: a tqdm bar over tiles.
            size_rule: how a scale alone gives the output size, ``rule(s * h)``: ``'round'``, ``'floor'`` or
                ``'ceil'``; None: the network's (a released model's is its authors' rule).

        Returns:
            The upscaled image, of the input's kind (numpy or tensor, same device), dtype and channels. No
            autograd: the network runs under ``torch.no_grad`` and the input is never modified; a tensor
            that requires grad is read as data and the result does not require grad.

        Raises:
            TypeError: an unsupported kind or dtype of image, or a scale that is not a number or a pair.
            ValueError: a bad shape, float values far outside [0, 1], or a scale / size that is not positive.
        """
        options = dict(scale=scale, out_size=out_size, tile_size=tile_size, tile_pad=tile_pad, bf16=bf16,
                       progress=progress, size_rule=size_rule)
        if isinstance(image, np.ndarray):
            return self._upscale_array(image, bgr, options)
        if isinstance(image, torch.Tensor):
            return self._upscale_tensor(image, options)
        raise TypeError(f'image must be a numpy array (H, W[, C]) or a torch tensor ([B,] C, H, W), got a '
                        f'{type(image).__name__}')

    def _upscale_array(self, image: np.ndarray, bgr: bool, options: Dict[str, Any]) -> np.ndarray:
        _check_float_range(image, np.dtype(image.dtype).kind == 'f', 'image')
        rgb, meta = decode_image_array(image, 'image', bgr=bgr)
        lq = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        alpha = None if meta.alpha is None else torch.from_numpy(meta.alpha)[None, None]
        sr, sr_alpha, _ = self.upscale_rgb(lq, alpha, **options)
        out = encode_image_array(sr[0].permute(1, 2, 0).cpu().numpy(), meta,
                                 None if sr_alpha is None else sr_alpha[0, 0].cpu().numpy(), np.dtype(image.dtype),
                                 bgr=bgr)
        if image.ndim == 3 and image.shape[2] == 1:
            out = out[..., None]
        return out

    def _upscale_tensor(self, image: torch.Tensor, options: Dict[str, Any]) -> torch.Tensor:
        if image.ndim not in (3, 4) or image.shape[-3] not in (1, 2, 3, 4):
            raise ValueError(f'image tensor must be (C, H, W) or (B, C, H, W) with C in 1..4, got shape '
                             f'{tuple(image.shape)}')
        if image.dtype == torch.uint8:
            peak = 255.0
        elif image.dtype == getattr(torch, 'uint16', None):
            peak = 65535.0
        elif image.dtype.is_floating_point:
            peak = 1.0
            _check_float_range(image, True, 'image')
        else:
            raise TypeError(f'image tensor dtype {image.dtype} is not supported (use uint8 or float in [0, 1])')
        batch = image if image.ndim == 4 else image[None]
        outputs = []
        for item in batch:
            values = (item.detach().to(self.device).float() / peak).clamp(0, 1)[None]  # never the caller's tensor
            channels = values.shape[1]
            color = values[:, :1].expand(-1, 3, -1, -1) if channels in (1, 2) else values[:, :3]
            alpha = values[:, -1:] if channels in (2, 4) else None
            sr, sr_alpha, _ = self.upscale_rgb(color, alpha, **options)
            parts = [sr.mean(1, keepdim=True) if channels in (1, 2) else sr]
            if sr_alpha is not None:
                parts.append(sr_alpha)
            outputs.append(torch.cat(parts, 1))
        out = torch.cat(outputs, 0)
        if peak != 1.0:
            out = (out * peak).round_()
        out = out.to(image.device, image.dtype)
        return out if image.ndim == 4 else out[0]

    # ----------------------------------------------------------------------------------- files
    def upscale_file(self, input_path: PathLike, output_path: PathLike, scale: Optional[ScaleLike] = None,
                     out_size: Optional[Sequence[int]] = None, *, tile_size: Optional[int] = None,
                     tile_pad: Optional[int] = None, bf16: bool = False, progress: bool = False,
                     size_rule: Optional[str] = None, overwrite: bool = False,
                     max_input_pixels: Optional[int] = DEFAULT_MAX_INPUT_PIXELS) -> UpscaledFile:
        """Read an image file (8/16-bit or float TIFF; gray, RGB, RGBA), upscale it, and write it to
        ``output_path`` with the input's depth and channels as far as the output format holds them
        (JPEG, WebP and BMP hold 8 bits per channel, JPEG no alpha; see ``utils.image_io.output_layout``).

        ``max_input_pixels``: the largest input (width x height) read (default 100 MP; None or 0: no limit).

        Raises:
            FileExistsError: ``output_path`` is the input file itself and ``overwrite`` is False (the rule of
                ``basicsr infer --overwrite``), checked before anything is read.
            ImageTooLargeError: the file's header declares more than ``max_input_pixels`` pixels, or the input
                and output images would not fit in the free memory (checked before anything is decoded).
        """
        return self.upscale_file_many(input_path, [(output_path, scale, out_size)], tile_size=tile_size,
                                      tile_pad=tile_pad, bf16=bf16, progress=progress, size_rule=size_rule,
                                      overwrite=overwrite, max_input_pixels=max_input_pixels)[0]

    def upscale_file_many(self, input_path: PathLike,
                          outputs: Sequence[Tuple[PathLike, Optional[ScaleLike], Optional[Sequence[int]]]], *,
                          tile_size: Optional[int] = None, tile_pad: Optional[int] = None, bf16: bool = False,
                          progress: bool = False, size_rule: Optional[str] = None, overwrite: bool = False,
                          max_input_pixels: Optional[int] = DEFAULT_MAX_INPUT_PIXELS) -> List[UpscaledFile]:
        """:meth:`upscale_file` for several ``(output_path, scale, out_size)`` of one input (``basicsr infer
        --scales``): one encoding when the image is not tiled, and each file exactly what :meth:`upscale_file`
        writes for it alone."""
        source = os.fspath(input_path)
        paths = [os.fspath(output[0]) for output in outputs]
        for path in paths:
            if not overwrite and os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
                raise FileExistsError(f'output {path} is the input image {source}; pass overwrite=True to replace '
                                      'it, or choose another output path')
        requests = [(scale, size) for _, scale, size in outputs]
        lr_size = header_size(source)
        if lr_size is not None:  # the sizes first: refused before anything is decoded or allocated
            check_input_pixels(source, lr_size, max_input_pixels)
            check_file_memory(source, lr_size, [t.size for t in resolve_requests(self.network, lr_size, requests,
                                                                                  size_rule)],
                              render_bytes_per_pixel=self.network.bytes_per_output_pixel())
        rgb, meta = read_image(source, max_pixels=max_input_pixels)
        lq = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        alpha = None if meta.alpha is None else torch.from_numpy(meta.alpha)[None, None]
        results = self.upscale_rgb_many(lq, alpha, requests, tile_size=tile_size, tile_pad=tile_pad, bf16=bf16,
                                        progress=progress, size_rule=size_rule)
        written = []
        for path, (sr, sr_alpha, field) in zip(paths, results):
            write_image(path, sr[0].permute(1, 2, 0).cpu().float().numpy(), meta,  # a view: no copy
                        None if sr_alpha is None else sr_alpha[0, 0].cpu().numpy())
            dtype, keeps_alpha = output_layout(os.path.splitext(path)[1], meta)
            written.append(UpscaledFile(path, meta.dtype, dtype, meta.alpha is not None and not keeps_alpha, field))
        return written


def check_file_memory(path: str, lr_size: Tuple[int, int], out_sizes: Sequence[Tuple[int, int]],
                      free: Optional[int] = None, render_bytes_per_pixel: float = 40.0) -> None:
    """Raise :class:`ImageTooLargeError` naming ``path`` when an image of ``lr_size`` and its largest result of
    ``out_sizes`` would not fit in the host's free memory (``free`` bytes; default: what is available now), before
    either is allocated. ``render_bytes_per_pixel``: what the network's render holds per output pixel
    (``SRNetwork.bytes_per_output_pixel``); its working memory at LR size is not counted: tiling bounds it
    (``inference.auto_tile_size``)."""
    largest = max(out_sizes, key=lambda size: size[0] * size[1])
    per_output_pixel = render_bytes_per_pixel + _FILE_BYTES_PER_OUTPUT_PIXEL
    needed = lr_size[0] * lr_size[1] * _BYTES_PER_INPUT_PIXEL + largest[0] * largest[1] * per_output_pixel
    free = available_memory(torch.device('cpu')) if free is None else free
    if needed > free:
        raise ImageTooLargeError(
            f'{path}: its {lr_size[1]}x{lr_size[0]} pixels make a {largest[1]}x{largest[0]} output '
            f'({largest[0] * largest[1] / 1e6:,.0f} MP), which needs about {needed / 2**30:,.1f} GiB of memory, more '
            f'than the {free / 2**30:,.1f} GiB free here; refused before decoding it: lower the scale (or the output '
            'size), or split the image')


def _check_float_range(image: Union[np.ndarray, torch.Tensor], is_float: bool, name: str) -> None:
    """ValueError for float pixels that are not finite or lie far outside [0, 1] (0..255 data, most likely)."""
    if not is_float:
        return
    values = image if isinstance(image, np.ndarray) else image.detach()
    if values.size == 0 if isinstance(values, np.ndarray) else values.numel() == 0:
        return
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f'{name}: float values must be finite, got NaN or inf')
    if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:
        raise ValueError(f'{name}: float images must hold values in [0, 1], got [{low:g}, {high:g}]; divide '
                         '0..255 data by 255 (or pass it as uint8)')
