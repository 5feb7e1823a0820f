"""The Python API (``gsasr_plugin.load_model`` / ``Upscaler.upscale``) and self-describing checkpoints.

Uses the stand-in network of ``test_infer`` (a few convolutions predicting Gaussians) to stay fast.
"""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import gsasr_plugin
from gsasr_plugin.official import hub
from gsasr_plugin.api import MissingNetworkOptions, SlowPrecisionWarning, Upscaler
from gsasr_plugin.utils.precision import bf16_is_fast
from gsasr_plugin.checkpoint import load_checkpoint, portable_network_options, save_checkpoint
from gsasr_plugin.inference import super_resolve
from test_infer import InferStandInNet

NETWORK_G = {'type': 'InferStandInNet', 'num_feat': 8}


@pytest.fixture
def network():
    return InferStandInNet(8).eval()


@pytest.fixture
def ours(tmp_path, network):
    """A self-describing checkpoint (weights + network_g), as basicsr train writes them."""
    path = tmp_path / 'net_g_latest.pth'
    save_checkpoint(str(path), network.state_dict(), NETWORK_G, source='test')
    return path


def _reference(network, rgb_float, **kwargs):
    """What the network renders for an (H, W, 3) float RGB image, as (H', W', 3) float."""
    lq = torch.from_numpy(np.ascontiguousarray(rgb_float, dtype=np.float32)).permute(2, 0, 1)[None]
    return super_resolve(network, lq, tile_size=0, **kwargs)[0][0].permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------------- loading
def test_three_lines_from_a_checkpoint_of_ours(ours, network, photo):
    model = gsasr_plugin.load_model(ours, device='cpu')
    image = photo('astronaut', (20, 24))
    sr = model.upscale(image, scale=3.7)
    assert isinstance(sr, np.ndarray) and sr.dtype == np.uint8 and sr.shape == (74, 89, 3)
    expected = _reference(network, image / 255.0, scale=3.7) * 255
    assert np.abs(sr.astype(float) - expected).max() <= 1
    assert model.network_options == NETWORK_G and model.source == str(ours)


def test_checkpoint_without_network_options_needs_opt(tmp_path, network):
    basicsr_style = tmp_path / 'basicsr.pth'
    torch.save({'params': network.state_dict()}, basicsr_style)
    with pytest.raises(MissingNetworkOptions, match=r'basicsr\.pth does not say which network.*-opt OPTIONS\.yml'):
        gsasr_plugin.load_model(basicsr_style, device='cpu')
    opt = tmp_path / 'net.yml'
    opt.write_text(yaml.safe_dump({'network_g': NETWORK_G}))
    assert isinstance(gsasr_plugin.load_model(basicsr_style, opt=opt, device='cpu'), Upscaler)
    assert isinstance(gsasr_plugin.load_model(basicsr_style, opt={'network_g': NETWORK_G}, device='cpu'), Upscaler)


def test_option_file_wins_over_the_checkpoints_options(tmp_path, network):
    path = tmp_path / 'odd.pth'
    save_checkpoint(str(path), network.state_dict(), {'type': 'InferStandInNet', 'num_feat': 5})
    with pytest.raises(ValueError, match=r'odd\.pth does not fit network_g \(InferStandInNet\): .*of another shape'):
        gsasr_plugin.load_model(path, device='cpu')
    opt = tmp_path / 'right.yml'
    opt.write_text(yaml.safe_dump({'network_g': NETWORK_G}))
    model = gsasr_plugin.load_model(path, opt=opt, device='cpu')
    assert model.network_options == NETWORK_G


def test_released_model_by_short_name(monkeypatch, tmp_path, network, photo):
    files = [tmp_path / 'official_encoder.pth', tmp_path / 'official_decoder.pth']
    state = network.state_dict()
    converted = []

    def convert(paths):
        converted.append(list(paths))
        return {k: v.clone() for k, v in state.items()}

    monkeypatch.setattr(hub, '_REGISTRY', {})
    hub.register(hub.ReleasedModel(name='standin-paper', method='InferStandInNet', hub_repo='someone/standin',
                                   files=('encoder.pth', 'decoder.pth'), network_g=NETWORK_G, convert=convert))
    monkeypatch.setattr(hub, 'fetch_files', lambda model, offline=None: files)
    model = gsasr_plugin.load_model('official:standin-paper', device='cpu')
    assert converted == [files]
    image = photo('coffee', (12, 16))
    expected = _reference(network, image / 255.0, scale=2) * 255
    assert np.abs(model.upscale(image, scale=2).astype(float) - expected).max() <= 1
    with pytest.raises(ValueError, match="unknown released model 'official:nope'"):
        gsasr_plugin.load_model('official:nope', device='cpu')


