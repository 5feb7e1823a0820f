"""Kill-and-resume: a CPU run stopped by SIGTERM mid-epoch and continued with ``--auto_resume`` ends with
the same weights as an uninterrupted run (same data draws, lr schedule, Adam and EMA state)."""
import re
import signal
import subprocess
import time

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
