"""The compiled rasterizer module: ``gsasr_plugin.ops._C`` as the install built it, or, where the install built
none (``pip install .`` without ``--no-build-isolation`` sees no torch and skips it) or one this torch cannot
load, the same sources (``csrc/``) compiled on first use with torch's ``cpp_extension`` (as gsplat does), cached
under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) by a digest of the sources, the flags and
the torch version. The CPU kernel always; the CUDA kernel too where CUDA is usable and a toolkit is found (or
``GSASR_BUILD_CUDA=1``). ``GSASR_BUILD_EXT=0`` turns the build off; without a compiler (or ninja) the pure-PyTorch
path runs, with one warning (``rasterize.py``).
"""
import hashlib
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Tuple

import torch

__all__ = ['compiled_op', 'load_error']

CSRC = Path(__file__).resolve().parent / 'csrc'

_module: Optional[ModuleType] = None
_error: Optional[BaseException] = None
_tried = False


def compiled_op() -> Optional[ModuleType]:
    """The compiled module (importing, or building on the first call), or None where there is none."""
    global _module, _error, _tried
    if not _tried:
        _tried = True
        try:
            from . import _C  # optional: the install may have built none
            _module = _C
        except (ImportError, OSError) as err:  # not built, or built for a torch / CUDA this machine lacks
            _error = err
            try:
                _module = _build(err)
                _error = None
            except Exception as build_err:  # noqa: BLE001 (a compiler's failure comes as several types)
                _error = build_err
    return _module


def load_error() -> Optional[BaseException]:
    """Why ``compiled_op()`` returned None (after it did)."""
    return _error


def _compiler() -> Optional[str]:
    compiler = os.environ.get('CXX', 'c++')
    return compiler if shutil.which(compiler.split()[0]) else None


def _ninja_on_path() -> bool:
    """Whether ninja runs (torch's JIT needs it); puts the ``ninja`` package's binary on the PATH when needed."""
    if shutil.which('ninja'):
        return True
    try:
        import ninja  # optional (a system ninja does too); the PyPI package ships the binary
    except ImportError:
        return False
    os.environ['PATH'] = ninja.BIN_DIR + os.pathsep + os.environ.get('PATH', '')
    return shutil.which('ninja') is not None


def _want_cuda() -> bool:
    wanted = os.environ.get('GSASR_BUILD_CUDA', '').strip()
    if wanted == '0' or (wanted != '1' and not torch.cuda.is_available()):
        return False
    from torch.utils.cpp_extension import CUDA_HOME  # slow to import, and it warns where CUDA is absent
    return CUDA_HOME is not None and Path(CUDA_HOME, 'bin', 'nvcc').exists()


def _build_plan() -> Tuple[str, List[str], List[str], List[str], List[str]]:
    """(module name, sources, C++ flags, nvcc flags, linker flags), setup.py's build of ``_C``."""
    sources = [CSRC / 'bindings.cpp', CSRC / 'rasterize_cpu.cpp']
    cflags = ['-O3'] if sys.platform == 'win32' else ['-O3', '-fno-trapping-math', '-fno-math-errno']
    ldflags = []
    if sys.platform.startswith('linux'):
        cflags.append('-fopenmp')
        ldflags.append('-fopenmp')
    cuda_flags = []
    if _want_cuda():
        sources.append(CSRC / 'rasterize.cu')
        cflags.append('-DGSASR_WITH_CUDA')
        cuda_flags = ['-O3', '--use_fast_math', '-DGSASR_WITH_CUDA']
    digest = hashlib.sha256()
    for path in sources + sorted(CSRC.glob('*.h')):
        digest.update(path.name.encode() + b'\0' + path.read_bytes() + b'\0')
    digest.update(' '.join([torch.__version__, sys.version] + cflags + cuda_flags + ldflags).encode())
    name = f'gsasr_rasterizer_{digest.hexdigest()[:16]}'
    return name, [str(s) for s in sources], cflags, cuda_flags, ldflags


def _build(import_error: BaseException) -> ModuleType:
    if os.environ.get('GSASR_BUILD_EXT', '').strip() == '0':
        raise ImportError(f'{import_error}; GSASR_BUILD_EXT=0 turns building it here off')
    if _compiler() is None:
        raise ImportError(f'{import_error}; no C++ compiler ({os.environ.get("CXX", "c++")}) to build it here')
    if not _ninja_on_path():
        raise ImportError(f'{import_error}; building it here needs ninja (pip install ninja)')
    from torch.utils.cpp_extension import get_default_build_root, load  # as above: only when building
    name, sources, cflags, cuda_flags, ldflags = _build_plan()
    build_dir = Path(os.environ.get('TORCH_EXTENSIONS_DIR') or get_default_build_root()) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    if not list(build_dir.glob(f'{name}.*')):
        kernels = 'CPU and CUDA kernels' if cuda_flags else 'CPU kernel'
        print(f'gsasr_plugin.ops: no compiled rasterizer installed; compiling its {kernels} for this machine '
              f'into {build_dir} (once, a minute or two) ...', file=sys.stderr, flush=True)
    return load(name=name, sources=sources, extra_cflags=cflags, extra_cuda_cflags=cuda_flags or None,
                extra_ldflags=ldflags, build_directory=str(build_dir), verbose=False)
