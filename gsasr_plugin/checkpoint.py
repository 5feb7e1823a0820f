"""Self-describing checkpoints: the weights plus the ``network_g`` options that build the network.

Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {'params': {name: tensor, ...},          # BasicSR's param_key ('params_ema' also accepted on read)
     'network_g': {'type': 'GSASR', ...},    # the options that rebuild the network
     'gsasr_plugin': {'version': '0.1.0', 'source': '...'}}

``basicsr train`` writes its ``net_g_*.pth`` this way (``ResilientTrainingMixin.save_network``, with
``params_ema`` beside ``params`` when EMA is on), as does ``basicsr convert``; :func:`write_checkpoint` /
:func:`save_checkpoint` are the one writer. A BasicSR checkpoint without ``network_g`` (or a bare state dict)
still loads its weights with :func:`load_checkpoint`; building the network then needs the option file
(``-opt``).

:func:`load_weights` is the one loader of weights: the Python API (``gsasr_plugin.api.load_model``),
``basicsr infer --model``, ``basicsr convert --model`` and an option file's ``path: pretrain_network_g``
(``ResilientTrainingMixin.load_network``, i.e. ``basicsr test`` / ``train``) all go through it. It reads a
released model (``official:<name>``), the official files of a released model (a folder holding them, or
their paths joined by commas), or one checkpoint file (ours, self-describing or BasicSR's, a bare state
dict, or a released model's single official file). It knows no method: released models come from
:mod:`gsasr_plugin.official.hub`, each with its own converter. :func:`build_with_weights` builds the network and
loads the weights strictly; :func:`load_into` is the one way weights go into a built network (checked by
:func:`check_fit`: names and shapes, one-line errors, the loud non-strict warning).
"""
import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from gsasr_plugin import compat  # noqa: F401  (must precede basicsr)
from basicsr.archs import build_network

from gsasr_plugin.official import hub
from gsasr_plugin.utils.atomic_io import atomic_save
from gsasr_plugin.utils.memory import available_memory
from gsasr_plugin.utils.safe_load import (NonFiniteWeightsError, TorchFileError, check_finite_weights,
                                          compare_state_dicts, describe_fit, foreign_file_kind, load_torch_file)
from gsasr_plugin.version import __version__

__all__ = ['Checkpoint', 'MissingNetworkOptions', 'NetworkTooLargeError', 'network_bytes', 'check_network_memory',
           'save_checkpoint', 'write_checkpoint', 'load_checkpoint', 'network_options_of', 'portable_network_options',
           'load_weights', 'describe_weights', 'is_released_weights', 'network_options_for', 'build_with_weights',
           'load_into', 'check_fit', 'check_weights_fit', 'META_KEY',
           'NETWORK_KEY', 'LOAD_TIME_KEYS', 'WEIGHT_KEYS']

META_KEY = 'gsasr_plugin'
NETWORK_KEY = 'network_g'
# Where BasicSR (and SwinIR, HAT, ...) keep the weights in a checkpoint, in order of preference.
WEIGHT_KEYS = ('params_ema', 'params')


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


