"""``basicsr infer`` and the inference library: every option, the bad inputs, image formats, tiling.

A tiny stand-in network (a few convolutions predicting 4 Gaussians per LR pixel, registered for these
tests) keeps the CLI tests fast; tiled-versus-untiled agreement is also checked on a small real GSASR.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import gsasr_plugin  # noqa: F401
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.archs.gaussian_field import GaussianField, reference_grid
from gsasr_plugin.archs.sr_network import SRNetwork
from gsasr_plugin.checkpoint import load_checkpoint
import gsasr_plugin_cli
from gsasr_plugin.inference import auto_tile_size, encode_tiled, plan_tiles, super_resolve
from gsasr_plugin.utils.image_io import ImageMeta, read_image, write_image
from gsasr_plugin.utils.scale import parse_scale_text as parse_scale
from gsasr_plugin.utils.scale import parse_size_text as parse_size


def load_state_dict_from_checkpoint(path, param_key=None):
    return load_checkpoint(path, param_key).state_dict


class InferStandInNet(SRNetwork):
    """Predicts r x r Gaussians per LR pixel from a 5x5 receptive field; row-major like GSASR."""
    gaussians_per_side = 2

    def __init__(self, num_feat: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, num_feat, 3, 1, 1), nn.ReLU(), nn.Conv2d(num_feat, 8 * 4, 3, 1, 1))

    def encode_features(self, lq):
        return lq

    def decode_field(self, lq, target):
        batch, _, height, width = lq.shape
        s = torch.as_tensor(target.scale if target is not None else 1.0, dtype=lq.dtype).reshape(-1)[0]
        x = torch.cat([lq, torch.full_like(lq[:, :1], 1.0) / s], 1)  # the field depends on the scale
        maps = F.pixel_shuffle(self.body(x), 2).flatten(2).transpose(1, 2)  # (B, 4hw, 8)
        ref = reference_grid(height * 2, width * 2, 2, dtype=lq.dtype).to(lq.device)
        opacity = torch.sigmoid(maps[..., 7])
        colors = torch.sigmoid(maps[..., 4:7] + 2 * F.interpolate(lq, scale_factor=2).flatten(2).transpose(1, 2) - 1)
        return GaussianField(means=ref + 0.5 * torch.tanh(maps[..., :2]), sigmas=0.3 + 0.4 * torch.sigmoid(maps[..., 2:4]),
                             rhos=0.5 * torch.tanh(maps[..., 3]), colors=0.2 * colors * opacity[..., None],
                             lr_size=(height, width), opacities=opacity)

    def render(self, field, out_size, window=None):
        return field.render(out_size)

    def reference_points(self, field):
        return reference_grid(field.lr_size[0] * 2, field.lr_size[1] * 2, 2, dtype=field.means.dtype)


if 'InferStandInNet' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(InferStandInNet)


@pytest.fixture
def model_files(tmp_path):
    """(options path, checkpoint path) of the stand-in network, saved as BasicSR does."""
    opt = tmp_path / 'net.yml'
    opt.write_text(yaml.safe_dump({'network_g': {'type': 'InferStandInNet', 'num_feat': 8}}))
    network = InferStandInNet(8)
    ckpt = tmp_path / 'net_g.pth'
    torch.save({'params': network.state_dict()}, ckpt)
    return opt, ckpt, network


@pytest.fixture
def images(tmp_path, photo):
    """A folder with one image per supported kind, 20 x 24 pixels each."""
    folder = tmp_path / 'in'
    folder.mkdir()
    rgb = photo('astronaut', (20, 24))
    bgr = rgb[..., ::-1]
    cv2.imwrite(str(folder / 'rgb8.png'), bgr)
    cv2.imwrite(str(folder / 'photo.jpg'), bgr)
    cv2.imwrite(str(folder / 'photo.webp'), bgr)
    cv2.imwrite(str(folder / 'rgb16.tif'), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / 'gray16.png'), rgb[..., 1].astype(np.uint16) * 257)
    cv2.imwrite(str(folder / 'gray8.png'), rgb[..., 1])
    alpha = np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (20, 1))
    cv2.imwrite(str(folder / 'rgba.png'), np.concatenate([bgr, alpha[..., None]], axis=2))
    return folder


def _run(capsys, *argv):
    code = gsasr_plugin_cli.main(['infer'] + [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize('text,expected', [('4', (4.0, 4.0)), ('2.4', (2.4, 2.4)), ('2,3.5', (2.0, 3.5)),
                                           (' 1.5 , 3 ', (1.5, 3.0))])
def test_parse_scale(text, expected):
    assert parse_scale(text) == expected


@pytest.mark.parametrize('text', ['0', '-2', 'abc', '2,3,4', 'nan', 'inf', '', '2,'])
def test_parse_scale_rejects(text):
    with pytest.raises(ValueError, match='--scale'):
        parse_scale(text)


def test_parse_size():
    assert parse_size('1920x1080') == (1080, 1920)
    assert parse_size('7X5') == (5, 7)
    for bad in ('1920', '1920x', 'x5', '0x5', '-3x4', '2.5x4', 'axb'):
        with pytest.raises(ValueError, match='--size'):
            parse_size(bad)


# ---------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_layouts(tmp_path):
    params = {'w': torch.ones(2)}
    ema = {'w': torch.full((2, ), 2.0)}
    torch.save({'params': params, 'params_ema': ema}, tmp_path / 'both.pth')
    torch.save({'params': params}, tmp_path / 'params.pth')
    torch.save({'module.w': torch.ones(2)}, tmp_path / 'bare.pth')
    assert load_state_dict_from_checkpoint(str(tmp_path / 'both.pth'))['w'][0] == 2  # EMA preferred
    assert load_state_dict_from_checkpoint(str(tmp_path / 'both.pth'), 'params')['w'][0] == 1
    assert load_state_dict_from_checkpoint(str(tmp_path / 'params.pth'))['w'][0] == 1
    assert list(load_state_dict_from_checkpoint(str(tmp_path / 'bare.pth'))) == ['w']


def test_checkpoint_errors_name_the_file_and_keys(tmp_path):
    torch.save({'net': {'w': torch.ones(1)}, 'iter': 5}, tmp_path / 'odd.pth')
    with pytest.raises(ValueError, match=r'odd\.pth: unknown layout.*keys found: \[net, iter\]'):
        load_state_dict_from_checkpoint(str(tmp_path / 'odd.pth'))
    (tmp_path / 'text.pth').write_text('hello')
    with pytest.raises(ValueError, match=r'text\.pth is a text file, not a PyTorch file'):
        load_state_dict_from_checkpoint(str(tmp_path / 'text.pth'))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_state_dict_from_checkpoint(str(tmp_path / 'nope.pth'))


# ------------------------------------------------------------------------------------------ image IO
@pytest.mark.parametrize('name,dtype,gray,has_alpha', [('rgb8.png', np.uint8, False, False),
                                                       ('rgb16.tif', np.uint16, False, False),
                                                       ('gray16.png', np.uint16, True, False),
                                                       ('gray8.png', np.uint8, True, False),
                                                       ('rgba.png', np.uint8, False, True),
                                                       ('photo.webp', np.uint8, False, False)])
def test_read_write_round_trip(images, tmp_path, name, dtype, gray, has_alpha):
    rgb, meta = read_image(str(images / name))
    assert rgb.shape == (20, 24, 3) and rgb.dtype == np.float32 and 0 <= rgb.min() and rgb.max() <= 1
    assert meta.dtype == dtype and meta.grayscale == gray and (meta.alpha is not None) == has_alpha
    out = tmp_path / f'out_{name}'
    write_image(str(out), rgb, meta, meta.alpha)
    original = cv2.imread(str(images / name), cv2.IMREAD_UNCHANGED)
    again = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert again.dtype == original.dtype and again.shape == original.shape
    if not name.endswith('.webp'):  # lossless formats come back exactly
        np.testing.assert_array_equal(again, original)


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize('gray,alpha', [(False, False), (True, False), (False, True), (True, True)])
def test_encoding_in_strips_equals_one_pass(monkeypatch, dtype, gray, alpha):
    """encode_image_array converts in strips of rows (its float temporaries stay small); every layout and depth
    comes out as the whole array's arithmetic, from a strided (permuted CHW) view as the renders give it."""
    from gsasr_plugin.utils import image_io
    rng = np.random.default_rng(0)
    chw = rng.uniform(-0.1, 1.1, (3, 23, 17)).astype(np.float32)
    rgb = chw.transpose(1, 2, 0)  # a view, as sr[0].permute(1, 2, 0).numpy()
    alpha_map = rng.uniform(0, 1, (23, 17)).astype(np.float32) if alpha else None
    meta = ImageMeta(np.dtype(dtype), gray, alpha_map)
    image = np.concatenate([rgb.mean(2, keepdims=True) if gray else rgb[..., ::-1]]
                           + ([alpha_map[..., None]] if alpha else []), axis=2).clip(0, 1)
    peak = {np.uint8: 255.0, np.uint16: 65535.0}.get(dtype)
    expected = (image * peak).round().astype(dtype) if peak else image.astype(dtype)
    expected = expected[..., 0] if expected.shape[2] == 1 else expected
    monkeypatch.setattr(image_io, '_STRIP_PIXELS', 3 * 17)  # strips of 3 rows, the last of 2
    out = image_io.encode_image_array(rgb, meta, alpha_map, bgr=True)
    assert out.dtype == dtype and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)


