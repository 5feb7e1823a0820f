"""The engine of ``basicsr app``: models, uploaded images, their cached Gaussian fields, and the renders the page
shows. No Gradio here (:mod:`gsasr_plugin.app.page` builds the page on it), so all of it can be called directly.

What is cached, per (model, image) (:class:`gsasr_plugin.zoom.ZoomRenderer`, the "encode once, render many"
of the README):

* scale-free networks (ContinuousSR, GaussianSR: ``field_depends_on_scale = False``): one field. Every scale
  of the slider and every zoom region is a render of it: no network runs.
* GSASR conditions its Gaussians on the scale: the encoder features are kept, and a new scale runs the
  decoder on them (the encoder is skipped); a scale seen before is rendered from its kept field (up to 8).
  While the decoder runs, :meth:`Engine.preview` shows the nearest kept field rendered at the new size (an
  approximation: Gaussians conditioned on a neighbouring scale), so the slider answers at once here too.
* images too large to encode whole are encoded in tiles (``gsasr_plugin.inference.encode_tiled``); tiles keep
  no encoder features, so for GSASR a new scale encodes the tiles again, for the others the one field stays.

A zoom shows a window of the image at a fixed frame size, rendered from the Gaussians at that window's
resolution (sharp, not a blow-up of the result's pixels); for GSASR at the scale the frame implies.
Every failure a user can cause (an unreadable image, a model that is not available, a scale too large, out
of memory, the stop button) raises :class:`AppError` with one line for the page.
"""
import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from gsasr_plugin.api import Upscaler, load_model
from gsasr_plugin.archs.gaussian_field import Window, whole_window
from gsasr_plugin.official.hub import OFFICIAL_PREFIX, released_models
from gsasr_plugin.inference import auto_tile_size
from gsasr_plugin.utils.atomic_io import write_image_file
from gsasr_plugin.utils.image_io import (DEFAULT_MAX_INPUT_PIXELS, OUTPUT_FORMATS, ImageMeta, ImageTooLargeError,
                                         encode_image_array, megapixels, output_layout, read_image, write_image)
from gsasr_plugin.utils.scale import ScaleLike, Size, resolve_scale_and_size, scale_tag
from gsasr_plugin.zoom import ZoomRenderer

__all__ = ['AppError', 'Stopped', 'Engine', 'LoadedImage', 'Result', 'ModelChoice', 'bicubic_view', 'zoom_window',
           'frame_size_of', 'DEFAULT_MAX_PIXELS', 'DEFAULT_FRAME']

DEFAULT_MAX_PIXELS = 40_000_000  # the largest result the page makes (the browser shows and downloads it)
DEFAULT_FRAME = 512  # the zoom frame's long side
_PNG_FAST = [16, 1]  # cv2.IMWRITE_PNG_COMPRESSION, 1: the page's previews favour speed over size
_BROWSER_FORMATS = ('.png', '.jpg', '.jpeg', '.webp', '.bmp')


class AppError(Exception):
    """A failure to show in the page as one line (bad image, unavailable model, out of memory, ...)."""


class Stopped(AppError):
    """The stop button ended the work (nothing half-done is kept)."""


@dataclass(frozen=True)
class ModelChoice:
    """A model the page offers: what ``load_model`` takes, and how the page names it."""
    spec: str
    label: str


@dataclass
class LoadedImage:
    """An uploaded image as the networks see it (:func:`gsasr_plugin.utils.image_io.read_image`)."""
    path: str
    name: str  # the file's stem, for result names
    suffix: str  # the result's extension: the input's format where we can write it (as basicsr infer), else PNG
    rgb: np.ndarray  # (h, w, 3) float32 RGB in [0, 1]
    meta: ImageMeta
    digest: str

    @property
    def lr_size(self) -> Size:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def describe(self) -> str:
        """E.g. '300×451 16-bit gray + alpha'."""
        bits = {'uint8': '8-bit', 'uint16': '16-bit', 'float32': '32-bit float'}.get(str(self.meta.dtype), '')
        kind = 'gray' if self.meta.grayscale else 'RGB'
        alpha = ' + alpha' if self.meta.alpha is not None else ''
        return f'{self.lr_size[1]}×{self.lr_size[0]} {bits} {kind}{alpha}'


