"""Shared fixtures. Tests must run on a fresh machine with no data: photos come from scikit-image."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Benchmark images live outside the repository; GSASR_SHARED_DATASETS points at them.
SHARED_DATASETS = Path(os.environ.get('GSASR_SHARED_DATASETS', REPO_ROOT.parent / 'shared' / 'datasets'))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def photo():
    """``photo(name='astronaut', size=None)`` -> HxWx3 uint8 RGB from scikit-image, optionally resized."""
    import cv2
    import skimage.data

    def load(name: str = 'astronaut', size=None) -> np.ndarray:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = np.ascontiguousarray(image[..., :3])
        if size is not None:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return image

    return load


@pytest.fixture
def basicsr_log(caplog):
    """``caplog`` for BasicSR's logger, which does not propagate to the root logger once initialised."""
    import logging
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger='basicsr')
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture
def shared_datasets() -> Path:
    """The benchmark/training images outside the repo; tests that need them skip when absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f'no shared datasets at {SHARED_DATASETS} (set GSASR_SHARED_DATASETS)')
    return SHARED_DATASETS
