"""Self-describing checkpoints: the weights plus the ``network_g`` options that build the network.

Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {'params': {name: tensor, ...},          # BasicSR's param_key ('params_ema' also accepted on read)
     'network_g': {'type': 'GSASR', ...},    # the options that rebuild the network
     'gsasr_plugin': {'version': '0.1.0', 'source': '...'}}

A BasicSR checkpoint without ``network_g`` still loads its weights; building the network then needs the
option file (``-opt``).

:func:`load_weights` reads whatever ``basicsr infer --model``, ``basicsr convert --model`` and an option
file's ``path: pretrain_network_g`` may name: a released model (``official:<name>``), the official files
of a released model (a folder holding them, or their paths joined by commas), or one checkpoint file
(ours, self-describing or BasicSR's, or a released model's single official file). It knows no method:
released models come from :mod:`gsasr_plugin.hub`, each with its own converter.
"""
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch

__all__ = ['Checkpoint', 'save_checkpoint', 'network_options_of', 'load_weights', 'is_released_weights',
           'build_with_weights', 'load_strict', 'META_KEY', 'NETWORK_KEY']

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


# ------------------------------------------------------------------------------------- reading weights
def is_released_weights(spec: Any) -> bool:
    """Whether ``spec`` names released weights rather than one checkpoint file: ``official:<name>``, a folder,
    or several files joined by commas."""
    from gsasr_plugin.hub import OFFICIAL_PREFIX
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = str(spec)
    return text.startswith(OFFICIAL_PREFIX) or ',' in text or Path(text).expanduser().is_dir()


def _candidates(count: int, method: Optional[str]):
    from gsasr_plugin import hub
    return [m for m in hub.released_models().values()
            if len(m.files) == count and (method is None or m.method == method)]


def _convert_released(paths: List[Path], method: Optional[str], what: str):
    """(released model, state dict) of the first released model whose converter takes ``paths``."""
    candidates = _candidates(len(paths), method)
    reasons = []
    for model in candidates:
        try:
            return model, model.convert(paths)
        except (ValueError, KeyError) as error:
            reasons.append(f'{model.name}: {str(error).splitlines()[0]}')
    kind = f'{method} ' if method else ''
    detail = f" ({'; '.join(reasons)})" if reasons else ''
    raise ValueError(f'{what}: not the files of any released {kind}model{detail}'[:1500])


def _folder_files(folder: Path, method: Optional[str]) -> List[Path]:
    """The files of a released model in ``folder``, found by the released models' file names."""
    names = []
    for model in _candidates_all(method):
        wanted = [folder / Path(f).name for f in model.files]
        if all(p.is_file() for p in wanted) and wanted not in names:
            names.append(wanted)
    if not names:
        expected = sorted({' + '.join(Path(f).name for f in m.files) for m in _candidates_all(method)})
        raise FileNotFoundError(f'{folder}: holds none of the released models\' files '
                                f'(expected {", or ".join(expected) or "a registered model"})')
    return max(names, key=len)


def _candidates_all(method: Optional[str]):
    from gsasr_plugin import hub
    return [m for m in hub.released_models().values() if method is None or m.method == method]


