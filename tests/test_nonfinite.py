"""Non-finite losses skip the step (warning + counter); N in a row save a resumable state and stop.
Non-finite inputs and non-finite Gaussians (a diverged network) are caught before the rasterizer and count
the same way, naming the batch's files. Also: gradient clipping, bf16 autocast for training and validation."""
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
    return {'lq': torch.nn.functional.avg_pool2d(gt, 2), 'gt': gt, 'scale': torch.full((2, 2), 2.0),
            'lq_path': [f'hr/img{seed}a.png', f'hr/img{seed}b.png']}


def _params(model):
    return [p.detach().clone() for p in model.get_bare_model(model.net_g).parameters()]


def _nan_loss(model, monkeypatch):
    finite = model.cri_pix
    monkeypatch.setattr(model, 'cri_pix', lambda out, gt: finite(out, gt) * float('nan'))
    return finite


def test_nonfinite_loss_skips_step_counts_and_stops_with_saved_state(tmp_path, monkeypatch, basicsr_log):
    caplog = basicsr_log
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
    expected = ('iter 3: non-finite loss or gradient (l_pix=nan); step skipped (2 in a row, 2 in this run): '
                'non-finite loss or gradient; batch: hr/img3a.png, hr/img3b.png')
    assert expected in caplog.text

    monkeypatch.setattr(model, 'cri_pix', finite)  # a finite step resets the streak
    model.feed_data(_batch(4))
    model.optimize_parameters(4)
    assert not all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    _nan_loss(model, monkeypatch)
    for it in (5, 6):
        model.optimize_parameters(it)
    with pytest.raises(NonFiniteLossError, match=r'NaN/inf for 3 iterations in a row \(up to iter 7; '
                       r'train: max_nonfinite_steps = 3\); last: non-finite loss or gradient; batch: hr/img4a\.png, '
                       r'hr/img4b\.png; state saved to .*7\.state.*--auto_resume'):
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


def test_diverged_network_is_a_skipped_step_before_the_rasterizer_naming_the_files(tmp_path, basicsr_log):
    model = _model(tmp_path, max_nonfinite_steps=2)
    model.feed_data(_batch())
    model.optimize_parameters(1)
    net = model.get_bare_model(model.net_g)
    before = _params(model)
    with torch.no_grad():  # what a learning rate of 1e4 does within a few steps
        for p in net.parameters():
            p.mul_(1e30)
    huge = _params(model)
    model.feed_data(_batch(2))
    model.optimize_parameters(2)  # the rasterizer would raise 'sigmas must be > 0 everywhere'
    assert model.nonfinite_steps == 1 and all(torch.equal(a, b) for a, b in zip(huge, _params(model)))
    assert 'non-finite (NaN/inf) Gaussian' in basicsr_log.text
    assert 'batch: hr/img2a.png, hr/img2b.png' in basicsr_log.text
    model.feed_data(_batch(3))
    with pytest.raises(NonFiniteLossError, match=r'NaN/inf for 2 iterations in a row .*last: the network produced '
                       r'non-finite \(NaN/inf\) Gaussian .*batch: hr/img3a\.png, hr/img3b\.png; state saved to '
                       r'.*3\.state'):
        model.optimize_parameters(3)
    assert (tmp_path / 'training_states' / '3.state').is_file() and before


def test_nonfinite_input_batch_is_a_skipped_step(tmp_path, basicsr_log):
    model = _model(tmp_path, max_nonfinite_steps=0)
    batch = _batch(5)
    batch['lq'][0, 0, 1, 1] = float('nan')
    model.feed_data(batch)
    before = _params(model)
    model.optimize_parameters(1)
    assert model.nonfinite_steps == 1 and all(torch.equal(a, b) for a, b in zip(before, _params(model)))
    assert 'non-finite values in the input batch (lq); batch: hr/img5a.png, hr/img5b.png' in basicsr_log.text


def test_gaussian_field_refuses_nonfinite_parameters_before_rasterizing():
    from gsasr_plugin.archs.gaussian_field import GaussianField, NonFiniteGaussiansError
    field = GaussianField(means=torch.rand(1, 4, 2) * 4, sigmas=torch.full((1, 4, 2), 0.5), rhos=torch.zeros(1, 4),
                          colors=torch.rand(1, 4, 3), lr_size=(4, 4))
    assert field.render((8, 8)).shape == (1, 3, 8, 8)
    field.colors[0, 1, 2] = float('inf')
    field.sigmas[0, 2, 0] = float('nan')
    with pytest.raises(NonFiniteGaussiansError, match=r'non-finite \(NaN/inf\) Gaussian sigmas, colors'):
        field.render((8, 8))


