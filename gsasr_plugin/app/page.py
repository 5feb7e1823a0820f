"""The page of ``basicsr app`` (Gradio): upload, model, scale slider (per axis, or an exact size), the result beside
bicubic on a split slider, a zoom rendered from the Gaussians, download, progress, stop, examples.

The handlers (:class:`Handlers`) turn every :class:`~gsasr_plugin.app.engine.AppError` into one status line
and leave the shown images as they were; anything unexpected is logged on the server with its traceback and
shown as one line too, so the server keeps serving. Nothing is fetched from the internet: no analytics, no
share link, the theme's fonts are Gradio's own files.
"""
import logging
import os
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import gradio as gr
import numpy as np

from gsasr_plugin.app.engine import DEFAULT_FRAME, AppError, Engine, Result, Stopped
from gsasr_plugin.utils.atomic_io import write_image_file
from gsasr_plugin.utils.image_io import encode_image_array
from gsasr_plugin.utils.scale import parse_size_text

__all__ = ['build_page', 'Handlers', 'write_examples', 'EXAMPLES']

logger = logging.getLogger('gsasr_plugin.app')

SCALE_RANGE = (1.0, 30.0, 0.1)  # the slider: min, max, step (the authors' demo offers the same)
# scikit-image photos (shipped with the package, so the examples work offline): name, how to make the LR
# example (shrink factor, what to add), the example's scale
EXAMPLES = (('chelsea', 2, 'rgb', 4.0), ('camera', 4, 'gray', 3.5), ('coffee', 3, '16bit', 2.5),
            ('astronaut', 4, 'rgba', 6.0))


