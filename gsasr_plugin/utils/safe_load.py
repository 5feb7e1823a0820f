"""Loading ``.pth`` / ``.state`` files without running code from them, with one-line errors.

Every ``torch.load`` of the plugin uses ``weights_only=True`` (tensors, numbers, strings, lists, dicts;
no Python objects), so a downloaded checkpoint or training state cannot execute anything. Our own files
(checkpoints, training states with optimizer and scheduler states) are plain data and load this way.
:func:`load_torch_file` turns every way a file can be bad into a :class:`TorchFileError` naming it: empty,
truncated, not a PyTorch file, or holding Python objects (refused). :func:`check_finite_weights` refuses
weights holding NaN/inf; :func:`compare_state_dicts` / :func:`describe_fit` say how weights fit a network.

Checkpoints are read by :func:`gsasr_plugin.checkpoint.load_checkpoint` / ``load_weights`` (the one reader of
weights, built on these); training states by :func:`gsasr_plugin.utils.resume.load_training_state`.
"""
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

import torch

__all__ = ['TorchFileError', 'NonFiniteWeightsError', 'load_torch_file', 'nonfinite_tensor_names', 'StateDictFit',
           'compare_state_dicts', 'check_finite_weights', 'describe_fit']


class TorchFileError(ValueError):
    """A ``.pth`` / ``.state`` file that cannot be (safely) loaded; the message names it and says why."""


class NonFiniteWeightsError(TorchFileError):
    """Weights that hold NaN or inf (a run that diverged)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# The first bytes of files that people hand over instead of weights (-m photo.png, -m options.yml).
_IMAGE_MAGIC = ((b'\x89PNG\r\n\x1a\n', 'PNG'), (b'\xff\xd8\xff', 'JPEG'), (b'GIF8', 'GIF'), (b'BM', 'BMP'),
                (b'II*\x00', 'TIFF'), (b'MM\x00*', 'TIFF'))


def foreign_file_kind(path: str) -> Optional[str]:
    """What a file that is certainly not a PyTorch file is (``'a PNG image'``, ``'a YAML option file'``, ``'a
    text file'``), or None (a zip archive or a pickle: what ``torch.save`` writes, or can't tell)."""
    try:
        with open(path, 'rb') as handle:
            head = handle.read(512)
    except OSError:
        return None
    if head.startswith(b'PK\x03\x04') or head.startswith(b'\x80'):
        return None
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return f'a {name} image'
    if head.startswith(b'RIFF') and head[8:12] == b'WEBP':
        return 'a WebP image'
    if os.path.splitext(path)[1].lower() in ('.yml', '.yaml'):
        return 'a YAML option file'
    try:
        head.decode('utf-8')
    except UnicodeDecodeError:
        return None
    return 'a YAML option file' if re.search(rb'^(network_g|name|model_type)\s*:', head, re.MULTILINE) else 'a text file'


def _foreign_hint(kind: str) -> str:
    if kind.endswith('image'):
        return '; -m (or path: pretrain_network_g) names the weights, -i the images to upscale'
    if kind.endswith('option file'):
        return '; option files go to -opt, the weights they were trained into to -m'
    return ''


def load_torch_file(path: str, what: str = 'checkpoint', map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name ``what`` and ``path``.

    Args:
        path: the file.
        what: how messages call it ("checkpoint", "training state", ...).
        map_location: as for ``torch.load``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        TorchFileError: empty, truncated or damaged, not a PyTorch file, or holding Python objects.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} {path}: no such file')
    if os.path.getsize(path) == 0:
        raise TorchFileError(f'{what} {path}: empty file (0 bytes; a write that was cut off?)')
    kind = foreign_file_kind(path)
    if kind is not None:
        raise TorchFileError(f'{what} {path} is {kind}, not a PyTorch file (.pth){_foreign_hint(kind)}')
    try:
        with warnings.catch_warnings():  # 'Detected pickle protocol 4 ...' before the real error
            warnings.filterwarnings('ignore', message='Detected pickle protocol')
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        found = re.search(r'GLOBAL (\S+)', text)
        if found or 'Can only build' in text or 'unsupported class' in text.lower():
            name = f' ({found.group(1)})' if found else ''
            raise TorchFileError(f'{what} {path}: refused: it holds Python objects{name} that a weights-only load '
                                 'does not build (a file from an untrusted source could run code that way)') from None
        detail = re.search(r'WeightsUnpickler error:\s*(.+)', text)
        reason = detail.group(1).strip() if detail else _first_line(error)
        raise TorchFileError(f'{what} {path}: not a PyTorch {what}, or truncated or damaged ({reason})') from None
    except RuntimeError as error:
        text = _first_line(error).split('. ')[0]
        if 'zip' in text or 'central directory' in text or 'PytorchStreamReader' in text:
            raise TorchFileError(f'{what} {path}: truncated or damaged file ({text})') from None
        raise TorchFileError(f'{what} {path}: cannot be loaded ({text})') from None
    except (EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as error:
        raise TorchFileError(f'{what} {path}: not a PyTorch {what}, or truncated or damaged ({type(error).__name__}: '
                             f'{_first_line(error)})') from None


def nonfinite_tensor_names(state: Mapping[str, Any]) -> List[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or infinite values."""
    return [name for name, value in state.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]