def test_read_image_is_rgb(images, photo):
    rgb, _ = read_image(str(images / 'rgb8.png'))
    np.testing.assert_allclose(rgb * 255, photo('astronaut', (20, 24)), atol=0.5)


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.png'):
        read_image(str(tmp_path / 'missing.png'))
    (tmp_path / 'junk.png').write_bytes(b'not an image')
    with pytest.raises(ValueError, match='junk.png: not a readable image'):
        read_image(str(tmp_path / 'junk.png'))


# ---------------------------------------------------------------------------------------------- tiles
def test_tile_cores_partition_the_image():
    tiles = plan_tiles((37, 50), tile_size=12, tile_pad=5, align=4)
    covered = np.zeros((37, 50), int)
    for t in tiles:
        covered[t.cy0:t.cy1, t.cx0:t.cx1] += 1
        assert t.y0 % 4 == 0 and t.x0 % 4 == 0  # aligned to the window grid
        assert t.y0 <= max(0, t.cy0 - 5) and t.y1 >= min(37, t.cy1 + 5)
    assert (covered == 1).all()
    with pytest.raises(ValueError, match='tile'):
        plan_tiles((10, 10), 0, 2)


def test_alignment_is_declared_by_the_network():
    from gsasr_plugin.archs.gsasr_arch import GSASR
    assert InferStandInNet(4).alignment == 1
    small = dict(embed_dim=12, num_heads=2, window_size=12, num_injection_layers=2, num_blocks=1,
                 num_layers_per_block=2, gaussian_density=4, num_upsample_stages=1)
    assert GSASR(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, **small).alignment == 12
    swinir = {'type': 'SwinIREncoder', 'embed_dim': 8, 'depths': [1], 'num_heads': [1], 'window_size': 8, 'num_feat': 8}
    assert GSASR(encoder=swinir, **small).alignment == 24  # the decoder's windows and the encoder's


