"""gsasr-basicsr: arbitrary-scale super-resolution by 2D Gaussian splatting, as a BasicSR plugin.

Importing this package registers the plugin's architectures, encoders, datasets, models and metrics
with BasicSR's registries. ``compat`` is imported first because basicsr 1.4.2 does not import on
current torchvision without it.
"""
from gsasr_plugin import compat  # noqa: F401  (must precede every basicsr import)
from gsasr_plugin import archs, data, losses, metrics, models  # noqa: F401  (fill the registries)

__version__ = '0.1.0'
__all__ = ['__version__']
