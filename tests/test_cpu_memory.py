"""keep_freed_memory: a run's allocation pattern stops faulting in fresh pages every step (glibc only)."""
import subprocess
import sys

import pytest

from gsasr_plugin.utils import cpu_memory

# A step that allocates activations of many sizes, keeps two thirds of them (as a forward keeps them for
# the backward) and then frees them all: prints whether the tuning applied and the page faults per step.
_STEP_SCRIPT = '''
import resource, torch
from gsasr_plugin.utils.cpu_memory import keep_freed_memory
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

glibc_only = pytest.mark.skipif(cpu_memory._glibc() is None, reason='glibc malloc only')


def _faults_per_step(**env):
    import os
    environment = {k: v for k, v in os.environ.items() if k not in cpu_memory._USER_SETTINGS}
    environment.update(env)
    out = subprocess.run([sys.executable, '-c', _STEP_SCRIPT], capture_output=True, text=True, env=environment,
                         check=True).stdout.split()
    return out[0] == 'True', float(out[1])


@glibc_only
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    applied, tuned = _faults_per_step()
    untouched, plain = _faults_per_step(GSASR_MALLOC_TUNING='0')
    assert applied and not untouched
    # about 180 MiB of buffers a step: thousands of fresh pages a step without the tuning
    assert plain > 2000
    assert tuned < plain / 10


@glibc_only
def test_glibc_settings_of_the_user_win():
    applied, _ = _faults_per_step(MALLOC_TRIM_THRESHOLD_='131072')
    assert not applied
