"""The compiled rasterizer is there whenever a compiler is: with the installed ``gsasr_plugin.ops._C`` hidden (as
after ``pip install .`` without ``--no-build-isolation``), the first use compiles the same sources (cached) and the
results are the installed kernel's; without a compiler the pure path runs, with one warning. In subprocesses, with
their own TORCH_EXTENSIONS_DIR (the build takes about a minute of CPU)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gsasr_plugin.ops import cpu_op_available, rasterize_gaussians, use_backend
from rasterize_helpers import make

# Run in the subprocess before gsasr_plugin is imported: `from . import _C` fails as if nothing were installed.
HIDE_INSTALLED = textwrap.dedent('''
    import importlib.abc, sys

    class HideInstalledOp(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == 'gsasr_plugin.ops._C':
                raise ImportError('no gsasr_plugin.ops._C installed (hidden by the test)')
            return None

    sys.meta_path.insert(0, HideInstalledOp())
''')

RENDER = textwrap.dedent('''
    import sys, warnings
    import torch
    sys.path.insert(0, {tests!r})
    from rasterize_helpers import make
    from gsasr_plugin.ops import _compiled, cpu_op_available, rasterize_gaussians
    warnings.simplefilter('always')
    available = cpu_op_available()
    module = _compiled.compiled_op()
    print('AVAILABLE', available, getattr(module, '__name__', None), flush=True)
    params = [p.requires_grad_() for p in make(2, 300, 3, (12, 10))]
    out = rasterize_gaussians(*params, (12, 10), (31, 47), mode='gsplat_sum')
    out.square().sum().backward()
    torch.save([out.detach()] + [p.grad for p in params], {result!r})
''')


def render_in_subprocess(tmp_path, extra_env, tag):
    result = tmp_path / f'{tag}.pt'
    code = HIDE_INSTALLED + RENDER.format(tests=os.path.dirname(__file__), result=str(result))
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / 'extensions'), **extra_env)
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr, torch.load(result)


def installed_reference():
    params = [p.requires_grad_() for p in make(2, 300, 3, (12, 10))]
    with use_backend('compiled'):
        out = rasterize_gaussians(*params, (12, 10), (31, 47), mode='gsplat_sum')
    out.square().sum().backward()
    return [out.detach()] + [p.grad for p in params]


@pytest.mark.skipif(not cpu_op_available(), reason='the installed compiled op is the reference')
def test_missing_compiled_op_is_built_on_first_use_and_cached(tmp_path):
    stdout, stderr, first = render_in_subprocess(tmp_path, {}, 'first')
    assert 'AVAILABLE True gsasr_rasterizer_' in stdout, stdout + stderr
    notes = [line for line in stderr.splitlines() if 'compiling' in line]
    assert len(notes) == 1 and 'no compiled rasterizer installed' in notes[0], stderr
    assert 'pure-PyTorch' not in stderr
    for a, b in zip(first, installed_reference()):
        assert torch.equal(a, b)  # the same sources and flags as the install's build
    stdout, stderr, again = render_in_subprocess(tmp_path, {}, 'again')  # cached: no note, no compile
    assert 'AVAILABLE True' in stdout and 'compiling' not in stderr, stderr
    for a, b in zip(first, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize('env,reason', [({'CXX': '/nonexistent/c++'}, 'no C++ compiler'),
                                        ({'GSASR_BUILD_EXT': '0'}, 'GSASR_BUILD_EXT=0')])
def test_without_a_compiler_the_pure_path_runs_with_one_warning(tmp_path, env, reason):
    stdout, stderr, result = render_in_subprocess(tmp_path, env, 'pure')
    assert 'AVAILABLE False None' in stdout
    warnings = [line for line in stderr.splitlines() if 'pure-PyTorch' in line]
    assert len(warnings) == 1 and reason in warnings[0], stderr
    assert 'compiling' not in stderr
    with use_backend('torch'):
        params = [p.requires_grad_() for p in make(2, 300, 3, (12, 10))]
        out = rasterize_gaussians(*params, (12, 10), (31, 47), mode='gsplat_sum')
        out.square().sum().backward()
    for a, b in zip(result, [out.detach()] + [p.grad for p in params]):
        torch.testing.assert_close(a, b)
