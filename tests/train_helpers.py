"""Tiny ``basicsr train`` runs in subprocesses for the distributed / resume / robustness tests."""
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import yaml

REPO = Path(__file__).resolve().parents[1]
BASICSR = [sys.executable, '-m', 'gsasr_plugin_cli']
TORCHRUN = [sys.executable, '-m', 'torch.distributed.run']

TINY_GSASR = dict(type='GSASR', encoder=dict(type='EDSREncoder', num_feat=8, num_block=1), embed_dim=8,
                  num_heads=2, window_size=4, num_injection_layers=1, num_blocks=1, num_layers_per_block=1,
                  mlp_ratio=1.0, gaussian_density=4, num_upsample_stages=1)


def env(threads: int = 1) -> Dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')


def write_photos(folder: Path, photo, names=('astronaut', 'coffee', 'rocket'), size=(40, 40)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / f'{name}.png'), photo(name, size)[:, :, ::-1])
    return folder


def tiny_options(name: str, train_root: str, total_iter: int = 6, batch: int = 1, **train_extra) -> dict:
    """A CPU GSASR run small enough for a test: 8-pixel LR crops, one block, no validation."""
    return {
        'name': name,
        'model_type': 'ArbitraryScaleSRModel',
        'num_gpu': 0,
        'manual_seed': 0,
        'datasets': {
            'train': {
                'name': 'photos', 'type': 'ArbitraryScaleTrainDataset', 'dataroot_gt': train_root,
                'io_backend': {'type': 'disk'}, 'lq_size': 8, 'scale_min': 1.0, 'scale_max': 3.0,
                'use_hflip': True, 'use_rot': True, 'batch_size_per_gpu': batch, 'num_worker_per_gpu': 0,
                'dataset_enlarge_ratio': 1, 'prefetch_mode': None,
            },
        },
        'network_g': TINY_GSASR,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': 0.9,
            'optim_g': {'type': 'Adam', 'lr': 2e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [4], 'gamma': 0.5},
            'warmup_iter': 3,
            'total_iter': total_iter,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
            **train_extra,
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 1000, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
    }


def write_options(path: Path, opt: dict) -> Path:
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def run_train(cwd: Path, opt_file: str, extra: Optional[List[str]] = None, timeout: int = 240):
    proc = subprocess.run(BASICSR + ['train', '-opt', opt_file] + list(extra or []), cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def logged_iters(text: str) -> List[int]:
    """Iterations of BasicSR's training log lines (``[epoch:  0, iter:       1, lr:(...)]``)."""
    return [int(m.replace(',', '')) for m in re.findall(r'epoch:\s*\d+, iter:\s*([\d,]+), lr:', text)]


def load_params(path: Path, key: str = 'params'):
    import torch
    return torch.load(path, map_location='cpu', weights_only=True)[key]


def run_ddp_workers(worker, tmp_path, nprocs: int = 2, timeout: float = 180, why: str = ''):
    """Run ``worker(rank, nprocs, store_path, queue)`` in ``nprocs`` forked processes (a file store in
    ``tmp_path``); returns the queue the workers report to. Fails the test when they do not finish in ``timeout``
    seconds (``why``: what a hang would mean)."""
    import time

    import pytest
    import torch.multiprocessing as mp
    queue = mp.get_context('fork').SimpleQueue()
    workers = mp.start_processes(worker, args=(nprocs, str(tmp_path / 'store'), queue), nprocs=nprocs, join=False,
                                 start_method='fork')
    deadline = time.monotonic() + timeout
    while not workers.join(timeout=2):
        if time.monotonic() > deadline:
            for process in workers.processes:
                process.kill()
            pytest.fail(f'the {nprocs}-process DDP workers did not finish in {timeout:g} s{why}')
    return queue
