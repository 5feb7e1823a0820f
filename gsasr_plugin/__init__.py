"""gsasr-basicsr: arbitrary-scale super-resolution by 2D Gaussian splatting, as a BasicSR plugin.

Importing this package registers the plugin's architectures, encoders, datasets, models and metrics
with BasicSR's registries. ``compat`` is imported first because basicsr 1.4.2 does not import on
current torchvision without it. The Python API (:mod:`gsasr_plugin.api`)::

    from gsasr_plugin import load_model
    model = load_model('net_g_latest.pth')      # a checkpoint of basicsr train, or 'official:<name>'
    sr = model.upscale(image, scale=3.7)        # numpy HWC uint8/uint16/float or a tensor, any channels
"""
from gsasr_plugin import compat  # noqa: F401  (must precede every basicsr import)
from gsasr_plugin import archs, data, losses, metrics, models  # noqa: F401  (fill the registries)
# the compatibility layer: the official forward's archs and the released models (after the archs they extend)
from gsasr_plugin.official import continuoussr as _continuoussr  # noqa: F401
from gsasr_plugin.official import gaussiansr as _gaussiansr  # noqa: F401
from gsasr_plugin.official import gsasr as _gsasr  # noqa: F401
from gsasr_plugin.official import gsasr_official_arch as _gsasr_official_arch  # noqa: F401
from gsasr_plugin.api import Upscaler, load_model
from gsasr_plugin.version import __version__

__all__ = ['__version__', 'load_model', 'Upscaler']
