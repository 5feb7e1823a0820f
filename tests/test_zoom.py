"""gsasr_plugin.zoom: several scales and continuous-zoom frames from one encoding (per scale for GSASR),
window rendering, culling, GIF/PNG writing (CPU, tiny networks)."""
import pytest
import torch

import gsasr_plugin  # noqa: F401
from gsasr_plugin.archs.gaussian_field import GaussianField, cull_to_window, window_field
from gsasr_plugin.zoom import ZoomRenderer, save_frames, save_gif, zoom_frame_size, zoom_windows
from test_continuoussr_arch import tiny_continuoussr
from test_gaussiansr_arch import tiny_gaussiansr
from test_gsasr_arch import tiny_gsasr


def test_scale_free_network_encodes_once_for_every_scale():
    net = tiny_continuoussr()
    lq = torch.rand(1, 3, 8, 10)
    renderer = ZoomRenderer(net, lq)
    outputs = renderer.render_scales([2, 3.5, (1.5, 4)], sizes=[(13, 29)])
    assert renderer.encodes == 1
    with torch.no_grad():
        expected = [net(lq, scale=2), net(lq, scale=3.5), net(lq, scale=(1.5, 4)), net(lq, out_size=(13, 29))]
    for out, ref in zip(outputs, expected):
        assert torch.equal(out, ref)


@pytest.mark.parametrize('lr_color_residual', [False, True])  # True: the decoder also needs lq
def test_gsasr_reruns_the_decoder_per_scale_and_matches_forward(lr_color_residual):
    net = tiny_gsasr(lr_color_residual=lr_color_residual)
    lq = torch.rand(1, 3, 8, 8)
    renderer = ZoomRenderer(net, lq)
    outputs = renderer.render_scales([2, 3, 2])
    assert renderer.encodes == 2  # one decoder run per distinct scale, the encoder once
    with torch.no_grad():
        for out, scale in zip(outputs, [2, 3, 2]):
            assert torch.allclose(out, net(lq, scale=scale), atol=1e-6)


def test_window_of_a_gaussian_field_is_the_crop_of_the_full_render():
    net = tiny_continuoussr()
    lq = torch.rand(1, 3, 8, 10)
    renderer = ZoomRenderer(net, lq)
    full = renderer.render((32, 40))  # x4
    part = renderer.render((12, 16), window=(2, 3, 5, 7))  # the same x4 sampling of a sub-window
    assert renderer.encodes == 1
    assert torch.allclose(part, full[..., 8:20, 12:28], atol=1e-5)


def test_culling_is_exact():
    torch.manual_seed(1)
    n = 200
    field = GaussianField(means=torch.rand(1, n, 2) * torch.tensor([40.0, 30.0]), sigmas=0.2 + torch.rand(1, n, 2),
                          rhos=torch.rand(1, n) * 1.6 - 0.8, colors=torch.rand(1, n, 3), lr_size=(30, 40))
    window = (10.0, 12.0, 16.0, 20.0)
    culled = cull_to_window(field, window, cutoff=3.5)
    assert culled.num_gaussians < n / 2
    ref = window_field(field, window).render((24, 32))
    assert torch.allclose(window_field(culled, window).render((24, 32)), ref, atol=1e-6)


def test_gaussiansr_zoom_frames_from_one_encoding():
    net = tiny_gaussiansr()
    lq = torch.rand(1, 3, 8, 10)
    renderer = ZoomRenderer(net, lq)
    windows = zoom_windows((8, 10), num_frames=5, max_zoom=4)
    frames = renderer.render_windows(windows, frame_size=(16, 20))
    assert renderer.encodes == 1 and len(frames) == 5
    assert all(f.shape == (1, 3, 16, 20) and torch.isfinite(f).all() for f in frames)
    with torch.no_grad():
        assert torch.equal(frames[0], net(lq, out_size=(16, 20)))  # frame 0 is the whole image


def test_gsasr_zoom_frame_uses_the_frame_scale():
    net = tiny_gsasr()
    lq = torch.rand(1, 3, 8, 8)
    renderer = ZoomRenderer(net, lq)
    window = (2.0, 2.0, 6.0, 6.0)  # 4 x 4 LR pixels into 16 x 16: x4
    frame = renderer.render((16, 16), window)
    with torch.no_grad():
        expected = window_field(net.encode(lq, 4.0), window).render((16, 16))
    assert torch.allclose(frame, expected, atol=1e-6)


