"""Whether bfloat16 inference pays off on a device: what ``Upscaler`` and ``basicsr infer --bf16`` ask before using it.

On CUDA GPUs bfloat16 autocast is faster and it is used when asked for. On a CPU it is faster only where the CPU
computes bfloat16 products natively: AVX512-BF16 (Intel Cooper Lake and later Xeons, AMD Zen 4 and later) or AMX
(Intel Sapphire Rapids and later Xeons). Elsewhere (AVX2-only CPUs such as AMD Zen 2/3 or Intel client cores, and
AVX-512 CPUs without BF16 such as Skylake-SP) oneDNN converts every operand to float32 and back, and the forward is
slower than in float32, so float32 is used instead. Where the CPU reports the instructions, a GSASR-sized linear
layer is timed once in bfloat16 autocast and in float32 (a few milliseconds, at the first request of the process),
and bfloat16 is used only if it was the faster.

``GSASR_CPU_BF16=1`` / ``=0`` in the environment skips the check (use / never use bfloat16 on the CPU).
"""
import os
import time
from typing import Optional, Union

import torch
import torch.nn.functional as F

__all__ = ['cpu_bf16_instructions', 'bf16_is_fast', 'bf16_fallback_reason']

_MEASURED: Optional[bool] = None
# the linear layer timed: tokens x GSASR's width -> its heads' hidden width
_PROBE_SHAPE = (4096, 180, 720)


def cpu_bf16_instructions() -> Optional[str]:
    """The CPU's native bfloat16 instructions as PyTorch reports them (``'AMX'``, ``'AVX512-BF16'``), or None."""
    cpu = getattr(torch, 'cpu', None)
    for name, label in (('_is_amx_tile_supported', 'AMX'), ('_is_avx512_bf16_supported', 'AVX512-BF16')):
        probe = getattr(cpu, name, None)
        try:
            if probe is not None and probe():
                return label
        except (RuntimeError, AttributeError):
            continue
    return None


def _best_time(fn, repeats: int = 3) -> float:
    fn()
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _bf16_measured_faster() -> bool:
    """A GSASR-sized linear layer in bfloat16 autocast against float32 on this CPU (once per process)."""
    global _MEASURED
    if _MEASURED is None:
        tokens, width, hidden = _PROBE_SHAPE
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(tokens, width, generator=generator)
        weight, bias = torch.randn(hidden, width, generator=generator), torch.randn(hidden, generator=generator)

        def bf16():
            with torch.autocast('cpu', dtype=torch.bfloat16):
                return F.linear(x, weight, bias)

        with torch.no_grad():
            _MEASURED = _best_time(bf16) < _best_time(lambda: F.linear(x, weight, bias))
    return _MEASURED


def bf16_fallback_reason(device: Union[torch.device, str]) -> Optional[str]:
    """Why bfloat16 is not used on ``device`` (float32 is used instead), or None where it is used."""
    if torch.device(device).type != 'cpu':
        return None
    setting = os.environ.get('GSASR_CPU_BF16', '')
    if setting in ('0', '1'):
        return None if setting == '1' else 'GSASR_CPU_BF16=0'
    instructions = cpu_bf16_instructions()
    if instructions is None:
        return ('this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), where bfloat16 is slower than '
                'float32')
    if not _bf16_measured_faster():
        return f'bfloat16 measured slower than float32 on this CPU (it has {instructions})'
    return None


def bf16_is_fast(device: Union[torch.device, str]) -> bool:
    """Whether bfloat16 inference is used on ``device`` when asked for (see the module docstring)."""
    return bf16_fallback_reason(device) is None
