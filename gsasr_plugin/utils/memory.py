"""Free memory on a device: what tiled inference sizes its tiles by and what a network's size is checked against
before it is built (``inference.auto_tile_size``, ``checkpoint.check_network_memory``)."""
import torch

__all__ = ['available_memory']


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (CUDA: free memory; CPU: MemAvailable, or 4 GiB if unknown)."""
    if device.type == 'cuda':
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open('/proc/meminfo', encoding='ascii') as handle:
            for line in handle:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30
