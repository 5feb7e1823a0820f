"""``basicsr test``: BasicSR's test pipeline with the plugin's registries filled.

Same flags as ``basicsr train``; results (logs with per-scale metrics, images) go to ``./results/<name>``.
"""
from typing import List

from gsasr_plugin.commands.train import run_pipeline

__all__ = ['run']


def run(argv: List[str]) -> int:
    """``basicsr test -opt <yml> [--force_yml k=v ...]``."""
    return run_pipeline('test', argv)
