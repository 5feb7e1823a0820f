"""ArbitraryScaleSRModel: scale/size passed to the net, warm-up schedule, per-scale validation."""
import math
import os.path as osp

import cv2
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gsasr_plugin  # noqa: F401
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY
from gsasr_plugin.models.arbitrary_scale_model import WarmupMultiStepLR


class TinyArbitrarySRForTests(nn.Module):
    """Bicubic upsampling + a residual conv; records the scale/size it was called with."""

    def __init__(self, num_feat: int = 4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, num_feat, 3, padding=1), nn.ReLU(), nn.Conv2d(num_feat, 3, 3, padding=1))
        self.calls = []

    def forward(self, lq, scale=None, out_size=None):
        if out_size is None:
            s_h, s_w = (scale, scale) if isinstance(scale, (int, float)) else scale
            out_size = (round(lq.shape[-2] * s_h), round(lq.shape[-1] * s_w))
        self.calls.append((scale, tuple(out_size)))
        up = F.interpolate(lq, size=tuple(out_size), mode='bicubic', align_corners=False)
        return up + self.body(up)


if 'TinyArbitrarySRForTests' not in ARCH_REGISTRY:
    ARCH_REGISTRY.register(TinyArbitrarySRForTests)


@pytest.fixture
def folders(tmp_path, photo):
    root = tmp_path / 'hr'
    root.mkdir()
    for name in ('astronaut', 'coffee', 'chelsea'):
        cv2.imwrite(str(root / f'{name}.png'), photo(name, (120, 130))[:, :, ::-1])
    return tmp_path, root


def _opt(tmp_path, hr, **train_extra):
    train = dict(ema_decay=0, optim_g=dict(type='Adam', lr=2e-4, betas=[0.9, 0.99]),
                 scheduler=dict(type='MultiStepLR', milestones=[5, 8], gamma=0.5), warmup_iter=4, total_iter=10,
                 pixel_opt=dict(type='L1Loss', loss_weight=1.0, reduction='mean'))
    train.update(train_extra)
    return dict(
        name='tiny', model_type='ArbitraryScaleSRModel', num_gpu=0, dist=False, rank=0, world_size=1, is_train=True,
        network_g=dict(type='TinyArbitrarySRForTests', num_feat=4),
        path=dict(pretrain_network_g=None, strict_load_g=True, visualization=str(tmp_path / 'vis'),
                  models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states')),
        train=train,
        val=dict(save_img=True, metrics=dict(psnr=dict(type='calculate_psnr', crop_border=None, test_y_channel=True),
                                             ssim=dict(type='calculate_ssim', crop_border=None, test_y_channel=True))),
        datasets=dict(val=dict(name='photos', type='ArbitraryScaleTestDataset', phase='val', dataroot_gt=str(hr),
                               scales=[2, 3.5, [2, 3]])))


def _val_loader(opt):
    return build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val'], num_gpu=0)


def _validated(opt, current_iter, save_img):
    """A model built from ``opt`` after one validation of its ``val`` dataset."""
    model = build_model(opt)
    model.validation(_val_loader(opt), current_iter, None, save_img=save_img)
    return model


def test_feed_and_optimize_pass_scale_and_gt_size(folders):
    tmp_path, hr = folders
    model = build_model(_opt(tmp_path, hr))
    gt = torch.rand(2, 3, 66, 66)
    model.feed_data({'lq': torch.rand(2, 3, 48, 48), 'gt': gt, 'scale': torch.tensor([[1.375, 1.375]] * 2)})
    model.optimize_parameters(1)
    assert model.net_g.calls[-1] == ((1.375, 1.375), (66, 66))
    assert model.output.shape == gt.shape
    assert math.isfinite(model.get_current_log()['l_pix'])
    with pytest.raises(ValueError, match="share one 'scale'"):
        model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 16, 16),
                         'scale': torch.tensor([[2.0, 2.0], [3.0, 3.0]])})


def test_test_at_anisotropic_without_gt(folders):
    tmp_path, hr = folders
    model = build_model(_opt(tmp_path, hr))
    model.feed_data({'lq': torch.rand(1, 3, 10, 12), 'scale': torch.tensor([[2.5, 1.5]])})
    model.test()
    assert model.output.shape == (1, 3, 25, 18)
    assert model.net_g.training, '_test_at must restore train mode'