def test_tiled_matches_untiled_standin(model_files):
    _, _, network = model_files
    lq = torch.rand(1, 3, 29, 34)
    full, field = super_resolve(network, lq, scale=(2.5, 3.0), tile_size=0)
    tiled, tiled_field = super_resolve(network, lq, scale=(2.5, 3.0), tile_size=10, tile_pad=4)
    assert full.shape == tiled.shape == (1, 3, 72, 102)
    assert tiled_field.num_gaussians == field.num_gaussians == 29 * 34 * 4
    assert (full - tiled).abs().max().item() < 1 / 255


def test_tiled_matches_untiled_small_gsasr():
    """A real (small) GSASR: window attention over aligned tiles, encoded with the full image's scale."""
    from gsasr_plugin.archs.gsasr_arch import GSASR
    network = GSASR(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=12, num_heads=2,
                    window_size=4, num_injection_layers=2, num_blocks=1, num_layers_per_block=2,
                    gaussian_density=4, num_upsample_stages=1).eval()
    lq = torch.rand(1, 3, 26, 30)
    full, _ = super_resolve(network, lq, scale=(2.4, 2.4), tile_size=0)
    tiled, _ = super_resolve(network, lq, scale=(2.4, 2.4), tile_size=12, tile_pad=8)
    assert (full - tiled).abs().max().item() < 1 / 255


def test_tiles_use_the_full_image_scale(model_files):
    _, _, network = model_files
    lq = torch.rand(1, 3, 16, 16)
    field = encode_tiled(network, lq, (3.0, 3.0), tile_size=8, tile_pad=4)
    other = encode_tiled(network, lq, (2.0, 2.0), tile_size=8, tile_pad=4)
    assert not torch.allclose(field.colors, other.colors)
    untiled = network.encode(lq, (3.0, 3.0))
    assert torch.allclose(field.colors.sum(), untiled.colors.sum(), rtol=1e-5)


def test_auto_tile_size_follows_free_memory(model_files, monkeypatch):
    import gsasr_plugin.inference as inference
    _, _, network = model_files
    monkeypatch.setattr(inference, 'available_memory', lambda device: 1 << 40)
    assert auto_tile_size(network, (64, 64), torch.device('cpu')) is None
    monkeypatch.setattr(inference, 'available_memory', lambda device: 64 << 20)
    small = auto_tile_size(network, (4000, 4000), torch.device('cpu'))
    monkeypatch.setattr(inference, 'available_memory', lambda device: 1 << 30)
    large = auto_tile_size(network, (4000, 4000), torch.device('cpu'))
    assert small is not None and large is not None and 16 <= small < large < 4000
    # and super_resolve uses it when --tile-size is not given
    monkeypatch.setattr(inference, 'auto_tile_size', lambda *a, **k: 8)
    calls = []
    monkeypatch.setattr(inference, 'encode_tiled', lambda *a, **k: calls.append(a[3]) or network.encode(a[1], a[2]))
    super_resolve(network, torch.rand(1, 3, 20, 20), scale=(2.0, 2.0))
    assert calls == [8]


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_folder_all_formats(model_files, images, tmp_path, capsys):
    opt, ckpt, _ = model_files
    out = tmp_path / 'out'
    code, stdout, stderr = _run(capsys, '-opt', opt, '--model', ckpt, '-i', images, '-o', out, '--scale', '2.5')
    assert code == 0, stderr
    assert 'wrote 7 of 7' in stdout
    expect = {'rgb8.png': (50, 60, 3), 'photo.jpg': (50, 60, 3), 'photo.webp': (50, 60, 3), 'rgb16.tif': (50, 60, 3),
              'gray16.png': (50, 60), 'gray8.png': (50, 60), 'rgba.png': (50, 60, 4)}
    for name, shape in expect.items():
        stem, ext = name.split('.')
        result = cv2.imread(str(out / f'{stem}_x2.5.{ext}'), cv2.IMREAD_UNCHANGED)  # the suffix names the scale
        original = cv2.imread(str(images / name), cv2.IMREAD_UNCHANGED)
        assert result is not None and result.shape == shape, name
        assert result.dtype == original.dtype, name


def test_cli_rgba_alpha_is_upscaled_separately(model_files, images, tmp_path, capsys):
    opt, ckpt, network = model_files
    out = tmp_path / 'out'
    assert _run(capsys, '-opt', opt, '--model', ckpt, '-i', images / 'rgba.png', '-o', out, '--scale', '2')[0] == 0
    result = cv2.imread(str(out / 'rgba_x2.png'), cv2.IMREAD_UNCHANGED)
    _, meta = read_image(str(images / 'rgba.png'))
    alpha_in = torch.from_numpy(meta.alpha)[None, None].expand(1, 3, -1, -1).contiguous()
    expected = super_resolve(network, alpha_in, scale=(2.0, 2.0), tile_size=0)[0][0].mean(0).numpy()
    np.testing.assert_allclose(result[..., 3] / 255.0, expected, atol=1.5 / 255)
    # the alpha ramp (left to right) survives, independent of the colours
    assert result[:, -8:, 3].mean() > result[:, :8, 3].mean() + 40


