"""Linear layers run by oneDNN on the CPU (same modules and weights, equal within float rounding).

PyTorch computes a float32 ``nn.Linear`` on the CPU with its BLAS (MKL on x86), which on some CPUs uses
narrower vector code than the CPU has (MKL runs its AVX2 kernels on AMD's AVX-512 CPUs); oneDNN, which
PyTorch already uses for convolutions, dispatches on the instruction set and can apply the bias and a
following ReLU in the same pass. In GSASR's decoder, whose work is mostly linear layers, that is about
twice the speed of a linear layer on such CPUs.

:func:`linear`, :func:`mlp` and :func:`mlp_sequence` take the usual modules and use oneDNN's linear
(``torch.ops.mkldnn._linear_pointwise``, what TorchInductor uses for CPU linears) only where it gives
the same result: float32 CPU tensors, no autocast, not while compiling; otherwise they call the modules.
The op has no backward of its own: with autograd, :class:`_OneDNNLinearFunction` gives it one, in which the
input's gradient (``grad @ W``) is a oneDNN linear too and the weight's (``grad^T @ x``) PyTorch's matrix
product (oneDNN is slower there, as it needs both operands transposed); a following ReLU is applied in the
forward pass and its mask in the backward. The op is checked once against ``F.linear`` on a small case;
``GSASR_ONEDNN_LINEAR=0`` in the environment turns the path off.
"""
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['linear', 'mlp', 'mlp_sequence', 'onednn_linear_available']

_AVAILABLE: Optional[bool] = None


def onednn_linear_available() -> bool:
    """Whether oneDNN's linear exists here and matches ``F.linear`` (checked once; ``GSASR_ONEDNN_LINEAR=0``: off)."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = False
        if os.environ.get('GSASR_ONEDNN_LINEAR', '1') != '0' and torch.backends.mkldnn.is_available() \
                and hasattr(torch.ops.mkldnn, '_linear_pointwise'):
            try:
                generator = torch.Generator().manual_seed(0)
                x, w, b = (torch.randn(shape, generator=generator) for shape in ((37, 20), (12, 20), (12, )))
                with torch.no_grad():
                    out = torch.ops.mkldnn._linear_pointwise(x, w, b, 'relu', [], '')
                _AVAILABLE = bool(torch.allclose(out, F.linear(x, w, b).relu(), rtol=1e-5, atol=1e-5))
            except (RuntimeError, TypeError, NotImplementedError):
                _AVAILABLE = False
    return _AVAILABLE


def _autocast_cpu() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
    return bool(is_compiling()) if is_compiling is not None else False


def _use_onednn(x: torch.Tensor, layer: nn.Linear) -> bool:
    weight, bias = layer.weight, layer.bias
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.device.type == 'cpu' and x.dim() >= 2 and (bias is None or bias.dtype == torch.float32)
            and not _autocast_cpu() and not _compiling() and onednn_linear_available())


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'relu' if relu else 'none', [], '')


class _OneDNNLinearFunction(torch.autograd.Function):
    """``relu?(x W^T + b)`` by oneDNN, with its backward (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], relu: bool) -> torch.Tensor:
        out = _onednn_linear(x, weight, bias, relu)
        ctx.relu = relu
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, out if relu else None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight, out = ctx.saved_tensors
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
        grad = grad.contiguous()
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad, weight.t().contiguous(), None, False)
        flat_grad = grad.view(-1, grad.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_weight = flat_grad.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(0)
        return grad_x, grad_weight, grad_bias, None


def linear(layer: nn.Linear, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``layer(x)``, followed by a ReLU when ``relu``; by oneDNN where it gives the same result (module docstring)."""
    if _use_onednn(x, layer):
        weight, bias = layer.weight, layer.bias
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad)):
            return _OneDNNLinearFunction.apply(x, weight, bias, relu)
        return _onednn_linear(x, weight, bias, relu)
    out = layer(x)
    return torch.relu(out) if relu else out


def _plain_relu_mlp(module: nn.Module) -> bool:
    """timm's ``Mlp`` with a ReLU, no dropout and no norm: fc2(relu(fc1(x)))."""
    return (isinstance(getattr(module, 'act', None), nn.ReLU)
            and isinstance(getattr(module, 'norm', None), nn.Identity)
            and all(getattr(getattr(module, name, None), 'p', 1.0) == 0.0 for name in ('drop1', 'drop2'))
            and isinstance(getattr(module, 'fc1', None), nn.Linear)
            and isinstance(getattr(module, 'fc2', None), nn.Linear))


def mlp(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for timm's ``Mlp``; a ReLU MLP without dropout runs as two :func:`linear` calls."""
    if not _plain_relu_mlp(module) or not _use_onednn(x, module.fc1):
        return module(x)
    return linear(module.fc2, linear(module.fc1, x, relu=True))


def mlp_sequence(module: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for an ``nn.Sequential`` of ``nn.Linear`` layers, each optionally followed by an ``nn.ReLU``."""
    layers = list(module)
    steps = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            steps.append([layer, False])
        elif isinstance(layer, nn.ReLU) and steps and not steps[-1][1] and isinstance(layers[i - 1], nn.Linear):
            steps[-1][1] = True
        else:
            return module(x)
    if not steps or not _use_onednn(x, steps[0][0]):
        return module(x)
    for layer, relu in steps:
        x = linear(layer, x, relu=relu)
    return x
