"""``basicsr app``: serve the browser app (:mod:`gsasr_plugin.app`) on this machine.

    basicsr app [-m MODEL ...] [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [-t N] [--max-pixels N]
                [--max-input-pixels N]

The models given with ``-m`` are loaded before the server starts, so a wrong one is one line and exit 1 with
nothing served. Gradio is the ``[app]`` extra; without it, one line says how to install it. No analytics and
no share link: the page works offline.

Exit status: 0 after the server was stopped (Ctrl+C), 1 when a model or the server cannot start, 2 for bad
arguments.
"""
import argparse
import importlib.util
import os
import sys

from gsasr_plugin.app.engine import AppError, Engine
from gsasr_plugin.utils.cpu_tuning import keep_freed_memory

__all__ = ['run', 'GRADIO_MISSING']

PROG = 'basicsr app'
GRADIO_MISSING = ("the browser app needs Gradio, the [app] extra: pip install 'gsasr-basicsr[app]' "
                  "(or pip install -e '.[app]' in a checkout)")


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _gradio_installed() -> bool:
    try:
        return importlib.util.find_spec('gradio') is not None
    except ValueError:  # gradio's module object is there but has no spec (it failed to import)
        return False


def run(args: argparse.Namespace) -> int:
    """``basicsr app ...`` with ``args`` parsed by :func:`gsasr_plugin_cli.parsers.app_parser`."""
    os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # before gradio is imported: it reads it then
    if not _gradio_installed():
        print(f'{PROG}: error: {GRADIO_MISSING}', file=sys.stderr)
        return 1
    from gsasr_plugin.app.page import build_page  # imports gradio: only once it is known to be there
    keep_freed_memory()
    try:
        engine = Engine(args.model, device=args.device, max_pixels=args.max_pixels, tile_size=args.tile_size,
                        max_input_pixels=args.max_input_pixels)
        for spec in args.model:
            engine.model(spec)
            print(f'{PROG}: loaded {spec}', file=sys.stderr)
    except (AppError, ValueError) as error:
        print(f'{PROG}: error: {_one_line(error)}', file=sys.stderr)
        return 1
    page = build_page(engine)
    print(f'{PROG}: serving on http://{args.host}:{args.port} (Ctrl+C stops it)', file=sys.stderr)
    try:
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_error=False,
            allowed_paths=[str(engine.workdir)], quiet=True)
    except KeyboardInterrupt:
        return 0
    except OSError as error:  # the port is taken, the address is not this machine's, ...
        print(f'{PROG}: error: cannot serve on {args.host}:{args.port}: {_one_line(error)}', file=sys.stderr)
        return 1
    return 0