def test_cli_anisotropic_scale_size_and_options(model_files, images, tmp_path, capsys):
    opt, ckpt, network = model_files
    src = images / 'rgb8.png'
    code, _, err = _run(capsys, '-opt', opt, '--model', ckpt, '-i', src, '-o', tmp_path / 'a', '--scale', '1.5,3.6')
    assert code == 0, err
    assert cv2.imread(str(tmp_path / 'a' / 'rgb8_x1.5x3.6.png')).shape == (30, 86, 3)
    code, _, err = _run(capsys, '-opt', opt, '--model', ckpt, '-i', src, '-o', tmp_path / 'b', '--size', '77x41',
                        '--tile-size', '8', '--tile-pad', '4', '--bf16', '--device', 'cpu', '--param-key', 'params',
                        '--suffix', '_sr', '--ext', 'tif')
    assert code == 0, err
    result = cv2.imread(str(tmp_path / 'b' / 'rgb8_sr.tif'), cv2.IMREAD_UNCHANGED)
    assert result.shape == (41, 77, 3)
    # the bf16 + tiled result stays close to the float32 untiled one
    rgb, _ = read_image(str(src))
    reference = super_resolve(network, torch.from_numpy(rgb).permute(2, 0, 1)[None], out_size=(41, 77), tile_size=0)[0]
    reference = (reference[0].permute(1, 2, 0).numpy()[..., ::-1] * 255).round()
    assert np.abs(result.astype(float) - reference).mean() < 4


def test_cli_tiled_equals_untiled(model_files, images, tmp_path, capsys):
    opt, ckpt, _ = model_files
    src = images / 'rgb16.tif'
    for name, tile in (('whole', '0'), ('tiled', '6')):
        assert _run(capsys, '-opt', opt, '--model', ckpt, '-i', src, '-o', tmp_path / name, '--scale', '3',
                    '--tile-size', tile)[0] == 0
    whole = cv2.imread(str(tmp_path / 'whole' / 'rgb16_x3.tif'), cv2.IMREAD_UNCHANGED).astype(float)
    tiled = cv2.imread(str(tmp_path / 'tiled' / 'rgb16_x3.tif'), cv2.IMREAD_UNCHANGED).astype(float)
    assert np.abs(whole - tiled).max() <= 65535 / 255


def test_cli_save_gaussians(model_files, images, tmp_path, capsys):
    opt, ckpt, _ = model_files
    code, _, err = _run(capsys, '-opt', opt, '--model', ckpt, '-i', images / 'rgb8.png', '-o', tmp_path / 'o',
                        '--scale', '2', '--save-gaussians', '--gaussians-crop', '6')
    assert code == 0, err
    figure = cv2.imread(str(tmp_path / 'o' / 'rgb8_x2_gaussians.png'))
    assert figure is not None and figure.shape[0] > 200 and figure.std() > 10


def test_cli_bad_file_in_folder_others_still_processed(model_files, images, tmp_path, capsys):
    opt, ckpt, _ = model_files
    (images / 'broken.png').write_bytes(b'\x89PNG but not really')
    code, stdout, stderr = _run(capsys, '-opt', opt, '--model', ckpt, '-i', images, '-o', tmp_path / 'o', '--scale', '2')
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and 'broken.png' in lines[0] and lines[0].startswith('basicsr infer: error:')
    assert 'wrote 7 of 8' in stdout
    assert len(list((tmp_path / 'o').iterdir())) == 7


@pytest.mark.parametrize('args,needle,code', [
    (['--scale', '0'], '--scale', 2),
    (['--scale', '-1.5'], '--scale', 2),
    (['--scale', 'big'], '--scale', 2),
    (['--scale', '2,3,4'], '--scale', 2),
    (['--size', '640'], '--size', 2),
    (['--size', 'axb'], '--size', 2),
    (['--scale', '2', '--size', '8x8'], 'not allowed with', 2),
    ([], '--size --scales is required', 2),
    (['--scale', '2', '--tile-size', '-3'], '--tile-size', 2),
    # issue 26, item 10: values that meant nothing were accepted silently
    (['--scale', '2', '--zoom', '0'], 'argument --zoom: must be a positive integer', 2),
    (['--scale', '2', '--save-gaussians', '--gaussians-crop', '0'], 'argument --gaussians-crop: must be', 2),
    (['--scale', '2', '--gaussians-crop', '6'], 'add --save-gaussians', 2),
    (['--scale', '2', '--zoom-max', '3'], 'add --zoom', 2),
])
def test_cli_bad_arguments_are_one_line(model_files, images, tmp_path, capsys, args, needle, code):
    opt, ckpt, _ = model_files
    got, stdout, stderr = _run(capsys, '-opt', opt, '--model', ckpt, '-i', images, '-o', tmp_path / 'o', *args)
    assert got == code
    assert len(stderr.strip().splitlines()) == 1 and needle in stderr
    assert not (tmp_path / 'o').exists()


def test_cli_scale_with_no_output_pixel_is_refused(model_files, images, tmp_path, capsys):
    """`-s 1e-9` made a 1 x 1 image and exit 0 (issue 26, item 10): one line naming the file and the scale."""
    opt, ckpt, _ = model_files
    code, _, err = _run(capsys, '-opt', opt, '-m', ckpt, '-i', images / 'rgb8.png', '-o', tmp_path / 'o', '-s', '1e-9')
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert 'rgb8.png: scale 1e-09 leaves no output pixel of 20 LR pixels' in err
    assert not (tmp_path / 'o').exists()


