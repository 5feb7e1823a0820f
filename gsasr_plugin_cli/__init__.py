"""The ``basicsr`` console script's front end: usage, ``--version``, every ``-h`` and the parsing of every
subcommand's arguments, without importing torch.

``gsasr_plugin`` registers its networks with BasicSR on import, which imports torch, torchvision and basicsr
(seconds). This small package sits outside it so that ``basicsr --help``, ``basicsr --version`` and ``basicsr
<subcommand> -h`` answer at once, and a bad argument is reported before the library loads. A subcommand that
runs is dispatched with its parsed arguments to ``gsasr_plugin.commands.<name>.run(args)``. The front end
imports the library, never the other way round. ``python -m gsasr_plugin_cli ...`` is ``basicsr ...``
(e.g. under ``torch.distributed.run -m gsasr_plugin_cli train ...``).
"""
import argparse
import importlib
import importlib.util
import re
import sys
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional

from gsasr_plugin_cli import parsers

__all__ = ['main', 'SUBCOMMANDS', 'Subcommand', 'version_text']

PROG = 'basicsr'
DISTRIBUTION = 'gsasr-basicsr'


class Subcommand(NamedTuple):
    """A ``basicsr`` subcommand: its one-line help and its parser (argparse, built without torch)."""
    help: str
    parser: Callable[[], argparse.ArgumentParser]


SUBCOMMANDS: Dict[str, Subcommand] = {
    'train': Subcommand('train a model from a BasicSR option file (basicsr/train.py flags: -opt, --launcher, '
                        '--auto_resume, ...)', partial(parsers.pipeline_parser, 'train')),
    'test': Subcommand('evaluate a model from a BasicSR option file (basicsr/test.py flags)',
                       partial(parsers.pipeline_parser, 'test')),
    'infer': Subcommand('super-resolve images at any scale or size with a trained model (.pth alone is enough)',
                        parsers.infer_parser),
    'convert': Subcommand('write released (official) weights as one checkpoint of ours (--list: the released '
                          'models)', parsers.convert_parser),
    'app': Subcommand('a local web page: upload an image, pick any scale on a slider (needs the [app] extra)',
                      parsers.app_parser),
}


def _usage() -> str:
    lines = [f'usage: {PROG} {{' + ','.join(SUBCOMMANDS) + '} [options]', f'       {PROG} --version', '',
             'subcommands:']
    lines += [f'  {name:<7} {command.help}' for name, command in SUBCOMMANDS.items()]
    lines += ['', f"Run '{PROG} <subcommand> -h' for its options."]
    return '\n'.join(lines)


def _installed_version(distribution: str) -> Optional[str]:
    from importlib import metadata  # here: only --version needs it, and it slows every start by ~10 ms
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _source_version() -> Optional[str]:
    """``__version__`` of the ``gsasr_plugin`` that would be imported, read without importing it."""
    spec = importlib.util.find_spec('gsasr_plugin')
    if spec is None or not spec.origin:
        return None
    try:
        with open(Path(spec.origin).with_name('version.py'), encoding='utf-8') as handle:
            match = re.search(r"^__version__ = '([^']+)'", handle.read(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1) if match else None


def version_text() -> str:
    """``gsasr-basicsr 0.1.0 (basicsr 1.4.2, torch 2.x, Python 3.x)`` from package metadata, no imports."""
    ours = _source_version() or _installed_version(DISTRIBUTION) or 'unknown'
    others = [f'{name} {_installed_version(name) or "not installed"}' for name in ('basicsr', 'torch')]
    python = '.'.join(map(str, sys.version_info[:3]))
    return f"{DISTRIBUTION} {ours} ({', '.join(others)}, Python {python})"


def _asks_for_help(argv: List[str]) -> bool:
    options = argv[:argv.index('--')] if '--' in argv else argv
    return any(arg in ('-h', '--help') for arg in options)


def main(argv: Optional[List[str]] = None) -> int:
    """``basicsr <subcommand> [options]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ('-h', '--help'):
        print(_usage())
        return 0
    if argv and argv[0] == '--version':
        print(version_text())
        return 0
    choices = ', '.join(SUBCOMMANDS)
    if not argv:
        print(f'{PROG}: error: no subcommand given; choose one of {choices}\n\n{_usage()}', file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        import difflib
        close = difflib.get_close_matches(command, list(SUBCOMMANDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ''
        print(f"{PROG}: error: unknown subcommand '{command}'{hint}; choose one of {choices}\n\n{_usage()}",
              file=sys.stderr)
        return 2
    parser = SUBCOMMANDS[command].parser()
    if _asks_for_help(rest):
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # a usage error, printed by argparse
        return int(exc.code or 0)
    except parsers.UsageError as error:  # the one-line parsers' usage errors
        print(f'{PROG} {command}: error: {error}', file=sys.stderr)
        return 2
    module = importlib.import_module(f'gsasr_plugin.commands.{command}')  # the library (torch) from here on
    return module.run(args) or 0
