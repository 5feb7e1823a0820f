"""The ``basicsr`` console script: ``basicsr train|test|infer|convert ...`` with the plugin's registries filled.

The front end (usage, ``--version``, each subcommand's ``-h``) is :mod:`gsasr_plugin_cli`, which does not
import torch; this module keeps ``python -m gsasr_plugin.cli ...`` (used with ``torch.distributed.run``)
working. Each subcommand lives in ``gsasr_plugin/commands/<name>.py`` and exposes ``run(argv) -> int``.
Runs use the current directory as BasicSR's root, so ``experiments/``, ``results/`` and ``tb_logger/``
land there.
"""
import sys

from gsasr_plugin_cli import SUBCOMMANDS, main

__all__ = ['main', 'SUBCOMMANDS']

if __name__ == '__main__':
    sys.exit(main())
