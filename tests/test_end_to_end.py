"""``basicsr train`` / ``--auto_resume`` / ``basicsr test`` end to end on the CPU, as a user runs them.

The option files are the shipped ones with only the data roots, run length and (for speed) the network
size changed; each command runs in a subprocess from a scratch directory, like on a fresh machine.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BASICSR = [sys.executable, '-m', 'gsasr_plugin_cli']

TINY_GSASR = dict(type='GSASR', encoder=dict(type='EDSREncoder', num_feat=16, num_block=1), embed_dim=16,
                  num_heads=2, window_size=4, num_injection_layers=1, num_blocks=1, num_layers_per_block=1,
                  mlp_ratio=1.0, gaussian_density=4, num_upsample_stages=1)


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='2')
    proc = subprocess.run(BASICSR + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def _write_yaml(path, opt):
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


@pytest.fixture
def workdir(tmp_path, photo):
    for split, names, size in (('train', ('astronaut', 'coffee', 'rocket'), (96, 96)),
                               ('val', ('chelsea', 'immunohistochemistry'), (28, 36))):
        (tmp_path / split).mkdir()
        for name in names:
            cv2.imwrite(str(tmp_path / split / f'{name}.png'), photo(name, size)[:, :, ::-1])
    return tmp_path


def _latest_log(folder: Path) -> str:
    logs = sorted(folder.glob('*.log'), key=lambda p: p.stat().st_mtime)
    assert logs, f'no log in {folder}'
    return logs[-1].read_text()


def test_train_resume_and_test_on_cpu(workdir):
    opt = yaml.safe_load((REPO / 'options' / 'train_gsasr_edsr.yml').read_text())
    opt['name'] = 'e2e_gsasr'
    opt['num_gpu'] = 0
    opt['network_g'] = TINY_GSASR
    train = opt['datasets']['train']
    train.update(dataroot_gt='train', batch_size_per_gpu=2, num_worker_per_gpu=0, lq_size=16, scale_max=2.5)
    opt['datasets']['val'].update(dataroot_gt='val', scales=[2, 3.5])
    opt['train'].update(total_iter=2, warmup_iter=2)
    opt['val'].update(val_freq=2, save_img=True)
    opt['logger'].update(save_checkpoint_freq=2, print_freq=1, use_tb_logger=False)
    _write_yaml(workdir / 'train.yml', opt)

    rc, out = _run(['train', '-opt', 'train.yml'], workdir)
    assert rc == 0, out
    exp = workdir / 'experiments' / 'e2e_gsasr'
    assert (exp / 'models' / 'net_g_2.pth').is_file() and (exp / 'models' / 'net_g_latest.pth').is_file()
    assert (exp / 'training_states' / '2.state').is_file()
    log = _latest_log(exp)
    for key in ('psnr_x2', 'psnr_x3.5', 'ssim_x2', 'ssim_x3.5'):
        assert re.search(rf'# {re.escape(key)}: \d+\.\d+ \[\d+\.\d+\]', log), f'{key} (model [bicubic]) not logged'
    assert (exp / 'visualization' / 'chelsea' / 'chelsea_x3.5_2.png').is_file()
    assert 'Network: GSASR, with parameters: ' in log and 'EDSREncoder(' not in log  # no module tree in the log

    # The checkpoint alone is enough for basicsr infer (it carries network_g).
    from gsasr_plugin_cli import main
    assert main(['infer', '-m', str(exp / 'models' / 'net_g_latest.pth'), '-i', str(workdir / 'val'), '-o',
                      str(workdir / 'sr'), '-s', '2', '--device', 'cpu']) == 0
    assert cv2.imread(str(workdir / 'sr' / 'chelsea_x2.png')).shape == (56, 72, 3)

    # --auto_resume continues from training_states/2.state on the CPU (basicsr alone would call CUDA).
    rc, out = _run(['train', '-opt', 'train.yml', '--auto_resume', '--force_yml', 'train:total_iter=4',
                    'val:val_freq=4', 'logger:save_checkpoint_freq=4'], workdir)
    assert rc == 0, out
    log = _latest_log(exp)
    assert 'Resuming training from epoch: ' in log and 'iter: 2.' in log
    assert (exp / 'models' / 'net_g_4.pth').is_file() and (exp / 'training_states' / '4.state').is_file()

    test_opt = yaml.safe_load((REPO / 'options' / 'test_benchmarks.yml').read_text())  # no network_g: the checkpoint's
    test_opt['name'] = 'e2e_gsasr_test'
    test_opt['num_gpu'] = 0
    test_opt['datasets'] = {'test_1': dict(test_opt['datasets']['test_1'], name='tiny', dataroot_gt='val',
                                           scales=[2, 3])}
    test_opt['val']['save_img'] = True
    _write_yaml(workdir / 'test.yml', test_opt)
    rc, out = _run(['test', '-opt', 'test.yml', '-m', 'experiments/e2e_gsasr/models/net_g_latest.pth'], workdir)
    assert rc == 0, out
    results = workdir / 'results' / 'e2e_gsasr_test'
    log = _latest_log(results)
    assert 'Validation tiny' in log
    for key in ('psnr_x2', 'psnr_x3', 'ssim_x2', 'ssim_x3'):
        assert re.search(rf'# {key}: \d+\.\d+', log), key
    assert (results / 'visualization' / 'tiny' / 'chelsea_x3.png').is_file()
    sr = cv2.imread(str(results / 'visualization' / 'tiny' / 'chelsea_x3.png'))
    assert sr.shape[:2] == (27, 36)  # LR floor(28/3) x floor(36/3) = 9 x 12, times 3
