"""The ``basicsr`` console script's front end: usage, ``--version`` and every ``-h`` without importing torch.

``gsasr_plugin`` registers its networks with BasicSR on import, which imports torch, torchvision and
basicsr (seconds). This small package sits outside it so that ``basicsr --help``, ``basicsr --version``
and ``basicsr <subcommand> -h`` answer at once; a subcommand that runs is dispatched to
``gsasr_plugin.commands.<name>.run(argv)``, which imports what it needs. The argument parsers live in
:mod:`gsasr_plugin_cli.parsers` for the same reason.
"""
import importlib
import sys
from typing import Callable, Dict, List, NamedTuple, Optional

__all__ = ['main', 'SUBCOMMANDS', 'Subcommand', 'version_text']

PROG = 'basicsr'
DISTRIBUTION = 'gsasr-basicsr'


class Subcommand(NamedTuple):
    """A ``basicsr`` subcommand: its one-line help and its light parser (None: ``-h`` imports the command)."""
    help: str
    parser: Optional[Callable[[], object]] = None


def _pipeline_parser(command: str) -> Callable[[], object]:
    def build():
        from gsasr_plugin_cli.parsers import pipeline_parser
        return pipeline_parser(command)

    return build


def _infer_parser():
    from gsasr_plugin_cli.parsers import infer_parser
    return infer_parser()


def _convert_parser():
    from gsasr_plugin_cli.parsers import convert_parser
    return convert_parser()


SUBCOMMANDS: Dict[str, Subcommand] = {
    'train': Subcommand('train a model from a BasicSR option file (basicsr/train.py flags: -opt, --launcher, '
                        '--auto_resume, ...)', _pipeline_parser('train')),
    'test': Subcommand('evaluate a model from a BasicSR option file (basicsr/test.py flags)', _pipeline_parser('test')),
    'infer': Subcommand('super-resolve images at any scale or size with a trained model (.pth alone is enough)',
                        _infer_parser),
    'convert': Subcommand('write released (official) weights as one checkpoint of ours (--list: the released '
                          'models)', _convert_parser),
}


def _usage() -> str:
    lines = [f'usage: {PROG} {{' + ','.join(SUBCOMMANDS) + '} [options]', f'       {PROG} --version', '',
             'subcommands:']
    lines += [f'  {name:<7} {command.help}' for name, command in SUBCOMMANDS.items()]
    lines += ['', f"Run '{PROG} <subcommand> -h' for its options."]
    return '\n'.join(lines)


def _installed_version(distribution: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _source_version() -> Optional[str]:
    """``__version__`` of the ``gsasr_plugin`` that would be imported, read without importing it."""
    import importlib.util
    import re
    spec = importlib.util.find_spec('gsasr_plugin')
    if spec is None or not spec.origin:
        return None
    try:
        with open(spec.origin, encoding='utf-8') as handle:
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
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == '--version':
        print(version_text())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"{PROG}: unknown subcommand '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    if _asks_for_help(rest) and SUBCOMMANDS[command].parser is not None:
        SUBCOMMANDS[command].parser().print_help()
        return 0
    module = importlib.import_module(f'gsasr_plugin.commands.{command}')
    return module.run(rest) or 0