def load_checkpoint(path: str, param_key: Optional[Union[str, Sequence[str]]] = None, what: str = 'checkpoint',
                    keys: Sequence[str] = WEIGHT_KEYS, finite: bool = True) -> Checkpoint:
    """Read a checkpoint: ours (weights + ``network_g``), a BasicSR one (``params_ema`` preferred, then
    ``params``) or a bare state dict. The one reader of checkpoint files: weights-only
    (:func:`gsasr_plugin.utils.safe_load.load_torch_file`: a file cannot run code), one-line errors, and
    weights holding NaN/inf refused.

    Args:
        path: the file.
        param_key: the entry to read, or entries in order of preference (BasicSR's ``load_network`` reads
            ``(param_key_g, 'params')``); a named entry must exist (no bare state dict then). Default:
            ``params_ema``, then ``params``, then the file as a bare state dict.
        what: how messages call the file ("checkpoint", "model file", ...).
        keys: the entries tried without ``param_key`` (other code bases' checkpoints: ``state_dict``, ``model``).
        finite: refuse NaN/inf weights here (False: the caller checks what it makes of them, e.g. a converter).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        gsasr_plugin.utils.safe_load.TorchFileError: (a ValueError) empty, truncated, not a PyTorch file,
            holding Python objects (refused), an unknown layout (the message lists the keys), non-tensor
            weights.
        gsasr_plugin.utils.safe_load.NonFiniteWeightsError: (a TorchFileError) weights holding NaN/inf.
    """
    path = os.fspath(path)
    loaded = load_torch_file(path, what)
    if not isinstance(loaded, Mapping):
        raise TorchFileError(f'{what} {path}: unknown layout (a {type(loaded).__name__}, expected a dict)')
    named = [param_key] if isinstance(param_key, str) else list(dict.fromkeys(k for k in param_key or () if k))
    keys = named or list(keys)
    used = next((key for key in keys if isinstance(loaded.get(key), Mapping)), None)
    if used is not None:
        state = loaded[used]
    else:
        if named or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            found = ', '.join(map(str, list(loaded)[:8])) + (' ...' if len(loaded) > 8 else '')
            wanted = (' or '.join(f"'{k}'" for k in named) if named
                      else ', '.join(f"'{k}'" for k in keys) + ' or a bare state dict')
            asked = f' (asked for by param_key {wanted})' if named else ''
            raise TorchFileError(f'{what} {path}: unknown layout, no weights under {wanted}; keys found: [{found}]'
                                 + asked)
        state = loaded
    odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise TorchFileError(f"{what} {path}: '{used or 'state dict'}' holds non-tensor entries ({odd!r}, ...)")
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    if finite:
        check_finite_weights(state, path, what)  # NaN weights: say so here, not "bad image" for every input later
    meta = loaded.get(META_KEY) if used is not None else None
    return Checkpoint(state_dict=state, network_g=network_options_of(loaded) if used is not None else None,
                      meta=dict(meta) if isinstance(meta, Mapping) else {}, param_key=used, path=str(path))


def write_checkpoint(path: str, weights: Mapping[str, Mapping[str, torch.Tensor]], network_g: Mapping[str, Any],
                     source: Optional[str] = None) -> None:
    """Write several weight sets (``{'params': ..., 'params_ema': ...}``) and the options that build them
    to ``path`` atomically (:func:`gsasr_plugin.utils.atomic_io.atomic_save`: a temporary file, fsynced and
    renamed). See :func:`save_checkpoint` for the arguments.

    Raises:
        gsasr_plugin.utils.atomic_io.WriteError: naming ``path`` and the reason (disk full, read-only, ...);
            a previous file of that name is unchanged.
    """
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


# ------------------------------------------------------------------------------------- reading weights
def is_released_weights(spec: Any) -> bool:
    """Whether ``spec`` names released weights rather than one checkpoint file: ``official:<name>``, a folder,
    or several files joined by commas."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    text = str(spec)
    return text.startswith(hub.OFFICIAL_PREFIX) or ',' in text or Path(text).expanduser().is_dir()


def _candidates(count: int, method: Optional[str]):
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
    """The files of a released model in ``folder``, found by the released models' file names, or by the names
    their authors' training code saves them under (``ReleasedModel.training_outputs``)."""
    names = []
    for model in _candidates_all(method):
        wanted = [folder / Path(f).name for f in model.files]
        if not all(p.is_file() for p in wanted):
            wanted = _training_output_files(folder, model.training_outputs)
        if wanted and wanted not in names:
            names.append(wanted)
    if not names:
        expected = sorted({' + '.join(Path(f).name for f in m.files) for m in _candidates_all(method)} |
                          {' + '.join(f'{prefix}_<iter>.pth' for prefix in m.training_outputs)
                           for m in _candidates_all(method) if m.training_outputs})
        raise FileNotFoundError(f'{folder}: holds none of the released models\' files '
                                f'(expected {", or ".join(expected) or "a registered model"})')
    return max(names, key=len)