def test_cli_missing_input_checkpoint_options(model_files, images, tmp_path, capsys):
    opt, ckpt, _ = model_files
    cases = [
        (['-opt', opt, '--model', ckpt, '-i', tmp_path / 'nope.png'], 'nope.png'),
        (['-opt', opt, '--model', tmp_path / 'none.pth', '-i', images], 'none.pth'),
        (['-opt', tmp_path / 'none.yml', '--model', ckpt, '-i', images], 'none.yml'),
    ]
    odd = tmp_path / 'odd.pth'
    torch.save({'state': {}, 'epoch': 3}, odd)
    cases.append((['-opt', opt, '--model', odd, '-i', images], 'odd.pth: unknown layout'))
    wrong = tmp_path / 'wrong.pth'
    torch.save({'params': {'body.0.weight': torch.zeros(1)}}, wrong)
    cases.append((['-opt', opt, '--model', wrong, '-i', images], 'does not fit network_g'))
    for argv, needle in cases:
        code, _, stderr = _run(capsys, *argv, '-o', tmp_path / 'o', '--scale', '2')
        assert code == 1, argv
        assert len(stderr.strip().splitlines()) == 1 and needle in stderr, stderr


def test_cli_dispatch_from_console_script(model_files, images, tmp_path, capsys):
    from gsasr_plugin_cli import main
    opt, ckpt, _ = model_files
    code = main(['infer', '-opt', str(opt), '--model', str(ckpt), '-i', str(images / 'gray8.png'), '-o',
                 str(tmp_path / 'o'), '--scale', '2'])
    assert code == 0
    assert cv2.imread(str(tmp_path / 'o' / 'gray8_x2.png'), cv2.IMREAD_UNCHANGED).shape == (40, 48)


def test_networks_without_a_plain_gaussian_field_are_not_tiled():
    """GaussianSR's field carries features besides Gaussians: --tile-size N is refused clearly, auto falls back."""
    import gsasr_plugin.inference as inference

    class Wrapped(SRNetwork):
        def __init__(self):
            super().__init__()
            self.inner = InferStandInNet(4)

        def encode_features(self, lq):
            return lq

        def decode_field(self, lq, target):
            return {'gaussians': self.inner.decode_field(lq, target)}

        def render(self, field, out_size, window=None):
            return field['gaussians'].render(out_size)

    network = Wrapped().eval()
    lq = torch.rand(1, 3, 20, 20)
    with pytest.raises(inference.TiledEncodingUnsupported, match='not a GaussianField'):
        super_resolve(network, lq, scale=(2.0, 2.0), tile_size=8)
    original = inference.auto_tile_size
    try:
        inference.auto_tile_size = lambda *a, **k: 8
        out, _ = super_resolve(network, lq, scale=(2.0, 2.0))
    finally:
        inference.auto_tile_size = original
    assert out.shape == (1, 3, 40, 40)


# ------------------------------------------------------------------ no YAML, safe outputs, short flags
@pytest.fixture
def self_describing(tmp_path, model_files):
    """The stand-in's weights saved as basicsr train saves them now: weights + network_g."""
    from gsasr_plugin.checkpoint import save_checkpoint
    _, _, network = model_files
    path = tmp_path / 'net_g_latest.pth'
    save_checkpoint(str(path), network.state_dict(), {'type': 'InferStandInNet', 'num_feat': 8})
    return path


def test_cli_checkpoint_alone_is_enough(self_describing, model_files, images, tmp_path, capsys):
    opt, ckpt, _ = model_files
    code, _, err = _run(capsys, '-m', self_describing, '-i', images / 'rgb8.png', '-o', tmp_path / 'a', '-s', '3.7')
    assert code == 0, err
    assert cv2.imread(str(tmp_path / 'a' / 'rgb8_x3.7.png')).shape == (74, 89, 3)
    # a BasicSR checkpoint without network options: one line saying to pass -opt; with -opt it works
    code, _, err = _run(capsys, '-m', ckpt, '-i', images / 'rgb8.png', '-o', tmp_path / 'b', '-s', '2')
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert 'net_g.pth does not say which network it holds' in err and '-opt OPTIONS.yml' in err
    assert not (tmp_path / 'b').exists()
    assert _run(capsys, '-opt', opt, '-m', ckpt, '-i', images / 'rgb8.png', '-o', tmp_path / 'b', '-s', '2')[0] == 0


def test_cli_short_flags_like_real_esrgan(self_describing, images, tmp_path, capsys):
    code, _, err = _run(capsys, '-n', self_describing, '-i', images / 'rgb8.png', '-o', tmp_path / 'o', '--outscale',
                        '2', '-t', '8')
    assert code == 0, err
    assert cv2.imread(str(tmp_path / 'o' / 'rgb8_x2.png')).shape == (40, 48, 3)
    code, _, err = _run(capsys, '--model', self_describing, '--input', images / 'rgb8.png', '--output',
                        tmp_path / 'o', '--size', '77x41', '--tile-size', '0')
    assert code == 0, err
    assert cv2.imread(str(tmp_path / 'o' / 'rgb8_77x41.png')).shape == (41, 77, 3)  # the suffix names the size


