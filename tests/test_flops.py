"""The FLOP count of gsasr_plugin.utils.flops: PyTorch's counter plus the CPU ops GSASR runs by."""
import pytest
import torch
from torch import nn

import gsasr_plugin  # noqa: F401
from gsasr_plugin.archs import fast_linear
from gsasr_plugin.archs.gsasr_arch import GSASR
from gsasr_plugin.utils.flops import count_flops


def test_onednn_linear_counts_as_addmm():
    if not fast_linear.onednn_linear_available():
        pytest.skip('no oneDNN linear here')
    layer = nn.Linear(20, 12)
    x = torch.randn(7, 5, 20)
    with torch.no_grad():
        assert count_flops(fast_linear.linear, layer, x) == 2 * 35 * 20 * 12
        assert count_flops(layer, x) == 2 * 35 * 20 * 12


def test_cpu_fused_attention_is_counted():
    q, k, v = torch.randn(3, 2, 9, 4), torch.randn(3, 2, 11, 4), torch.randn(3, 2, 11, 6)
    flops = count_flops(torch.nn.functional.scaled_dot_product_attention, q, k, v)
    assert flops == 2 * 3 * 2 * 9 * 11 * (4 + 6)


def test_gsasr_count_is_the_same_on_every_linear_path(monkeypatch):
    """The count of a GSASR forward does not depend on whether its linear layers run by oneDNN (what
    PyTorch's counter alone misses) or by PyTorch's BLAS."""
    torch.manual_seed(0)
    net = GSASR(encoder={'type': 'EDSREncoder', 'num_feat': 8, 'num_block': 1}, embed_dim=12, num_heads=2,
                window_size=4, num_injection_layers=2, num_blocks=1, num_layers_per_block=2).eval()
    lq = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        fast = count_flops(net.encode, lq, 2.0)
        monkeypatch.setattr(fast_linear, '_AVAILABLE', False)
        plain = count_flops(net.encode, lq, 2.0)
    assert fast == plain > 0
