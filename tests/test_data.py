"""Arbitrary-scale datasets: scale, crop, bicubic correctness, one scale per batch, clear errors."""
import math

import cv2
import numpy as np
import pytest
import torch

import gsasr_plugin  # noqa: F401
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.matlab_functions import imresize
from gsasr_plugin.data.arbitrary_scale_dataset import DatasetFolderError
from gsasr_plugin.utils.bad_data import BadImageWarning
from gsasr_plugin.utils.resize import matlab_bicubic_resize
from gsasr_plugin.utils.scale import scale_from_option as parse_scale
from gsasr_plugin.utils.scale import scale_tag


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


def _orientations_drawn(folder, **flags):
    """Which of the eight flips/rotations of the HR photo each training crop is (found by exact match)."""
    dataset = build_dataset(_train_opt(folder, **flags))
    seen = set()
    for item in dataset.__getitems__(list(range(24))):
        gt = item['gt'].permute(1, 2, 0).numpy()
        hr = cv2.imread(item['gt_path'])[:, :, ::-1].astype(np.float32) / 255
        for name, view in (('none', hr), ('h', hr[:, ::-1]), ('v', hr[::-1]), ('hv', hr[::-1, ::-1]),
                           ('t', hr.transpose(1, 0, 2)), ('ht', hr[:, ::-1].transpose(1, 0, 2)),
                           ('vt', hr[::-1].transpose(1, 0, 2)), ('hvt', hr[::-1, ::-1].transpose(1, 0, 2))):
            found = cv2.matchTemplate(np.ascontiguousarray(view), gt, cv2.TM_SQDIFF)
            if found.min() == 0:
                seen.add(name)
                break
    return seen


def test_use_hflip_flips_horizontally_only_and_use_rot_rotates(hr_folder):
    """BasicSR's meaning: use_hflip is a horizontal flip; use_rot a vertical flip and a transpose."""
    assert _orientations_drawn(hr_folder, use_hflip=True, use_rot=False) == {'none', 'h'}
    assert _orientations_drawn(hr_folder, use_hflip=False, use_rot=True) == {'none', 'v', 't', 'vt'}


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


def test_test_dataset_lq_bits_rounds_the_bicubic_lr(hr_folder):
    opt = dict(name='val', type='ArbitraryScaleTestDataset', phase='val', dataroot_gt=str(hr_folder), scales=[3])
    plain = build_dataset(opt)[0]['lq']
    rounded = build_dataset(dict(opt, lq_bits=8))[0]['lq']
    assert torch.equal(rounded, torch.round(plain * 255) / 255)
    assert not torch.equal(rounded, plain)
    with pytest.raises(ValueError, match='lq_bits'):
        build_dataset(dict(opt, lq_bits=0))


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


# ------------------------------------------------------------ gt_size: fixed GT crops (ContinuousSR's setup)
def _gt_opt(folder, **extra):
    opt = _train_opt(folder, gt_size=40, use_hflip=False, use_rot=False)
    del opt['lq_size']
    opt.update(extra)
    return opt


def test_gt_size_mode_shapes_true_scale_and_bicubic_at_several_scales(hr_folder):
    # LR side round(40 / s): 20, 17, 12, 9 (8.51 rounds up), 5
    for s, lq_side in [(2.0, 20), (2.3, 17), (3.3, 12), (4.7, 9), (8.0, 5)]:
        dataset = build_dataset(_gt_opt(hr_folder, scale_min=s, scale_max=s))
        for item in dataset.__getitems__([0, 3]):
            assert item['gt'].shape == (3, 40, 40), s
            assert item['lq'].shape == (3, lq_side, lq_side), s
            assert item['scale'].tolist() == pytest.approx([40 / lq_side] * 2), s  # GT size / LR size, not s
            gt = item['gt'].permute(1, 2, 0).numpy()
            expected = np.clip(matlab_bicubic_resize(gt, (lq_side, lq_side)), 0, 1)
            np.testing.assert_allclose(item['lq'].permute(1, 2, 0).numpy(), expected, atol=1e-6)
            hr = cv2.imread(item['gt_path'])[:, :, ::-1].astype(np.float32) / 255
            found = cv2.matchTemplate(hr, gt, cv2.TM_SQDIFF)
            top, left = np.unravel_index(found.argmin(), found.shape)
            np.testing.assert_array_equal(hr[top:top + 40, left:left + 40], gt)