def test_cli_never_overwrites_inputs_unless_asked(self_describing, tmp_path, photo, capsys):
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / 'cat.png'), photo('chelsea', (8, 8))[..., ::-1])
    original = (folder / 'cat.png').read_bytes()
    # writing into the input folder with no suffix would replace cat.png: refused, nothing written
    code, _, err = _run(capsys, '-m', self_describing, '-i', folder, '-o', folder, '-s', '2', '--suffix', '')
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert 'would replace the input image' in err and '--overwrite' in err
    assert (folder / 'cat.png').read_bytes() == original and sorted(p.name for p in folder.iterdir()) == ['cat.png']
    # the default suffix names the scale, so the same folder is safe ...
    assert _run(capsys, '-m', self_describing, '-i', folder, '-o', folder, '-s', '2')[0] == 0
    assert cv2.imread(str(folder / 'cat_x2.png')).shape == (16, 16, 3)
    # ... and a second run does not compound (cat.png would replace its own earlier output, an input now)
    first = (folder / 'cat_x2.png').read_bytes()
    code, _, err = _run(capsys, '-m', self_describing, '-i', folder, '-o', folder, '-s', '2')
    assert code == 2 and 'cat_x2.png' in err
    assert (folder / 'cat_x2.png').read_bytes() == first and not (folder / 'cat_x2_x2.png').exists()
    # --overwrite is the explicit request
    code, _, err = _run(capsys, '-m', self_describing, '-i', folder / 'cat.png', '-o', folder, '-s', '2', '--suffix',
                        '', '--overwrite')
    assert code == 0, err
    assert cv2.imread(str(folder / 'cat.png')).shape == (16, 16, 3)


def test_cli_two_inputs_one_output_is_refused(self_describing, images, tmp_path, capsys):
    code, _, err = _run(capsys, '-m', self_describing, '-i', images, '-o', tmp_path / 'o', '-s', '2', '--ext', 'png')
    assert code == 2 and 'would both be written to' in err and 'photo_x2.png' in err
    assert not (tmp_path / 'o').exists()


def test_cli_lossy_ext_says_so_once(self_describing, images, tmp_path, capsys):
    code, stdout, err = _run(capsys, '-m', self_describing, '-i', images, '-o', tmp_path / 'jpg', '-s', '2', '--ext',
                             'jpg')
    assert code == 2  # photo.jpg and photo.webp would both become photo_x2.jpg
    for name in ('photo.jpg', 'photo.webp'):
        (images / name).unlink()
    code, stdout, err = _run(capsys, '-m', self_describing, '-i', images, '-o', tmp_path / 'jpg', '-s', '2', '--ext',
                             'jpg')
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith('basicsr infer: note:')]
    assert len(notes) == 2, err  # two 16-bit inputs and one RGBA input: one note for depth, one for alpha
    assert any('holds 8-bit images' in n and '16-bit input' in n for n in notes)
    assert any('no alpha channel' in n and 'rgba.png' in n for n in notes)
    assert cv2.imread(str(tmp_path / 'jpg' / 'rgba_x2.jpg'), cv2.IMREAD_UNCHANGED).shape == (40, 48, 3)
    # --ext auto (the default) keeps every input's format, depth and alpha, and says nothing
    code, _, err = _run(capsys, '-m', self_describing, '-i', images, '-o', tmp_path / 'auto', '-s', '2')
    assert code == 0 and 'note' not in err
    assert cv2.imread(str(tmp_path / 'auto' / 'rgb16_x2.tif'), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(tmp_path / 'auto' / 'rgba_x2.png'), cv2.IMREAD_UNCHANGED).shape == (40, 48, 4)


def test_cli_bf16_on_cpu_says_it_is_slower(self_describing, images, tmp_path, capsys):
    code, _, err = _run(capsys, '-m', self_describing, '-i', images, '-o', tmp_path / 'o', '-s', '2', '--bf16',
                        '--device', 'cpu')
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('basicsr infer: note: --bf16') and 'slower' in lines[0]


def test_cli_scales_carry_alpha(self_describing, images, tmp_path, capsys):
    code, _, err = _run(capsys, '-m', self_describing, '-i', images / 'rgba.png', '-o', tmp_path / 'o', '--scales',
                        '2,1.5')
    assert code == 0, err
    assert cv2.imread(str(tmp_path / 'o' / 'rgba_x2.png'), cv2.IMREAD_UNCHANGED).shape == (40, 48, 4)
    assert cv2.imread(str(tmp_path / 'o' / 'rgba_x1.5.png'), cv2.IMREAD_UNCHANGED).shape == (30, 36, 4)


# ------------------------------------------------------- --scales equals -s; the output size rule (issue 26)
_TINY_GSASR = dict(type='GSASR', encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=24,
                   num_heads=2, window_size=4, num_injection_layers=1, num_blocks=1, num_layers_per_block=2,
                   num_scale_tokens=3, gaussian_density=4, num_upsample_stages=1, head_mlp_ratio=1.0)
_TINY_NETWORKS = {
    'gsasr': _TINY_GSASR,
    'gsasr_official_canvas': dict(_TINY_GSASR, type='GSASROfficial', pad_input_to=4, canvas_rounding='floor',
                                  box_cutoff=0.1, size_rule='floor'),
    'continuoussr_requested_scale': dict(type='ContinuousSR', encoder={
        'type': 'SwinIREncoder', 'embed_dim': 12, 'depths': [1], 'num_heads': [2], 'window_size': 4, 'num_feat': 16},
        num_feat=16, color_hidden=[16], offset_hidden=[16], key_hidden=[16], attn_dim=16,
        covariance_scale='requested_scale'),
    'gaussiansr_patches': dict(type='GaussianSR', encoder={'type': 'EDSREncoder', 'num_feat': 12, 'num_block': 1},
                               num_kernels=9, splat_channels=4, decoder_dim=16, mlp_hidden=[16, 16],
                               splatting='patches', kernel_size=3),
}


