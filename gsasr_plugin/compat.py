"""Makes basicsr 1.4.2 importable on current torchvision: the one change made when the plugin is imported.

Imported by ``gsasr_plugin/__init__.py`` (and by every module that imports basicsr) before basicsr: basicsr
imports ``torchvision.transforms.functional_tensor``, which torchvision removed in 0.17; we alias that module
name to ``torchvision.transforms.functional`` (which has ``rgb_to_grayscale``). Idempotent.

Everything else the plugin changes in BasicSR is changed for one ``basicsr train/test`` run only:
:mod:`gsasr_plugin.basicsr_patches`.
"""
import sys
import types

__all__ = ['install_torchvision_shim']


def install_torchvision_shim() -> None:
    """Register ``torchvision.transforms.functional_tensor`` if this torchvision lacks it."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional
    shim = types.ModuleType(name)
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    shim.__doc__ = 'Alias installed by gsasr_plugin.compat for basicsr 1.4.2.'
    sys.modules[name] = shim


install_torchvision_shim()
