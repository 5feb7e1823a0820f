"""``basicsr app`` without a browser: the engine (cached fields, renders, files, errors, stop), the page's
handlers, and the command line. The real page in a real browser: ``test_app_browser.py``."""
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from app_helpers import write_checkpoints, write_photo
from gsasr_plugin import load_model
from gsasr_plugin.app import engine as engine_module
from gsasr_plugin.app.engine import AppError, Engine, Stopped, frame_size_of, zoom_window
from gsasr_plugin.official import hub
from gsasr_plugin.utils.scale import resolve_scale_and_size
from gsasr_plugin.zoom import ZoomRenderer
from gsasr_plugin_cli.parsers import app_parser


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp('app_models'))


@pytest.fixture
def engine(tmp_path, checkpoints):
    return Engine([str(checkpoints['gsasr']), str(checkpoints['continuoussr'])], device='cpu',
                  workdir=str(tmp_path / 'work'), tile_size=0)


def _last(updates):
    return list(updates)[-1]


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _count_calls(monkeypatch, network, names=('encode_features', 'decode_field')):
    calls = {name: 0 for name in names}
    for name in names:
        original = getattr(network, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(network, name, counted)
    return calls


# ------------------------------------------------------------------------------------ cached fields
def test_scale_free_network_renders_every_new_scale_from_its_cached_field(engine, checkpoints, tmp_path, monkeypatch):
    spec = str(checkpoints['continuoussr'])
    path = write_photo(tmp_path / 'cat.png', (20, 28))
    calls = _count_calls(monkeypatch, engine.model(spec).network)
    works = [engine.upscale(spec, str(path), s).work for s in (4, 2.5, 3.7, (2, 3))]
    assert works == ['forward', 'render', 'render', 'render']
    # the network ran once; each render hands the cached field its target (decode_field of a scale-free network
    # only adjusts it, e.g. ContinuousSR's requested-scale covariances: issue 26, item 2)
    assert calls['encode_features'] == 1
    result = engine.upscale(spec, str(path), 3.7)
    assert result.size == resolve_scale_and_size((20, 28), 3.7).size == (74, 104)
    reference = load_model(spec, device='cpu').upscale(_read(path), scale=3.7, bgr=True)
    assert np.abs(_read(result.download_path).astype(int) - reference).max() <= 1
    assert 'rendered from the cached Gaussians (no network ran)' in result.status


def test_gsasr_runs_its_encoder_once_and_its_decoder_once_per_new_scale(engine, checkpoints, tmp_path, monkeypatch):
    """GSASR's Gaussians depend on the scale: the encoder features are reused, the decoder re-runs; the render is
    the full forward's at the requested scale (3.7, not the size's 59 / 16 = 3.6875)."""
    spec = str(checkpoints['gsasr'])
    path = write_photo(tmp_path / 'cat.png', (16, 20))
    calls = _count_calls(monkeypatch, engine.model(spec).network)
    results = [engine.upscale(spec, str(path), s) for s in (4, 3.7, 4, 3.7)]
    assert [r.work for r in results] == ['forward', 'decoder', 'render', 'render']
    assert calls == {'encode_features': 1, 'decode_field': 2}
    assert 'decoder re-run on the cached encoder features' in results[1].status
    reference = load_model(spec, device='cpu').upscale(_read(path), scale=3.7, bgr=True)
    assert np.abs(_read(results[3].download_path).astype(int) - reference).max() <= 1


def test_gsasr_slider_previews_from_the_nearest_kept_field(engine, checkpoints, tmp_path):
    """While GSASR's decoder runs for a new scale, the nearest kept field rendered at the new size is shown."""
    spec, other = str(checkpoints['gsasr']), str(checkpoints['continuoussr'])
    path = str(write_photo(tmp_path / 'cat.png', (16, 20)))
    assert engine.preview(spec, path, 4) is None  # nothing kept yet
    engine.upscale(spec, path, 4)
    engine.upscale(spec, path, 2)
    renderer = engine.prepared(spec, engine.image(path)).color
    preview = engine.preview(spec, path, 3.7)
    assert preview.work == 'preview' and preview.size == (59, 74) and preview.download_path is None
    assert preview.status.startswith('preview: ') and 'rendered from the cached ×4 Gaussians' in preview.status
    assert renderer.encodes == 2  # no decoder ran for it
    exact = engine.upscale(spec, path, 3.7)
    assert exact.work == 'decoder' and engine.preview(spec, path, 3.7) is None  # kept now
    difference = np.abs(_read(preview.image_path).astype(int) - _read(exact.image_path).astype(int))
    assert difference.mean() < 10  # Gaussians of a neighbouring scale: close
    zoom_preview = engine.preview(spec, path, zoom=((0.5, 0.5), 3.0), frame=64)
    assert zoom_preview.work == 'preview' and zoom_preview.size == frame_size_of(zoom_window((16, 20), (0.5, 0.5), 3),
                                                                                   64)
    engine.upscale(other, path, 2)
    assert engine.preview(other, path, 3.7) is None  # scale-free: the exact result is a render anyway


def test_the_handler_yields_the_preview_then_the_result(engine, checkpoints, tmp_path):
    from gsasr_plugin.app.page import Handlers
    handlers = Handlers(engine)
    spec = str(checkpoints['gsasr'])
    path = str(write_photo(tmp_path / 'cat.png', (12, 16)))
    assert len(list(handlers.upscale(spec, path, 4.0, False, 4.0, ''))) == 1
    updates = list(handlers.upscale(spec, path, 3.0, False, 3.0, ''))
    assert [u[2].split(':')[0] for u in updates] == ['preview', 'done']
    assert _read(updates[0][0][0]).shape == _read(updates[1][0][0]).shape == (36, 48, 3)


def test_zoom_renders_a_region_at_its_own_resolution(engine, checkpoints, tmp_path):
    """A zoom frame is the Gaussians rendered over the window at the frame's size: the same pixels as the whole
    image rendered at that scale, cropped (not a blow-up of the slider's result)."""
    spec = str(checkpoints['continuoussr'])
    path = write_photo(tmp_path / 'cat.png', (24, 32))
    engine.upscale(spec, str(path), 2)
    window = zoom_window((24, 32), (0.5, 0.5), 4)
    assert window == (9.0, 12.0, 15.0, 20.0)
    zoom = engine.zoom(spec, str(path), (0.5, 0.5), 4, frame=64)
    assert zoom.size == frame_size_of(window, 64) == (48, 64) and zoom.work == 'render'
    whole = engine.upscale(spec, str(path), 8)  # 192 x 256: the window is rows 72..120, columns 96..160
    crop = _read(whole.image_path)[72:120, 96:160].astype(int)
    assert np.abs(_read(zoom.image_path).astype(int) - crop).max() <= 1
    assert _read(zoom.bicubic_path).shape == (48, 64, 3) and zoom.download_path is None


@pytest.mark.parametrize('kind, suffix, dtype, shape', [('16bit', '.png', np.uint16, (3, )),
                                                        ('gray', '.png', np.uint8, ()),
                                                        ('rgba', '.png', np.uint8, (4, )),
                                                        ('rgb', '.jpg', np.uint8, (3, ))])
def test_download_keeps_the_input_format_depth_and_channels(engine, checkpoints, tmp_path, kind, suffix, dtype, shape):
    spec = str(checkpoints['continuoussr'])
    path = write_photo(tmp_path / f'photo{suffix}', (16, 20), kind)
    result = engine.upscale(spec, str(path), 2.5)
    download = _read(result.download_path)
    assert result.download_path.endswith(f'photo_x2.5{suffix}')
    assert download.dtype == dtype and download.shape == (40, 50) + shape
    shown = _read(result.image_path)  # what the browser shows: 8 bits, same layout
    assert shown.dtype == np.uint8 and shown.shape == (40, 50) + shape
    assert _read(result.bicubic_path).shape == (40, 50) + shape
    if suffix == '.png':  # what basicsr infer / the Python API write, alpha included (JPEG is lossy)
        reference = load_model(spec, device='cpu').upscale(_read(path), scale=2.5, bgr=True)
        assert np.abs(download.astype(int) - reference).max() <= 1


def test_bicubic_view_lines_up_with_the_gaussians_coordinates():
    image = np.random.default_rng(0).random((6, 8, 3)).astype(np.float32)
    same = engine_module.bicubic_view(image, (0, 0, 6, 8), (6, 8))
    assert np.allclose(same, image, atol=1e-5)  # scale 1 over the whole image: the image itself
    crop = engine_module.bicubic_view(image, (2, 3, 4, 6), (2, 3))
    assert np.allclose(crop, image[2:4, 3:6], atol=1e-5)


# -------------------------------------------------------------------------------------------- errors
def test_a_bad_image_is_one_line_and_the_engine_keeps_working(engine, checkpoints, tmp_path):
    spec = str(checkpoints['continuoussr'])
    fake = tmp_path / 'notes.png'
    fake.write_text('not an image')
    with pytest.raises(AppError) as error:
        engine.upscale(spec, str(fake), 2)
    assert 'notes.png' in str(error.value) and '\n' not in str(error.value) and str(tmp_path) not in str(error.value)
    with pytest.raises(AppError, match='upload an image first'):
        engine.upscale(spec, None, 2)
    good = write_photo(tmp_path / 'cat.png', (12, 16))
    assert engine.upscale(spec, str(good), 2).size == (24, 32)


def test_a_scale_too_large_is_refused_before_any_work(engine, checkpoints, tmp_path, monkeypatch):
    spec = str(checkpoints['continuoussr'])
    path = write_photo(tmp_path / 'cat.png', (20, 28))
    engine.max_pixels = 100_000
    monkeypatch.setattr(ZoomRenderer, 'render', lambda *a, **k: pytest.fail('rendered'))
    with pytest.raises(AppError, match=r'840×600 .* over this app\'s limit of 0.1 MP \(basicsr app --max-pixels\)'):
        engine.upscale(spec, str(path), 30)
    with pytest.raises(AppError, match='scale must be > 0'):
        engine.upscale(spec, str(path), -1)


def test_an_upload_over_the_input_limit_is_refused_before_decoding(checkpoints, tmp_path, monkeypatch):
    spec = str(checkpoints['gsasr'])
    path = write_photo(tmp_path / 'big cat.png', (20, 28))
    engine = Engine([spec], device='cpu', workdir=str(tmp_path / 'work'), tile_size=0, max_input_pixels=500)
    with monkeypatch.context() as patch:
        patch.setattr(cv2, 'imdecode', lambda *a, **k: pytest.fail('decoded'))
        with pytest.raises(AppError) as refused:
            engine.upscale(spec, str(path), 2)
    assert str(refused.value) == ("big cat.png: 28×20 (560 pixels) is over this app's limit for an uploaded image of "
                                  '500 pixels (basicsr app --max-input-pixels N; 0: no limit); refused before '
                                  'decoding it')
    engine.max_input_pixels = 0  # no limit
    assert engine.upscale(spec, str(path), 2).size == (40, 56)


def test_max_input_pixels_reaches_the_engine(monkeypatch):
    from gsasr_plugin.commands import app
    made = {}

    class Refused(Engine):
        def __init__(self, *args, **kwargs):
            made.update(kwargs)
            raise AppError('enough')

    monkeypatch.setattr(app, 'Engine', Refused)
    assert app.run(app_parser().parse_args(['--max-input-pixels', '0'])) == 1
    assert made['max_input_pixels'] == 0
    assert app_parser().parse_args([]).max_input_pixels == engine_module.DEFAULT_MAX_INPUT_PIXELS


def test_out_of_memory_is_one_line_and_frees_the_caches(engine, checkpoints, tmp_path, monkeypatch):
    spec = str(checkpoints['continuoussr'])
    path = write_photo(tmp_path / 'cat.png', (12, 16))
    engine.upscale(spec, str(path), 2)
    original = ZoomRenderer.render

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79 GiB total)')

    monkeypatch.setattr(ZoomRenderer, 'render', exhausted)
    with pytest.raises(AppError, match=r'^out of memory rendering 480×360 on cpu: lower the scale or zoom into a '
                                       r'region$'):
        engine.upscale(spec, str(path), 30)
    monkeypatch.setattr(ZoomRenderer, 'render', original)
    assert engine.upscale(spec, str(path), 2).work == 'forward'  # the caches were dropped


