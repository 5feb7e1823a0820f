"""Released (official) models by short name, and fetching their files from the Hugging Face hub.

A released model is named ``official:<name>`` on the command line (``basicsr infer --model
official:gsasr-edsr-paper``). Each method registers its models here with :func:`register` (the method's
own module, imported by ``gsasr_plugin.archs``); :func:`fetch_files` downloads the files into
huggingface_hub's usual cache (``HF_HUB_CACHE``, ``HF_HOME``; default ``~/.cache/huggingface/hub``) when the
machine is online, and otherwise raises :class:`WeightsUnavailableError` within seconds (one probe of the hub, no
retries), with one line that names the files, the hub repository, the hub's reason whole, the cache folder in
use and two ways to get the files here (``hf download ... --local-dir`` and a folder passed to ``-m``, or the
cache copied).
"""
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ['ReleasedModel', 'WeightsUnavailableError', 'register', 'released_model', 'released_models',
           'fetch_files', 'OFFICIAL_PREFIX']

OFFICIAL_PREFIX = 'official:'


class WeightsUnavailableError(RuntimeError):
    """The files of a released model are neither in the local cache nor downloadable; the message is one
    line that says what to fetch and where to put it."""


@dataclass(frozen=True)
class ReleasedModel:
    """A trained model published by a method's authors.

    Args:
        name: short name used after ``official:`` (lower case, e.g. ``gsasr-edsr-paper``).
        method: the architecture it loads into (``GSASR``, ``GaussianSR``, ``ContinuousSR``).
        hub_repo: Hugging Face repository id, e.g. ``mutou0308/GSASR``; empty for a model published elsewhere
            (``source``), whose files are given by path (the short name then says where to get them).
        files: paths of the files inside the repository, in the order the converter takes them.
        network_g: our ``network_g`` options that reproduce the official network.
        convert: ``convert(paths) -> state_dict`` turning the official files into our state dict.
        description: one line for listings and the README.
        extra: anything else the method needs at inference (padding multiple, rasterizer mode, ...).
        source: where the files are published when they are not on the Hugging Face hub (a URL).
        training_outputs: the names the authors' own training code saves the same files under, in ``files``
            order, as BasicSR prefixes (e.g. ``('net_g', 'net_fea2gs')``: ``net_g_<iter>.pth`` +
            ``net_fea2gs_<iter>.pth`` in ``experiments/<name>/models``, or ``net_g.pth`` + ``net_fea2gs.pth``):
            a folder of them is read as this model's files (``checkpoint.load_weights``).
    """
    name: str
    method: str
    hub_repo: str
    files: Tuple[str, ...]
    network_g: Mapping[str, Any]
    convert: Callable[[List[Path]], Dict[str, Any]]
    description: str = ''
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: str = ''
    training_outputs: Tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f'https://huggingface.co/{self.hub_repo}' if self.hub_repo else self.source


_REGISTRY: Dict[str, ReleasedModel] = {}


def register(model: ReleasedModel) -> ReleasedModel:
    """Add ``model`` to the registry (its name must be new)."""
    if model.name in _REGISTRY:
        raise ValueError(f'released model {model.name!r} is registered twice')
    _REGISTRY[model.name] = model
    return model


def released_models() -> Dict[str, ReleasedModel]:
    """All registered released models by name (import ``gsasr_plugin`` first so methods have registered)."""
    return dict(_REGISTRY)


def released_model(name: str) -> ReleasedModel:
    """The released model called ``name`` (with or without the ``official:`` prefix)."""
    key = name[len(OFFICIAL_PREFIX):] if name.startswith(OFFICIAL_PREFIX) else name
    if key not in _REGISTRY:
        known = ', '.join(sorted(_REGISTRY)) or 'none registered'
        raise ValueError(f'unknown released model {name!r}; known: {known}')
    return _REGISTRY[key]


