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
    model = build_model(opt)
    loader = build_dataloader(build_dataset(opt['datasets']['val']), opt['datasets']['val'], num_gpu=0)
    model.validation(loader, 7, None, save_img=True)
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
    model.validation(loader, 8, None, save_img=False)
    for key in keys:
        best = model.best_metric_results['photos'][key]
        assert best['val'] == max(first[key], model.metric_results[key])


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
    assert torch.allclose(model._forward_train(), dense.flatten(2).gather(2, index.unsqueeze(1).expand(-1, 3, -1)))
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