@dataclass
class Result:
    """One render for the page: files to show (8-bit, browser formats) and to download, and what it cost."""
    image_path: str  # the super-resolved image (or zoom frame), viewable in a browser
    bicubic_path: str  # bicubic of the same view at the same size
    download_path: Optional[str]  # the result in the input's format and bit depth (whole-image results only)
    size: Size  # (H, W)
    scale: Tuple[float, float]  # (s_h, s_w) of the view
    seconds: float  # the computation (network and rasterizer), not the file writing
    work: str  # 'forward' (encoder + decoder + render), 'decoder' (decoder + render), 'render' (rasterizer only) or
    # 'preview' (another scale's kept field rendered at this size, while GSASR's decoder runs)
    status: str  # the page's status line


class _Prepared:
    """The cached renderers of one (model, image): colour, and alpha (made when first needed)."""

    def __init__(self, upscaler: Upscaler, image: LoadedImage, tile_size: Optional[int]):
        self.upscaler = upscaler
        network = upscaler.network
        lq = torch.from_numpy(image.rgb).permute(2, 0, 1)[None].to(upscaler.device)
        if tile_size is None:
            tile_size = auto_tile_size(network, image.lr_size, upscaler.device) or 0
        self.color = ZoomRenderer(network, lq, tile_size=tile_size)
        self.alpha: Optional[ZoomRenderer] = None
        if image.meta.alpha is not None:
            alpha = torch.from_numpy(image.meta.alpha)[None, None].expand(1, 3, -1, -1).contiguous()
            self.alpha = ZoomRenderer(network, alpha.to(upscaler.device), tile_size=tile_size)

    def renderers(self) -> List[ZoomRenderer]:
        return [self.color] + ([self.alpha] if self.alpha is not None else [])


def zoom_window(lr_size: Sequence[int], center: Tuple[float, float], magnification: float) -> Window:
    """The window (top, left, bottom, right; LR pixels) showing 1 / ``magnification`` of the image around
    ``center`` = (y, x) given as fractions of the image in [0, 1], kept inside the image."""
    if not magnification >= 1:
        raise AppError(f'zoom: magnification must be >= 1, got {magnification!r}')
    height, width = float(lr_size[0]), float(lr_size[1])
    win_h, win_w = height / magnification, width / magnification
    cy, cx = (min(max(float(c), 0.0), 1.0) for c in center)
    top = min(max(cy * height - win_h / 2, 0.0), height - win_h)
    left = min(max(cx * width - win_w / 2, 0.0), width - win_w)
    return top, left, top + win_h, left + win_w


def frame_size_of(window: Window, long_side: int) -> Size:
    """The frame (H, W) with ``long_side`` pixels on the window's longer axis and the window's aspect ratio."""
    win_h, win_w = window[2] - window[0], window[3] - window[1]
    longest = max(win_h, win_w)
    return max(1, round(long_side * win_h / longest)), max(1, round(long_side * win_w / longest))


def bicubic_view(image: np.ndarray, window: Window, out_size: Size) -> np.ndarray:
    """Bicubic interpolation of ``window`` of ``image`` (h, w, C) float to ``out_size``, in the Gaussians'
    coordinates (the image covers [0, w] x [0, h], pixel centres at +0.5), so it lines up with their render."""
    import cv2
    top, left, bottom, right = window
    step_y, step_x = (bottom - top) / out_size[0], (right - left) / out_size[1]
    # output pixel (i, j) samples the image at ((left + (j + .5) * step_x) - .5, (top + (i + .5) * step_y) - .5)
    matrix = np.array([[step_x, 0, left + 0.5 * step_x - 0.5], [0, step_y, top + 0.5 * step_y - 0.5]], np.float64)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(np.ascontiguousarray(image, np.float32), matrix, (out_size[1], out_size[0]), flags=flags,
                         borderMode=cv2.BORDER_REPLICATE)
    if out.ndim == 2:
        out = out[..., None]
    return np.clip(out, 0, 1)


