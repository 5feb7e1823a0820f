"""Keep freed CPU memory in the process for reuse during a run, instead of handing it back to the system.

glibc's ``malloc`` serves blocks above a threshold (128 KiB at start, raised as blocks are freed) with fresh
``mmap`` pages and unmaps them on ``free``, and gives the top of its heap back once more than twice that
threshold is free there. A training step allocates and frees the same activation buffers every iteration,
so each step writes to pages the kernel must fault in and zero again: about 4,500 page faults per step of
the demo training on this project's machine, ~10-18 % of its time. With the ``mmap`` threshold at glibc's
maximum (32 MiB on 64-bit) and the trim threshold at :data:`TRIM_THRESHOLD_BYTES`, freed blocks stay in the
heap and the next step reuses them (43 faults per step). The cost is memory: up to that much freed memory
stays with the process until it ends, which is what a training or test run uses again anyway.

:func:`keep_freed_memory` is called by ``basicsr train``, ``basicsr test`` and ``basicsr infer`` (not when the
plugin is imported: a library does not tune its host's allocator). ``GSASR_MALLOC_TUNING=0`` in the
environment leaves the allocator alone; the variables glibc reads itself (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``), when set, are respected. Elsewhere (macOS, Windows, musl)
it does nothing.
"""
import ctypes
import os
import sys
from typing import Optional

__all__ = ['keep_freed_memory', 'MMAP_THRESHOLD_BYTES', 'TRIM_THRESHOLD_BYTES']

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024
_USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'GLIBC_TUNABLES')

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