def test_adam_runs_fused_unless_the_options_choose(folders):
    tmp_path, hr = folders
    assert build_model(_opt(tmp_path, hr)).optimizer_g.defaults['fused'] is True
    for choice in ({'fused': False}, {'foreach': True}):
        optim_g = dict(type='Adam', lr=2e-4, **choice)
        optimizer = build_model(_opt(tmp_path, hr, optim_g=optim_g)).optimizer_g
        assert not optimizer.defaults['fused']
        assert all(optimizer.defaults[key] == value for key, value in choice.items())


def test_fused_adam_trains_as_the_default_adam(folders):
    tmp_path, hr = folders
    batch = {'lq': torch.rand(2, 3, 12, 12), 'gt': torch.rand(2, 3, 30, 30), 'scale': torch.tensor([[2.5, 2.5]] * 2)}
    weights = []
    for optim_g in (dict(type='Adam', lr=1e-2), dict(type='Adam', lr=1e-2, fused=False)):
        torch.manual_seed(0)
        model = build_model(_opt(tmp_path, hr, optim_g=optim_g))
        initial = {key: value.clone() for key, value in model.net_g.state_dict().items()}
        for it in range(1, 4):
            model.feed_data(batch)
            model.optimize_parameters(it)
        weights.append(model.net_g.state_dict())
        assert any(not torch.equal(initial[key], value) for key, value in weights[-1].items())
    for key, fused in weights[0].items():
        torch.testing.assert_close(fused, weights[1][key], rtol=1e-5, atol=1e-6)


def test_warmup_then_multistep_matches_closed_form(folders):
    tmp_path, hr = folders
    model = build_model(_opt(tmp_path, hr))
    lrs = []
    for it in range(1, 11):
        model.update_learning_rate(it, warmup_iter=4)  # what basicsr.train passes
        lrs.append(model.get_current_learning_rate()[0])
    base = 2e-4
    expected = [base * min(1, k / 4) * 0.5**sum(k > m for m in (5, 8)) for k in range(1, 11)]
    assert lrs == pytest.approx(expected)
    # Resuming restores the position in the schedule.
    state = model.schedulers[0].state_dict()
    fresh = WarmupMultiStepLR(torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=base), [5, 8], 0.5, 4)
    fresh.load_state_dict(state)
    fresh.step()
    assert fresh.get_last_lr()[0] == pytest.approx(base * 0.25)


def test_validation_per_scale_metrics_images_and_best(folders):
    tmp_path, hr = folders
    opt = _opt(tmp_path, hr)
    model = _validated(opt, 7, save_img=True)
    keys = set(model.metric_results)
    assert keys == {f'{m}_x{t}' for m in ('psnr', 'ssim') for t in ('2', '3.5', '2x3')}
    assert set(model.bicubic_results) == keys
    for key, value in model.metric_results.items():
        assert math.isfinite(value) and value > 0
        assert model.best_metric_results['photos'][key] == {'better': 'higher', 'val': value, 'iter': 7}
    # Easier (smaller) scales reconstruct better, for the model and the bicubic baseline alike.
    assert model.bicubic_results['psnr_x2'] > model.bicubic_results['psnr_x3.5']
    for name in ('astronaut_x2_7.png', 'astronaut_x3.5_7.png', 'astronaut_x2x3_7.png'):
        assert osp.isfile(osp.join(opt['path']['visualization'], 'astronaut', name)), name
    sr = cv2.imread(osp.join(opt['path']['visualization'], 'chelsea', 'chelsea_x3.5_7.png'))
    assert sr.shape[:2] == (round(34 * 3.5), round(37 * 3.5))  # floor(120 / 3.5) = 34, floor(130 / 3.5) = 37
    # A second validation keeps the best per scale.
    first = dict(model.metric_results)
    with torch.no_grad():
        for p in model.net_g.parameters():
            p.add_(0.5)
    model.validation(_val_loader(opt), 8, None, save_img=False)
    for key in keys:
        best = model.best_metric_results['photos'][key]
        assert best['val'] == max(first[key], model.metric_results[key])


# ------------------------------------------------------------------------ checkpoints, logs, testing
TINY_GSASR = dict(type='GSASR', encoder=dict(type='EDSREncoder', num_feat=8, num_block=1), embed_dim=12,
                  num_heads=2, window_size=4, num_injection_layers=1, num_blocks=1, num_layers_per_block=1,
                  gaussian_density=4, num_upsample_stages=1)


