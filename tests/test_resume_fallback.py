"""``--auto_resume`` falls back from a damaged newest state to the newest complete (state, model) pair, names
what it skipped and why, stops with one line when nothing is usable, and never runs code from a state."""
import os
import subprocess

import pytest
import torch

import gsasr_plugin  # noqa: F401
from gsasr_plugin.basicsr_patches import patched_basicsr
from gsasr_plugin.models import training_states
from gsasr_plugin.models.training_states import NoUsableStateError
from train_helpers import BASICSR, env, tiny_options, write_options, write_photos


class _RunsCode:
    """Unpickling this (with ``weights_only=False``) runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def _run_folder(tmp_path, name='run'):
    states = tmp_path / 'experiments' / name / 'training_states'
    models = tmp_path / 'experiments' / name / 'models'
    states.mkdir(parents=True)
    models.mkdir(parents=True)
    return states, models


def _save_pair(states, models, iteration):
    torch.save({'epoch': 0, 'iter': iteration, 'optimizers': [{'state': {}, 'param_groups': []}], 'schedulers': [{}]},
               states / f'{iteration}.state')
    torch.save({'params': {'w': torch.full((3, ), float(iteration))}}, models / f'net_g_{iteration}.pth')


def _opt(tmp_path, name='run'):
    root = tmp_path / 'experiments' / name
    return {'name': name, 'auto_resume': True, 'num_gpu': 0, 'network_g': {'type': 'X'},
            'path': {'resume_state': None, 'models': str(root / 'models'),
                     'training_states': str(root / 'training_states')}}


def _load(opt):
    import basicsr.train
    lines = []
    state = training_states.choose_resume_state(opt, report=lines.append)
    if state is not None:  # what basicsr.train.load_resume_state does next
        from basicsr.utils import check_resume
        check_resume(opt, state['iter'])
    with patched_basicsr('train', opt):  # what basicsr train runs in
        assert basicsr.train.load_resume_state.__module__.startswith('gsasr_plugin')
    return state, lines


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize('damage, reason', [
    (lambda s, m: (s / '8.state').write_bytes(b''), r'8\.state: empty file'),
    (lambda s, m: _truncate(s / '8.state'), r'8\.state: .*truncated or damaged'),
    (lambda s, m: (s / '8.state').write_bytes(os.urandom(4000)), r'8\.state: .*not a PyTorch training state'),
    (lambda s, m: _truncate(m / 'net_g_8.pth'), r'8\.state: model file .*net_g_8\.pth: .*truncated or damaged'),
    (lambda s, m: (m / 'net_g_8.pth').unlink(), r'8\.state: model file .*net_g_8\.pth: no such file'),
])
def test_damaged_newest_pair_falls_back_to_the_newest_complete_one(tmp_path, damage, reason):
    states, models = _run_folder(tmp_path)
    for iteration in (4, 8):
        _save_pair(states, models, iteration)
    (states / 'old.state').write_bytes(b'a stray file')
    damage(states, models)
    opt = _opt(tmp_path)
    state, lines = _load(opt)
    assert state['iter'] == 4 and opt['path']['resume_state'].endswith('4.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_4.pth')
    text = '\n'.join(lines)
    assert 'ignoring' in text and 'old.state: not named <iteration>.state' in text
    assert any(__import__('re').search(reason, line) for line in lines), text
    assert 'resuming from' in text and text.rstrip().endswith('4.state, the newest complete state')


def test_nothing_usable_is_one_line_naming_each_state(tmp_path):
    states, models = _run_folder(tmp_path)
    _save_pair(states, models, 4)
    (states / '4.state').write_bytes(b'')
    (states / 'old.state').write_bytes(b'x')
    with pytest.raises(NoUsableStateError) as caught:
        _load(_opt(tmp_path))
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert 'no usable training state in' in message and '4.state (empty file' in message and 'old.state' in message


def test_a_hostile_state_does_not_run_code(tmp_path):
    states, models = _run_folder(tmp_path)
    _save_pair(states, models, 4)
    marker = tmp_path / 'MARKER'
    torch.save({'epoch': 0, 'iter': 99, 'optimizers': [], 'schedulers': [], 'x': _RunsCode(marker)},
               states / '99.state')
    torch.save({'params': {'w': torch.ones(3)}}, models / 'net_g_99.pth')
    state, lines = _load(_opt(tmp_path))
    assert not marker.exists(), 'unpickling the state ran its code'
    assert state['iter'] == 4
    assert any('99.state: refused: it holds Python objects (posix.system)' in line for line in lines), lines


def test_a_hostile_model_file_next_to_a_good_state_does_not_run_code(tmp_path):
    states, models = _run_folder(tmp_path)
    _save_pair(states, models, 4)
    _save_pair(states, models, 8)
    marker = tmp_path / 'MARKER'
    torch.save({'params': {'w': torch.ones(3)}, 'x': _RunsCode(marker)}, models / 'net_g_8.pth')
    state, _ = _load(_opt(tmp_path))
    assert not marker.exists() and state['iter'] == 4


def test_auto_resume_from_the_command_line_with_a_hostile_state(tmp_path, photo):
    write_photos(tmp_path / 'train', photo)
    write_options(tmp_path / 'a.yml', tiny_options('hostile', 'train', total_iter=2))
    states, _ = _run_folder(tmp_path, 'hostile')
    marker = tmp_path / 'MARKER'
    torch.save({'epoch': 0, 'iter': 99, 'optimizers': [], 'schedulers': [], 'x': _RunsCode(marker)},
               states / '99.state')
    (states / '5.state.partial-999999999').write_bytes(b'debris of a killed write')
    proc = subprocess.run(BASICSR + ['train', '-opt', 'a.yml', '--auto_resume'], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=240)
    err = proc.stderr
    assert not marker.exists(), 'the state ran its code'
    assert proc.returncode == 1, proc.stdout + err
    assert 'removed' in err and '5.state.partial-999999999' in err
    last = err.strip().splitlines()[-1]
    assert last.startswith('basicsr train: error: --auto_resume: no usable training state in') and '99.state' in last
    assert 'Traceback' not in err
    assert not (states / '5.state.partial-999999999').exists()
