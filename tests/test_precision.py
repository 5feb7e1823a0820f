"""When bfloat16 inference is used (gsasr_plugin.utils.precision): only where it is faster than float32."""
from pathlib import Path

import pytest

from gsasr_plugin.utils import precision


def _cpu_flags() -> set:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('flags'):
                return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv('GSASR_CPU_BF16', raising=False)
    monkeypatch.setattr(precision, '_MEASURED', None)


@pytest.mark.skipif(not _cpu_flags() or _cpu_flags() & {'avx512_bf16', 'amx_bf16'},
                    reason='a CPU with native bfloat16 (or no /proc/cpuinfo)')
def test_a_cpu_without_native_bf16_stays_float32():
    """On a CPU without AVX512-BF16 / AMX (such as this project's AVX2 machine) bfloat16 is not used."""
    assert precision.cpu_bf16_instructions() is None
    assert not precision.bf16_is_fast('cpu')
    assert 'no native bfloat16' in precision.bf16_fallback_reason('cpu')
    # and the measurement agrees: bfloat16 products are emulated there, several times slower
    assert not precision._bf16_measured_faster()


def test_native_bf16_is_used_only_where_it_measured_faster(monkeypatch):
    monkeypatch.setattr(precision, 'cpu_bf16_instructions', lambda: 'AMX')
    monkeypatch.setattr(precision, '_bf16_measured_faster', lambda: False)
    assert not precision.bf16_is_fast('cpu')
    assert 'measured slower than float32 on this CPU (it has AMX)' in precision.bf16_fallback_reason('cpu')
    monkeypatch.setattr(precision, '_bf16_measured_faster', lambda: True)
    assert precision.bf16_is_fast('cpu')


def test_cuda_uses_bf16_and_the_environment_decides_on_the_cpu(monkeypatch):
    assert precision.bf16_is_fast('cuda') and precision.bf16_is_fast('cuda:1')
    monkeypatch.setenv('GSASR_CPU_BF16', '1')
    assert precision.bf16_is_fast('cpu')
    monkeypatch.setenv('GSASR_CPU_BF16', '0')
    monkeypatch.setattr(precision, 'cpu_bf16_instructions', lambda: 'AMX')
    monkeypatch.setattr(precision, '_bf16_measured_faster', lambda: True)
    assert precision.bf16_fallback_reason('cpu') == 'GSASR_CPU_BF16=0'