def _training_output_files(folder: Path, prefixes: Sequence[str]) -> Optional[List[Path]]:
    """``<prefix>_<iter>.pth`` for every prefix at one iteration, as BasicSR names saved networks: ``latest`` if
    all have it, else the highest iteration all have; or ``<prefix>.pth`` each. None when the folder holds
    neither set."""
    if not prefixes:
        return None
    common = None
    for prefix in prefixes:
        pattern = re.compile(rf'{re.escape(prefix)}_(\d+|latest)\.pth')
        found = {match.group(1) for match in (pattern.fullmatch(p.name) for p in folder.iterdir()) if match}
        common = found if common is None else common & found
    if common:
        tag = 'latest' if 'latest' in common else max(common, key=int)
        return [folder / f'{prefix}_{tag}.pth' for prefix in prefixes]
    plain = [folder / f'{prefix}.pth' for prefix in prefixes]
    return plain if all(p.is_file() for p in plain) else None


def _candidates_all(method: Optional[str]):
    return [m for m in hub.released_models().values() if method is None or m.method == method]


def describe_weights(spec: Any) -> str:
    """How errors name ``spec``: ``released model official:<name>``, ``checkpoint <file>`` or ``weights <...>``
    (a folder of official files, files joined by commas)."""
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else str(spec)
    if text.startswith(hub.OFFICIAL_PREFIX):
        return f'released model {text}'
    return f'weights {text}' if is_released_weights(text) else f'checkpoint {text}'


def load_weights(spec: Union[str, os.PathLike], network_g: Optional[Mapping[str, Any]] = None,
                 param_key: Optional[Union[str, Sequence[str]]] = None, offline: Optional[bool] = None) -> Checkpoint:
    """Weights, and the options that build them when known, from what a user may name.

    Args:
        spec: ``official:<name>`` (downloaded into huggingface_hub's cache, see :mod:`gsasr_plugin.official.hub`);
            a folder holding a released model's official files (e.g. ``encoder.pth`` and ``decoder.pth``);
            those files' paths joined by commas, in the released model's order; or one file: our
            checkpoint (self-describing, as ``basicsr train`` and ``basicsr convert`` write it, or
            BasicSR's ``params_ema`` / ``params``, or a bare state dict) or a released model's single
            official file.
        network_g: the options the caller will build (e.g. from ``-opt``): they win over the ones the weights
            come with, and their ``type`` restricts which released models' converters are tried.
        param_key: the entry of a checkpoint file to read, or entries in order of preference
            (:func:`load_checkpoint`; default ``params_ema``, then ``params``, then a bare state dict).
        offline: passed to :func:`gsasr_plugin.official.hub.fetch_files` for ``official:`` names.

    Returns:
        A :class:`Checkpoint` whose ``network_g`` is ``network_g`` or else the one the weights come with
        (None when neither exists); ``meta['source']`` says what was read, ``meta['released_model']``
        the released model's name when there is one, ``meta['origin']`` the ``source`` a checkpoint of ours
        recorded about itself.

    Raises:
        FileNotFoundError: a named file or folder does not exist.
        ValueError: unknown released name, an unreadable checkpoint, or files that no converter takes (the
            message says why).
        gsasr_plugin.official.hub.WeightsUnavailableError: an ``official:`` model's files cannot be had offline.
    """
    method = network_g.get('type') if isinstance(network_g, Mapping) else None
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else str(spec)
    options = copy.deepcopy(dict(network_g)) if isinstance(network_g, Mapping) else None
    if text.startswith(hub.OFFICIAL_PREFIX):
        model = hub.released_model(text)
        if method is not None and method != model.method:
            raise ValueError(f'{text} is a {model.method} model but network_g builds a {method}')
        paths = hub.fetch_files(model, offline=offline)
        return _finite(Checkpoint(model.convert(paths), options or copy.deepcopy(dict(model.network_g)),
                                  {'source': f'{text} ({model.hub_repo}: {", ".join(model.files)})',
                                   'released_model': model.name}), text)
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
    return _finite(Checkpoint(state, options or copy.deepcopy(dict(model.network_g)),
                              {'source': ', '.join(str(p) for p in paths) + f' (official files of {model.name})',
                               'released_model': model.name}), text)


def _finite(weights: Checkpoint, what: str) -> Checkpoint:
    """``weights``, after refusing NaN/inf in converted official weights (checkpoints are checked when read)."""
    check_finite_weights(weights.state_dict, what, 'weights')
    return weights


