"""``gsasr_plugin.ops``: the differentiable 2D Gaussian rasterizer (installed from the top-level ``ops/``)."""