def test_saved_checkpoints_describe_their_network(folders):
    """net_g_*.pth carry network_g (load-time keys such as encoder pretrained paths dropped) and the version,
    with params and params_ema, so the Python API and basicsr infer need no option file."""
    import gsasr_plugin as plugin
    from gsasr_plugin.checkpoint import load_checkpoint
    tmp_path, hr = folders
    opt = _opt(tmp_path, hr, ema_decay=0.9)
    opt['network_g'] = dict(TINY_GSASR, encoder=dict(TINY_GSASR['encoder'], pretrained=None, strict=True))
    model = build_model(opt)
    for folder in ('models', 'states'):  # basicsr train makes them
        (tmp_path / folder).mkdir()
    model.save(0, 3)
    path = tmp_path / 'models' / 'net_g_3.pth'
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {'params', 'params_ema', 'network_g', 'gsasr_plugin'}
    assert loaded['network_g'] == TINY_GSASR and loaded['gsasr_plugin']['version'] == plugin.__version__
    assert 'iter 3' in loaded['gsasr_plugin']['source']
    assert load_checkpoint(str(path)).param_key == 'params_ema'
    upscaler = plugin.load_model(path, device='cpu')
    lq = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        expected = model.net_g_ema(lq, scale=2.5).clamp(0, 1)
    assert torch.allclose(upscaler.upscale(lq[0], scale=2.5), expected[0], atol=1e-5)


def test_pretrain_network_g_goes_through_the_one_loader(folders):
    """path:pretrain_network_g is read by checkpoint.load_weights: BasicSR checkpoints with BasicSR's param_key
    fallback (params_ema -> params), our self-describing ones, strict_load_g: false as BasicSR (keys that
    differ reported, mismatched shapes skipped); a strict mismatch is one line naming the option."""
    from gsasr_plugin.checkpoint import save_checkpoint
    tmp_path, hr = folders
    source = TinyArbitrarySRForTests(num_feat=4)
    state = source.state_dict()

    def loaded(path, **path_opt):
        opt = _opt(tmp_path, hr)
        opt['path'].update(pretrain_network_g=str(path), **path_opt)
        return build_model(opt).net_g.state_dict()

    torch.save({'params': state}, tmp_path / 'basicsr.pth')
    ours = tmp_path / 'ours.pth'
    save_checkpoint(str(ours), state, {'type': 'TinyArbitrarySRForTests', 'num_feat': 4})  # as basicsr convert
    for path, key in ((tmp_path / 'basicsr.pth', 'params_ema'), (tmp_path / 'basicsr.pth', 'params'),
                      (ours, 'params_ema')):
        got = loaded(path, param_key_g=key)
        assert all(torch.equal(got[k], v) for k, v in state.items()), (path, key)
    odd = dict(state, extra=torch.zeros(1))
    odd['body.0.bias'] = torch.zeros(7)
    torch.save({'params': odd}, tmp_path / 'odd.pth')
    got = loaded(tmp_path / 'odd.pth', strict_load_g=False)
    assert torch.equal(got['body.0.weight'], state['body.0.weight'])
    assert not torch.equal(got['body.0.bias'], odd['body.0.bias'][:4])  # skipped, not loaded
    with pytest.raises(ValueError, match=r'checkpoint .*odd\.pth \(path:pretrain_network_g\) does not fit network_g '
                                         r'\(TinyArbitrarySRForTests\): .*of another shape \(first: body\.0\.bias'):
        loaded(tmp_path / 'odd.pth')
    torch.save(state, tmp_path / 'bare.pth')
    with pytest.raises(ValueError, match=r"bare\.pth: unknown layout, no weights under 'params'; keys found"):
        loaded(tmp_path / 'bare.pth')  # BasicSR's param_key_g names an entry


def test_log_names_the_network_in_one_line(folders, monkeypatch):
    import gsasr_plugin.models.arbitrary_scale_model as module
    lines = []

    class Logger:
        def info(self, text):
            lines.append(text)

        warning = info

    monkeypatch.setattr(module, 'get_root_logger', lambda *a, **k: Logger())
    tmp_path, hr = folders
    opt = _opt(tmp_path, hr)
    opt['network_g'] = dict(TINY_GSASR)
    build_model(opt)
    network_lines = [line for line in lines if 'Network' in line or 'Sequential' in line or 'Conv2d' in line]
    assert len(network_lines) == 1 and network_lines[0].startswith('Network: GSASR, with parameters: ')
    assert '\n' not in network_lines[0]


def _test_opt(tmp_path, hr, **extra):
    opt = _opt(tmp_path, hr)
    opt.update(is_train=False, **extra)
    opt['path']['results_root'] = str(tmp_path / 'results')
    opt['val'] = dict(opt['val'], save_img=False)
    return opt