def _load_file(path: Path, options: Optional[Dict[str, Any]], method: Optional[str],
               param_key: Optional[Union[str, Sequence[str]]]) -> Checkpoint:
    """One file: ours (:func:`load_checkpoint`), or, when it carries no ``network_g``, first tried as a
    released model's single official file (whose own layout may look like a state dict)."""
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {path}: no such file')
    try:
        checkpoint, unreadable = load_checkpoint(str(path), param_key), None
    except NonFiniteWeightsError:
        raise  # readable, but diverged: no converter would do better
    except ValueError as error:
        checkpoint, unreadable = None, error
    foreign = checkpoint is None and foreign_file_kind(str(path)) is not None  # an image, an option file
    if (checkpoint is None or checkpoint.network_g is None) and _candidates(1, method) and not foreign:
        try:  # a released model's single official file?
            model, state = _convert_released([path], method, str(path))
            return _finite(Checkpoint(state, options or copy.deepcopy(dict(model.network_g)),
                                      {'source': f'{path} (official file of {model.name})',
                                       'released_model': model.name}, path=str(path)), str(path))
        except ValueError as error:
            if unreadable is not None:  # neither ours nor a released model's: say both
                reason = str(error).split(': ', 1)[-1]
                raise ValueError(f'{unreadable}; {reason}'[:1500]) from None
    if unreadable is not None:
        raise unreadable
    checkpoint.network_g = options or checkpoint.network_g
    origin = checkpoint.meta.get('source')  # what the file says about itself (e.g. 'basicsr train NAME, iter N')
    checkpoint.meta = dict(checkpoint.meta, source=str(path), **({'origin': origin} if origin else {}))
    return checkpoint


def network_options_for(spec: Union[str, os.PathLike],
                        param_key: Optional[Union[str, Sequence[str]]] = None) -> Optional[Dict[str, Any]]:
    """The ``network_g`` options that weights named by ``spec`` (as :func:`load_weights` takes it) come with:
    a released model's (``official:<name>`` without reading its files), the ones converted official files
    reproduce, or those a self-describing checkpoint carries; None for weights that do not say (a BasicSR
    checkpoint, a bare state dict).

    Raises:
        as :func:`load_weights`.
    """
    text = os.fspath(spec) if isinstance(spec, os.PathLike) else str(spec)
    if text.startswith(hub.OFFICIAL_PREFIX):
        return copy.deepcopy(dict(hub.released_model(text).network_g))
    options = load_weights(text, None, param_key).network_g
    return copy.deepcopy(dict(options)) if options else None


class MissingNetworkOptions(ValueError):
    """Weights that do not say which network they hold (a BasicSR checkpoint, a bare state dict), loaded
    without an option file."""


def build_with_weights(weights: Checkpoint, what: str = 'the weights', where: Optional[str] = None) -> torch.nn.Module:
    """Build ``weights.network_g`` and load the weights strictly (:func:`load_into`).

    Args:
        weights: what :func:`load_weights` returned.
        what: how errors name the weights (:func:`describe_weights`).
        where: how errors name the options (the option file), when they do not come with the weights.

    Raises:
        MissingNetworkOptions: no ``network_g`` (one line saying to pass the option file).
        ValueError: weights that do not fit the network (one line naming ``what``, the first keys and shapes).
    """
    if not weights.network_g:
        raise MissingNetworkOptions(
            f'{what} does not say which network it holds (no network_g options come with it: written by BasicSR, '
            "by another program or by an older version); pass the option file it was trained with (-opt OPTIONS.yml "
            "on the command line, load_model(..., opt='OPTIONS.yml') in Python)")
    label = f'network_g of {where}' if where else f'the network_g of {what}'
    try:  # the size first, on the meta device (no memory, no time): a network too large is refused unbuilt
        with torch.device('meta'):
            planned = build_network(copy.deepcopy(dict(weights.network_g)))
    except Exception:  # noqa: BLE001  (the meta device is an optimisation: the real build decides)
        planned = None
    if planned is not None:
        check_network_memory(planned, label)
    network = build_network(copy.deepcopy(dict(weights.network_g)))
    load_into(network, weights, what, network_label=f'network_g of {where}' if where else 'network_g')
    return network


class NetworkTooLargeError(ValueError):
    """A network's parameters would not fit in the memory free here."""