def fetch_files(model: ReleasedModel, offline: Optional[bool] = None) -> List[Path]:
    """Local paths of ``model.files``: from huggingface_hub's cache, downloading what is missing.

    A file in the cache is used without touching the network. For a missing one the hub is first probed
    with one connection (a few seconds at most): unreachable, the error comes at once instead of after
    huggingface_hub's retries (minutes).

    Args:
        model: the released model.
        offline: True to look in the cache only; None follows ``HF_HUB_OFFLINE``.

    Raises:
        WeightsUnavailableError: one line naming the files, the repository, the hub's reason (whole), the
            cache folder in use and the ways to get the files there, when a file is neither cached nor
            downloadable (no network, no huggingface_hub, unknown file).
    """
    if not model.hub_repo:
        raise WeightsUnavailableError(f'{OFFICIAL_PREFIX}{model.name}: {" ".join(model.files)} is not on the Hugging '
                                      f'Face hub; download it from {model.source} and pass its path to -m/--model '
                                      '(or path: pretrain_network_g) instead of the short name.')
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError as error:  # pragma: no cover - huggingface_hub comes with timm
        raise WeightsUnavailableError(_unavailable(model, f'huggingface_hub is not installed ({error})')) from None
    cache = str(constants.HF_HUB_CACHE)
    if offline is None:
        offline = bool(constants.HF_HUB_OFFLINE)
    paths = []
    for filename in model.files:
        try:  # the cache first: no network at all
            paths.append(Path(huggingface_hub.hf_hub_download(repo_id=model.hub_repo, filename=filename,
                                                              local_files_only=True)))
            continue
        except Exception as error:  # noqa: BLE001  (not cached, or the cache is unreadable)
            cached_reason = _reason(error)
        if offline:
            raise WeightsUnavailableError(_unavailable(model, f'offline (HF_HUB_OFFLINE) and not in the cache: '
                                                       f'{cached_reason}', cache))
        unreachable = _hub_unreachable(constants.ENDPOINT)
        if unreachable:
            raise WeightsUnavailableError(_unavailable(model, unreachable, cache))
        try:
            paths.append(Path(huggingface_hub.hf_hub_download(repo_id=model.hub_repo, filename=filename)))
        except Exception as error:  # noqa: BLE001  (network errors, missing files: all one message)
            raise WeightsUnavailableError(_unavailable(model, _reason(error), cache)) from None
    return paths


def _reason(error: BaseException) -> str:
    """The whole text of an error, on one line."""
    text = ' '.join(str(error).split())
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _hub_unreachable(endpoint: str, timeout: float = 5.0) -> Optional[str]:
    """None when a TCP connection to the hub's host opens within ``timeout`` seconds (or a proxy is configured,
    which only huggingface_hub can use), else why not."""
    if any(os.environ.get(name) for name in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy')):
        return None
    parts = urlsplit(endpoint)
    host, port = parts.hostname or 'huggingface.co', parts.port or (80 if parts.scheme == 'http' else 443)
    outcome: List[Optional[str]] = ['no answer within the time allowed']

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome[0] = None
        except OSError as error:
            outcome[0] = _reason(error)

    thread = threading.Thread(target=probe, daemon=True)  # name resolution has no timeout of its own
    thread.start()
    thread.join(timeout + 1.0)
    if outcome[0] is None:
        return None
    return f'the hub {endpoint} cannot be reached from this machine ({outcome[0]}; timeout {timeout:g} s)'


def _unavailable(model: ReleasedModel, reason: str, cache: str = '') -> str:
    files = ' '.join(model.files)
    folder = f'{model.name}-files'
    if len(model.files) > 1:
        local = f'-m {Path(folder) / Path(model.files[0]).parent} (the folder of its files)'
    else:
        local = f'-m {Path(folder) / model.files[0]}'
    cache_route = (f'or run `hf download {model.hub_repo} {files}` there and copy that hub cache into {cache} (the '
                   'cache in use here); ' if cache else '')
    return (f'{OFFICIAL_PREFIX}{model.name}: cannot get {files} from the hub repository {model.hub_repo}: {reason}. '
            f'On a machine that is online, run `hf download {model.hub_repo} {files} --local-dir {folder}`, copy the '
            f'folder {folder} here and pass {local} instead of the short name (or as path: pretrain_network_g); '
            f'{cache_route}or download the files from {model.url} and pass their paths joined by commas.')