def test_zoom_windows_geometry():
    windows = zoom_windows((30, 40), num_frames=4, max_zoom=8)
    assert windows[0] == (0.0, 0.0, 30.0, 40.0)
    sizes = [(b - t, r - l) for t, l, b, r in windows]
    for (h, w), k in zip(sizes, range(4)):
        assert h == pytest.approx(30 / 2**k) and w == pytest.approx(40 / 2**k)  # geometric, aspect kept
    assert windows[-1] == pytest.approx((15 - 30 / 16, 20 - 40 / 16, 15 + 30 / 16, 20 + 40 / 16))
    corner = zoom_windows((30, 40), num_frames=3, max_zoom=2, center=(0, 40))  # clamped inside the image
    assert corner[-1] == pytest.approx((0.0, 20.0, 15.0, 40.0))
    assert zoom_frame_size((30, 40)) == (120, 160) and zoom_frame_size((30, 40), (2, 3)) == (60, 120)
    with pytest.raises(ValueError, match='max_zoom'):
        zoom_windows((30, 40), 3, max_zoom=0.5)
    with pytest.raises(ValueError, match='center'):
        zoom_windows((30, 40), 3, center=(50, 0))
    with pytest.raises(ValueError, match='num_frames'):
        zoom_windows((30, 40), 0)


def test_gif_and_frames_are_written(tmp_path):
    from PIL import Image
    frames = [torch.full((1, 3, 6, 7), v) for v in (0.0, 0.5, 1.0)]
    gif = save_gif(frames, tmp_path / 'zoom.gif', duration_ms=50)
    with Image.open(gif) as image:
        assert image.size == (7, 6) and image.n_frames == 4  # 3 frames + 1 on the way back
    paths = save_frames(frames, tmp_path / 'frames', stem='astronaut')
    assert [p.name for p in paths] == ['astronaut_0000.png', 'astronaut_0001.png', 'astronaut_0002.png']
    with pytest.raises(ValueError, match='one size'):
        save_gif([torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 5, 4)], tmp_path / 'bad.gif')


def test_basicsr_infer_scales_and_zoom(tmp_path, photo):
    import cv2
    import yaml
    from PIL import Image

    from gsasr_plugin_cli import main
    from test_continuoussr_arch import TINY_SWINIR
    network_g = dict(type='ContinuousSR', encoder=TINY_SWINIR, num_feat=16, color_hidden=[16], offset_hidden=[16],
                     key_hidden=[16], attn_dim=16)
    (tmp_path / 'net.yml').write_text(yaml.safe_dump({'network_g': network_g}))
    net = tiny_continuoussr(color_hidden=[16], offset_hidden=[16], key_hidden=[16])
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')
    cv2.imwrite(str(tmp_path / 'cat.png'), photo('chelsea', (10, 12))[:, :, ::-1])
    common = ['infer', '-opt', str(tmp_path / 'net.yml'), '--model', str(tmp_path / 'net.pth'), '-i',
              str(tmp_path / 'cat.png'), '-o', str(tmp_path / 'out'), '--device', 'cpu']

    assert main(common + ['--scales', '2,3.5,1.5:3', '--zoom', '3', '--zoom-max', '2']) == 0
    out = tmp_path / 'out'
    for name, shape in (('cat_x2.png', (20, 24)), ('cat_x3.5.png', (35, 42)), ('cat_x1.5x3.png', (15, 36))):
        assert cv2.imread(str(out / name)).shape[:2] == shape, name
    assert not (out / 'cat.png').exists()  # --scales replaces the single output
    assert sorted(p.name for p in (out / 'cat_zoom').iterdir()) == ['cat_0000.png', 'cat_0001.png', 'cat_0002.png']
    with Image.open(out / 'cat_zoom.gif') as gif:
        assert gif.size == (48, 40) and gif.n_frames == 4  # x4 frames without --scale

    assert main(common + ['--scale', '2', '--zoom', '2', '--suffix', '_z']) == 0
    assert cv2.imread(str(out / 'cat_z.png')).shape[:2] == (20, 24)
    with Image.open(out / 'cat_z_zoom.gif') as gif:
        assert gif.size == (24, 20)
    assert main(common + ['--scales', '2,x']) == 2
    assert main(common + ['--scale', '2', '--zoom', '2', '--zoom-max', '0.5']) == 2


def test_basicsr_infer_gaussiansr_single_output_matches_forward(tmp_path, photo):
    import cv2
    import yaml

    from gsasr_plugin_cli import main
    from test_gaussiansr_arch import TINY_EDSR
    network_g = dict(type='GaussianSR', encoder=TINY_EDSR, num_kernels=9, splat_channels=4, decoder_dim=16,
                     mlp_hidden=[16, 16])
    (tmp_path / 'net.yml').write_text(yaml.safe_dump({'network_g': network_g}))
    net = tiny_gaussiansr()
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')
    rgb = photo('coffee', (9, 11))
    cv2.imwrite(str(tmp_path / 'cup.png'), rgb[:, :, ::-1])
    assert main(['infer', '-opt', str(tmp_path / 'net.yml'), '--model', str(tmp_path / 'net.pth'), '-i',
                 str(tmp_path / 'cup.png'), '-o', str(tmp_path / 'out'), '--size', '25x20', '--device', 'cpu']) == 0
    written = cv2.imread(str(tmp_path / 'out' / 'cup_25x20.png'))[:, :, ::-1]
    with torch.no_grad():
        lq = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        expected = (net(lq, out_size=(20, 25))[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
    assert written.shape == (20, 25, 3)
    assert abs(written.astype(float) - expected).max() <= 1