def test_infer_names_nan_weights_and_nonfinite_outputs(tmp_path, capsys, photo):
    import cv2
    import yaml

    from gsasr_plugin_cli import main
    from gsasr_plugin.inference import NonFiniteOutputError, super_resolve
    from train_helpers import TINY_GSASR
    from basicsr.archs import build_network
    net = build_network(dict(TINY_GSASR))
    state = net.state_dict()
    state['gaussian_embedding'] = state['gaussian_embedding'] * float('nan')
    torch.save({'params': state}, tmp_path / 'nan.pth')
    (tmp_path / 'o.yml').write_text(yaml.safe_dump({'network_g': dict(TINY_GSASR)}))
    cv2.imwrite(str(tmp_path / 'a.png'), photo('astronaut', (12, 12)))
    code = main(['infer', '-opt', str(tmp_path / 'o.yml'), '--model', str(tmp_path / 'nan.pth'), '-i',
                      str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '--scale', '2'])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert 'nan.pth: 1 tensor(s) hold NaN/inf values (first: gaussian_embedding)' in err and 'a.png' not in err

    from gsasr_plugin.archs.sr_network import SRNetwork

    class NaNOut(SRNetwork):
        def encode_features(self, lq):
            return lq

        def decode_field(self, lq, target):
            return lq

        def render(self, field, out_size, window=None):
            return torch.full((1, 3) + tuple(out_size), float('nan'))

    with pytest.raises(NonFiniteOutputError, match='the model produced non-finite values'):
        super_resolve(NaNOut(), torch.rand(1, 3, 4, 4), scale=(2, 2), tile_size=0)


def _ddp_nonfinite_worker(rank, world_size, store_path, queue):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store_path}', rank=rank, world_size=world_size)
    try:
        from gsasr_plugin.models.arbitrary_scale_model import ArbitraryScaleSRModel
        from train_helpers import tiny_options
        opt = tiny_options('ddp_nonfinite', 'unused', total_iter=3, max_nonfinite_steps=0)
        opt.update(dist=True, rank=rank, world_size=world_size, is_train=True, auto_resume=False)
        opt['path'].update(models='unused', training_states='unused', visualization='unused')
        model = ArbitraryScaleSRModel(opt)
        bare = model.get_bare_model(model.net_g)
        for it in (1, 2, 3):
            batch = _batch(10 * rank + it)
            if it == 2 and rank == 1:
                batch['lq'][0, 0, 0, 0] = float('nan')  # only rank 1 sees a bad batch
            saved = [p.detach().clone() for p in bare.parameters()]
            if it == 3 and rank == 0:
                with torch.no_grad():  # only rank 0's network diverges (as if its weights were corrupted) ...
                    for p in bare.parameters():
                        p.mul_(1e30)
            model.feed_data(batch)
            model.update_learning_rate(it)
            before = [p.detach().clone() for p in bare.parameters()]
            model.optimize_parameters(it)
            changed = any(not torch.equal(a, b) for a, b in zip(before, bare.parameters()))
            if it == 3 and rank == 0:
                with torch.no_grad():  # ... and is put back to compare the replicas
                    for p, q in zip(bare.parameters(), saved):
                        p.copy_(q)
            queue.put((rank, it, changed, getattr(model, 'nonfinite_steps', 0)))
        flat = torch.cat([p.detach().reshape(-1) for p in bare.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world_size)]
        dist.all_gather(gathered, flat)
        queue.put((rank, 'same', bool(torch.allclose(gathered[0], gathered[1])), None))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_to_skip_a_step_only_one_rank_finds_nonfinite(tmp_path):
    """A NaN input on one rank, or non-finite Gaussians on one rank (its forward stops before the rasterizer):
    every rank skips that step, so no gradient all-reduce is left waiting and the replicas stay equal."""
    from train_helpers import run_ddp_workers
    queue = run_ddp_workers(_ddp_nonfinite_worker, tmp_path, why=' (a rank waited for the other)')
    reports = [queue.get() for _ in range(8)]
    steps = {(rank, it): (changed, count) for rank, it, changed, count in reports if it != 'same'}
    for rank in (0, 1):
        assert steps[(rank, 1)][0], 'a normal step changes the weights'
        assert steps[(rank, 2)] == (False, 1) and steps[(rank, 3)][1] == 2, steps
    assert not steps[(1, 3)][0]
    assert all(same for rank, it, same, _ in reports if it == 'same'), 'the replicas diverged'
