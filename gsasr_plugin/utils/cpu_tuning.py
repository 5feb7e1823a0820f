"""How a CPU run of ``basicsr train`` / ``test`` / ``infer`` sets up the process: memory reuse and threads.

Called by the commands only (not when the plugin is imported: a library does not tune the program that imports
it).

**Memory reuse** (:func:`keep_freed_memory`). glibc's ``malloc`` serves blocks above a threshold (128 KiB at
start, raised as blocks are freed) with fresh ``mmap`` pages and unmaps them on ``free``, and gives the top of
its heap back once more than twice that threshold is free there. A training step allocates and frees the same
activation buffers every iteration, so each step writes to pages the kernel must fault in and zero again:
about 4,500 page faults per step of the demo training on this project's machine, 10-18 % of its time. With
the ``mmap`` threshold at glibc's maximum (32 MiB on 64-bit) and the trim threshold at
:data:`TRIM_THRESHOLD_BYTES`, freed blocks stay in the heap and the next step reuses them (43 faults per
step). The cost is memory: up to that much freed memory stays with the process until it ends, which is what
a training or test run uses again anyway. ``GSASR_MALLOC_TUNING=0`` in the environment leaves the allocator
alone; the variables glibc reads itself (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``GLIBC_TUNABLES``), when set, are respected. Elsewhere (macOS, Windows, musl) it does nothing.

**Threads of CPU training** (:func:`training_threads`). PyTorch runs its operations on as many threads as
the machine has cores, while the training DataLoader's worker processes need cores too. When they compete,
OpenMP threads spin at every operation's barrier while the thread they wait for is descheduled: the demo
training (one data worker) took 0.056 s per step with PyTorch's two threads on a 2-core machine and 0.046 s
with one. A training run on the CPU therefore uses the cores that the data workers leave (at least one),
unless ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set, which chooses.
"""
import ctypes
import os
import sys
from typing import Any, Mapping, Optional

__all__ = ['keep_freed_memory', 'training_threads', 'MMAP_THRESHOLD_BYTES', 'TRIM_THRESHOLD_BYTES']

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024
_USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'GLIBC_TUNABLES')
_THREAD_SETTINGS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')

_applied: Optional[bool] = None


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (present in glibc only)
        return libc if hasattr(libc, 'mallopt') else None
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module docstring); True when they
    are set (now or by an earlier call), False where it does not apply or is turned off."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get('GSASR_MALLOC_TUNING', '1') == '0' or any(name in os.environ for name in _USER_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return _applied


def _trains_on_cpu(opt: Mapping[str, Any]) -> bool:
    num_gpu = opt.get('num_gpu', 'auto')
    if num_gpu == 0:
        return True
    import torch
    return not torch.cuda.is_available()


def training_threads(opt: Mapping[str, Any], available: Optional[int] = None) -> Optional[int]:
    """The intra-op threads a training run with options ``opt`` should use on the CPU: the ``available``
    threads (default: PyTorch's) less the training DataLoader's workers, at least 1. None when it does not
    apply (a GPU run, ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set, nothing to take away)."""
    if any(name in os.environ for name in _THREAD_SETTINGS) or not _trains_on_cpu(opt):
        return None
    datasets = opt.get('datasets') if isinstance(opt.get('datasets'), Mapping) else {}
    try:
        workers = sum(int(d.get('num_worker_per_gpu') or 0) for phase, d in datasets.items()
                      if isinstance(d, Mapping) and str(phase).split('_')[0] == 'train')
    except (TypeError, ValueError):  # reported by the option checks
        return None
    if available is None:
        import torch
        available = torch.get_num_threads()
    threads = max(1, available - workers)
    return threads if threads < available else None