@dataclass
class StateDictFit:
    """How a checkpoint's state dict fits a network's: names missing from it, extra names, shape mismatches."""
    total: int
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    wrong_shape: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.total - len(self.missing) - len(self.wrong_shape)

    @property
    def perfect(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self) -> str:
        if self.matched == 0 and self.total:
            return (f'none of the network\'s {self.total} tensors is in it with its shape (weights of another '
                    f'network?{" its first keys: " + ", ".join(self.unexpected[:3]) if self.unexpected else ""})')
        parts = []
        if self.wrong_shape:
            name, want, got = self.wrong_shape[0]
            parts.append(f'{len(self.wrong_shape)} of another shape (first: {name}: checkpoint {tuple(got)}, '
                         f'network {tuple(want)})')
        if self.missing:
            parts.append(f"{len(self.missing)} missing (first: {', '.join(self.missing[:3])})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (first: {', '.join(self.unexpected[:3])})")
        return f'{self.matched} of {self.total} tensors fit; ' + '; '.join(parts)


def compare_state_dicts(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> StateDictFit:
    """Compare names and shapes of a network's ``state_dict()`` (``expected``) with a checkpoint's."""
    fit = StateDictFit(total=len(expected))
    for name, tensor in expected.items():
        if name not in found:
            fit.missing.append(name)
        elif tuple(found[name].shape) != tuple(tensor.shape):
            fit.wrong_shape.append((name, tuple(tensor.shape), tuple(found[name].shape)))
    fit.unexpected = [name for name in found if name not in expected]
    return fit


def check_finite_weights(state: Mapping[str, Any], path: str, what: str = 'checkpoint') -> None:
    """Raise :class:`NonFiniteWeightsError` naming ``path`` when tensors of ``state`` hold NaN or inf."""
    bad = nonfinite_tensor_names(state)
    if bad:
        raise NonFiniteWeightsError(f'{what} {path}: {len(bad)} tensor(s) hold NaN/inf values (first: {bad[0]}); '
                                    'such weights (e.g. of a run that diverged) give no image')


def describe_fit(fit: StateDictFit, what: str, network_name: str, network_label: str, strict: bool,
                 strict_hint: bool = True) -> Optional[str]:
    """None for a perfect fit; the warning for a non-strict load; ValueError for a strict one that does not fit.

    Args:
        what: how the weights are named (``checkpoint <file>``, ``released model official:<name>``, ...).
        strict_hint: say that ``strict_load_<label>: false`` loads what fits (not for released weights).
    """
    if fit.perfect:
        return None
    label = network_label[len('network_'):] if network_label.startswith('network_') else network_label
    if strict:
        hint = f' (set path: strict_load_{label}: false to load only the tensors that fit)' if strict_hint else ''
        raise ValueError(f'{what} does not fit {network_label} ({network_name}): {fit.describe()}{hint}')
    untrained = fit.total - fit.matched
    return (f'LOADING NON-STRICTLY: {what} gives {fit.matched} of the {fit.total} tensors of '
            f'{network_label} ({network_name}); {untrained} keep their random initial values: {fit.describe()}')
