"""The ``basicsr`` console script: ``basicsr train|test|infer|convert ...`` with the plugin's registries filled.

Each subcommand lives in ``gsasr_plugin/commands/<name>.py`` and exposes ``run(argv) -> int``. Runs use
the current directory as BasicSR's root, so ``experiments/``, ``results/`` and ``tb_logger/`` land there.
"""
import importlib
import sys
from typing import List, Optional

__all__ = ['main', 'SUBCOMMANDS']

SUBCOMMANDS = {
    'train': 'train a model from a BasicSR option file (basicsr/train.py flags: -opt, --launcher, --auto_resume, ...)',
    'test': 'evaluate a model from a BasicSR option file (basicsr/test.py flags)',
    'infer': 'super-resolve images at any scale or size with a trained model',
    'convert': 'write released (official) weights as one checkpoint of ours (--list: the released models)',
}


def _usage() -> str:
    lines = ['usage: basicsr {' + ','.join(SUBCOMMANDS) + '} [options]', '', 'subcommands:']
    lines += [f'  {name:<7} {text}' for name, text in SUBCOMMANDS.items()]
    lines += ['', "Run 'basicsr <subcommand> -h' for its options."]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"basicsr: unknown subcommand '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f'gsasr_plugin.commands.{command}')
    return module.run(rest) or 0


if __name__ == '__main__':
    sys.exit(main())