def test_an_unavailable_released_model_is_one_line(engine, tmp_path, monkeypatch):
    def offline(model, offline=None):
        raise hub.WeightsUnavailableError(f'{model.name}: cannot download {model.files[0]} (offline); put the files '
                                          'in ~/.cache/huggingface')

    monkeypatch.setattr(hub, 'fetch_files', offline)
    spec = next(c.spec for c in engine.choices if c.spec.startswith('official:'))
    path = write_photo(tmp_path / 'cat.png', (12, 16))
    with pytest.raises(AppError) as error:
        engine.upscale(spec, str(path), 2)
    assert str(error.value).startswith(f'model {spec}: ') and 'offline' in str(error.value)
    assert '\n' not in str(error.value)


# ------------------------------------------------------------------------------------- tiles and stop
def test_stop_between_tiles_keeps_nothing_half_done(checkpoints, tmp_path):
    spec = str(checkpoints['continuoussr'])
    engine = Engine([spec], device='cpu', workdir=str(tmp_path / 'work'), tile_size=8)
    path = write_photo(tmp_path / 'cat.png', (12, 20))
    asked = []

    def stop_after_two_tiles():
        asked.append(1)
        return len(asked) > 3  # asked before loading, before encoding, then after each tile

    with pytest.raises(Stopped, match='^stopped'):
        engine.upscale(spec, str(path), 2, should_stop=stop_after_two_tiles)
    image = engine.image(str(path))
    renderer = engine.prepared(spec, image).color
    assert renderer.tile_size == 8 and not renderer.has_field((2.0, 2.0)) and renderer.encodes == 0
    first = engine.upscale(spec, str(path), 2)
    assert first.work == 'forward' and 'encoded in 8-pixel tiles' in first.status
    assert engine.upscale(spec, str(path), 3).work == 'render'  # a scale-free tiled field is kept too
    reference = load_model(spec, device='cpu').upscale(_read(path), scale=3, bgr=True, tile_size=8)
    assert np.abs(_read(engine.upscale(spec, str(path), 3).download_path).astype(int) - reference).max() <= 1


