"""Counting FLOPs with PyTorch's own counter (``torch.utils.flop_counter``), including the CPU ops it does not know.

``FlopCounterMode`` counts matrix products, convolutions and the CUDA attention kernels (2 FLOPs per
multiply-add). On the CPU GSASR's linear layers run by oneDNN (``mkldnn::_linear_pointwise``, see
``archs/fast_linear.py``) and its window attention by ``_scaled_dot_product_flash_attention_for_cpu``; the
counter sees neither, and would report about a quarter of GSASR-EDSR's work (only the convolutions).
:func:`flop_counter` adds them, counted as the ops they replace (``addmm`` and the two attention products).

Element-wise work (norms, softmax, activations) is not counted, as by the counter itself.
"""
from typing import Any, Dict, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['flop_counter', 'extra_flop_formulas', 'count_flops']


def _linear_pointwise_flops(x_shape, w_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """``mkldnn::_linear_pointwise(x, W, b, ...)``: x (..., K) @ W^T (K, N), as ``addmm``."""
    rows = 1
    for dim in x_shape[:-1]:
        rows *= dim
    return 2 * rows * x_shape[-1] * w_shape[0]


def _sdpa_cpu_flops(q_shape, k_shape, v_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """Fused attention (B..., L, E) x (B..., S, E) x (B..., S, Ev): q k^T and its product with v."""
    batch = 1
    for dim in q_shape[:-2]:
        batch *= dim
    queries, head_dim = q_shape[-2:]
    keys = k_shape[-2]
    return 2 * batch * queries * keys * (head_dim + v_shape[-1])


def extra_flop_formulas() -> Dict[Any, Any]:
    """``custom_mapping`` for ``FlopCounterMode``: the CPU ops above that exist in this torch build."""
    formulas = {}
    mkldnn = getattr(torch.ops, 'mkldnn', None)
    if mkldnn is not None and hasattr(mkldnn, '_linear_pointwise'):
        formulas[mkldnn._linear_pointwise] = _linear_pointwise_flops
    aten = torch.ops.aten
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        formulas[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    return formulas


def flop_counter(depth: Optional[int] = None) -> FlopCounterMode:
    """A ``FlopCounterMode`` (no printout) that also counts oneDNN's linear layers and the CPU fused attention."""
    return FlopCounterMode(display=False, depth=depth, custom_mapping=extra_flop_formulas())


def count_flops(fn, *args: Any, **kwargs: Any) -> int:
    """FLOPs (2 per multiply-add) of ``fn(*args, **kwargs)``, run once under :func:`flop_counter`."""
    with flop_counter() as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()