def test_portable_options_drop_encoder_pretrained_paths():
    options = {'type': 'GSASR', 'encoder': {'type': 'SwinIREncoder', 'pretrained': '/somewhere/swinir.pth', 'strict': False,
                                            'param_key': 'params', 'embed_dim': 60}, 'window_size': 12}
    assert portable_network_options(options) == {'type': 'GSASR', 'encoder': {'type': 'SwinIREncoder', 'embed_dim': 60},
                                                 'window_size': 12}


def test_load_checkpoint_reads_options_meta_and_ema(tmp_path, network):
    from gsasr_plugin.checkpoint import write_checkpoint
    ema = {k: v + 1 for k, v in network.state_dict().items()}
    write_checkpoint(str(tmp_path / 'both.pth'), {'params': network.state_dict(), 'params_ema': ema}, NETWORK_G,
                     source='unit')
    checkpoint = load_checkpoint(str(tmp_path / 'both.pth'))
    assert checkpoint.param_key == 'params_ema' and checkpoint.network_g == NETWORK_G
    assert checkpoint.meta == {'version': gsasr_plugin.__version__, 'source': 'unit'}
    key = next(iter(ema))
    assert torch.equal(checkpoint.state_dict[key], ema[key])
    assert load_checkpoint(str(tmp_path / 'both.pth'), 'params').param_key == 'params'
    torch.save(network.state_dict(), tmp_path / 'bare.pth')
    bare = load_checkpoint(str(tmp_path / 'bare.pth'))
    assert bare.network_g is None and bare.param_key is None and set(bare.state_dict) == set(ema)


# ----------------------------------------------------------------------------------- images
@pytest.mark.parametrize('kind', ['uint8', 'uint16', 'float32', 'float64'])
def test_numpy_dtypes_come_back(ours, photo, network, kind):
    model = gsasr_plugin.load_model(ours, device='cpu')
    rgb = photo('astronaut', (14, 18)) / 255.0
    peak = {'uint8': 255, 'uint16': 65535}.get(kind, 1)
    image = (rgb * peak).round().astype(kind) if peak > 1 else rgb.astype(kind)
    sr = model.upscale(image, scale=(2, 2.5))
    assert sr.dtype == np.dtype(kind) and sr.shape == (28, 45, 3)
    expected = _reference(network, image.astype(np.float64) / peak, scale=(2, 2.5))
    assert np.abs(sr.astype(np.float64) / peak - expected).max() <= 1 / 255 + 1e-6


def test_gray_and_alpha_layouts(ours, photo, network):
    model = gsasr_plugin.load_model(ours, device='cpu')
    rgb = photo('chelsea', (10, 12))
    gray = rgb[..., 1]
    alpha = np.tile(np.linspace(0, 255, 12).astype(np.uint8), (10, 1))
    assert model.upscale(gray, scale=2).shape == (20, 24)
    assert model.upscale(gray[..., None], scale=2).shape == (20, 24, 1)
    gray_alpha = model.upscale(np.stack([gray, alpha], -1), scale=2)
    rgba = model.upscale(np.concatenate([rgb, alpha[..., None]], -1), scale=2)
    assert gray_alpha.shape == (20, 24, 2) and rgba.shape == (20, 24, 4)
    # alpha is super-resolved on its own (as a gray image): colours do not leak into it, its ramp survives
    expected_alpha = _reference(network, np.repeat(alpha[..., None] / 255.0, 3, 2), scale=2).mean(2) * 255
    assert np.abs(rgba[..., 3].astype(float) - expected_alpha).max() <= 1
    assert rgba[:, -4:, 3].mean() > rgba[:, :4, 3].mean() + 40
    # gray goes through the network as three equal channels and is averaged back
    expected_gray = _reference(network, np.repeat(gray[..., None] / 255.0, 3, 2), scale=2).mean(2) * 255
    assert np.abs(model.upscale(gray, scale=2).astype(float) - expected_gray).max() <= 1
    # OpenCV's BGR order: the output keeps it
    bgr = model.upscale(rgb[..., ::-1], scale=2, bgr=True)
    np.testing.assert_array_equal(bgr[..., ::-1], model.upscale(rgb, scale=2))


def test_tensors_keep_dtype_shape_and_batch(ours, photo, network):
    model = gsasr_plugin.load_model(ours, device='cpu')
    rgb = torch.from_numpy(photo('rocket', (12, 14))).permute(2, 0, 1)  # (3, H, W) uint8
    as_float = rgb.float() / 255
    out8 = model.upscale(rgb, scale=2)
    assert out8.dtype == torch.uint8 and out8.shape == (3, 24, 28)
    out = model.upscale(as_float, scale=2)
    assert out.dtype == torch.float32 and out.shape == (3, 24, 28)
    assert (out8.float() / 255 - out).abs().max() <= 1 / 255 + 1e-6  # uint8 is read as 0..255, not as garbage
    expected = super_resolve(network, as_float[None], scale=2, tile_size=0)[0][0]
    assert torch.allclose(out, expected, atol=1e-5)
    batch = model.upscale(torch.stack([as_float, as_float.flip(-1)]).double(), out_size=(30, 20))
    assert batch.dtype == torch.float64 and batch.shape == (2, 3, 30, 20)
    assert model.upscale(torch.rand(4, 9, 9), scale=1.5).shape == (4, 14, 14)  # RGBA tensor