def _scale_text(scale: Tuple[float, float]) -> str:
    return f'×{scale[0]:.3g}' if abs(scale[0] - scale[1]) < 1e-9 else f'×{scale[0]:.3g}×{scale[1]:.3g}'


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def _stop_points(network: torch.nn.Module, stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop()`` before each module of ``network`` runs, for as long as the block lasts: what it raises ends
    a forward midway, so the stop button is not kept waiting for a whole untiled forward (fields and features are
    cached only once complete, so nothing half-done is kept)."""
    def check(module: torch.nn.Module, args: tuple) -> None:
        stop()  # returns nothing: a pre-hook's return value would replace the module's inputs

    handles = [module.register_forward_pre_hook(check) for module in network.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and 'out of memory' in str(error))


class Engine:
    """Models, images and their cached fields for the page.

    Args:
        models: checkpoints (or ``official:<name>``) given on the command line; the page offers these, then
            the released models.
        device: where the networks run (default: CUDA when available, else the CPU).
        max_pixels: the largest result (H * W) a whole-image render may have.
        max_input_pixels: the largest uploaded image (H * W) read; a file whose header declares more is refused
            before it is decoded (0 or None: no limit).
        tile_size: LR tile side for encoding (None: chosen from free memory, as ``basicsr infer``; 0: never).
        workdir: where result files are written (default: a new temporary folder).
        cache_images: how many (model, image) pairs keep their fields.
    """

    def __init__(self, models: Sequence[str] = (), device: Optional[str] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, tile_size: Optional[int] = None, workdir: Optional[str] = None,
                 cache_images: int = 3, max_input_pixels: Optional[int] = DEFAULT_MAX_INPUT_PIXELS):
        self.device = device
        self.max_pixels = int(max_pixels)
        self.max_input_pixels = max_input_pixels
        self.tile_size = tile_size
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix='gsasr_app_'))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cache_images = cache_images
        self.choices = self._choices(models)
        self._models: 'OrderedDict[str, Upscaler]' = OrderedDict()
        self._images: 'OrderedDict[str, LoadedImage]' = OrderedDict()
        self._prepared: 'OrderedDict[Tuple[str, str], _Prepared]' = OrderedDict()
        self._lock = threading.RLock()  # one computation at a time: they share the networks and the caches
        self._counter = 0

    # --------------------------------------------------------------------------------------- models
    @staticmethod
    def _choices(models: Sequence[str]) -> List[ModelChoice]:
        choices = [ModelChoice(os.fspath(m), os.fspath(m)) for m in models]
        given = {c.spec for c in choices}
        for name, model in sorted(released_models().items()):
            spec = OFFICIAL_PREFIX + name
            if spec not in given:
                choices.append(ModelChoice(spec, f'{spec} (released; downloads once)'))
        return choices

    @property
    def default_model(self) -> Optional[str]:
        return self.choices[0].spec if self.choices else None

    def model(self, spec: str) -> Upscaler:
        """The loaded model ``spec`` (at most two stay loaded). Raises AppError with load_model's one line."""
        with self._lock:
            if spec in self._models:
                self._models.move_to_end(spec)
                return self._models[spec]
            if not spec:
                raise AppError('choose a model first')
            try:
                upscaler = load_model(spec, device=self.device)
            except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
                raise AppError(f'model {spec}: {_one_line(error)}') from None
            self._models[spec] = upscaler
            while len(self._models) > 2:
                dropped, _ = self._models.popitem(last=False)
                for key in [k for k in self._prepared if k[0] == dropped]:
                    del self._prepared[key]
            return upscaler

    def describe_model(self, spec: str) -> str:
        """How the loaded model reuses its Gaussians, in one sentence for the page."""
        network = self.model(spec).network
        name = type(network).__name__
        if network.field_depends_on_scale:
            return (f'{name} conditions its Gaussians on the scale: a new scale shows at once a preview rendered from '
                    'the nearest cached Gaussians, then runs its decoder on the cached encoder features (the encoder '
                    'is skipped); a scale seen before only renders.')
        return (f"{name}'s Gaussians do not depend on the scale: after the first run, every scale and zoom is "
                'rendered from the cached field (no network runs).')

    # --------------------------------------------------------------------------------------- images
    def image(self, path: Optional[str]) -> LoadedImage:
        """The image file ``path`` (read once; bad files raise AppError naming the file)."""
        if not path:
            raise AppError('upload an image first (PNG, JPEG, TIFF, WebP or BMP; 8- or 16-bit; gray, RGB or RGBA)')
        path = os.fspath(path)
        with self._lock:
            if path in self._images:
                self._images.move_to_end(path)
                return self._images[path]
            try:
                rgb, meta = read_image(path, max_pixels=self.max_input_pixels)
                with open(path, 'rb') as handle:
                    digest = hashlib.sha1(handle.read()).hexdigest()
            except ImageTooLargeError as error:
                if error.size is None or error.limit is None:
                    raise AppError(_one_line(error).replace(path, os.path.basename(path))) from None
                (height, width), limit = error.size, error.limit
                raise AppError(f'{os.path.basename(path)}: {width}×{height} ({megapixels(height * width)}) is over '
                               f"this app's limit for an uploaded image of {megapixels(limit)} (basicsr app "
                               '--max-input-pixels N; 0: no limit); refused before decoding it') from None
            except (OSError, ValueError) as error:
                message = _one_line(error)
                name = os.path.basename(path)
                message = message.replace(path, name) if path in message else f'{name}: {message}'
                raise AppError(message) from None
            suffix = Path(path).suffix.lower()
            image = LoadedImage(path, Path(path).stem, suffix if suffix in OUTPUT_FORMATS else '.png', rgb, meta,
                                digest)
            self._images[path] = image
            while len(self._images) > 8:
                self._images.popitem(last=False)
            return image

    def prepared(self, spec: str, image: LoadedImage) -> _Prepared:
        """The cached renderers of (model, image), made on first use (no network runs here)."""
        with self._lock:
            key = (spec, image.digest)
            if key in self._prepared:
                self._prepared.move_to_end(key)
                return self._prepared[key]
            self._prepared[key] = _Prepared(self.model(spec), image, self.tile_size)
            while len(self._prepared) > self.cache_images:
                self._prepared.popitem(last=False)
            return self._prepared[key]

    def forget(self) -> None:
        """Drop every cached field and image (after running out of memory)."""
        with self._lock:
            self._prepared.clear()
            self._images.clear()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -------------------------------------------------------------------------------------- renders
    def upscale(self, spec: str, path: Optional[str], scale: Optional[ScaleLike] = None,
                size: Optional[Size] = None, should_stop: Optional[Callable[[], bool]] = None,
                progress: Optional[Callable[[float, str], None]] = None) -> Result:
        """The whole image at ``scale`` (a number or (s_h, s_w)) or at ``size`` (H, W), beside bicubic.

        The output size follows the plugin's one rule (:func:`gsasr_plugin.utils.scale.resolve_scale_and_size`).
        ``should_stop()`` is asked between steps and tiles (True raises :class:`Stopped`); ``progress(fraction,
        text)`` hears about them.
        """
        image, view, out_size, pair = self._whole(path, scale, size)
        return self._render(spec, image, view, out_size, pair, True, should_stop, progress)

    def zoom(self, spec: str, path: Optional[str], center: Tuple[float, float], magnification: float,
             frame: int = DEFAULT_FRAME, should_stop: Optional[Callable[[], bool]] = None,
             progress: Optional[Callable[[float, str], None]] = None) -> Result:
        """A ``frame``-pixel view of 1 / ``magnification`` of the image around ``center`` ((y, x) in [0, 1]),
        rendered from the Gaussians at the view's own resolution, beside bicubic of the same view."""
        image, view, out_size, pair = self._region(path, center, magnification, frame)
        return self._render(spec, image, view, out_size, pair, False, should_stop, progress)

    def preview(self, spec: str, path: Optional[str], scale: Optional[ScaleLike] = None,
                size: Optional[Size] = None, zoom: Optional[Tuple[Tuple[float, float], float]] = None,
                frame: int = DEFAULT_FRAME) -> Optional[Result]:
        """What :meth:`upscale` (or, with ``zoom=(center, magnification)``, :meth:`zoom`) will show, at once: for a
        network whose Gaussians depend on the scale and whose field for this scale is not kept, the nearest kept
        field rendered at the new size (work 'preview'; the decoder then gives the exact result). None when there
        is nothing to preview from, or the exact result is a render anyway."""
        if zoom is None:
            image, view, out_size, pair = self._whole(path, scale, size)
        else:
            image, view, out_size, pair = self._region(path, zoom[0], zoom[1], frame)
        with self._lock:
            if not self.model(spec).network.field_depends_on_scale:
                return None
            prepared = self.prepared(spec, image)
            renderers = prepared.renderers()
            if all(r.has_field(pair) for r in renderers):
                return None
            nearest = [r.nearest_cached_scale(pair) for r in renderers]
            if any(n is None for n in nearest) or len(set(nearest)) != 1:
                return None
            return self._render(spec, image, view, out_size, pair, zoom is None, None, None, nearest[0])

    def _whole(self, path: Optional[str], scale: Optional[ScaleLike], size: Optional[Size]):
        image = self.image(path)
        try:
            target = resolve_scale_and_size(image.lr_size, scale, size)
        except (TypeError, ValueError) as error:
            raise AppError(_one_line(error)) from None
        out_h, out_w = target.size
        if out_h * out_w > self.max_pixels:
            raise AppError(f'{out_w}×{out_h} ({out_h * out_w / 1e6:.3g} MP) is over this app\'s limit of '
                           f'{self.max_pixels / 1e6:.3g} MP (basicsr app --max-pixels): lower the scale, zoom into '
                           'a region, or use basicsr infer for a file')
        return image, whole_window(image.lr_size), target.size, target.scale

    def _region(self, path: Optional[str], center: Tuple[float, float], magnification: float, frame: int):
        image = self.image(path)
        if not isinstance(frame, int) or not 16 <= frame <= 4096:
            raise AppError(f'zoom: frame size must be 16..4096 pixels, got {frame!r}')
        view = zoom_window(image.lr_size, center, float(magnification))
        size = frame_size_of(view, frame)
        return image, view, size, (size[0] / (view[2] - view[0]), size[1] / (view[3] - view[1]))

    def _render(self, spec: str, image: LoadedImage, view: Window, size: Size, scale: Tuple[float, float],
                whole: bool, should_stop: Optional[Callable[[], bool]],
                progress: Optional[Callable[[float, str], None]],
                field_scale: Optional[Tuple[float, float]] = None) -> Result:
        def stop_if_asked() -> None:
            if should_stop is not None and should_stop():
                raise Stopped('stopped: nothing was rendered; the Gaussians computed so far are kept')

        def check(fraction: float, text: str) -> None:
            stop_if_asked()
            if progress is not None:
                progress(fraction, text)

        with self._lock:
            check(0.0, 'loading the model')
            prepared = self.prepared(spec, image)
            renderers = prepared.renderers()
            work = ('preview' if field_scale is not None else 'render' if all(r.has_field(scale) for r in renderers)
                    else 'decoder' if all(r.has_features or r.has_field(scale) for r in renderers) else 'forward')
            for k, renderer in enumerate(renderers):
                renderer.on_tile = lambda done, total, k=k: check(
                    (k + done / total) / len(renderers), f'encoding tile {done}/{total}')
            check(0.05, 'encoding' if work == 'forward' else 'decoding' if work == 'decoder' else 'rendering')
            start = time.perf_counter()
            try:
                with _stop_points(prepared.upscaler.network, stop_if_asked):
                    outputs = [r.render(size, None if whole else view, scale=scale, field_scale=field_scale)
                               for r in renderers]
                if outputs[0].device.type == 'cuda':
                    torch.cuda.synchronize()
            except Stopped:
                raise
            except Exception as error:  # noqa: BLE001 (out of memory comes as several types)
                if _is_out_of_memory(error):
                    self.forget()
                    raise AppError(f'out of memory rendering {size[1]}×{size[0]} on {prepared.upscaler.device}: '
                                   'lower the scale or zoom into a region') from None
                if isinstance(error, (ValueError, TypeError)):
                    raise AppError(_one_line(error)) from None
                raise
            seconds = time.perf_counter() - start
            check(0.9, 'writing the result')
            sr = outputs[0][0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            sr_alpha = outputs[1][0].float().clamp(0, 1).mean(0).cpu().numpy() if len(outputs) > 1 else None
            network = prepared.upscaler.network
        return self._write(image, view, size, scale, whole, sr, sr_alpha, seconds, work, network, prepared.color.tile_size,
                           field_scale)

    def _next_stem(self, image: LoadedImage, tag: str) -> Path:
        with self._lock:
            self._counter += 1
            folder = self.workdir / f'{self._counter:05d}'
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f'{image.name}_{tag}'

    def _write(self, image: LoadedImage, view: Window, size: Size, scale: Tuple[float, float], whole: bool,
               sr: np.ndarray, sr_alpha: Optional[np.ndarray], seconds: float, work: str, network: torch.nn.Module,
               tile_size: int, field_scale: Optional[Tuple[float, float]] = None) -> Result:
        tag = f'x{scale_tag(scale)}' if whole else f'zoom_{size[1]}x{size[0]}'
        if work == 'preview':
            tag += '_preview'
        stem = self._next_stem(image, tag)
        download = None
        shown = stem.with_name(stem.name + '_view.png')
        if whole and work != 'preview':
            download = str(stem.with_name(stem.name + image.suffix))
            write_image(download, sr, image.meta, sr_alpha)
            dtype, _ = output_layout(image.suffix, image.meta)
            if image.suffix in _BROWSER_FORMATS and dtype == np.uint8:
                shown = Path(download)  # the browser shows the download itself
        if str(shown) != download:
            write_image_file(str(shown), encode_image_array(sr, image.meta, sr_alpha, np.uint8, bgr=True), _PNG_FAST)
        planes = image.rgb if image.meta.alpha is None else np.concatenate([image.rgb, image.meta.alpha[..., None]], 2)
        bicubic = bicubic_view(planes, view, size)
        bicubic_path = stem.with_name(stem.name + '_bicubic.png')
        write_image_file(str(bicubic_path),
                         encode_image_array(bicubic[..., :3], image.meta, bicubic[..., 3] if bicubic.shape[2] == 4
                                            else None, np.uint8, bgr=True), _PNG_FAST)
        status = self._status(image, size, scale, whole, seconds, work, network, tile_size, field_scale)
        return Result(str(shown), str(bicubic_path), download, size, scale, seconds, work, status)

    @staticmethod
    def _status(image: LoadedImage, size: Size, scale: Tuple[float, float], whole: bool, seconds: float, work: str,
                network: torch.nn.Module, tile_size: int, field_scale: Optional[Tuple[float, float]] = None) -> str:
        name = type(network).__name__
        shown = _scale_text(scale)
        what = (f'{image.describe()} → {size[1]}×{size[0]} ({shown})' if whole else
                f'zoom {size[1]}×{size[0]} at {shown} of the input')
        how = {
            'forward': f'full {name} forward (encoder + decoder + render)',
            'decoder': f'{name} decoder re-run on the cached encoder features (its Gaussians depend on the scale) '
                       '+ render',
            'render': 'rendered from the cached Gaussians (no network ran)',
            'preview': (f'rendered from the cached {_scale_text(field_scale or scale)} Gaussians (no network ran); '
                        f'{name} conditions them on the scale, so its decoder now runs for {shown}'),
        }[work]
        tiles = f'; encoded in {tile_size}-pixel tiles' if tile_size else ''
        return f"{'preview' if work == 'preview' else 'done'}: {what} in {seconds:.2f} s: {how}{tiles}"
