"""Self-describing checkpoints: the weights plus the ``network_g`` options that build the network.

Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {'params': {name: tensor, ...},          # BasicSR's param_key ('params_ema' also accepted on read)
     'network_g': {'type': 'GSASR', ...},    # the options that rebuild the network
     'gsasr_plugin': {'version': '0.1.0', 'source': '...'}}

A BasicSR checkpoint without ``network_g`` still loads its weights; building the network then needs the
option file (``-opt``).
"""
import copy
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch

__all__ = ['Checkpoint', 'save_checkpoint', 'network_options_of', 'META_KEY', 'NETWORK_KEY']

META_KEY = 'gsasr_plugin'
NETWORK_KEY = 'network_g'


@dataclass
class Checkpoint:
    """Weights and, when the file carries them, the options that build the network."""
    state_dict: Dict[str, torch.Tensor]
    network_g: Optional[Dict[str, Any]] = None
    meta: Dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """Options as plain dicts/lists/scalars (OrderedDicts from BasicSR's YAML loader included), so that
    the file loads with ``weights_only=True``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f'network option value {value!r} ({type(value).__name__}) cannot be stored in a checkpoint')


def network_options_of(checkpoint: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``network_g`` options a loaded checkpoint dict carries, or None."""
    options = checkpoint.get(NETWORK_KEY) if isinstance(checkpoint, Mapping) else None
    return copy.deepcopy(dict(options)) if isinstance(options, Mapping) else None


def save_checkpoint(path: str, state_dict: Mapping[str, torch.Tensor], network_g: Mapping[str, Any],
                    param_key: str = 'params', source: Optional[str] = None) -> None:
    """Write weights and the options that build them to ``path`` (atomically: a temporary file renamed).

    Args:
        path: the file to write.
        state_dict: the network's weights (a ``module.`` prefix is dropped).
        network_g: the ``network_g`` options (with ``type``).
        param_key: key the weights are stored under, as BasicSR's ``param_key_g``.
        source: free text saying where the weights come from (e.g. the official files converted).
    """
    from gsasr_plugin import __version__
    from gsasr_plugin.utils.resume import atomic_save
    if not isinstance(network_g, Mapping) or 'type' not in network_g:
        raise ValueError(f"network_g for {path} must be a dict with a 'type', got {network_g!r}")
    state = {(k[7:] if k.startswith('module.') else k): v.detach().cpu() for k, v in state_dict.items()}
    meta = {'version': __version__}
    if source:
        meta['source'] = source
    atomic_save({param_key: state, NETWORK_KEY: _plain(network_g), META_KEY: meta}, path)
