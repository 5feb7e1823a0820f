"""``basicsr train``: BasicSR's training pipeline with the plugin's registries filled.

Takes BasicSR's own flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--local_rank``,
``--force_yml``); everything before and around the run is :mod:`gsasr_plugin.commands.pipeline`'s, shared with
``basicsr test``.
"""
import argparse

from gsasr_plugin.commands.pipeline import run_pipeline

__all__ = ['run']


def run(args: argparse.Namespace) -> int:
    """``basicsr train -opt <yml> [--auto_resume] [--debug] [--launcher ...] [--force_yml k=v ...]`` (``args``
    parsed by ``gsasr_plugin_cli``)."""
    return run_pipeline('train', args)
