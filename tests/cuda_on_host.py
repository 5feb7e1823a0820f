"""Builds and loads the host build of the CUDA rasterizer: ``ops/csrc/rasterize.cu`` of this checkout (kernels and
launcher, the same source the GPU build compiles) on top of the test-only execution layer in ``tests/cuda_host``,
which runs every CUDA thread of a block as a fiber (or an OS thread) with real barriers, warp shuffles, per-block
shared memory and atomics. Test tooling only: nothing here is part of the installed package.

The module is compiled on first use and cached by the content of its sources (``rasterize.cu``, the headers next
to it, ``tests/cuda_host``), the torch version and the flags, so an edit of the ``.cu`` file is what the next test
run executes. ``GSASR_CUDA_HOST_CSRC`` points at another ``csrc`` folder, ``GSASR_CUDA_HOST_CACHE`` at another
cache folder (default ``~/.cache/gsasr_basicsr/cuda_on_host``); ``GSASR_CUDA_HOST_NAME`` fixes the module's name
(one build folder that ninja updates in place: the mutation script, ``tests/cuda_host/mutate.py``, recompiles only
what an edit touches).
"""
import hashlib
import os
import sys
from pathlib import Path

import torch

from gsasr_plugin.ops._compiled import _ninja_on_path

ROOT = Path(__file__).resolve().parents[1]
LAYER = Path(__file__).resolve().parent / 'cuda_host'

__all__ = ['load_cuda_on_host', 'module_name', 'csrc_dir']

_loaded = {}


def csrc_dir() -> Path:
    """The ``csrc`` folder whose ``rasterize.cu`` the host build compiles."""
    return Path(os.environ.get('GSASR_CUDA_HOST_CSRC') or ROOT / 'ops' / 'csrc')


def _flags(sanitize):
    # No FMA contraction: the CPU kernel built alongside (the reference) then rounds its weights exactly as the
    # host-built CUDA kernels do, so sums taken in the same order give the same bits. (nvcc does contract on the
    # GPU, and the installed _C's AVX2 clone does too: those differ in the last bits.)
    cflags = ['-O3', '-ffp-contract=off', '-fno-math-errno', '-fno-trapping-math', '-fopenmp']
    ldflags = ['-fopenmp']
    if sanitize == 'thread':
        cflags = ['-O1', '-g', '-fsanitize=thread', '-ffp-contract=off', '-fopenmp']
        ldflags = ['-fsanitize=thread', '-fopenmp']
    elif sanitize is not None:
        raise ValueError(f'sanitize must be None or "thread", got {sanitize!r}')
    return cflags, ldflags


def _sources(csrc):
    return [LAYER / 'rasterize_on_host.cpp', LAYER / 'cuda_on_host.cpp', csrc / 'rasterize_cpu.cpp']


def module_name(csrc=None, sanitize=None) -> str:
    """The cache key: a digest of the sources (``rasterize.cu`` and the headers next to it, the CPU kernel, the
    execution layer), the torch and Python versions and the flags."""
    csrc = Path(csrc) if csrc is not None else csrc_dir()
    cflags, ldflags = _flags(sanitize)
    hashed = sorted(csrc.glob('*.cu')) + sorted(csrc.glob('*.h')) + sorted(LAYER.glob('*.h')) + _sources(csrc)
    digest = hashlib.sha256()
    for path in hashed:
        digest.update(path.name.encode() + b'\0' + path.read_bytes() + b'\0')
    digest.update(' '.join([torch.__version__, sys.version] + cflags + ldflags).encode())
    return f'gsasr_cuda_on_host_{digest.hexdigest()[:16]}'


def load_cuda_on_host(sanitize=None, verbose=False):
    """The host-built CUDA rasterizer module: ``forward``, ``backward`` (rasterize.cu's launchers, taking what
    ``_C`` takes for CUDA tensors, on CPU float32 tensors), ``cpu_forward``, ``cpu_backward`` (rasterize_cpu.cpp
    built with the same flags), the execution layer's ``set_schedule``, ``set_os_threads``, ``set_workers`` and
    its ``probe_*`` kernels. ``sanitize='thread'`` builds it with ThreadSanitizer (the process must preload
    libtsan)."""
    from torch.utils.cpp_extension import load  # slow to import, and it warns where CUDA is absent
    if not _ninja_on_path():  # a fresh machine may have no system ninja; the package requires the PyPI one
        raise RuntimeError('the host build of rasterize.cu needs ninja (pip install ninja)')
    csrc = csrc_dir()
    name = os.environ.get('GSASR_CUDA_HOST_NAME') or module_name(csrc, sanitize)
    if name in _loaded:
        return _loaded[name]
    cflags, ldflags = _flags(sanitize)
    cache = Path(os.environ.get('GSASR_CUDA_HOST_CACHE') or Path.home() / '.cache' / 'gsasr_basicsr' / 'cuda_on_host')
    build = cache / name
    build.mkdir(parents=True, exist_ok=True)
    if not any(build.glob(f'{name}*.so')):
        print(f'cuda_on_host: compiling {csrc / "rasterize.cu"} for the CPU into {build} (once per source '
              'version, a minute or two) ...', file=sys.stderr, flush=True)
    module = load(name=name, sources=[str(s) for s in _sources(csrc)], extra_include_paths=[str(csrc), str(LAYER)],
                  extra_cflags=cflags, extra_ldflags=ldflags, build_directory=str(build), verbose=verbose)
    _loaded[name] = module
    return module