def test_gt_size_mode_one_scale_per_batch_through_basicsr_dataloader(hr_folder):
    from basicsr.data.data_sampler import EnlargedSampler
    opt = _gt_opt(hr_folder, gt_size=32, scale_min=1.5, scale_max=6.0, use_hflip=True, use_rot=True,
                  dataset_enlarge_ratio=4)
    dataset = build_dataset(opt)
    sampler = EnlargedSampler(dataset, 1, 0, 4)
    for workers, prefetch in [(0, None), (1, 'cpu')]:
        opt.update(num_worker_per_gpu=workers, prefetch_mode=prefetch)
        loader = build_dataloader(dataset, opt, num_gpu=0, dist=False, sampler=sampler, seed=10)
        sampler.set_epoch(0)
        lq_sides = []
        for batch in loader:
            lq_side = batch['lq'].shape[-1]
            assert batch['gt'].shape == (2, 3, 32, 32)
            assert batch['lq'].shape == (2, 3, lq_side, lq_side)
            assert 32 / 6.0 - 0.5 <= lq_side <= 32 / 1.5 + 0.5
            assert torch.allclose(batch['scale'], torch.full((2, 2), 32 / lq_side))
            lq_sides.append(lq_side)
        assert len(lq_sides) == 8
        assert len(set(lq_sides)) > 1, 'the scale must vary from batch to batch'