def load_weights(spec: str, network_g: Optional[Mapping[str, Any]] = None, param_key: Optional[str] = None,
                 offline: Optional[bool] = None) -> Checkpoint:
    """Weights, and the options that build them when known, from what a user may name.

    Args:
        spec: ``official:<name>`` (downloaded into huggingface_hub's cache, see :mod:`gsasr_plugin.hub`);
            a folder holding a released model's official files (e.g. ``encoder.pth`` and ``decoder.pth``);
            those files' paths joined by commas, in the released model's order; or one file: our
            checkpoint (self-describing or BasicSR's ``params_ema`` / ``params``, or a bare state dict) or a
            released model's single official file.
        network_g: the options the caller will build (e.g. from ``-opt``): they win over the released
            model's, and their ``type`` restricts which released models' converters are tried.
        param_key: the entry of a checkpoint file to read (default ``params_ema``, then ``params``).
        offline: passed to :func:`gsasr_plugin.hub.fetch_files` for ``official:`` names.

    Returns:
        A :class:`Checkpoint` whose ``network_g`` is ``network_g`` or else the one the weights come with
        (None when neither exists); ``meta['source']`` says what was read, ``meta['released_model']``
        the released model's name when there is one.

    Raises:
        FileNotFoundError: a named file or folder does not exist.
        ValueError: unknown released name, or files that no converter takes (the message says why).
        gsasr_plugin.hub.WeightsUnavailableError: an ``official:`` model's files cannot be had offline.
    """
    from gsasr_plugin import hub
    method = network_g.get('type') if isinstance(network_g, Mapping) else None
    text = str(spec)
    options = copy.deepcopy(dict(network_g)) if isinstance(network_g, Mapping) else None
    if text.startswith(hub.OFFICIAL_PREFIX):
        model = hub.released_model(text)
        if method is not None and method != model.method:
            raise ValueError(f'{text} is a {model.method} model but network_g builds a {method}')
        paths = hub.fetch_files(model, offline=offline)
        return Checkpoint(model.convert(paths), options or copy.deepcopy(dict(model.network_g)),
                          {'source': f'{text} ({model.hub_repo}: {", ".join(model.files)})',
                           'released_model': model.name})
    if ',' in text:
        paths = [Path(p.strip()).expanduser() for p in text.split(',') if p.strip()]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f'weights {path}: no such file')
    elif Path(text).expanduser().is_dir():
        paths = _folder_files(Path(text).expanduser(), method)
    else:
        return _load_file(Path(text).expanduser(), options, method, param_key)
    model, state = _convert_released(paths, method, text)
    return Checkpoint(state, options or copy.deepcopy(dict(model.network_g)),
                      {'source': ', '.join(str(p) for p in paths) + f' (official files of {model.name})',
                       'released_model': model.name})


def _load_file(path: Path, options: Optional[Dict[str, Any]], method: Optional[str],
               param_key: Optional[str]) -> Checkpoint:
    from gsasr_plugin.inference import load_state_dict_from_checkpoint
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path}: no such file')
    try:
        checkpoint = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception:
        checkpoint = None  # reported below by load_state_dict_from_checkpoint
    carried = network_options_of(checkpoint) if isinstance(checkpoint, Mapping) else None
    if carried is None and _candidates(1, method):
        try:  # a released model's single official file?
            model, state = _convert_released([path], method, str(path))
            return Checkpoint(state, options or copy.deepcopy(dict(model.network_g)),
                              {'source': f'{path} (official file of {model.name})', 'released_model': model.name})
        except ValueError:
            pass
    state = load_state_dict_from_checkpoint(str(path), param_key)
    return Checkpoint(state, options or carried, {'source': str(path)})


def build_with_weights(weights: Checkpoint, what: str = 'the weights'):
    """Build ``weights.network_g`` and load the weights strictly (errors name ``what`` and the keys)."""
    from basicsr.archs import build_network

    import gsasr_plugin  # noqa: F401  (registers the architectures)
    if not weights.network_g:
        raise ValueError(f'{what}: no network_g options come with them: give an option file (-opt) that builds '
                         'the network')
    network = build_network(copy.deepcopy(weights.network_g))
    load_strict(network, weights.state_dict, what)
    return network


def load_strict(network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with one-line errors naming ``what``, the first keys and shapes."""
    try:
        missing, unexpected = network.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches: keep the first offending parameter only
        detail = next((line.strip() for line in str(error).splitlines() if 'size mismatch' in line), str(error))
        raise ValueError(f'{what} does not match network_g: {detail}') from None
    if missing or unexpected:
        raise ValueError(f'{what} does not match network_g: {len(missing)} missing keys '
                         f'{list(missing)[:3]}, {len(unexpected)} unexpected {list(unexpected)[:3]}')