def test_any_scale_or_size_tiles_and_precision(ours, photo, network):
    model = gsasr_plugin.load_model(ours, device='cpu')
    image = photo('astronaut', (29, 34))
    assert model.upscale(image, scale=2).shape == (58, 68, 3)  # an int scale (a TypeError before)
    assert model.upscale(image, out_size=(41, 77)).shape == (41, 77, 3)
    whole = model.upscale(image, scale=2.5, tile_size=0).astype(float)
    tiled = model.upscale(image, scale=2.5, tile_size=10, tile_pad=4).astype(float)
    assert np.abs(whole - tiled).max() <= 1
    if bf16_is_fast('cpu'):  # a CPU with AVX512-BF16 / AMX on which bfloat16 measured faster
        half = model.upscale(image, scale=2.5, tile_size=0, bf16=True).astype(float)
        assert np.abs(whole - half).mean() < 4
    else:  # most CPUs: bfloat16 is slower there, so float32 runs, with a note
        with pytest.warns(SlowPrecisionWarning, match='float32 is used instead of bfloat16'):
            half = model.upscale(image, scale=2.5, tile_size=0, bf16=True).astype(float)
        assert np.array_equal(whole, half)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        model.upscale(image, scale=2.5)  # fp32: no notice


def test_bad_inputs_are_clear(ours, network):
    model = gsasr_plugin.load_model(ours, device='cpu')
    with pytest.raises(ValueError, match=r'float images must hold values in \[0, 1\], got \[0, 255\]'):
        model.upscale(np.linspace(0, 255, 192, dtype=np.float32).reshape(8, 8, 3), scale=2)
    with pytest.raises(TypeError, match='unsupported pixel type int32'):
        model.upscale(np.zeros((8, 8, 3), np.int32), scale=2)
    with pytest.raises(ValueError, match=r'transpose it to \(H, W, C\)'):
        model.upscale(np.zeros((3, 16, 16), np.uint8), scale=2)
    with pytest.raises(TypeError, match='numpy array .* or a torch tensor'):
        model.upscale([[0, 1], [1, 0]], scale=2)
    with pytest.raises(TypeError, match='dtype torch.int64 is not supported'):
        model.upscale(torch.zeros(3, 8, 8, dtype=torch.long), scale=2)
    with pytest.raises(ValueError, match='scale must be > 0'):
        model.upscale(np.zeros((8, 8, 3), np.uint8), scale=-2)
    with pytest.raises(ValueError, match='give scale'):
        model.upscale(np.zeros((8, 8, 3), np.uint8))
    # the low-level function names the friendly one instead of failing inside
    with pytest.raises(TypeError, match=r'load_model\(\.\.\.\)\.upscale'):
        super_resolve(network, np.zeros((8, 8, 3), np.float32), scale=2)
    with pytest.raises(TypeError, match='torch.uint8'):
        super_resolve(network, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), scale=2)
    with pytest.raises(TypeError, match='no encode'):
        Upscaler(torch.nn.Conv2d(3, 3, 1))


