"""Kill-and-resume: a CPU run stopped by SIGTERM mid-epoch and continued with ``--auto_resume`` ends with
the same weights as an uninterrupted run (same data draws, lr schedule, Adam and EMA state)."""
import re
import signal
import subprocess
import time

import pytest
import torch

from train_helpers import BASICSR, env, load_params, logged_iters, run_train, tiny_options, write_options, \
    write_photos

TOTAL = 8


def _train_until_signal(cwd, opt_file, signal_after_iter, signum=signal.SIGTERM, timeout=240):
    """Start ``basicsr train``, send ``signum`` once iteration ``signal_after_iter`` is logged."""
    proc = subprocess.Popen(BASICSR + ['train', '-opt', opt_file], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, sent, start = [], False, time.time()
    for line in proc.stdout:
        lines.append(line)
        if not sent and any(i >= signal_after_iter for i in logged_iters(line)):
            proc.send_signal(signum)
            sent = True
        if time.time() - start > timeout:
            proc.kill()
            break
    proc.wait(timeout=60)
    return proc.returncode, ''.join(lines), sent


def test_sigterm_then_auto_resume_equals_uninterrupted_run(tmp_path, photo):
    write_photos(tmp_path / 'train', photo)  # 3 images, batch 1: 3 iterations per epoch
    write_options(tmp_path / 'a.yml', tiny_options('uninterrupted', 'train', total_iter=TOTAL))
    write_options(tmp_path / 'b.yml', tiny_options('interrupted', 'train', total_iter=TOTAL))

    rc, out = run_train(tmp_path, 'a.yml')
    assert rc == 0, out

    rc, out, sent = _train_until_signal(tmp_path, 'b.yml', signal_after_iter=2)
    assert sent, out
    assert rc == 128 + signal.SIGTERM, out
    match = re.search(r'stopped by signal 15 after iter (\d+); state saved to (\S+?);', out)
    assert match, out
    stopped_at = int(match.group(1))
    assert 2 <= stopped_at < TOTAL, out
    exp_b = tmp_path / 'experiments' / 'interrupted'
    # issue 26, item 12: the iteration in flight is trained and saved, and its loss line is logged too
    log = next(exp_b.glob('train_interrupted_*.log')).read_text()
    assert logged_iters(log)[-1] == stopped_at and 'the last iteration before the stop' in log, log[-2000:]
    state = torch.load(exp_b / 'training_states' / f'{stopped_at}.state', map_location='cpu', weights_only=False)
    assert state['iter'] == stopped_at and len(state['optimizers']) == 1 and len(state['schedulers']) == 1
    assert state['epoch_samples_done'] == stopped_at - 3 * state['epoch']  # position inside the epoch
    assert (exp_b / 'models' / f'net_g_{stopped_at}.pth').is_file()
    assert not (exp_b / 'models' / 'net_g_latest.pth').exists()

    rc, out = run_train(tmp_path, 'b.yml', ['--auto_resume'])
    assert rc == 0, out
    assert f'Resuming training from epoch: {state["epoch"]}, iter: {stopped_at}.' in out
    assert min(logged_iters(out.split('Start training from')[1])) == stopped_at + 1

    for key in ('params', 'params_ema'):
        ref = load_params(tmp_path / 'experiments' / 'uninterrupted' / 'models' / 'net_g_latest.pth', key)
        got = load_params(exp_b / 'models' / 'net_g_latest.pth', key)
        assert ref.keys() == got.keys()
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=f'{key}.{name}')
    ref = load_params(tmp_path / 'experiments' / 'uninterrupted' / 'models' / 'net_g_latest.pth')
    first = load_params(exp_b / 'models' / f'net_g_{stopped_at}.pth')
    assert any(not torch.allclose(ref[k], first[k]) for k in ref)


def _scales_per_epoch(dataset, num_workers, epochs=(0, 1), resume=None):
    from basicsr.data import build_dataloader
    from gsasr_plugin.utils.resume import PROGRESS, ResumableSampler
    PROGRESS.__init__()
    PROGRESS.set_resume(resume)
    sampler = ResumableSampler(dataset, num_replicas=1, rank=0, seed=7)
    loader = build_dataloader(dataset, dict(phase='train', batch_size_per_gpu=2, num_worker_per_gpu=num_workers),
                              num_gpu=0, dist=False, sampler=sampler, seed=7)
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out.append([(round(float(b['scale'][0, 0]), 6), tuple(b['gt_path'])) for b in loader])
    return out


def test_draws_change_every_epoch_and_do_not_depend_on_workers_or_restarts(tmp_path, photo):
    from gsasr_plugin.data.arbitrary_scale_dataset import ArbitraryScaleTrainDataset
    write_photos(tmp_path / 'hr', photo, names=('astronaut', 'coffee', 'rocket', 'chelsea'), size=(40, 40))
    dataset = ArbitraryScaleTrainDataset(dict(dataroot_gt=str(tmp_path / 'hr'), lq_size=8, scale_min=1,
                                              scale_max=3, phase='train'))
    in_process = _scales_per_epoch(dataset, num_workers=0)
    assert in_process[0] != in_process[1]  # BasicSR's worker re-seeding would repeat them
    assert [s for s, _ in in_process[0]] != [s for s, _ in in_process[1]]
    # BasicSR's worker_init_fn re-seeds workers identically every epoch: the draws must not care
    assert _scales_per_epoch(dataset, num_workers=2) == in_process
    # resuming after the first batch of epoch 1 continues with exactly the remaining batch
    resumed = _scales_per_epoch(dataset, num_workers=0, epochs=(1, ), resume={'epoch': 1, 'epoch_samples_done': 2})
    assert resumed == [in_process[1][1:]]


@pytest.mark.parametrize('started_with', ['default', 'ignored'])  # ignored: a background job (nohup ... &)
def test_signal_handlers_set_a_flag_and_a_later_second_ctrl_c_stops_at_once(started_with):
    import os

    from gsasr_plugin.utils import preemption
    outer = signal.getsignal(signal.SIGINT)
    if started_with == 'ignored':  # what a shell gives a job started with '&': SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    before = signal.getsignal(signal.SIGINT)
    preemption.install_handlers()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert preemption.requested_signal() == signal.SIGTERM  # the process is still running
        preemption.restore_handlers()
        preemption.install_handlers()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert preemption.requested_signal() == signal.SIGINT
        os.kill(os.getpid(), signal.SIGINT)  # torchrun forwards the terminal's Ctrl-C: the same request
        time.sleep(0.05)
        assert preemption.requested_signal() == signal.SIGINT
        time.sleep(1.0)
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            raise AssertionError('a second Ctrl-C must raise KeyboardInterrupt')
        except KeyboardInterrupt:
            pass
    finally:
        preemption.restore_handlers()
        restored = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, outer)
    assert restored is before  # the handler found before, whatever it was
