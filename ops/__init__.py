"""``gsasr_plugin.ops``: the differentiable 2D Gaussian rasterizer (installed from the top-level ``ops/``).

``rasterize_gaussians`` is the one public function; it validates its input and runs the compiled CUDA op
(``gsasr_plugin.ops._C``, built from ``ops/csrc``) on CUDA tensors when present, else the pure-PyTorch path.
"""
from .rasterize import DEFAULT_CUTOFF, cuda_op_available, rasterize_gaussians

__all__ = ['rasterize_gaussians', 'cuda_op_available', 'DEFAULT_CUTOFF']
