"""Makes basicsr 1.4.2 work on current torch/torchvision and on CPU-only machines.

Imported by ``gsasr_plugin/__init__.py`` before anything imports basicsr. Two fixes, both idempotent:

1. basicsr imports ``torchvision.transforms.functional_tensor``, which torchvision removed in 0.17;
   we alias that module name to ``torchvision.transforms.functional`` (which has ``rgb_to_grayscale``).
2. ``basicsr.train.load_resume_state`` maps the resume state onto ``torch.cuda.current_device()`` even
   with ``num_gpu: 0``; we load it onto the CPU when CUDA is unavailable (BasicSR's model code moves
   tensors to its own device afterwards).
"""
import sys
import types

import torch

__all__ = ['install_torchvision_shim', 'patch_cpu_resume']


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
    """``basicsr.train.load_resume_state`` that also works without CUDA."""
    import basicsr.train as basicsr_train
    from basicsr.utils import check_resume

    resume_state_path = None
    if opt['auto_resume']:
        import os.path as osp
        state_path = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_path):
            states = list(basicsr_train.scandir(state_path, suffix='state', recursive=False, full_path=False))
            if states:
                latest = max(float(v.split('.state')[0]) for v in states)
                resume_state_path = osp.join(state_path, f'{latest:.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    if torch.cuda.is_available() and opt.get('num_gpu', 0) != 0:
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
    else:
        map_location = 'cpu'
    resume_state = torch.load(resume_state_path, map_location=map_location, weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state


def patch_cpu_resume() -> None:
    """Replace ``basicsr.train.load_resume_state`` with :func:`_load_resume_state_any_device`."""
    import basicsr.train as basicsr_train
    basicsr_train.load_resume_state = _load_resume_state_any_device


install_torchvision_shim()
patch_cpu_resume()
