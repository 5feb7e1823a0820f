"""``basicsr app`` in a real headless browser: Debian's Chromium (``/usr/bin/chromium``, or ``GSASR_CHROMIUM``)
driven by Playwright, against the command ``basicsr app -m <checkpoint>`` serving on 127.0.0.1.

No browser is downloaded. When Chromium cannot start the tests fail; set ``GSASR_NO_BROWSER=1`` to skip them
on a machine without one (CI does not). ``GSASR_APP_SCREENSHOT=docs/app.png`` also writes the page's
screenshot there (the README's).
"""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from app_helpers import write_checkpoints, write_photo
from gsasr_plugin.app.engine import DEFAULT_FRAME, frame_size_of, zoom_window
from gsasr_plugin.utils.scale import resolve_scale_and_size

CHROMIUM = os.environ.get('GSASR_CHROMIUM', '/usr/bin/chromium')
# headless as root on a closed network: no sandbox, no GPU, nothing fetched in the background
CHROMIUM_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--disable-dev-shm-usage']
LR_SIZE = (48, 72)  # (h, w) of the uploaded photo


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """``basicsr app -m <tiny GSASR>`` on a free port; yields its URL and stops it afterwards."""
    folder = tmp_path_factory.mktemp('app_server')
    checkpoint = write_checkpoints(folder)['gsasr']
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED='False', GRADIO_TEMP_DIR=str(folder / 'gradio'))
    log = open(folder / 'server.log', 'w')
    process = subprocess.Popen([sys.executable, '-m', 'gsasr_plugin_cli', 'app', '-m', str(checkpoint), '--port',
                                str(port), '--device', 'cpu'], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f'http://127.0.0.1:{port}'
    deadline = time.time() + 240
    while True:
        if process.poll() is not None:
            pytest.fail(f'basicsr app exited with {process.returncode}: {(folder / "server.log").read_text()[-2000:]}')
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            process.kill()
            pytest.fail(f'basicsr app did not answer in 240 s: {(folder / "server.log").read_text()[-2000:]}')
        time.sleep(1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope='module')
def browser():
    if os.environ.get('GSASR_NO_BROWSER') == '1':
        pytest.skip('GSASR_NO_BROWSER=1: no browser on this machine')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        except Exception as error:  # noqa: BLE001 (Playwright raises its own Error for a missing browser)
            pytest.fail(f'cannot start Chromium at {CHROMIUM} ({str(error).splitlines()[0]}): install Debian\'s '
                        "chromium (apt-get install chromium), point GSASR_CHROMIUM at one, or set GSASR_NO_BROWSER=1")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the app; fails the test if the page asked anything of the internet."""
    context = browser.new_context(viewport={'width': 1400, 'height': 1000})
    tab = context.new_page()
    outside = []
    local = (server, 'data:', 'blob:')
    tab.on('request', lambda request: None if request.url.startswith(local) else outside.append(request.url))
    tab.goto(server)
    tab.wait_for_selector('#upload input[type=file]', state='attached', timeout=60_000)
    yield tab
    context.close()
    assert not outside, f'the page fetched from outside this machine: {outside[:5]}'


def _status(tab) -> str:
    return tab.locator('#status textarea').input_value()


def _wait_status(tab, text: str, timeout_s: float = 180) -> str:
    """Wait until the status line contains ``text``; fail with the last status otherwise."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = _status(tab)
        if text in status:
            return status
        tab.wait_for_timeout(200)
    pytest.fail(f'status never showed {text!r}; last: {_status(tab)!r}')


def _natural_sizes(tab, selector: str):
    """(height, width) of each <img> in ``selector``, as the browser decoded them."""
    images = tab.locator(f'{selector} img')
    images.first.wait_for(timeout=60_000)
    # the status line and the images arrive together, but the browser decodes the images after
    tab.wait_for_function(f"[...document.querySelectorAll('{selector} img')].every(e => e.complete && "
                          "e.naturalWidth > 0)", timeout=60_000)
    return [tuple(images.nth(k).evaluate('e => [e.naturalHeight, e.naturalWidth]')) for k in range(images.count())]


def _screenshot_array(locator) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(locator.screenshot(), np.uint8), cv2.IMREAD_COLOR)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = cv2.resize(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    b = cv2.resize(cv2.cvtColor(b, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA).astype(float)
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_app_browser_upload_move_the_slider_and_zoom(page, tmp_path):
    photo = write_photo(tmp_path / 'cat.png', LR_SIZE)
    page.locator('#upload input[type=file]').set_input_files(str(photo))
    status = _wait_status(page, 'done: 72×48 8-bit RGB → ')
    size = resolve_scale_and_size(LR_SIZE, 4.0).size  # the slider starts at 4
    assert f'→ {size[1]}×{size[0]} (×4)' in status and 'full GSASR forward' in status
    assert _natural_sizes(page, '#result') == [size, size]  # the result and bicubic, at the output size

    # move the slider: a click on its track, as a user would
    track = page.locator('#scale input[type=range]')
    box = track.bounding_box()
    page.mouse.click(box['x'] + box['width'] * 0.07, box['y'] + box['height'] / 2)
    value = float(track.input_value())
    assert 1.5 <= value <= 3.5 and value != 4.0
    size = resolve_scale_and_size(LR_SIZE, value).size
    status = _wait_status(page, f'done: 72×48 8-bit RGB → {size[1]}×{size[0]} (×{value:.3g})')
    assert 'decoder re-run on the cached encoder features' in status  # GSASR: the encoder was skipped
    # (a preview from the x4 Gaussians was shown while the decoder ran: tests/test_app.py checks it)
    page.wait_for_function(f"[...document.querySelectorAll('#result img')].every(e => e.naturalWidth == {size[1]})")
    assert _natural_sizes(page, '#result') == [size, size]
    assert f'cat_x{value:g}.png' in page.locator('#download').inner_text().replace('\n', '')

    # the screenshot shows the photo (random weights with lr_color_residual render it smoothly)
    shown = _screenshot_array(page.locator('#result img').first)
    expected = cv2.imread(str(photo))
    assert shown.std() > 20 and _correlation(shown, expected) > 0.8

    # zoom into the centre, rendered from the Gaussians at the frame's resolution
    page.locator('#zoom-run').click()
    status = _wait_status(page, 'done: zoom ')
    frame = frame_size_of(zoom_window(LR_SIZE, (0.5, 0.5), 4), DEFAULT_FRAME)
    assert f'zoom {frame[1]}×{frame[0]}' in status
    assert _natural_sizes(page, '#zoom') == [frame, frame]
    centre = expected[LR_SIZE[0] * 3 // 8:LR_SIZE[0] * 5 // 8, LR_SIZE[1] * 3 // 8:LR_SIZE[1] * 5 // 8]
    assert _correlation(_screenshot_array(page.locator('#zoom img').first), centre) > 0.6

    # the same scale again: rendered from the cached field, no network
    page.locator('#run').click()
    _wait_status(page, 'rendered from the cached Gaussians (no network ran)')

    shot = tmp_path / 'app.png'
    page.screenshot(path=str(shot), full_page=True)
    target = os.environ.get('GSASR_APP_SCREENSHOT')
    if target:  # the README's screenshot, 1000 pixels wide
        full = cv2.imread(str(shot))
        width = min(1000, full.shape[1])
        small = cv2.resize(full, (width, round(full.shape[0] * width / full.shape[1])), interpolation=cv2.INTER_AREA)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(target, small, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def test_app_browser_bad_file_is_one_line_and_the_page_keeps_working(page, tmp_path):
    fake = tmp_path / 'notes.png'
    fake.write_text('these are notes, not pixels')
    page.locator('#upload input[type=file]').set_input_files(str(fake))
    status = _wait_status(page, 'error: ')
    assert 'notes.png' in status and '\n' not in status and 'Traceback' not in status
    photo = write_photo(tmp_path / 'camera.png', (24, 24), 'gray', 'camera')
    page.locator('#upload button[aria-label="Clear"]').click()  # the file box holds the last upload
    _wait_status(page, 'upload an image')
    page.locator('#upload input[type=file]').set_input_files(str(photo))
    _wait_status(page, 'done: 24×24 8-bit gray → 96×96 (×4)')
