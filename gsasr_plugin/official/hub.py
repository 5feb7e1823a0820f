"""Released (official) models by short name, and fetching their files from the Hugging Face hub.

A released model is named ``official:<name>`` on the command line (``basicsr infer --model
official:gsasr-edsr-paper``). Each method registers its models here with :func:`register` (the method's
own module, imported by ``gsasr_plugin.archs``); :func:`fetch_files` downloads the files into
huggingface_hub's usual cache (``HF_HOME``, default ``~/.cache/huggingface``) when the machine is online,
and otherwise raises :class:`WeightsUnavailableError` with one line that names the files, the hub
repository and where to put them.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

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

    Args:
        model: the released model.
        offline: True to look in the cache only; None follows ``HF_HUB_OFFLINE``.

    Raises:
        WeightsUnavailableError: one line naming the files, the repository and where to put them, when a
            file is neither cached nor downloadable (no network, no huggingface_hub, unknown file).
    """
    if not model.hub_repo:
        raise WeightsUnavailableError(f'{OFFICIAL_PREFIX}{model.name}: {" ".join(model.files)} is not on the Hugging '
                                      f'Face hub; download it from {model.source} and pass its path to -m/--model '
                                      '(or path: pretrain_network_g) instead of the short name.')
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:  # pragma: no cover - huggingface_hub comes with timm
        raise WeightsUnavailableError(_unavailable(model, f'huggingface_hub is not installed ({error})')) from None
    paths = []
    for filename in model.files:
        try:
            kwargs = {} if offline is None else {'local_files_only': offline}
            paths.append(Path(hf_hub_download(repo_id=model.hub_repo, filename=filename, **kwargs)))
        except Exception as error:  # network errors, offline mode, missing files: all one message
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise WeightsUnavailableError(_unavailable(model, f'{type(error).__name__}: {reason}')) from None
    return paths


def _unavailable(model: ReleasedModel, reason: str) -> str:
    files = ' '.join(model.files)
    return (f'{OFFICIAL_PREFIX}{model.name}: cannot get {files} from the hub repository {model.hub_repo} '
            f'({reason[:200]}). On a machine that is online run `huggingface-cli download {model.hub_repo} '
            f'{files}` and copy its cache (~/.cache/huggingface, or $HF_HOME) here, or download the files '
            f'from {model.url} and pass their paths to -m/--model instead of the short name.')
