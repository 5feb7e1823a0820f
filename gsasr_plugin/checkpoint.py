"""Self-describing checkpoints: the weights plus the ``network_g`` options that build the network.

Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {'params': {name: tensor, ...},          # BasicSR's param_key ('params_ema' also accepted on read)
     'network_g': {'type': 'GSASR', ...},    # the options that rebuild the network
     'gsasr_plugin': {'version': '0.1.0', 'source': '...'}}

``basicsr train`` writes its ``net_g_*.pth`` this way (``ArbitraryScaleSRModel.save_network``, with
``params_ema`` beside ``params`` when EMA is on), as does the converter of official weights. A BasicSR
checkpoint without ``network_g`` (or a bare state dict) still loads its weights with :func:`load_checkpoint`;
building the network then needs the option file (``-opt``).
"""
import copy
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch

__all__ = ['Checkpoint', 'save_checkpoint', 'write_checkpoint', 'load_checkpoint', 'network_options_of',
           'portable_network_options', 'META_KEY', 'NETWORK_KEY', 'LOAD_TIME_KEYS']

META_KEY = 'gsasr_plugin'
NETWORK_KEY = 'network_g'


# Keys of nested options (``encoder: {type, pretrained, strict, param_key}``) that load other files when the
# network is built; the checkpoint's weights already hold what they loaded.
LOAD_TIME_KEYS = ('pretrained', 'strict', 'param_key')


@dataclass
class Checkpoint:
    """Weights and, when the file carries them, the options that build the network.

    Attributes:
        state_dict: the weights (``module.`` prefixes dropped).
        network_g: the ``network_g`` options, or None for a checkpoint that does not carry them.
        meta: what the file says about itself (``version`` of the plugin that wrote it, ``source``).
        param_key: the key the weights were read from (None for a bare state dict).
        path: the file.
    """
    state_dict: Dict[str, torch.Tensor]
    network_g: Optional[Dict[str, Any]] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    param_key: Optional[str] = None
    path: Optional[str] = None


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


def portable_network_options(network_g: Mapping[str, Any]) -> Dict[str, Any]:
    """``network_g`` as plain data without the nested keys that load other files (:data:`LOAD_TIME_KEYS`).

    An encoder's ``pretrained: PATH`` initialised training; the checkpoint's weights hold the result, and
    the path rarely exists where the checkpoint is used.
    """

    def strip(value: Any, nested: bool) -> Any:
        if isinstance(value, Mapping):
            return {k: strip(v, True) for k, v in value.items() if not (nested and k in LOAD_TIME_KEYS)}
        if isinstance(value, (list, tuple)):
            return [strip(v, nested) for v in value]
        return value

    return strip(_plain(network_g), False)


def load_checkpoint(path: str, param_key: Optional[str] = None) -> Checkpoint:
    """Read a checkpoint: ours (weights + ``network_g``), a BasicSR one (``params_ema`` preferred, then
    ``params``; ``param_key`` picks one) or a bare state dict.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a PyTorch checkpoint or its layout is unknown (the message lists the keys).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path}: no such file')
    try:
        loaded = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:
        raise ValueError(f'checkpoint {path}: not a PyTorch checkpoint ({type(error).__name__}: '
                         f'{str(error).splitlines()[0] if str(error) else ""})') from None
    if not isinstance(loaded, Mapping):
        raise ValueError(f'checkpoint {path}: unknown layout (a {type(loaded).__name__}, expected a dict)')
    keys = [param_key] if param_key else ['params_ema', 'params']
    used = next((key for key in keys if isinstance(loaded.get(key), Mapping)), None)
    if used is not None:
        state = loaded[used]
    else:
        if param_key or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            found = ', '.join(map(str, list(loaded)[:8])) + (' ...' if len(loaded) > 8 else '')
            wanted = f"'{param_key}'" if param_key else "'params_ema', 'params' or a bare state dict"
            raise ValueError(f'checkpoint {path}: unknown layout, expected {wanted}; keys found: [{found}]')
        state = loaded
    meta = loaded.get(META_KEY) if used is not None else None
    return Checkpoint(state_dict={(k[7:] if k.startswith('module.') else k): v for k, v in state.items()},
                      network_g=network_options_of(loaded) if used is not None else None,
                      meta=dict(meta) if isinstance(meta, Mapping) else {}, param_key=used, path=str(path))


def write_checkpoint(path: str, weights: Mapping[str, Mapping[str, torch.Tensor]], network_g: Mapping[str, Any],
                     source: Optional[str] = None) -> None:
    """Write several weight sets (``{'params': ..., 'params_ema': ...}``) and the options that build them
    to ``path`` atomically (a temporary file renamed). See :func:`save_checkpoint` for the arguments."""
    from gsasr_plugin import __version__
    from gsasr_plugin.utils.resume import atomic_save
    if not isinstance(network_g, Mapping) or 'type' not in network_g:
        raise ValueError(f"network_g for {path} must be a dict with a 'type', got {network_g!r}")
    content: Dict[str, Any] = {}
    for param_key, state_dict in weights.items():
        content[param_key] = {(k[7:] if k.startswith('module.') else k): v.detach().cpu()
                              for k, v in state_dict.items()}
    meta = {'version': __version__}
    if source:
        meta['source'] = source
    content[NETWORK_KEY] = portable_network_options(network_g)
    content[META_KEY] = meta
    atomic_save(content, path)


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
    write_checkpoint(path, {param_key: state_dict}, network_g, source)
