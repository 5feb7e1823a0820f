"""Non-finite losses skip the step (warning + counter); N in a row save a resumable state and stop.
Also: gradient clipping, bf16 autocast for training and validation."""
import logging
import pytest
import torch

from train_helpers import tiny_options
from gsasr_plugin.utils.preemption import NonFiniteLossError


def _model(tmp_path, **train_extra):
    from gsasr_plugin.models.arbitrary_scale_model import ArbitraryScaleSRModel
    opt = tiny_options('nonfinite', 'unused', total_iter=10, **train_extra)
    opt.update(dist=False, rank=0, world_size=1, is_train=True, auto_resume=False)
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'training_states'),
                       visualization=str(tmp_path / 'visualization'))
    (tmp_path / 'models').mkdir()
    return ArbitraryScaleSRModel(opt)


def _batch(seed=0):
    gt = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    return {'lq': torch.nn.functional.avg_pool2d(gt, 2), 'gt': gt, 'scale': torch.full((2, 2), 2.0)}


def _params(model):
    return [p.detach().clone() for p in model.get_bare_model(model.net_g).parameters()]


def _nan_loss(model, monkeypatch):
    finite = model.cri_pix
    monkeypatch.setattr(model, 'cri_pix', lambda out, gt: finite(out, gt) * float('nan'))
    return finite


def test_nonfinite_loss_skips_step_counts_and_stops_with_saved_state(tmp_path, monkeypatch, caplog):
    # caplog, not capfd: basicsr's logger keeps the stream handler an earlier test created
    caplog.set_level(logging.WARNING, logger='basicsr')
    model = _model(tmp_path, max_nonfinite_steps=3)
    model.feed_data(_batch())
    model.optimize_parameters(1)  # a normal step
    finite = _nan_loss(model, monkeypatch)
    before = _params(model)
    adam_steps = model.optimizer_g.state_dict()['state'][0]['step'].item()
    for it in (2, 3):
        model.feed_data(_batch(it))
        model.optimize_parameters(it)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model))), 'a NaN step changed the weights'
    assert model.optimizer_g.state_dict()['state'][0]['step'].item() == adam_steps
    assert model.nonfinite_steps == 2 and model.log_dict['nonfinite_steps'] == 2
    expected = 'iter 3: non-finite loss or gradient (l_pix=nan); step skipped (2 in a row, 2 in this run)'
    assert expected in caplog.text

    monkeypatch.setattr(model, 'cri_pix', finite)  # a finite step resets the streak
    model.feed_data(_batch(4))
    model.optimize_parameters(4)
    assert not all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    _nan_loss(model, monkeypatch)
    for it in (5, 6):
        model.optimize_parameters(it)
    with pytest.raises(NonFiniteLossError, match=r'NaN/inf for 3 iterations in a row \(up to iter 7; '
                       r'train: max_nonfinite_steps = 3\); state saved to .*7\.state.*--auto_resume'):
        model.optimize_parameters(7)
    assert (tmp_path / 'models' / 'net_g_7.pth').is_file()
    state = torch.load(tmp_path / 'training_states' / '7.state', map_location='cpu', weights_only=False)
    assert state['iter'] == 7 and state['nonfinite_steps'] == 5 and len(state['optimizers']) == 1


def test_infinite_gradient_norm_skips_step_when_clipping(tmp_path, monkeypatch):
    model = _model(tmp_path, grad_clip_norm=0.01, max_nonfinite_steps=0)
    model.feed_data(_batch())
    before = _params(model)
    model.optimize_parameters(1)
    moved = [(a - b).abs().max() for a, b in zip(before, _params(model))]
    assert max(moved) > 0
    net = model.get_bare_model(model.net_g)
    hook = next(net.parameters()).register_hook(lambda g: g * float('inf'))
    before = _params(model)
    for it in range(2, 6):  # max_nonfinite_steps: 0 never stops
        model.optimize_parameters(it)
    hook.remove()
    assert all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    assert model.nonfinite_steps == 4


def test_bf16_autocast_for_training_and_validation(tmp_path, monkeypatch):
    model = _model(tmp_path)
    model.opt['val'] = {'bf16': True}
    dtypes = []
    net = model.get_bare_model(model.net_g)
    # the encoder's convolutions run in bf16 under autocast; the rasterizer and the loss in float32
    net.encoder.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    model.net_g_ema.encoder.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    model.feed_data(_batch())
    model.optimize_parameters(1)
    model.opt['train']['bf16'] = True
    model.optimize_parameters(2)
    assert model.output.dtype == torch.float32 and torch.isfinite(torch.tensor(model.log_dict['l_pix']))
    model.test()
    assert model.output.dtype == torch.float32
    assert dtypes == [torch.float32, torch.bfloat16, torch.bfloat16]