def test_upscale_file_keeps_depth_and_reports_what_the_format_drops(ours, tmp_path, photo):
    import cv2
    model = gsasr_plugin.load_model(ours, device='cpu')
    bgra = np.concatenate([photo('astronaut', (10, 12))[..., ::-1], np.full((10, 12, 1), 200, np.uint8)], 2)
    cv2.imwrite(str(tmp_path / 'a.png'), bgra.astype(np.uint16) * 257)
    kept = model.upscale_file(tmp_path / 'a.png', tmp_path / 'out' / 'a.png', scale=2)
    assert (kept.input_dtype, kept.output_dtype, kept.alpha_dropped) == (np.uint16, np.uint16, False)
    written = cv2.imread(str(tmp_path / 'out' / 'a.png'), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (20, 24, 4)
    lossy = model.upscale_file(tmp_path / 'a.png', tmp_path / 'out' / 'a.jpg', scale=2)
    assert (lossy.output_dtype, lossy.alpha_dropped) == (np.uint8, True)
    assert cv2.imread(str(tmp_path / 'out' / 'a.jpg'), cv2.IMREAD_UNCHANGED).shape == (20, 24, 3)


def test_demo_upscale_goes_through_the_api(tmp_path, photo):
    import cv2

    from basicsr.archs import build_network
    from gsasr_plugin import demo
    option_file = Path(__file__).resolve().parents[1] / 'options' / 'train_gsasr_demo.yml'
    options = yaml.safe_load(option_file.read_text())
    network = build_network(dict(options['network_g']))
    save_checkpoint(str(tmp_path / 'demo.pth'), network.state_dict(), options['network_g'])
    cv2.imwrite(str(tmp_path / 'cat.png'), photo('chelsea', (12, 16))[..., ::-1])
    assert demo.main(['upscale', '-opt', str(option_file), '--input', str(tmp_path / 'cat.png'), '--scale', '3.5',
                      '--output', str(tmp_path / 'out' / 'cat_x3.5.png'), '--weights', str(tmp_path / 'demo.pth')]) == 0
    assert cv2.imread(str(tmp_path / 'out' / 'cat_x3.5.png')).shape == (42, 56, 3)
    assert cv2.imread(str(tmp_path / 'out' / 'cat_x3.5_bicubic.png')).shape == (42, 56, 3)


def test_upscale_reads_a_tensor_that_requires_grad_and_never_modifies_it(ours, network):
    """No autograd through the API (documented): a tensor that requires grad is read as data, the result does
    not require grad, and the caller's tensor is left as it was (issue 26, item 16)."""
    model = gsasr_plugin.load_model(ours, device='cpu')
    image = torch.rand(2, 3, 9, 11).mul_(1.04).requires_grad_()  # a little above 1: must not be clamped in place
    before = image.detach().clone()
    out = model.upscale(image, scale=2)
    assert out.shape == (2, 3, 18, 22) and not out.requires_grad
    assert torch.equal(image.detach(), before) and image.requires_grad
    expected = super_resolve(network, before[:1].clamp(0, 1), scale=2, tile_size=0)[0]
    assert torch.allclose(out[:1], expected, atol=1e-6)


def test_upscale_file_never_replaces_its_input_unless_asked(ours, tmp_path, photo):
    """One rule for the API and `basicsr infer`: an output that is the input itself needs overwrite=True
    (--overwrite), checked before anything is read or written (issue 26, item 16)."""
    import cv2
    model = gsasr_plugin.load_model(ours, device='cpu')
    path = tmp_path / 'p.png'
    cv2.imwrite(str(path), photo('astronaut', (10, 12)))
    original = path.read_bytes()
    with pytest.raises(FileExistsError, match=r'p\.png is the input image .*overwrite=True'):
        model.upscale_file(path, path, scale=2)
    with pytest.raises(FileExistsError):
        model.upscale_file(path, tmp_path / '.' / 'p.png', scale=2)  # the same file by another name
    assert path.read_bytes() == original and sorted(p.name for p in tmp_path.iterdir()) == ['net_g_latest.pth',
                                                                                              'p.png']
    model.upscale_file(path, path, scale=2, overwrite=True)
    assert cv2.imread(str(path)).shape == (20, 24, 3)


def test_the_file_memory_check_counts_each_networks_render(tmp_path, monkeypatch):
    """GaussianSR with the official patch splatting holds far more per output pixel (its decoder's input features)
    than a rasterized image: the check before decoding uses the network's own figure, so a size that fits another
    network is refused."""
    import cv2

    from gsasr_plugin import api
    from gsasr_plugin.archs.gaussiansr_arch import GaussianSR
    from gsasr_plugin.utils.image_io import ImageTooLargeError

    net = GaussianSR(encoder={'type': 'EDSREncoder', 'num_feat': 12, 'num_block': 1}, num_kernels=9,
                     splat_channels=4, decoder_dim=16, mlp_hidden=[16, 16], splatting='patches',
                     decoder_coords='liif').eval()
    assert net.bytes_per_output_pixel() == 4.0 * (2 * 12 + 16)
    cv2.imwrite(str(tmp_path / 'lr.png'), np.full((10, 8, 3), 128, np.uint8))
    pixels = 40 * 32  # x4
    between = 10 * 8 * api._BYTES_PER_INPUT_PIXEL + pixels * (40 + api._FILE_BYTES_PER_OUTPUT_PIXEL + 10)
    assert api._FILE_BYTES_PER_OUTPUT_PIXEL + 40 < between / pixels < net.bytes_per_output_pixel()
    monkeypatch.setattr(api, 'available_memory', lambda device: between)
    with pytest.raises(ImageTooLargeError, match=r'lr\.png: its 8x10 pixels make a 32x40 output'):
        Upscaler(net, device='cpu').upscale_file(tmp_path / 'lr.png', tmp_path / 'sr.png', scale=4)
    assert not (tmp_path / 'sr.png').exists()
    check = api.check_file_memory(str(tmp_path / 'lr.png'), (10, 8), [(40, 32)], free=between)  # the default: fits
    assert check is None