def network_bytes(network: torch.nn.Module) -> int:
    """Bytes of a (built, or meta) network's parameters and buffers."""
    tensors = list(network.parameters()) + list(network.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def check_network_memory(network: torch.nn.Module, what: str, copies: float = 1.0,
                         free: Optional[int] = None) -> None:
    """Raise :class:`NetworkTooLargeError` naming ``what`` when ``copies`` times ``network``'s parameters and
    buffers (a meta network is enough) exceed the free memory (``free`` bytes, default the host's available
    memory): before the allocator is asked for them.

    ``copies``: the parameter-sized tensors a use needs (1 to build; training also holds gradients and
    Adam's two moments).
    """
    needed = network_bytes(network) * copies
    free = available_memory(torch.device('cpu')) if free is None else free
    if needed > free:
        count = sum(p.numel() for p in network.parameters())
        raise NetworkTooLargeError(
            f'{what} is a {type(network).__name__} of {count:,} parameters: it needs {needed / 2**30:,.1f} GiB '
            f'of memory{" to train" if copies > 1 else ""}, more than the {free / 2**30:,.1f} GiB free here; check '
            'its options (embed_dim, num_feat, ...)')


def load_into(network: torch.nn.Module, weights: Union[Checkpoint, Mapping[str, torch.Tensor]], what: str,
              strict: bool = True, network_label: str = 'network_g', strict_option: bool = False) -> Optional[str]:
    """Load ``weights`` (a :class:`Checkpoint` or a state dict) into ``network``: the one way weights go into a
    built network (``load_model``, ``basicsr infer`` / ``convert``, ``pretrain_network_g``).

    The fit is checked first (:func:`check_fit`): weights that must fit and do not are a one-line error; with
    ``strict`` False the tensors that fit are loaded and the loud warning is returned.

    Args:
        strict_option: the caller's strictness is the option ``strict_load_<label>`` (``basicsr train/test``),
            which the error then mentions.

    Returns:
        None for an exact fit, else (non-strict) the warning saying how many tensors keep their initial values.
    """
    if not isinstance(weights, Checkpoint):
        weights = Checkpoint(dict(weights))
    warning = check_fit(network, weights, what, strict, network_label, strict_option)
    own = network.state_dict()
    fitting = {k: v for k, v in weights.state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    network.load_state_dict(fitting, strict=warning is None)
    return warning


def check_fit(network: torch.nn.Module, weights: Checkpoint, what: str, strict: bool = True,
              network_label: str = 'network_g', strict_option: bool = True) -> Optional[str]:
    """Compare the names and shapes of ``weights`` with ``network``'s (which may live on the meta device).

    Released weights (``weights.meta['released_model']``) must always fit exactly; a checkpoint must with
    ``strict`` (BasicSR's ``strict_load_g``, named in the error when ``strict_option``).

    Returns:
        None for an exact fit; otherwise (non-strict) the loud warning saying how many tensors keep their
        initial values.

    Raises:
        ValueError: one line naming ``what``, ``network_label`` and the first offending tensor, for weights
            that must fit and do not.
    """
    released = weights.meta.get('released_model') is not None
    fit = compare_state_dicts(network.state_dict(), weights.state_dict)
    return describe_fit(fit, what, type(network).__name__, network_label, strict or released,
                        strict_hint=strict_option and not released)


def check_weights_fit(network: torch.nn.Module, spec: Union[str, os.PathLike],
                      network_g: Optional[Mapping[str, Any]] = None,
                      param_key: Optional[Union[str, Sequence[str]]] = None, strict: bool = True,
                      network_label: str = 'network_g') -> Optional[str]:
    """Read ``spec`` with :func:`load_weights` (safely, NaN/inf refused) and :func:`check_fit` it to
    ``network``; what ``basicsr train/test`` run on ``path: pretrain_network_g`` before anything is created.

    Raises:
        FileNotFoundError, ValueError, gsasr_plugin.official.hub.WeightsUnavailableError: as :func:`load_weights`, and
        ValueError when weights that must fit do not.
    """
    weights = load_weights(spec, network_g, param_key)
    return check_fit(network, weights, describe_weights(spec), strict, network_label)
