"""``basicsr test``: BasicSR's test pipeline with the plugin's registries filled.

    basicsr test -opt OPTIONS.yml [-m MODEL] [--force_yml k=v ...]
    basicsr test -m MODEL -i FOLDER_OR_IMAGE [...] [--scales 2,3,4] [--metrics psnr,ssim,lpips] [--name NAME]

Same flags and run pipeline as ``basicsr train`` (:mod:`gsasr_plugin.commands.pipeline`); ``-m`` names the
weights (``path: pretrain_network_g``), which bring their ``network_g`` when the options have none. Without an
option file, :func:`test_options` makes the options: each folder given to ``-i`` is a dataset of HR images, the
image files given are one more, and their LR images are made as the test datasets make them (``ArbitraryScaleTestDataset``: MATLAB-style bicubic), evaluated at
``--scales`` with ``--metrics``. Results (results tables, per-image CSV, PSNR-vs-scale plot, log with per-scale
metrics, images with ``--save-img``) go to ``./results/<name>``. Before anything runs, :func:`check_testable`
refuses option files that cannot be tested (a training file, no datasets, no weights) with one line.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict

import yaml

from gsasr_plugin.commands.pipeline import check_weights_available, run_pipeline
from gsasr_plugin.official.hub import OFFICIAL_PREFIX, WeightsUnavailableError
from gsasr_plugin.utils.atomic_io import write_text
from gsasr_plugin.utils.image_io import IMAGE_EXTENSIONS

__all__ = ['run', 'check_testable', 'test_options', 'METRICS']

PROG = 'basicsr test'
DEFAULT_SCALES = (2.0, 3.0, 4.0)
# --metrics names: the paper's protocol (PSNR/SSIM on the Y channel, border ceil(scale) cropped; LPIPS/DISTS on RGB)
METRICS: Dict[str, Dict[str, Any]] = {
    'psnr': {'type': 'calculate_psnr', 'crop_border': None, 'test_y_channel': True},
    'ssim': {'type': 'calculate_ssim', 'crop_border': None, 'test_y_channel': True},
    'lpips': {'type': 'calculate_lpips', 'crop_border': None, 'better': 'lower'},
    'dists': {'type': 'calculate_dists', 'crop_border': None, 'better': 'lower'},
}


def check_testable(opt: Dict[str, Any], option_path: str) -> None:
    """Raise ValueError (one line naming the key) when ``opt`` cannot be evaluated by ``basicsr test``.

    BasicSR's test pipeline evaluates every entry of ``datasets`` one image at a time with the weights
    of ``path: pretrain_network_g``: a training dataset (key ``train*``, or a ``*TrainDataset`` type) gives
    random crops in batches, and without weights there is nothing trained to evaluate.
    """
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(f"{option_path}: no 'datasets' to test; basicsr test evaluates the datasets of a test "
                         'option file (e.g. options/test_benchmarks.yml), or images given with -i')
    for key, dataset_opt in datasets.items():
        dataset_type = str((dataset_opt or {}).get('type', '')) if isinstance(dataset_opt, dict) else ''
        if str(key).split('_')[0] == 'train' or dataset_type.endswith('TrainDataset'):
            raise ValueError(f"{option_path}: datasets:{key} ({dataset_type or 'no type'}) is a training dataset, "
                             'which basicsr test cannot evaluate: this looks like a training option file; run '
                             f'basicsr train -opt {option_path}, or test with a test file (options/test_*.yml) '
                             'and -m MODEL')
    weights = (opt.get('path') or {}).get('pretrain_network_g')
    if not weights:
        raise ValueError(f'{option_path}: path:pretrain_network_g is not set, so there are no trained weights to '
                         'test; name them with -m CHECKPOINT.pth (or official:<name>, see basicsr convert --list)')


def _run_name(model: str) -> str:
    """A released model's name, else the file's stem, after its experiment's name when the file lies in
    ``experiments/<name>/models/``."""
    if model.startswith(OFFICIAL_PREFIX):
        return model[len(OFFICIAL_PREFIX):]
    path = Path(model.split(',')[0]).expanduser()
    stem = path.name if path.is_dir() else path.stem
    if path.parent.name == 'models' and path.parent.parent.name:
        stem = f'{path.parent.parent.name}_{stem}'
    return stem


def test_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The options ``basicsr test -m MODEL -i ...`` evaluates with: an ``ArbitraryScaleTestDataset`` per folder of HR
    images, one for the image files given (named after the image when there is one), ``--scales`` (default 2, 3, 4), ``--metrics`` (default psnr,
    ssim) with the bicubic baseline and the results tables; ``network_g`` comes from the weights.

    Raises:
        ValueError: naming the argument, for an unknown metric or an input that is neither a folder nor an image.
    """
    names = [m.strip().lower() for m in (args.metrics or 'psnr,ssim').split(',') if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"--metrics: unknown metric {', '.join(unknown) or '(none)'}; choose from "
                         f"{', '.join(METRICS)}")
    scales = [s_h if s_h == s_w else [s_h, s_w] for s_h, s_w in (args.scales or [(s, s) for s in DEFAULT_SCALES])]
    folders, images = [], []
    for entry in args.input:
        path = Path(entry).expanduser()
        if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"-i {entry}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or a folder of images")
        if not path.exists():
            raise FileNotFoundError(f'-i {entry}: no such file or folder')
        (folders if path.is_dir() else images).append(path)
    sets = [(folder.name, {'dataroot_gt': str(folder)}) for folder in folders]  # a folder: a dataset named after it
    if images:  # the image files together: one dataset
        sets.append((images[0].stem if len(images) == 1 else 'images', {'gt_files': [str(p) for p in images]}))
    datasets = {f'test_{k}': {'name': name, 'type': 'ArbitraryScaleTestDataset', **root, 'scales': scales}
                for k, (name, root) in enumerate(sets, 1)}
    return {
        'name': args.name or _run_name(args.model),
        'model_type': 'ArbitraryScaleSRModel',
        'num_gpu': 'auto',
        'manual_seed': 0,
        'datasets': datasets,
        'path': {'pretrain_network_g': args.model, 'strict_load_g': True},
        'val': {'save_img': bool(args.save_img), 'suffix': None, 'bicubic_baseline': True, 'results_table': True,
                'metrics': {name: dict(METRICS[name]) for name in names}},
    }


def _run_without_option_file(args: argparse.Namespace) -> int:
    try:
        check_weights_available(args.model, '-m')
        opt = test_options(args)
    except (FileNotFoundError, ValueError, WeightsUnavailableError) as error:
        print(f'{PROG}: error: {error}', file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix='basicsr_test_') as folder:
        args.opt = os.path.join(folder, f"{opt['name']}.yml")  # what BasicSR's parse_options reads
        write_text(args.opt, yaml.safe_dump(opt, sort_keys=False))
        return run_pipeline('test', args, check=check_testable, source=f'the options of {PROG} -m/-i')


def run(args: argparse.Namespace) -> int:
    """``basicsr test`` (``args`` parsed by ``gsasr_plugin_cli``)."""
    if args.input:
        return _run_without_option_file(args)
    return run_pipeline('test', args, check=check_testable)