def test_tiled_evaluation_matches_whole_images(folders, monkeypatch):
    """A top-level tile: {tile_size, tile_pad} evaluates in LR tiles (Gaussians merged, one render)."""
    import gsasr_plugin.inference as inference
    tmp_path, hr = folders
    results = {}
    tiled_calls = []
    original = inference.encode_tiled
    monkeypatch.setattr(inference, 'encode_tiled', lambda *a, **k: tiled_calls.append(a[3]) or original(*a, **k))
    for name, extra in (('whole', {}), ('tiled', {'tile': {'tile_size': 16, 'tile_pad': 8}})):
        opt = _test_opt(tmp_path, hr, **extra)
        opt['network_g'] = dict(TINY_GSASR)
        opt['datasets']['val']['scales'] = [2, 3.5]
        torch.manual_seed(0)
        model = _validated(opt, 0, save_img=False)
        results[name] = dict(model.metric_results)
    assert tiled_calls and set(tiled_calls) == {16}  # x2: 60x65 LR, x3.5: 34x37 LR, both larger than a tile
    for key, value in results['whole'].items():
        assert abs(results['tiled'][key] - value) < (0.05 if 'psnr' in key else 1e-3), key


def test_tile_option_errors_name_the_key(folders):
    tmp_path, hr = folders
    opt = _test_opt(tmp_path, hr, tile={'tile_size': 0})
    model = build_model(opt)
    model.feed_data({'lq': torch.rand(1, 3, 8, 8), 'scale': torch.tensor([[2.0, 2.0]])})
    with pytest.raises(ValueError, match='tile:tile_size must be an integer >= 1'):
        model.test()
    model.opt['tile'] = {'tile_size': 8}
    with pytest.raises(ValueError, match='TinyArbitrarySRForTests has no encode'):
        model.test()


def test_progress_bar_per_dataset_and_scale(folders, capsys):
    tmp_path, hr = folders
    for pbar in (True, False):
        opt = _test_opt(tmp_path, hr)
        opt['val']['pbar'] = pbar
        model = build_model(opt)
        loader = _val_loader(opt)
        capsys.readouterr()
        model.validation(loader, 0, None, save_img=False)
        err = capsys.readouterr().err
        for tag in ('2', '3.5', '2x3'):
            assert (f'photos x{tag}: 100%' in err and '3/3' in err) == pbar, err


