"""What ``basicsr train`` / ``basicsr test`` add around BasicSR's pipelines (installed per run, undone after).

* every run: :func:`gsasr_plugin.utils.dist.init_dist` for ``--launcher pytorch|slurm`` (gloo on the CPU);
* training: the resumable sampler and data-position bookkeeping (:mod:`gsasr_plugin.utils.resume`) and
  stop-and-save on SIGTERM/SIGINT (:mod:`gsasr_plugin.utils.preemption`).
"""
from typing import Any, Dict

__all__ = ['install', 'uninstall']


def install(command: str, opt: Dict[str, Any]) -> None:
    """Patch BasicSR for one ``basicsr <command>`` run with options ``opt`` (the parsed YAML)."""
    from gsasr_plugin.utils import dist, preemption, resume
    dist.install(opt.get('num_gpu'))
    if command == 'train':
        resume.install()
        preemption.install()


def uninstall() -> None:
    """Restore the signal handlers and leave the process group (if this run made one)."""
    import torch.distributed as torch_dist

    from gsasr_plugin.utils import preemption
    preemption.restore_handlers()
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
