"""Bad training data: corrupt/unreadable and too-small images (error naming the file, or skipped with a
warning and a count), grayscale and 16-bit images."""
import cv2
import numpy as np
import pytest

from gsasr_plugin.data.arbitrary_scale_dataset import ArbitraryScaleTrainDataset
from gsasr_plugin.utils.bad_data import BadImageWarning, decode_image


def _dataset(root, **extra):
    opt = dict(name='t', type='ArbitraryScaleTrainDataset', dataroot_gt=str(root), lq_size=8, scale_min=1.0,
               scale_max=3.0, phase='train')
    opt.update(extra)
    return ArbitraryScaleTrainDataset(opt)


@pytest.fixture
def folder(tmp_path, photo):
    root = tmp_path / 'hr'
    root.mkdir()
    for name in ('astronaut', 'coffee'):
        cv2.imwrite(str(root / f'{name}.png'), photo(name, (40, 40))[:, :, ::-1])
    return root


def test_corrupt_image_is_an_error_naming_the_file_at_start_up(folder):
    (folder / 'broken.png').write_bytes(b'not an image at all')
    with pytest.raises(ValueError, match=r"cannot read image '.*broken\.png'"):
        _dataset(folder)


def test_truncated_image_is_an_error_naming_the_file_when_read(folder):
    data = (folder / 'coffee.png').read_bytes()
    (folder / 'coffee.png').write_bytes(data[:len(data) // 3])  # header intact, pixels missing
    dataset = _dataset(folder)  # the header looks fine
    index = dataset.paths.index(str(folder / 'coffee.png'))
    with pytest.raises(ValueError, match=r"cannot decode image '.*coffee\.png': the file is (corrupt, )?truncated"):
        dataset.__getitems__([index])


def test_skip_bad_images_warns_counts_and_substitutes(folder):
    (folder / 'broken.png').write_bytes(b'\x89PNG garbage')
    data = (folder / 'coffee.png').read_bytes()
    (folder / 'coffee.png').write_bytes(data[:len(data) // 3])
    with pytest.warns(BadImageWarning, match=r"skipping training image '.*broken\.png'.*1 skipped so far"):
        dataset = _dataset(folder, skip_bad_images=True)
    assert [p.split('/')[-1] for p in dataset.paths] == ['astronaut.png', 'coffee.png']
    with pytest.warns(BadImageWarning, match=r"skipping training image '.*coffee\.png'.*2 skipped so far"):
        batch = dataset.__getitems__([1, 0])
    assert len(batch) == 2 and all(item['gt_path'].endswith('astronaut.png') for item in batch)
    assert len(dataset.skipped_images) == 2
    batch = dataset.__getitems__([1])  # known bad: skipped silently from now on
    assert batch[0]['gt_path'].endswith('astronaut.png') and len(dataset.skipped_images) == 2


def test_image_smaller_than_the_largest_crop(folder, photo):
    cv2.imwrite(str(folder / 'tiny.png'), photo('rocket', (20, 40))[:, :, ::-1])  # largest crop: 8 * 3 = 24
    with pytest.raises(ValueError, match=r"'.*tiny\.png' is 20x40, smaller than the largest crop 24x24"):
        _dataset(folder)
    with pytest.warns(BadImageWarning, match='tiny.png'):
        dataset = _dataset(folder, skip_bad_images=True)
    assert len(dataset) == 2 and dataset.skipped_images[0].endswith('tiny.png')
    assert len(_dataset(folder, scale_max=2.5)) == 3  # 20 pixels suffice for crops up to 20x20


def test_grayscale_and_16bit_images(tmp_path):
    root = tmp_path / 'hr'
    root.mkdir()
    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float64).reshape(32, 32)
    cv2.imwrite(str(root / 'gray8.png'), np.round(ramp * 255).astype(np.uint8))
    rgb16 = np.stack([ramp, 1 - ramp, np.full_like(ramp, 0.3)], axis=-1)
    cv2.imwrite(str(root / 'rgb16.png'), np.round(rgb16[:, :, ::-1] * 65535).astype(np.uint16))  # BGR on disk
    dataset = _dataset(root, lq_size=8, scale_min=4, scale_max=4, use_hflip=False, use_rot=False)
    gray, rgb = dataset.__getitems__([0, 1])
    assert gray['gt'].shape == (3, 32, 32) and rgb['gt'].shape == (3, 32, 32)
    assert np.allclose(gray['gt'][0].numpy(), gray['gt'][2].numpy())
    np.testing.assert_allclose(gray['gt'][0].numpy(), ramp, atol=0.5 / 255 + 1e-6)
    # 16 bits kept: error far below one 8-bit step
    np.testing.assert_allclose(rgb['gt'].permute(1, 2, 0).numpy(), rgb16, atol=1e-5)
    assert rgb['lq'].shape == (3, 8, 8)


def test_decode_image_channels_and_errors():
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., 2] = 200
    img = decode_image(cv2.imencode('.png', bgra)[1].tobytes(), 'x.png')
    assert img.shape == (4, 5, 3) and img.dtype == np.uint8 and (img[..., 2] == 200).all()
    with pytest.raises(ValueError, match="cannot decode image 'empty.png'"):
        decode_image(b'', 'empty.png')


def test_truncated_jpeg_is_a_bad_image_not_half_an_image(folder, photo, tmp_path):
    from gsasr_plugin.inference import read_image
    ok, encoded = cv2.imencode('.jpg', photo('chelsea', (160, 160))[:, :, ::-1])
    data = encoded.tobytes()
    # cv2.imread (OpenCV 5.0) decodes this file with a warning and fills the missing part with grey
    (folder / 'cut.jpg').write_bytes(data[:len(data) * 2 // 3])
    dataset = _dataset(folder)
    index = dataset.paths.index(str(folder / 'cut.jpg'))
    with pytest.raises(ValueError, match=r"cannot decode image '.*cut\.jpg': the file is truncated \(the JPEG"):
        dataset.__getitems__([index])
    with pytest.warns(BadImageWarning, match=r'cut\.jpg'):
        batch = _dataset(folder, skip_bad_images=True).__getitems__([index])
    assert not batch[0]['gt_path'].endswith('cut.jpg')
    with pytest.raises(ValueError, match=r'cut\.jpg.*truncated'):
        read_image(str(folder / 'cut.jpg'))
    (folder / 'whole.jpg').write_bytes(data + b'trailing bytes after the end marker')
    assert read_image(str(folder / 'whole.jpg'))[0].shape == (160, 160, 3)


def test_float_tiffs_from_opencv_are_read_and_nan_pixels_are_bad_images(tmp_path, photo):
    from gsasr_plugin.inference import read_image
    root = tmp_path / 'hr'
    root.mkdir()
    image = photo('coffee', (32, 32))[:, :, ::-1].astype(np.float32) / 255
    cv2.imwrite(str(root / 'float.tif'), image)  # PIL cannot identify this file
    dataset = _dataset(root, scale_min=4, scale_max=4)  # the whole 32x32 image
    np.testing.assert_allclose(dataset.__getitems__([0])[0]['gt'].permute(1, 2, 0).numpy().mean(),
                               image.mean(), atol=1e-6)
    image[5, 6, 1] = np.nan
    cv2.imwrite(str(root / 'nan.tif'), image)
    dataset = _dataset(root, scale_max=4)
    with pytest.raises(ValueError, match=r"image '.*nan\.tif' holds 1 NaN/inf value"):
        dataset.__getitems__([dataset.paths.index(str(root / 'nan.tif'))])
    with pytest.raises(ValueError, match=r'nan\.tif.*NaN/inf'):
        read_image(str(root / 'nan.tif'))
