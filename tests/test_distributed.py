"""Distributed training on the CPU (gloo): ``torchrun ... basicsr train --launcher pytorch`` end to end,
DDP on the CPU in the model (same weights on every rank, averaged losses), backend choice, slurm env."""
import os
import re
import signal
import subprocess

import pytest
import torch
import torch.distributed as dist

from train_helpers import TORCHRUN, env, load_params, logged_iters, run_ddp_workers, run_train, tiny_options, \
    write_options, write_photos
from gsasr_plugin.utils import dist as dist_utils


def test_backend_is_gloo_without_cuda_or_with_num_gpu_0():
    assert dist_utils.choose_backend(0) == 'gloo'
    expected = 'nccl' if torch.cuda.is_available() and dist.is_nccl_available() else 'gloo'
    assert dist_utils.choose_backend(1) == expected
    assert dist_utils.choose_backend('auto') == expected


def test_init_dist_names_missing_launcher_environment(monkeypatch):
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match='RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.*torchrun'):
        dist_utils.init_dist('pytorch', num_gpu=0)
    with pytest.raises(ValueError, match="'pytorch' or 'slurm'"):
        dist_utils.init_dist('mpi')


def _fake_scontrol(tmp_path, monkeypatch):
    """A ``scontrol`` on the PATH that expands node[017-018] and records its arguments, one per line."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    script = bin_dir / 'scontrol'
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\nprintf "node017\\nnode018\\n"\n')
    script.chmod(0o755)
    monkeypatch.setenv('PATH', f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / 'args'


def test_slurm_node_list_is_never_run_by_a_shell(tmp_path, monkeypatch):
    args = _fake_scontrol(tmp_path, monkeypatch)
    marker = tmp_path / 'MARKER'
    node_list = f'node[017-018]; touch {marker}; echo $(touch {marker})'
    assert dist_utils._first_slurm_host(node_list) == 'node017'
    assert not marker.exists(), 'the node list ran as a shell command'
    assert args.read_text().splitlines() == ['show', 'hostname', node_list]


def test_slurm_environment_becomes_torch_distributed_environment(tmp_path, monkeypatch):
    _fake_scontrol(tmp_path, monkeypatch)
    slurm = dict(SLURM_PROCID='5', SLURM_NTASKS='8', SLURM_LOCALID='1', SLURM_NODELIST='node[017-018]')
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    for key in ('MASTER_PORT', 'MASTER_ADDR', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    dist_utils._slurm_env(port=None)
    assert [os.environ[k] for k in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'LOCAL_RANK')] == \
        ['node017', '29500', '5', '8', '1']
    dist_utils._slurm_env(port=12345)  # BasicSR's dist_params: {port: ...}
    assert os.environ['MASTER_PORT'] == '12345'


def _ddp_worker(rank, world_size, store_path, queue):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{store_path}', rank=rank, world_size=world_size)
    try:
        from gsasr_plugin.models.arbitrary_scale_model import ArbitraryScaleSRModel
        torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
        opt = tiny_options('ddp_unit', 'unused', total_iter=2)
        opt.update(dist=True, rank=rank, world_size=world_size, is_train=True, auto_resume=False)
        opt['path'].update(models='unused', training_states='unused', visualization='unused')
        model = ArbitraryScaleSRModel(opt)
        bare = model.get_bare_model(model.net_g)

        def gathered_params():
            flat = torch.cat([p.detach().reshape(-1) for p in bare.parameters()])
            out = [torch.zeros_like(flat) for _ in range(world_size)]
            dist.all_gather(out, flat)
            return out

        start = gathered_params()
        ema_same = all(torch.equal(a, b) for a, b in zip(bare.parameters(), model.net_g_ema.parameters()))
        results = []
        for it in (1, 2):
            g = torch.Generator().manual_seed(10 * rank + it)  # each rank its own batch
            gt = torch.rand(2, 3, 16, 16, generator=g)
            model.feed_data({'lq': torch.nn.functional.avg_pool2d(gt, 2), 'gt': gt,
                             'scale': torch.full((2, 2), 2.0)})
            model.update_learning_rate(it)
            model.optimize_parameters(it)
            local = torch.nn.functional.l1_loss(model.output, model.gt).reshape(1)
            losses = [torch.zeros(1) for _ in range(world_size)]
            dist.all_gather(losses, local)
            results.append((float(torch.cat(losses).mean()), model.log_dict['l_pix'] if rank == 0 else None,
                            [float(v) for v in losses]))
        end = gathered_params()
        queue.put((rank, all(torch.equal(start[0], s) for s in start), ema_same,
                   all(torch.equal(end[0], e) for e in end), not torch.equal(start[0], end[0]), results))
    finally:
        dist.destroy_process_group()


def test_ddp_on_cpu_same_weights_on_every_rank_and_averaged_losses(tmp_path):
    queue = run_ddp_workers(_ddp_worker, tmp_path)
    reports = sorted(queue.get() for _ in range(2))
    for rank, same_start, ema_same, same_end, moved, results in reports:
        assert same_start, f'rank {rank}: ranks did not start from the same weights'
        assert ema_same, f'rank {rank}: EMA net is not a copy of the (broadcast) net'
        assert same_end, f'rank {rank}: replicas diverged after two steps'
        assert moved
    for mean, logged, per_rank in reports[0][5]:
        assert per_rank[0] != pytest.approx(per_rank[1])  # the ranks really saw different batches
        assert logged == pytest.approx(mean, rel=1e-5)  # the logged loss is the average over ranks


def test_torchrun_two_cpu_processes_sigterm_then_resume_on_one(tmp_path, photo):
    """2 gloo processes: rank-0-only files, identical replicas, validation on rank 0; SIGTERM to torchrun
    makes both ranks stop at the same iteration with a saved state, which one process then resumes."""
    write_photos(tmp_path / 'train', photo, names=('astronaut', 'coffee', 'rocket', 'chelsea'))
    write_photos(tmp_path / 'val', photo, names=('camera', ), size=(16, 16))
    opt = tiny_options('ddp', 'train', total_iter=10)
    opt['logger']['save_checkpoint_freq'] = 2
    # validation runs on rank 0 alone (with the unwrapped net) while rank 1 waits
    opt['datasets']['val'] = {'name': 'val', 'type': 'ArbitraryScaleTestDataset', 'dataroot_gt': 'val',
                              'scales': [2], 'io_backend': {'type': 'disk'}}
    opt['val'] = {'val_freq': 2, 'save_img': False, 'bicubic_baseline': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True}}}
    write_options(tmp_path / 'ddp.yml', opt)
    cmd = TORCHRUN + ['--standalone', '--nproc_per_node=2', '-m', 'gsasr_plugin_cli', 'train', '-opt', 'ddp.yml',
                      '--launcher', 'pytorch']
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and any(i >= 3 for i in logged_iters(line)):
                proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
                sent = True
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = ''.join(lines)
    assert sent and proc.returncode != 0, out
    assert 'World size (gpu number): 2' in out
    assert out.count('Start training from epoch: 0, iter: 0') == 1, 'only rank 0 logs'
    stops = re.findall(r'stopped by signal 15 after iter (\d+); state saved', out)
    assert len(stops) == 2 and stops[0] == stops[1], f'the ranks must stop together: {stops}\n{out}'
    stopped_at = int(stops[0])
    assert 3 <= stopped_at < 10 and logged_iters(out) == list(range(1, stopped_at + 1))  # the last is saved and logged
    assert len(re.findall(r'# psnr_x2: \d+\.\d+', out)) == 1, 'validation at iter 2, once'

    exp = tmp_path / 'experiments' / 'ddp'
    logs = list(exp.glob('*.log'))
    assert len(logs) == 1, f'only rank 0 writes a log file: {logs}'
    assert {p.name for p in (exp / 'models').iterdir()} == {'net_g_2.pth', f'net_g_{stopped_at}.pth'}
    assert {p.name for p in (exp / 'training_states').iterdir()} == {'2.state', f'{stopped_at}.state'}
    sums = re.findall(r'checksums \(sum, abs sum\) per rank at iter (\d+): (\[.*\])', logs[0].read_text())
    assert [int(i) for i, _ in sums] == [2, stopped_at], sums
    for _, text in sums:
        per_rank = eval(text)  # noqa: S307  (a list of lists of floats written by the run)
        assert len(per_rank) == 2 and per_rank[0] == per_rank[1], f'replicas differ: {per_rank}'
    state = torch.load(exp / 'training_states' / f'{stopped_at}.state', map_location='cpu', weights_only=False)
    # 4 images, 2 ranks, batch 1: 2 iterations per epoch, 2 samples (both ranks) per iteration
    assert state['iter'] == stopped_at and state['epoch'] == (stopped_at - 1) // 2
    assert state['epoch_samples_done'] == 2 * (stopped_at - 2 * state['epoch'])

    # Resume the 2-process run in one process, on the CPU.
    rc, out = run_train(tmp_path, 'ddp.yml', ['--auto_resume', '--force_yml', 'val:val_freq=100'])
    assert rc == 0, out
    assert f'Resuming training from epoch: {state["epoch"]}, iter: {stopped_at}.' in out
    assert logged_iters(out) == list(range(stopped_at + 1, 11))
    before = load_params(exp / 'models' / f'net_g_{stopped_at}.pth')
    after = load_params(exp / 'models' / 'net_g_latest.pth')
    assert any(not torch.equal(before[k], after[k]) for k in before)