def _tiny_checkpoint(tmp_path, name):
    from basicsr.archs import build_network

    from gsasr_plugin.checkpoint import save_checkpoint
    torch.manual_seed(0)
    network_g = _TINY_NETWORKS[name]
    path = tmp_path / f'{name}.pth'
    save_checkpoint(str(path), build_network(dict(network_g)).state_dict(), network_g)
    return path


@pytest.mark.parametrize('name', sorted(_TINY_NETWORKS))
def test_cli_scales_write_exactly_what_scale_writes(name, tmp_path, photo, capsys):
    """`--scales a,b` writes byte for byte what `-s a` and `-s b` write, at scales whose products with the LR
    sides are not whole numbers (the network is conditioned on the requested scale, not Ho / h), RGBA too."""
    ckpt = _tiny_checkpoint(tmp_path, name)
    folder = tmp_path / 'in'
    folder.mkdir()
    rgb = photo('astronaut', (23, 37))
    alpha = np.tile(np.linspace(0, 255, 37, dtype=np.uint8), (23, 1))
    cv2.imwrite(str(folder / 'rgba.png'), np.concatenate([rgb[..., ::-1], alpha[..., None]], axis=2))
    scales = ['2.5', '3.7', '1.5:3.3']
    code, _, err = _run(capsys, '-m', ckpt, '-i', folder, '-o', tmp_path / 'many', '--scales', ','.join(scales))
    assert code == 0, err
    for scale in scales:
        code, _, err = _run(capsys, '-m', ckpt, '-i', folder, '-o', tmp_path / 'one', '-s', scale.replace(':', ','))
        assert code == 0, err
    one = sorted((tmp_path / 'one').iterdir())
    many = sorted((tmp_path / 'many').iterdir())
    assert [p.name for p in one] == [p.name for p in many] == ['rgba_x1.5x3.3.png', 'rgba_x2.5.png', 'rgba_x3.7.png']
    for a, b in zip(one, many):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_zoom_renderer_scales_are_the_forward_of_the_requested_scale():
    from gsasr_plugin.zoom import ZoomRenderer
    from test_continuoussr_arch import tiny_continuoussr
    from test_gsasr_arch import tiny_gsasr
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 23, 37)
    for net in (tiny_gsasr(), tiny_continuoussr(covariance_scale='requested_scale')):
        outputs = ZoomRenderer(net, lq).render_scales([2.5, 3.7, (1.5, 3.3)])
        with torch.no_grad():
            for out, scale in zip(outputs, [2.5, 3.7, (1.5, 3.3)]):
                assert torch.equal(out, net(lq, scale=scale)), (type(net).__name__, scale)


@pytest.mark.parametrize('rule, expected', [('round', (89, 133)), ('floor', (88, 133)), ('ceil', (89, 134))])
def test_size_rule_is_one_function(rule, expected):
    from gsasr_plugin.utils.scale import resolve_scale_and_size, scaled_size
    assert scaled_size((24, 36), 3.7, rule) == expected
    assert resolve_scale_and_size((24, 36), 3.7, size_rule=rule).size == expected
    assert scaled_size((3, 10), (10 / 3, 0.1 * 3), rule) == (10, 3)  # products within 1e-6 of a whole number
    with pytest.raises(ValueError, match='size_rule must be one of round, floor, ceil'):
        scaled_size((24, 36), 2, 'trunc')


def test_released_gsasr_models_follow_the_official_floor_rule(tmp_path, photo, capsys):
    """The released GSASR models write floor(s * h) x floor(s * w) for a scale alone, as the official
    inference_paper.py; `--size-rule` and `size_rule=` choose another rule; ours round."""
    from basicsr.archs import build_network

    from gsasr_plugin.official import hub
    from gsasr_plugin.api import Upscaler
    for released in hub.released_models().values():
        expected = 'floor' if released.method.startswith('GSASR') else 'round'  # ContinuousSR, GaussianSR: round
        assert released.network_g.get('size_rule', 'round') == expected, released.name
    network = build_network(dict(_TINY_GSASR, size_rule='floor'))
    model = Upscaler(network)
    image = photo('astronaut', (24, 36))
    assert model.upscale(image, 3.7).shape == (88, 133, 3)
    assert model.upscale(image, 3.7, size_rule='round').shape == (89, 133, 3)
    with torch.no_grad():
        assert network(torch.rand(1, 3, 24, 36), 3.7).shape[-2:] == (88, 133)
    ckpt = _tiny_checkpoint(tmp_path, 'gsasr_official_canvas')
    cv2.imwrite(str(tmp_path / 'p.png'), image[..., ::-1])
    for extra, shape in (([], (88, 133)), (['--size-rule', 'ceil'], (89, 134))):
        code, _, err = _run(capsys, '-m', ckpt, '-i', tmp_path / 'p.png', '-o', tmp_path / 'o', '-s', '3.7',
                            '--overwrite', *extra)
        assert code == 0, err
        assert cv2.imread(str(tmp_path / 'o' / 'p_x3.7.png')).shape[:2] == shape


