"""torch.distributed set-up for ``basicsr train/test --launcher pytorch|slurm`` on GPUs and on the CPU.

BasicSR 1.4.2's ``init_dist`` always uses NCCL and calls ``torch.cuda.set_device``, so a CPU-only run
(or ``num_gpu: 0``) cannot start. :func:`init_dist` picks NCCL when the run uses CUDA and gloo otherwise,
sets the CUDA device only with CUDA, and reads the launcher's environment:

* ``pytorch`` (torchrun): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``.
* ``slurm`` (``srun``): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NODELIST`` -> the same
  variables (first node of the allocation as master, ``MASTER_PORT`` or ``dist_params: {port: ...}`` or 29500),
  as BasicSR does.

:func:`install` replaces ``basicsr.utils.options.init_dist`` so BasicSR's ``parse_options`` uses it.
"""
import os
import subprocess
from functools import partial
from typing import Any, Optional

import torch
import torch.distributed as dist

__all__ = ['choose_backend', 'init_dist', 'install', 'replica_checksums', 'is_dist', 'all_reduce_max']

_DEFAULT_PORT = '29500'


def choose_backend(num_gpu: Any = None) -> str:
    """``'nccl'`` when CUDA is usable and the options do not ask for the CPU (``num_gpu: 0``), else ``'gloo'``."""
    if num_gpu == 0 or not torch.cuda.is_available() or not dist.is_nccl_available():
        return 'gloo'
    return 'nccl'


def _first_slurm_host(node_list: str) -> str:
    """The first host of a Slurm node list (``node[01-04]`` -> ``node01``) from ``scontrol show hostname``.

    The node list is passed as one argument, never through a shell, so its text cannot run commands.
    """
    try:
        result = subprocess.run(['scontrol', 'show', 'hostname', node_list], capture_output=True, text=True,
                                timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return ''
    lines = result.stdout.split()
    return lines[0].strip() if result.returncode == 0 and lines else ''


def _slurm_env(port: Optional[int]) -> None:
    """Turn SLURM's variables into torch.distributed's (env:// rendezvous)."""
    proc_id = int(os.environ['SLURM_PROCID'])
    first_host = _first_slurm_host(os.environ['SLURM_NODELIST'])
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', _DEFAULT_PORT)
    os.environ['MASTER_ADDR'] = first_host or 'localhost'
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = str(proc_id)
    if 'SLURM_LOCALID' in os.environ:
        os.environ['LOCAL_RANK'] = os.environ['SLURM_LOCALID']
    elif torch.cuda.is_available():
        os.environ['LOCAL_RANK'] = str(proc_id % torch.cuda.device_count())
    else:
        os.environ['LOCAL_RANK'] = '0'


def init_dist(launcher: str, backend: Optional[str] = None, num_gpu: Any = None, port: Optional[int] = None,
              **kwargs: Any) -> None:
    """Initialise the default process group for ``launcher`` (``'pytorch'`` or ``'slurm'``).

    Args:
        launcher: ``'pytorch'`` (torchrun sets the environment) or ``'slurm'``.
        backend: ``'nccl'`` or ``'gloo'``; None (or BasicSR's hard-coded ``'nccl'`` without CUDA) picks
            with :func:`choose_backend`.
        num_gpu: the options' ``num_gpu``; 0 forces the CPU (gloo).
        port: master port for slurm (BasicSR's ``dist_params: {port: ...}``).
        **kwargs: passed to ``torch.distributed.init_process_group``.
    """
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f"--launcher must be 'pytorch' or 'slurm' for distributed runs, got {launcher!r}")
    if dist.is_initialized():
        return
    if backend is None or (backend == 'nccl' and choose_backend(num_gpu) == 'gloo'):
        backend = choose_backend(num_gpu)
    if launcher == 'slurm':
        _slurm_env(port)
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ValueError(f"--launcher {launcher}: environment variable(s) {', '.join(missing)} not set; start the "
                         'run with torchrun (see the README: Multi-GPU, multi-node and resuming)')
    if backend == 'nccl':
        # modulo: with one visible GPU per task (srun --gpus-per-task=1) every task uses its device 0
        local_rank = int(os.environ.get('LOCAL_RANK', os.environ['RANK']))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, **kwargs)


def install(num_gpu: Any = None) -> None:
    """Make BasicSR's ``parse_options`` call :func:`init_dist` (with the run's ``num_gpu``)."""
    import basicsr.utils.options as basicsr_options
    basicsr_options.init_dist = partial(init_dist, num_gpu=num_gpu)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise max over all ranks (a no-op without a process group); ``values`` is changed in place."""
    if is_dist():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


@torch.no_grad()
def replica_checksums(module: torch.nn.Module) -> list:
    """Every rank's float64 sum of ``module``'s parameters (one all_gather); ``[own]`` without a group."""
    params = [p.detach().double() for p in module.parameters()]
    device = params[0].device if params else torch.device('cpu')
    own = torch.stack([torch.stack([p.sum() for p in params]).sum(),
                       torch.stack([p.abs().sum() for p in params]).sum()]) if params else torch.zeros(2)
    own = own.to(device)
    if not is_dist():
        return [own.tolist()]
    gathered = [torch.zeros_like(own) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, own)
    return [g.tolist() for g in gathered]