def test_gt_size_mode_draws_follow_the_sample_keys_on_disk_and_lmdb(tmp_path, hr_folder):
    """Exact-resume seeding: with ResumableSampler's keys the draws depend on the keys only (not on torch's
    seed), and the lmdb backend gives the same pairs as the folder."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    from gsasr_plugin.utils.resume import SampleKey
    names = sorted(p.name for p in hr_folder.iterdir())
    make_lmdb_from_imgs(str(hr_folder), str(tmp_path / 'hr.lmdb'), names, [n.rsplit('.', 1)[0] for n in names],
                        multiprocessing_read=False)
    opt = _gt_opt(hr_folder, scale_min=2, scale_max=5, use_hflip=True, use_rot=True)
    disk = build_dataset(opt)
    lmdb = build_dataset(dict(opt, dataroot_gt=str(tmp_path / 'hr.lmdb'), io_backend={'type': 'lmdb'}))
    keys = [SampleKey(i, seed=5, epoch=2, position=6 + p) for p, i in enumerate((2, 0))]
    torch.manual_seed(1)
    a = disk.__getitems__(keys)
    torch.manual_seed(2)
    b = lmdb.__getitems__(keys)
    for x, y in zip(a, b):
        assert x['gt'].shape == (3, 40, 40)
        assert torch.equal(x['gt'], y['gt']) and torch.equal(x['lq'], y['lq']) and torch.equal(x['scale'], y['scale'])
    later = disk.__getitems__([SampleKey(2, seed=5, epoch=3, position=6), SampleKey(0, seed=5, epoch=3, position=7)])
    assert not torch.equal(later[0]['gt'], a[0]['gt']), 'another epoch must draw other crops'


def test_gt_size_mode_errors(hr_folder):
    with pytest.raises(ValueError, match=r"'lq_size' \(16\) and 'gt_size' \(40\) are mutually exclusive"):
        build_dataset(_train_opt(hr_folder, gt_size=40))
    with pytest.raises(ValueError, match="'gt_size' must be > 0"):
        build_dataset(_gt_opt(hr_folder, gt_size=0))
    with pytest.raises(ValueError, match=r"'gt_size' 3 at 'scale_max' 8.0 leaves an empty LR patch"):
        build_dataset(_gt_opt(hr_folder, gt_size=3, scale_min=4, scale_max=8))


def test_gt_size_mode_small_image_check_uses_gt_size(hr_folder):
    # astronaut 200x210, chelsea 210x200, coffee 200x230 are smaller than 205; rocket (205x220) is not.
    # The check is gt_size itself, whatever the scale range (round(gt_size * scale_max) would reject all).
    with pytest.raises(ValueError, match=r"'.*astronaut\.png' is 200x210, smaller than the largest crop 205x205 "
                                         r'\(gt_size\); remove it, lower gt_size'):
        build_dataset(_gt_opt(hr_folder, gt_size=205, scale_min=2, scale_max=8))
    with pytest.warns(BadImageWarning, match='smaller than the largest crop 205x205'):
        dataset = build_dataset(_gt_opt(hr_folder, gt_size=205, scale_min=2, scale_max=8, skip_bad_images=True))
    assert [p.rsplit('/', 1)[-1] for p in dataset.paths] == ['rocket.png']
    assert len(dataset.skipped_images) == 3
    assert dataset.__getitems__([0])[0]['gt'].shape == (3, 205, 205)
    assert len(build_dataset(_gt_opt(hr_folder, gt_size=200, scale_min=2, scale_max=8))) == 4


def test_shipped_continuoussr_options_crop_256_gt_patches(tmp_path, photo):
    import yaml
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'options' / 'train_continuoussr_swinir.yml'
    train = yaml.safe_load(path.read_text())['datasets']['train']
    assert train['gt_size'] == 256 and 'lq_size' not in train
    assert (train['scale_min'], train['scale_max']) == (4, 8)
    (tmp_path / 'hr').mkdir()
    cv2.imwrite(str(tmp_path / 'hr' / 'a.png'), photo('astronaut', (260, 270))[:, :, ::-1])
    dataset = build_dataset(dict(train, dataroot_gt=str(tmp_path / 'hr'), phase='train'))
    item = dataset.__getitems__([0])[0]
    lq_side = item['lq'].shape[-1]
    assert item['gt'].shape == (3, 256, 256) and 32 <= lq_side <= 64
    assert item['scale'].tolist() == pytest.approx([256 / lq_side] * 2)


# ------------------------------------------------ sampled pixels and PIL bicubic (LIIF / official GaussianSR)
def test_sample_q_draws_distinct_pixels_of_each_crop(hr_folder):
    dataset = build_dataset(_train_opt(hr_folder, sample_q=200, scale_min=2.0, scale_max=3.0))
    batch = dataset.__getitems__([0, 1, 2])
    for item in batch:
        index = item['sample_index']
        assert index.dtype == torch.int64 and index.shape == (200, )
        assert len(set(index.tolist())) == 200 and 0 <= int(index.min()) and int(index.max()) < item['gt'][0].numel()
    assert not torch.equal(batch[0]['sample_index'], batch[1]['sample_index'])
    assert 'sample_index' not in build_dataset(_train_opt(hr_folder)).__getitems__([0])[0]


@pytest.mark.parametrize('value, message', [(0, 'positive'), (2.5, 'positive'), (257, 'more than the 16x16')])
def test_sample_q_errors(hr_folder, value, message):
    with pytest.raises(ValueError, match=f"sample_q.*{message}|{message}"):
        build_dataset(_train_opt(hr_folder, sample_q=value))


def test_pil_lq_resize_is_liifs_resize_fn(hr_folder, photo):
    """lq_resize: pil equals LIIF's / the official GaussianSR's resize_fn (torchvision ToPILImage, Resize
    with PIL bicubic, ToTensor) on the same GT patch."""
    from torchvision import transforms
    from PIL import Image
    from gsasr_plugin.utils.resize import pil_bicubic_resize
    gt = photo('astronaut', (60, 60)).astype(np.float32) / 255
    theirs = transforms.ToTensor()(transforms.Resize(20, Image.BICUBIC)(
        transforms.ToPILImage()(torch.from_numpy(gt).permute(2, 0, 1))))
    ours = pil_bicubic_resize(gt, (20, 20))
    assert torch.equal(torch.from_numpy(ours).permute(2, 0, 1), theirs)
    item = build_dataset(_train_opt(hr_folder, lq_resize='pil', scale_min=3.0, scale_max=3.0)).__getitems__([0])[0]
    expected = pil_bicubic_resize(item['gt'].permute(1, 2, 0).numpy(), (16, 16))
    assert torch.equal(item['lq'], torch.from_numpy(expected).permute(2, 0, 1))
    with pytest.raises(ValueError, match="lq_resize"):
        build_dataset(_train_opt(hr_folder, lq_resize='lanczos'))
