"""``basicsr test``: BasicSR's test pipeline with the plugin's registries filled.

Same flags and run pipeline as ``basicsr train`` (:mod:`gsasr_plugin.commands.pipeline`); results (logs with
per-scale metrics, images) go to ``./results/<name>``. Before anything runs, :func:`check_testable` refuses
option files that cannot be tested (a training file, no datasets, no weights) with one line.
"""
import argparse
from typing import Any, Dict

from gsasr_plugin.commands.pipeline import run_pipeline

__all__ = ['run', 'check_testable']


def check_testable(opt: Dict[str, Any], option_path: str) -> None:
    """Raise ValueError (one line naming the key) when ``opt`` cannot be evaluated by ``basicsr test``.

    BasicSR's test pipeline evaluates every entry of ``datasets`` one image at a time with the weights
    of ``path: pretrain_network_g``: a training dataset (key ``train*``, or a ``*TrainDataset`` type) gives
    random crops in batches, and without weights there is nothing trained to evaluate.
    """
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(f"{option_path}: no 'datasets' to test; basicsr test evaluates the datasets of a test "
                         'option file (e.g. options/test_gsasr_edsr.yml)')
    for key, dataset_opt in datasets.items():
        dataset_type = str((dataset_opt or {}).get('type', '')) if isinstance(dataset_opt, dict) else ''
        if str(key).split('_')[0] == 'train' or dataset_type.endswith('TrainDataset'):
            raise ValueError(f"{option_path}: datasets:{key} ({dataset_type or 'no type'}) is a training dataset, "
                             'which basicsr test cannot evaluate: this looks like a training option file; run '
                             f'basicsr train -opt {option_path}, or test with a test file (options/test_*.yml) '
                             'that names its weights in path:pretrain_network_g')
    weights = (opt.get('path') or {}).get('pretrain_network_g')
    if not weights:
        raise ValueError(f'{option_path}: path:pretrain_network_g is not set, so there are no trained weights to '
                         'test; set it in the file or add --force_yml path:pretrain_network_g=CHECKPOINT.pth (or '
                         'official:<name>, see basicsr convert --list)')


def run(args: argparse.Namespace) -> int:
    """``basicsr test -opt <yml> [--force_yml k=v ...]`` (``args`` parsed by ``gsasr_plugin_cli``)."""
    return run_pipeline('test', args, check=check_testable)