def _png_bomb(path, width=20000, height=20000):
    """A valid PNG header declaring ``width`` x ``height`` RGB pixels, with a few rows of data (a few hundred
    bytes in all): decoders that trust the header allocate gigabytes for it."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)

    rows = zlib.compress(b'\x00' * (3 * width + 1) * 4, 9)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)) +
                     chunk(b'IDAT', rows) + chunk(b'IEND', b''))


def test_cli_huge_images_are_refused_before_decoding(model_files, images, tmp_path, capsys, monkeypatch):
    """Issue 26, item 6: a decompression-bomb header (20000 x 20000 in a few bytes) and real images too large for
    memory gave raw cv2.error / numpy._ArrayMemoryError tracebacks. Now: one line naming the file, its size and
    the limit (and how to raise it), before anything is decoded; the other images are still written."""
    import gsasr_plugin.api as api
    from gsasr_plugin.utils.image_io import DEFAULT_MAX_INPUT_PIXELS
    from gsasr_plugin_cli.parsers import infer_parser
    assert infer_parser().get_default('max_input_pixels') == DEFAULT_MAX_INPUT_PIXELS  # the light parser's copy
    opt, ckpt, _ = model_files
    _png_bomb(images / 'bomb.png')
    assert (images / 'bomb.png').stat().st_size < 2000
    decoded = []
    original_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, 'imdecode', lambda *a: decoded.append(1) or original_imdecode(*a))
    code, out, err = _run(capsys, '-opt', opt, '-m', ckpt, '-i', images, '-o', tmp_path / 'o', '-s', '2')
    assert code == 1 and 'Traceback' not in err, err
    assert err.strip().splitlines() == [
        f'basicsr infer: error: {images / "bomb.png"}: 20000x20000 pixels (400.0 MP) is over the limit for an input '
        'image of 100.0 MP; refused before decoding it (a damaged or hostile file can declare any size). If the '
        'image is real, raise the limit (basicsr infer --max-input-pixels N; Python: max_input_pixels=N; 0: no '
        'limit): large images are encoded in tiles'], err
    assert 'wrote 7 of 8 image(s)' in out and not (tmp_path / 'o' / 'bomb_x2.png').exists()
    assert len(decoded) == 7  # the bomb's pixels were never decoded
    # a real image under a lower limit, and the limit lifted
    code, _, err = _run(capsys, '-opt', opt, '-m', ckpt, '-i', images / 'rgb8.png', '-o', tmp_path / 'p', '-s', '2',
                        '--max-input-pixels', '400')
    assert code == 1 and '24x20 pixels (480 pixels) is over the limit for an input image of 400 pixels' in err, err
    code, _, err = _run(capsys, '-opt', opt, '-m', ckpt, '-i', images / 'rgb8.png', '-o', tmp_path / 'p', '-s', '2',
                        '--max-input-pixels', '0')
    assert code == 0 and (tmp_path / 'p' / 'rgb8_x2.png').exists(), err
    # a real image whose output would not fit in memory: refused before decoding, naming the sizes and memory
    monkeypatch.setattr(api, 'available_memory', lambda device: 10 << 20)
    decoded.clear()
    code, _, err = _run(capsys, '-opt', opt, '-m', ckpt, '-i', images / 'rgb8.png', '-o', tmp_path / 'q', '-s', '100')
    assert code == 1 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    assert ('rgb8.png: its 24x20 pixels make a 2400x2000 output (5 MP), which needs about 0.2 GiB of memory, more '
            'than the 0.0 GiB free here; refused before decoding it') in err, err
    assert not decoded and not (tmp_path / 'q').exists()


def test_training_image_sizes_are_read_from_headers_whatever_their_size(tmp_path, monkeypatch):
    """Issue 26, item 6: PIL refuses headers over 179 MP as bombs, and the size check of the training images then
    decoded the file with OpenCV. The header alone is read, for any declared size."""
    from gsasr_plugin.utils import bad_data
    _png_bomb(tmp_path / 'bomb.png', 30000, 20000)
    decoded = []
    monkeypatch.setattr(bad_data.cv2, 'imread', lambda *args: decoded.append(args))
    assert bad_data.image_size(str(tmp_path / 'bomb.png')) == (20000, 30000) and not decoded


def test_cli_wrong_files_for_model_and_output_are_one_line(model_files, images, tmp_path, capsys, monkeypatch):
    """Issue 26, item 14: `-m photo.png` / `-m options.yml` gave a long line repeating "not a PyTorch checkpoint"
    for every converter; `-o /proc/x` was reported after the image was computed, as a missing folder. Now one
    line that says what the file is and where it goes, and the output folder is checked before the model runs."""
    import gsasr_plugin.commands.infer as infer_command
    opt, ckpt, _ = model_files
    for given, says in [(images / 'rgb8.png', 'is a PNG image, not a PyTorch file (.pth); -m (or path: '
                                              'pretrain_network_g) names the weights, -i the images to upscale'),
                        (opt, 'is a YAML option file, not a PyTorch file (.pth); option files go to -opt, the '
                                  'weights they were trained into to -m')]:
        code, _, err = _run(capsys, '-m', given, '-i', images / 'rgb8.png', '-o', tmp_path / 'o', '-s', '2')
        assert code == 1 and err.strip().splitlines() == [f'basicsr infer: error: checkpoint {given} {says}'], err
    loaded = []
    monkeypatch.setattr(infer_command, 'load_model', lambda *a, **k: loaded.append(a))
    (tmp_path / 'file').write_text('x')
    for folder, says in [('/proc/x', "-o/--output /proc/x: cannot write in /proc (to make /proc/x): no folder can "
                                     "be made there (a virtual file system such as /proc?)"),
                         (tmp_path / 'file' / 'out', f'-o/--output {tmp_path / "file" / "out"}: {tmp_path / "file"} '
                                                     'is a file, not a folder')]:
        code, _, err = _run(capsys, '-opt', opt, '-m', ckpt, '-i', images / 'rgb8.png', '-o', folder, '-s', '2')
        assert code == 2 and err.strip().splitlines() == [f'basicsr infer: error: {says}'], err
    assert not loaded  # refused before the model was loaded, let alone run
