"""Arbitrary-scale datasets: scale, crop, bicubic correctness, one scale per batch, clear errors."""
import math

import cv2
import numpy as np
import pytest
import torch

import gsasr_plugin  # noqa: F401
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.matlab_functions import imresize
from gsasr_plugin.data.arbitrary_scale_dataset import (DatasetFolderError, matlab_bicubic_resize, parse_scale,
                                                       scale_tag)


@pytest.fixture
def hr_folder(tmp_path, photo):
    folder = tmp_path / 'hr'
    folder.mkdir()
    for name, size in [('astronaut', (200, 210)), ('coffee', (200, 230)), ('chelsea', (210, 200)),
                       ('rocket', (205, 220))]:
        cv2.imwrite(str(folder / f'{name}.png'), photo(name, size)[:, :, ::-1])
    return folder


def _train_opt(folder, **extra):
    opt = dict(name='train', type='ArbitraryScaleTrainDataset', phase='train', dataroot_gt=str(folder),
               io_backend={'type': 'disk'}, lq_size=16, scale_min=1.0, scale_max=4.0, use_hflip=True,
               use_rot=True, batch_size_per_gpu=2, num_worker_per_gpu=0, dataset_enlarge_ratio=1)
    opt.update(extra)
    return opt


def test_matlab_bicubic_resize_matches_basicsr_imresize(photo):
    img = photo('astronaut', (60, 72)).astype(np.float32) / 255
    for scale in (0.5, 0.25, 2.0):
        ref = imresize(img, scale)
        out = matlab_bicubic_resize(img, ref.shape[:2])
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_matlab_bicubic_resize_exact_size_where_imresize_overshoots(photo):
    gt = photo('coffee', (66, 66)).astype(np.float32) / 255  # round(48 * 1.37) = 66
    assert imresize(gt, 48 / 66).shape[0] in (48, 49)
    assert imresize(gt, 1 / 1.37).shape[0] == 49  # ceil(66 / 1.37): why the dataset resizes by size ratio
    lq = matlab_bicubic_resize(gt, (48, 48))
    assert lq.shape == (48, 48, 3)
    # A flat image stays flat (weights are normalised), anisotropic sizes are exact.
    flat = np.full((30, 40, 3), 0.25, np.float32)
    np.testing.assert_allclose(matlab_bicubic_resize(flat, (7, 13)), 0.25, atol=1e-6)


def test_train_pair_crop_scale_and_bicubic(hr_folder):
    dataset = build_dataset(_train_opt(hr_folder, use_hflip=False, use_rot=False))
    items = dataset.__getitems__([0, 1, 2])
    scale = items[0]['scale']
    gt_size = items[0]['gt'].shape[-1]
    assert 16 <= gt_size <= 64
    for item in items:
        assert item['lq'].shape == (3, 16, 16)
        assert item['gt'].shape == (3, gt_size, gt_size)
        assert torch.equal(item['scale'], scale)
        assert math.isclose(float(item['scale'][0]), gt_size / 16, rel_tol=1e-6)
        gt = item['gt'].permute(1, 2, 0).numpy()
        expected = np.clip(matlab_bicubic_resize(gt, (16, 16)), 0, 1)
        np.testing.assert_allclose(item['lq'].permute(1, 2, 0).numpy(), expected, atol=1e-6)
        # The GT is a crop of the HR photo (no flips here): find it by exact match.
        hr = cv2.imread(item['gt_path'])[:, :, ::-1].astype(np.float32) / 255
        found = cv2.matchTemplate(hr, gt, cv2.TM_SQDIFF)
        top, left = np.unravel_index(found.argmin(), found.shape)
        np.testing.assert_array_equal(hr[top:top + gt_size, left:left + gt_size], gt)


def test_one_scale_per_batch_through_basicsr_dataloader_and_epochs_differ(hr_folder):
    from basicsr.data.data_sampler import EnlargedSampler
    opt = _train_opt(hr_folder, dataset_enlarge_ratio=4)
    dataset = build_dataset(opt)
    sampler = EnlargedSampler(dataset, 1, 0, 4)
    for workers, prefetch in [(0, None), (1, 'cpu')]:
        opt.update(num_worker_per_gpu=workers, prefetch_mode=prefetch)
        loader = build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=sampler, seed=10)
        epochs = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            scales = []
            for batch in loader:
                assert batch['scale'].shape == (2, 2)
                assert torch.all(batch['scale'] == batch['scale'][0])
                assert batch['gt'].shape[-1] == round(float(batch['scale'][0, 0]) * 16)
                assert batch['lq'].shape == (2, 3, 16, 16)
                scales.append(float(batch['scale'][0, 0]))
            assert len(scales) == 8
            assert len(set(scales)) > 1, 'the scale must vary from batch to batch'
            epochs.append(scales)
        assert epochs[0] != epochs[1], f'scales repeat across epochs with {workers} workers'