@pytest.mark.parametrize('name', ['gsasr', 'continuoussr'])
def test_stop_ends_an_untiled_forward_midway(checkpoints, tmp_path, name):
    spec = str(checkpoints[name])
    engine = Engine([spec], device='cpu', workdir=str(tmp_path / 'work'), tile_size=0)
    path = write_photo(tmp_path / 'cat.png', (12, 16))
    network = engine.model(spec).network
    finished = []
    counters = [module.register_forward_hook(lambda *args: finished.append(1)) for module in network.modules()]
    asked = []

    def stop_inside_the_forward():
        asked.append(1)
        return len(asked) > 5  # asked before loading, before encoding, then before each module runs

    with pytest.raises(Stopped, match='^stopped'):
        engine.upscale(spec, str(path), 2, should_stop=stop_inside_the_forward)
    assert len(asked) == 6 and len(finished) <= 3  # stopped before the forward's 4th module ran
    assert not any(module._forward_pre_hooks for module in network.modules())  # the stop points are gone
    for counter in counters:
        counter.remove()
    renderer = engine.prepared(spec, engine.image(str(path))).color
    assert not renderer.has_field((2.0, 2.0)) and renderer.encodes == 0
    result = engine.upscale(spec, str(path), 2)
    assert result.work == 'forward'
    reference = load_model(spec, device='cpu').upscale(_read(path), scale=2, bgr=True, tile_size=0)
    assert np.abs(_read(result.download_path).astype(int) - reference).max() <= 1