def test_results_files_hold_every_images_metrics(folders):
    import csv
    tmp_path, hr = folders
    opt = _test_opt(tmp_path, hr)
    model = _validated(opt, 0, save_img=False)
    with open(tmp_path / 'results' / 'results_per_image.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 3 * 2  # images x scales x metrics
    assert {r['image'] for r in rows} == {'astronaut', 'coffee', 'chelsea'}
    psnr_x2 = [float(r['model']) for r in rows if r['scale'] == '2' and r['metric'] == 'psnr']
    assert sum(psnr_x2) / 3 == pytest.approx(model.metric_results['psnr_x2'], rel=1e-5)
    bic = [float(r['bicubic']) for r in rows if r['scale'] == '3.5' and r['metric'] == 'ssim']
    assert sum(bic) / 3 == pytest.approx(model.bicubic_results['ssim_x3.5'], rel=1e-5)


def test_batches_of_several_images_are_a_clear_error(folders):
    tmp_path, hr = folders
    opt = _test_opt(tmp_path, hr)
    opt['datasets']['val']['scales'] = [2]
    model = build_model(opt)
    dataset = build_dataset(opt['datasets']['val'])
    loader = torch.utils.data.DataLoader(dataset, batch_size=3)
    with pytest.raises(ValueError, match="dataset 'photos' gives batches of 3 images.*one image at a time"):
        model.validation(loader, 0, None, save_img=False)


def test_sampled_pixel_loss_gathers_gt_and_output_pixels(folders):
    """With a batch's sample_index the loss sees those pixels only: GT (B, 3, Q), output picked from the dense
    forward (or decoded there by networks that take pixel_index)."""
    tmp_path, hr = folders
    model = build_model(_opt(tmp_path, hr))
    gt = torch.rand(2, 3, 20, 20)
    index = torch.stack([torch.randperm(400)[:30] for _ in range(2)])
    model.feed_data({'lq': torch.rand(2, 3, 10, 10), 'gt': gt, 'scale': torch.tensor([[2.0, 2.0]] * 2),
                     'sample_index': index})
    assert model.out_size == (20, 20)
    assert torch.equal(model.gt, gt.flatten(2).gather(2, index.unsqueeze(1).expand(-1, 3, -1)))
    model.optimize_parameters(1)
    assert model.output.shape == (2, 3, 30) and math.isfinite(model.get_current_log()['l_pix'])
    dense = model.net_g(model.lq, scale=(2.0, 2.0), out_size=(20, 20))
    assert torch.allclose(model.forward_train(), dense.flatten(2).gather(2, index.unsqueeze(1).expand(-1, 3, -1)))
    model.feed_data({'lq': torch.rand(1, 3, 10, 10), 'gt': gt[:1], 'scale': torch.tensor([[2.0, 2.0]])})
    assert model.pixel_index is None and model.gt.shape == (1, 3, 20, 20)


def test_crop_border_scale_plus_n():
    from gsasr_plugin.models.arbitrary_scale_model import _crop_border
    assert _crop_border(None, (3.5, 3.5), 'psnr') == 4
    assert _crop_border('scale+6', (2.0, 2.0), 'psnr') == 8
    assert _crop_border(5, (2.0, 2.0), 'psnr') == 5
    with pytest.raises(ValueError, match='psnr: crop_border'):
        _crop_border('scale*2', (2.0, 2.0), 'psnr')


def test_crop_border_max_caps_the_scale_border(folders, monkeypatch):
    """``crop_border: ~`` crops ceil(scale) pixels; ``crop_border_max: 8`` caps it (the GSASR paper's min(s, 8))."""
    import gsasr_plugin.models.arbitrary_scale_model as module
    tmp_path, hr = folders
    opt = _opt(tmp_path, hr)
    opt['val']['metrics'] = dict(psnr=dict(type='calculate_psnr', crop_border=None, crop_border_max=8,
                                           test_y_channel=True))
    model = build_model(opt)
    seen = []
    monkeypatch.setattr(module, 'calculate_metric', lambda data, metric_opt: seen.append(dict(metric_opt)) or 1.0)
    for scale in ((2.0, 2.0), (12.0, 12.0), (3.5, 1.5)):
        model._metric_values({}, scale)
    assert [o['crop_border'] for o in seen] == [2, 8, 4]
    assert all('crop_border_max' not in o for o in seen)


def test_divergence_watch_warns_when_the_loss_stays_far_above_its_lowest():
    """Issue 26, item 11: a run at lr 1e4 went from l_pix 0.023 to 1.8 and stayed there with no word."""
    from gsasr_plugin.models.resilient_training import DivergenceWatch
    watch = DivergenceWatch(factor=10, patience=20)
    diverged = [0.023, 0.02] + [1.8] * 300
    warnings = [(i, w) for i, w in enumerate((watch.update(v, i) for i, v in enumerate(diverged, 1)), 1) if w]
    assert [i for i, _ in warnings] == [warnings[0][0], warnings[0][0] + 200]  # once, then every 10 x patience
    assert 'the run has diverged' in warnings[0][1] and 'lowest 0.02' in warnings[0][1]
    healthy = DivergenceWatch(factor=10, patience=20)
    generator = torch.Generator().manual_seed(0)
    noisy = (0.2 * 0.99**torch.arange(2000) * (0.2 + 3 * torch.rand(2000, generator=generator))).tolist()
    assert not any(healthy.update(v, i) for i, v in enumerate(noisy, 1))  # a noisy, falling loss: quiet
    assert not any(DivergenceWatch(factor=0).update(v, i) for i, v in enumerate(diverged, 1))  # switched off


def test_a_diverging_run_says_so_in_its_log(tmp_path, photo):
    from train_helpers import run_train, tiny_options, write_options, write_photos
    write_photos(tmp_path / 'train', photo)
    import yaml
    opt = tiny_options('diverging', 'train', total_iter=12, divergence_patience=3)
    demo = yaml.safe_load(open(osp.join(osp.dirname(__file__), '..', 'options', 'train_gsasr_demo.yml')))
    opt['network_g'] = demo['network_g']  # the run: the demo network at lr 1e4 (finite, far too high)
    opt['train']['optim_g']['lr'] = 1e4
    opt['train']['warmup_iter'] = -1
    write_options(tmp_path / 'a.yml', opt)
    rc, out = run_train(tmp_path, 'a.yml')
    assert rc == 0, out
    log = next((tmp_path / 'experiments' / 'diverging').glob('train_diverging_*.log')).read_text()
    assert 'WARNING: iter ' in log and 'the run has diverged' in log, log[-3000:]