def test_train_dataset_reproducible_from_seed(hr_folder):
    a = build_dataset(_train_opt(hr_folder))
    b = build_dataset(_train_opt(hr_folder))
    torch.manual_seed(3)
    x = a.__getitems__([1, 2])
    torch.manual_seed(3)
    y = b.__getitems__([1, 2])
    assert torch.equal(x[0]['gt'], y[0]['gt']) and torch.equal(x[1]['lq'], y[1]['lq'])


def test_test_dataset_scales_and_sizes(hr_folder):
    opt = dict(name='val', type='ArbitraryScaleTestDataset', phase='val', dataroot_gt=str(hr_folder),
               io_backend={'type': 'disk'}, scales=[2, 3.5, [2, 3]])
    dataset = build_dataset(opt)
    assert len(dataset) == 4 * 3
    item = dataset[4]  # second scale, first image (astronaut, 200x210)
    assert item['scale'].tolist() == [3.5, 3.5]
    h, w = math.floor(200 / 3.5), math.floor(210 / 3.5)
    assert item['lq'].shape == (3, h, w)
    assert item['gt'].shape == (3, round(h * 3.5), round(w * 3.5))
    assert item['lq_path'].endswith('astronaut.png')
    aniso = dataset[8]
    assert aniso['scale'].tolist() == [2.0, 3.0]
    assert aniso['lq'].shape == (3, 100, 70) and aniso['gt'].shape == (3, 200, 210)


def test_test_dataset_reads_premade_lr(tmp_path, hr_folder):
    lq_dir = tmp_path / 'lr_x2'
    lq_dir.mkdir()
    for path in sorted(hr_folder.iterdir()):
        hr = cv2.imread(str(path))
        cv2.imwrite(str(lq_dir / f'{path.stem}x2.png'), cv2.resize(hr, (hr.shape[1] // 2, hr.shape[0] // 2)))
    opt = dict(name='val', type='ArbitraryScaleTestDataset', phase='val', dataroot_gt=str(hr_folder),
               dataroot_lq=str(tmp_path / 'lr_x{scale}'), filename_tmpl='{}x{scale}', scales=[2])
    item = build_dataset(opt)[2]  # sorted: astronaut, chelsea, coffee, rocket
    assert item['lq_path'].endswith('coffeex2.png')
    assert item['lq'].shape == (3, 100, 115) and item['gt'].shape == (3, 200, 230)


def test_scale_helpers():
    assert parse_scale(2) == (2.0, 2.0) and parse_scale([2, 3.5]) == (2.0, 3.5)
    assert scale_tag(3.5) == '3.5' and scale_tag([2, 3]) == '2x3' and scale_tag(4.0) == '4'
    for bad in (0, -1, [2, 0], 'x', [1, 2, 3], True):
        with pytest.raises(ValueError, match='scale'):
            parse_scale(bad)


def test_clear_errors(tmp_path, hr_folder):
    with pytest.raises(DatasetFolderError, match='dataroot_gt.*nowhere.*does not exist'):
        build_dataset(_train_opt(tmp_path / 'nowhere'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DatasetFolderError, match='no images'):
        build_dataset(_train_opt(tmp_path / 'empty'))
    with pytest.raises(ValueError, match='scale_min'):
        build_dataset(_train_opt(hr_folder, scale_min=0))
    with pytest.raises(ValueError, match=r'scales\[1\].*> 0'):
        build_dataset(dict(name='v', type='ArbitraryScaleTestDataset', phase='val', dataroot_gt=str(hr_folder),
                           scales=[2, -1]))
    with pytest.raises(DatasetFolderError, match='dataroot_lq'):
        build_dataset(dict(name='v', type='ArbitraryScaleTestDataset', phase='val', dataroot_gt=str(hr_folder),
                           dataroot_lq=str(tmp_path / 'missing_x{scale}'), scales=[2]))
    with pytest.raises(ValueError, match='smaller than'):
        build_dataset(_train_opt(hr_folder, lq_size=100, scale_min=3, scale_max=3))[0]
