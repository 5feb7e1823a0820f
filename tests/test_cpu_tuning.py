"""keep_freed_memory: a run's allocation pattern stops faulting in fresh pages every step (glibc only)."""
import subprocess
import sys

import pytest

from gsasr_plugin.utils import cpu_tuning

# A step that allocates activations of many sizes, keeps two thirds of them (as a forward keeps them for
# the backward) and then frees them all: prints whether the tuning applied and the page faults per step.
_STEP_SCRIPT = '''
import resource, torch
from gsasr_plugin.utils.cpu_tuning import keep_freed_memory
applied = keep_freed_memory()
sizes = [(37 * k) % 23 + 1 for k in range(60)]  # 1 .. 23 x 64 Ki floats: 256 KiB .. 5.9 MiB
def step():
    kept = []
    for i, n in enumerate(sizes):
        buffer = torch.empty(n * 65536).fill_(1.0)
        if i % 3:
            kept.append(buffer)
    del kept
step(); step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5)
'''

glibc_only = pytest.mark.skipif(cpu_tuning._glibc() is None, reason='glibc malloc only')


def _faults_per_step(**env):
    import os
    environment = {k: v for k, v in os.environ.items() if k not in cpu_tuning._USER_SETTINGS}
    environment.update(env)
    out = subprocess.run([sys.executable, '-c', _STEP_SCRIPT], capture_output=True, text=True, env=environment,
                         check=True).stdout.split()
    return out[0] == 'True', float(out[1])


@glibc_only
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    applied, tuned = _faults_per_step()
    untouched, _ = _faults_per_step(GSASR_MALLOC_TUNING='0')
    assert applied and not untouched
    # A step allocates ~180 MiB (46,000 pages). Without the tuning glibc gives most of it back and faults it in
    # again (1,100 to 31,700 faults a step here, depending on where the heap's top lands); with it, none to a
    # few hundred.
    assert tuned < 500


@glibc_only
def test_glibc_settings_of_the_user_win():
    applied, _ = _faults_per_step(MALLOC_TRIM_THRESHOLD_='131072')
    assert not applied


def _train_opt(num_gpu=0, workers=1):
    return {'num_gpu': num_gpu, 'datasets': {'train': {'num_worker_per_gpu': workers}, 'val': {'num_worker_per_gpu': 8}}}


def test_training_threads_leave_the_data_workers_their_cores(monkeypatch):
    for name in cpu_tuning._THREAD_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert cpu_tuning.training_threads(_train_opt(workers=1), available=2) == 1
    assert cpu_tuning.training_threads(_train_opt(workers=4), available=16) == 12
    assert cpu_tuning.training_threads(_train_opt(workers=6), available=4) == 1  # at least one
    assert cpu_tuning.training_threads(_train_opt(workers=0), available=4) is None  # nothing to change
    assert cpu_tuning.training_threads(_train_opt(workers=1), available=1) is None
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    assert cpu_tuning.training_threads(_train_opt(workers=1), available=2) is None  # the user chose


def test_training_threads_leave_gpu_runs_alone(monkeypatch):
    for name in cpu_tuning._THREAD_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr('torch.cuda.is_available', lambda: True)
    assert cpu_tuning.training_threads(_train_opt(num_gpu=1), available=8) is None
    assert cpu_tuning.training_threads(_train_opt(num_gpu='auto'), available=8) is None
    assert cpu_tuning.training_threads(_train_opt(num_gpu=0), available=8) == 7


def test_basicsr_train_on_the_cpu_runs_with_the_threads_the_workers_leave(tmp_path, monkeypatch, capsys):
    """The run pipeline applies training_threads around BasicSR's train pipeline and restores the count after."""
    import shutil
    from pathlib import Path

    import basicsr.train
    import torch

    from gsasr_plugin_cli import main
    from gsasr_plugin.demo import write_demo_data
    for name in cpu_tuning._THREAD_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    write_demo_data('demo_data')
    shutil.copy(Path(__file__).resolve().parents[1] / 'options' / 'train_gsasr_demo.yml', 'demo.yml')
    seen = []
    monkeypatch.setattr(basicsr.train, 'train_pipeline', lambda root: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(['train', '-opt', 'demo.yml']) == 0
        assert seen == [1]  # two threads, one data worker in the demo options
        assert torch.get_num_threads() == 2
        assert 'training on the CPU with 1 thread(s) of 2' in capsys.readouterr().err
        monkeypatch.setenv('OMP_NUM_THREADS', '2')
        assert main(['train', '-opt', 'demo.yml']) == 0
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)