def test_tiled_gsasr_encodes_again_for_a_new_scale(checkpoints, tmp_path):
    spec = str(checkpoints['gsasr'])
    engine = Engine([spec], device='cpu', workdir=str(tmp_path / 'work'), tile_size=8)
    path = write_photo(tmp_path / 'cat.png', (12, 16))
    assert [engine.upscale(spec, str(path), s).work for s in (2, 3, 2)] == ['forward', 'forward', 'render']


# ---------------------------------------------------------------------------------------- the page
def test_handlers_show_errors_as_one_status_line(engine, checkpoints, tmp_path, monkeypatch, caplog):
    from gsasr_plugin.app.page import Handlers
    handlers = Handlers(engine)
    spec = str(checkpoints['continuoussr'])
    fake = tmp_path / 'notes.png'
    fake.write_text('not an image')
    *_, status = _last(handlers.upscale(spec, str(fake), 2.0, False, 2.0, ''))
    assert status.startswith('error: notes.png') and '\n' not in status
    *_, status = _last(handlers.upscale(spec, str(fake), 2.0, False, 2.0, '12x'))
    assert status.startswith('error: size must be WxH')
    good = write_photo(tmp_path / 'cat.png', (12, 16))
    images, download, status = _last(handlers.upscale(spec, str(good), 2.0, True, 3.0, ''))
    assert status.startswith('done: 16×12 8-bit RGB → 48×24 (×2×3)') and download.endswith('cat_x2x3.png')
    images, download, status = _last(handlers.upscale(spec, str(good), 2.0, False, 3.0, '40x30'))
    assert _read(images[0]).shape == (30, 40, 3) and _read(images[1]).shape == (30, 40, 3)
    preview, status = handlers.load(str(good))
    assert _read(preview).shape == (12, 16, 3) and status == 'loaded cat.png: 16×12 8-bit RGB'

    monkeypatch.setattr(engine, 'upscale', lambda *a, **k: {}['a bug'])
    with caplog.at_level(logging.ERROR, logger='gsasr_plugin.app'):
        *_, status = _last(handlers.upscale(spec, str(good), 2.0, False, 2.0, ''))
    assert status.startswith("error: internal error (KeyError: 'a bug')") and 'Traceback' in caplog.text