def write_examples(folder: str) -> List[Tuple[str, float]]:
    """Write the example images (scikit-image photos, shrunk: LR inputs) into ``folder``; [(path, scale)]."""
    import cv2
    import skimage.data
    os.makedirs(folder, exist_ok=True)
    examples = []
    for name, shrink, kind, scale in EXAMPLES:
        photo = getattr(skimage.data, name)()
        height, width = photo.shape[:2]
        small = cv2.resize(photo, (width // shrink, height // shrink), interpolation=cv2.INTER_AREA)
        if kind == 'gray':
            image, suffix = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), '_gray.png'
        elif kind == '16bit':
            image, suffix = (small[..., ::-1].astype(np.uint16) * 257), '_16bit.png'
        elif kind == 'rgba':
            yy, xx = np.mgrid[:small.shape[0], :small.shape[1]]
            radius = min(small.shape[:2]) / 2
            disc = np.hypot(yy - small.shape[0] / 2, xx - small.shape[1] / 2) < radius * 0.95
            alpha = np.where(disc, 255, 0).astype(np.uint8)
            image, suffix = np.dstack([small[..., ::-1], alpha]), '_rgba.png'
        else:
            image, suffix = small[..., ::-1], '.png'
        path = os.path.join(folder, name + suffix)
        if not os.path.isfile(path):
            write_image_file(path, np.ascontiguousarray(image))
        examples.append((path, scale))
    return examples


def _status_error(error: BaseException) -> str:
    return str(error) if isinstance(error, Stopped) else f'error: {error}'


class Handlers:
    """What the page's events call; each returns Gradio updates and never raises (errors become the status)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._stops: Dict[str, threading.Event] = {}

    # --------------------------------------------------------------------------------- stop button
    def _stop_event(self, request: Optional[gr.Request]) -> threading.Event:
        key = getattr(request, 'session_hash', None) or 'local'
        return self._stops.setdefault(key, threading.Event())

    def stop(self, request: gr.Request = None) -> str:
        self._stop_event(request).set()
        return 'stopping after the current step ...'

    def _guard(self, run, request: Optional[gr.Request], outputs: int):
        """Run ``run(should_stop)``; on failure, (no change, ..., the one-line status)."""
        return self._last(self._guard_stream(lambda should_stop: iter([run(should_stop)]), request, outputs))

    def _guard_stream(self, run, request: Optional[gr.Request], outputs: int):
        """Yield what the generator ``run(should_stop)`` yields; on failure, (no change, ..., the status line)."""
        stop = self._stop_event(request)
        stop.clear()
        try:
            yield from run(stop.is_set)
        except AppError as error:
            yield (gr.update(), ) * (outputs - 1) + (_status_error(error), )
        except Exception as error:  # noqa: BLE001 (a bug must not take the server down)
            logger.exception('basicsr app: unexpected error')
            text = str(error).strip().splitlines()[0] if str(error).strip() else ''
            yield (gr.update(), ) * (outputs - 1) + (
                f'error: internal error ({type(error).__name__}{": " + text if text else ""}); the server log has '
                'the details', )

    @staticmethod
    def _last(updates):
        result = None
        for result in updates:
            pass
        return result

    # ------------------------------------------------------------------------------------ handlers
    def load(self, path: Optional[str], request: gr.Request = None) -> Tuple[Any, str]:
        """An uploaded file: its 8-bit preview, and a status line describing it (or the error)."""
        def run(_):
            if not path:
                return None, 'upload an image, or pick an example below'
            image = self.engine.image(path)
            preview = self.engine.workdir / f'input_{image.digest[:12]}.png'
            if not preview.exists():
                write_image_file(str(preview), encode_image_array(image.rgb, image.meta, image.meta.alpha, np.uint8,
                                                                  bgr=True))
            return str(preview), f'loaded {os.path.basename(path)}: {image.describe()}'
        return self._guard(run, request, 2)

    def describe_model(self, spec: str, request: gr.Request = None) -> str:
        def run(_):
            return (self.engine.describe_model(spec), )
        return self._guard(run, request, 1)[0]

    def upscale(self, spec: str, path: Optional[str], scale: float, per_axis: bool, scale_w: float, size_text: str,
                request: gr.Request = None, progress=gr.Progress()) -> Iterator[Tuple[Any, Any, str]]:
        """Yields (result | bicubic, the download, status): a preview first where GSASR's decoder must run."""
        def run(should_stop):
            if not path:
                yield gr.update(), gr.update(), 'upload an image, or pick an example below'
                return
            size = None
            if size_text and size_text.strip():
                try:
                    size = parse_size_text(size_text.strip(), 'size')
                except ValueError as error:
                    raise AppError(str(error)) from None
            pair = None if size else (float(scale), float(scale_w if per_axis else scale))
            preview = self.engine.preview(spec, path, pair, size)
            if preview is not None:
                yield (preview.image_path, preview.bicubic_path), gr.update(), preview.status
            result = self.engine.upscale(spec, path, pair, size, should_stop, _reporter(progress))
            yield (result.image_path, result.bicubic_path), result.download_path, result.status
        yield from self._guard_stream(run, request, 3)

    def zoom(self, spec: str, path: Optional[str], center_x: float, center_y: float, magnification: float,
             request: gr.Request = None, progress=gr.Progress()) -> Iterator[Tuple[Any, str]]:
        """Yields (zoom | bicubic zoom, status): a preview first where GSASR's decoder must run."""
        def run(should_stop):
            if not path:
                yield gr.update(), 'upload an image, or pick an example below'
                return
            center = (float(center_y), float(center_x))
            preview = self.engine.preview(spec, path, zoom=(center, float(magnification)))
            if preview is not None:
                yield (preview.image_path, preview.bicubic_path), preview.status
            result: Result = self.engine.zoom(spec, path, center, float(magnification), DEFAULT_FRAME, should_stop,
                                              _reporter(progress))
            yield (result.image_path, result.bicubic_path), result.status
        yield from self._guard_stream(run, request, 2)

    @staticmethod
    def pick_center(event: gr.SelectData, path: Optional[str]) -> Tuple[float, float]:
        """A click on the input preview: the zoom centre as fractions of the image (x, y)."""
        if not path or event is None or not isinstance(event.index, (list, tuple)):
            return gr.update(), gr.update()
        from PIL import Image
        with Image.open(path) as image:
            width, height = image.size
        x, y = event.index[:2]
        return round((x + 0.5) / width, 3), round((y + 0.5) / height, 3)


def _reporter(progress):
    def report(fraction: float, text: str) -> None:
        try:
            progress(fraction, desc=text)
        except Exception:  # noqa: BLE001 (no progress bar outside a request)
            pass
    return report


INTRO = """# Arbitrary-scale super-resolution by 2D Gaussian splatting
Upload an image, then move the scale slider: the network predicts Gaussians once and the result is rendered
from them at any scale (×1 to ×30, or an exact size). The result is shown beside bicubic on a split view; the zoom
renders a region from the same Gaussians at the region's own resolution, so it stays sharp.
"""


def build_page(engine: Engine, examples_folder: Optional[str] = None) -> gr.Blocks:
    """The page over ``engine`` (examples written into ``examples_folder``, default: the engine's folder)."""
    handlers = Handlers(engine)
    examples = write_examples(examples_folder or str(engine.workdir / 'examples'))
    low, high, step = SCALE_RANGE
    with gr.Blocks(title='basicsr app: arbitrary-scale SR', analytics_enabled=False) as page:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                upload = gr.File(label='Image (PNG, JPEG, TIFF, WebP, BMP; 8/16-bit; gray, RGB, RGBA)',
                                 file_types=['image'], type='filepath', elem_id='upload')
                preview = gr.Image(label='Input: click to centre the zoom', interactive=False, type='filepath',
                                   format='png', elem_id='input-preview', height=240)
                model = gr.Dropdown(choices=[(c.label, c.spec) for c in engine.choices], value=engine.default_model,
                                    label='Model', elem_id='model')
                model_note = gr.Markdown(elem_id='model-note')
                scale = gr.Slider(low, high, value=4.0, step=step, label='Scale (height too, with per-axis scales)',
                                  elem_id='scale')
                with gr.Accordion('Per-axis scale, exact size', open=False):
                    per_axis = gr.Checkbox(label='A different scale for the width', elem_id='per-axis')
                    scale_w = gr.Slider(low, high, value=4.0, step=step, label='Width scale', elem_id='scale-w')
                    size = gr.Textbox(label='Exact size WxH (wins over the scale; Enter to apply)',
                                      placeholder='e.g. 1920x1080', elem_id='size')
                with gr.Row():
                    run = gr.Button('Upscale', variant='primary', elem_id='run')
                    stop = gr.Button('Stop', variant='stop', elem_id='stop')
                status = gr.Textbox(label='Status', interactive=False, lines=2, elem_id='status')
            with gr.Column(scale=2):
                result = gr.ImageSlider(label='Gaussian splatting | bicubic (drag the divider)', type='filepath',
                                        format='png', elem_id='result', max_height=640)
                download = gr.File(label="Download (the input's format and bit depth)", interactive=False,
                                   elem_id='download')
                gr.Markdown('### Zoom: a region rendered from the Gaussians at its own resolution')
                with gr.Row():
                    magnification = gr.Slider(1, 32, value=4, step=0.5, label='Magnification', elem_id='zoom-mag')
                    center_x = gr.Slider(0, 1, value=0.5, step=0.001, label='Centre x', elem_id='zoom-x')
                    center_y = gr.Slider(0, 1, value=0.5, step=0.001, label='Centre y', elem_id='zoom-y')
                zoom_button = gr.Button('Zoom', elem_id='zoom-run')
                zoom_view = gr.ImageSlider(label='Zoom: Gaussian splatting | bicubic', type='filepath', format='png',
                                           elem_id='zoom', max_height=DEFAULT_FRAME)
        gr.Examples(examples=[[path, s] for path, s in examples], inputs=[upload, scale], label='Examples')

        upscale_inputs = [model, upload, scale, per_axis, scale_w, size]
        upscale_outputs = [result, download, status]
        zoom_inputs = [model, upload, center_x, center_y, magnification]
        # always_last: a file chosen while the previous one is still being read is not dropped
        loaded = upload.change(handlers.load, [upload], [preview, status], trigger_mode='always_last')
        loaded.success(handlers.upscale, upscale_inputs, upscale_outputs)
        for trigger in (run.click, scale.release, scale_w.release, per_axis.input, size.submit):
            trigger(handlers.upscale, upscale_inputs, upscale_outputs, trigger_mode='always_last')
        model.input(handlers.describe_model, [model], [model_note]).then(handlers.upscale, upscale_inputs,
                                                                        upscale_outputs)
        for trigger in (zoom_button.click, magnification.release, center_x.release, center_y.release):
            trigger(handlers.zoom, zoom_inputs, [zoom_view, status], trigger_mode='always_last')
        preview.select(handlers.pick_center, [preview], [center_x, center_y]).then(handlers.zoom, zoom_inputs,
                                                                                   [zoom_view, status])
        # no cancels=: the work stops at its next step (a module of the network, a tile) and says so in the status line
        stop.click(handlers.stop, None, [status], queue=False)
        page.load(handlers.describe_model, [model], [model_note])
    return page
