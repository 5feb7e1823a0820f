"""``gsasr_plugin.ops``: the differentiable 2D Gaussian rasterizer (installed from the top-level ``ops/``).

``rasterize_gaussians`` is the one public function; it validates its input and runs the compiled op
(``gsasr_plugin.ops._C``, built from ``ops/csrc`` at install or, where the install built none, on first use
(``_compiled.py``): a CPU kernel, plus a CUDA kernel where built with CUDA) on CPU and CUDA tensors when present,
else the pure-PyTorch path (``_torch_impl.py``, also the reference).
"""
from .rasterize import (BACKENDS, DEFAULT_CUTOFF, MODES, RENDER_OPTIONS, cpu_op_available, cuda_op_available,
                        rasterize_gaussians, use_backend)

__all__ = ['rasterize_gaussians', 'cuda_op_available', 'cpu_op_available', 'use_backend', 'DEFAULT_CUTOFF', 'MODES',
           'BACKENDS', 'RENDER_OPTIONS']
