"""Makes basicsr 1.4.2 work on current torch/torchvision and on CPU-only machines, and load files safely.

Imported by ``gsasr_plugin/__init__.py`` before anything imports basicsr. The fixes are idempotent:

1. basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision removed in 0.17;
   we alias that module name to ``torchvision.transforms.functional`` (which has ``rgb_to_grayscale``).
2. ``basicsr.train.load_resume_state`` maps the resume state onto ``torch.cuda.current_device()`` even
   with ``num_gpu: 0`` and unpickles it with ``weights_only=False`` (a hostile ``.state`` file runs code);
   ours loads weights-only, onto the CPU when CUDA is unavailable, and with ``--auto_resume`` falls back
   from a damaged newest state to the newest complete one (``gsasr_plugin.utils.resume.choose_resume_state``).
3. ``basicsr.utils.options.parse_options`` reads option files with a loader that builds Python objects
   (``!!python/object/apply:os.system``) and ``eval``s ``--force_yml`` values; ours reads them with
   ``gsasr_plugin.utils.options.OrderedSafeLoader`` (same ``OrderedDict`` results) and parses values as YAML.
"""
import sys
import types

import torch

__all__ = ['install_torchvision_shim', 'patch_cpu_resume', 'patch_safe_options']


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


def _load_resume_state_any_device(opt):
    """``basicsr.train.load_resume_state``: safe, on any device, falling back past damaged states."""
    from basicsr.utils import check_resume

    from gsasr_plugin.utils.resume import choose_resume_state
    if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
    else:
        map_location = 'cpu'
    resume_state = choose_resume_state(opt, map_location)
    if resume_state is not None:
        check_resume(opt, resume_state['iter'])
    return resume_state


def patch_cpu_resume() -> None:
    """Replace ``basicsr.train.load_resume_state`` with :func:`_load_resume_state_any_device`."""
    import basicsr.train as basicsr_train
    basicsr_train.load_resume_state = _load_resume_state_any_device


def _safe_ordered_yaml():
    """``basicsr.utils.options.ordered_yaml`` with a loader that builds no Python objects."""
    from gsasr_plugin.utils.options import OrderedSafeLoader
    return OrderedSafeLoader, _basicsr_ordered_yaml()[1]  # BasicSR's dumper: writing builds nothing


_basicsr_ordered_yaml = None


def patch_safe_options() -> None:
    """Make BasicSR's ``parse_options`` read option files safely and parse ``--force_yml`` values as YAML."""
    global _basicsr_ordered_yaml
    import basicsr.utils.options as basicsr_options

    from gsasr_plugin.utils.options import parse_override_value
    if basicsr_options.ordered_yaml is not _safe_ordered_yaml:
        _basicsr_ordered_yaml = basicsr_options.ordered_yaml
        basicsr_options.ordered_yaml = _safe_ordered_yaml
    basicsr_options._postprocess_yml_value = parse_override_value


install_torchvision_shim()
patch_cpu_resume()
patch_safe_options()