def test_stop_button_stops_the_sessions_work(engine, checkpoints, tmp_path, monkeypatch):
    from gsasr_plugin.app.page import Handlers
    handlers = Handlers(engine)
    spec = str(checkpoints['continuoussr'])
    good = write_photo(tmp_path / 'cat.png', (12, 16))
    original = engine.upscale

    def pressed_meanwhile(*args, **kwargs):
        assert handlers.stop() == 'stopping after the current step ...'  # the button, while this runs
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, 'upscale', pressed_meanwhile)
    images, download, status = _last(handlers.upscale(spec, str(good), 2.0, False, 2.0, ''))
    assert status.startswith('stopped: nothing was rendered')
    monkeypatch.setattr(engine, 'upscale', original)
    assert _last(handlers.upscale(spec, str(good), 2.0, False, 2.0, ''))[2].startswith('done:')  # the next run goes


def test_examples_ship_with_scikit_image(tmp_path):
    from gsasr_plugin.app.page import write_examples
    examples = write_examples(str(tmp_path))
    layouts = [(_read(path).dtype, _read(path).ndim, _read(path).shape[-1]) for path, _ in examples]
    assert (np.uint16, 3, 3) in layouts and (np.uint8, 2, _read(examples[1][0]).shape[-1]) in layouts
    assert (np.uint8, 3, 4) in layouts and all(1 <= scale <= 30 for _, scale in examples)


# ------------------------------------------------------------------------------------ command line
def test_app_help_is_fast_and_names_the_flags():
    code = 'import sys\nfrom gsasr_plugin_cli import main\nrc = main(["app", "-h"])\nprint("torch" in sys.modules)'
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('False')
    for flag in ('-m MODEL', '--host HOST', '--port PORT', '--device DEVICE', '--max-pixels N',
                 '--max-input-pixels N'):
        assert flag in proc.stdout


def test_app_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    from gsasr_plugin.commands import app
    original = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *args: None if name == 'gradio' else original(name, *args))
    assert app.run(app_parser().parse_args([])) == 1
    err = capsys.readouterr().err.strip()
    assert err == f'basicsr app: error: {app.GRADIO_MISSING}' and "pip install 'gsasr-basicsr[app]'" in err


def test_the_plugin_works_without_gradio():
    """Only the page imports Gradio: the plugin, its commands and the app's engine import without it."""
    code = ('import sys\nsys.modules["gradio"] = None\nimport gsasr_plugin, gsasr_plugin.commands.app, '
            'gsasr_plugin.commands.infer, gsasr_plugin.app.engine\nprint("ok")')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]


def test_app_bad_arguments_are_one_line(tmp_path, capsys):
    from gsasr_plugin_cli import main
    assert main(['app', '--port', 'http']) == 2
    assert capsys.readouterr().err.strip() == ('basicsr app: error: argument --port: must be a port number 0..65535, '
                                               "got 'http'")
    assert main(['app', '-m', str(tmp_path / 'missing.pth')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('basicsr app: error: model ') and 'missing.pth' in err[0]


def test_a_click_on_the_input_preview_centres_the_zoom(tmp_path):
    from types import SimpleNamespace

    from gsasr_plugin.app.page import Handlers
    path = write_photo(tmp_path / 'cat.png', (10, 20))
    assert Handlers.pick_center(SimpleNamespace(index=[4, 7]), str(path)) == (0.225, 0.75)  # pixel centres, (x, y)
