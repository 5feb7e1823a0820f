"""Load pretrained encoder weights, including official SwinIR / HAT classical-SR checkpoints.

``encoder: {type: SwinIREncoder, pretrained: PATH}`` loads PATH into the built encoder (see
:func:`gsasr_plugin.archs.encoder_registry.build_encoder`). The file is read by the plugin's one checkpoint
reader, :func:`gsasr_plugin.checkpoint.load_checkpoint` (weights-only, one-line errors, NaN/inf refused), with
the entries of other code bases too (:data:`FOREIGN_WEIGHT_KEYS`): the weights may sit at the top level or
under ``params_ema`` / ``params`` (BasicSR, SwinIR, HAT) or ``state_dict`` / ``model``; a ``module.`` prefix
(DataParallel) is dropped.

An encoder class that can read another code base's checkpoints declares two tables:

- ``official_key_map``: ``(regex, replacement)`` rules turning a checkpoint key into ours (first match
  wins; keys that match no rule are taken as they are);
- ``official_skipped_keys``: ``(regex, reason)`` for checkpoint keys that have no counterpart here
  (upsamplers, recomputed buffers). They are skipped and reported.

Every other key must exist here with the same shape. A shape mismatch is always an error naming the
key and both shapes; checkpoint keys unknown here and encoder tensors the checkpoint lacks are errors
when ``strict`` (the default) and warnings otherwise.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from gsasr_plugin.checkpoint import WEIGHT_KEYS, load_checkpoint
from gsasr_plugin.utils.safe_load import load_torch_file

__all__ = ['PretrainedLoadReport', 'load_pretrained_encoder', 'read_foreign_weights', 'map_checkpoint_keys',
           'is_liif_checkpoint', 'read_liif_checkpoint', 'FOREIGN_WEIGHT_KEYS']

# The entries other code bases keep their weights under, in order of preference.
FOREIGN_WEIGHT_KEYS = WEIGHT_KEYS + ('state_dict', 'model')


@dataclass
class PretrainedLoadReport:
    """What :func:`load_pretrained_encoder` did: our keys loaded, checkpoint keys skipped (with why),
    checkpoint keys unknown here, and our tensors the checkpoint did not provide."""
    path: str
    param_key: Optional[str]
    loaded: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    unexpected: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)

    def summary(self) -> str:
        by_reason: Dict[str, List[str]] = {}
        for key, reason in self.skipped.items():
            by_reason.setdefault(reason, []).append(key)
        lines = [f"Loaded {len(self.loaded)} encoder tensors from {self.path}"
                 f"{f' [{self.param_key}]' if self.param_key else ''}."]
        for reason, keys in by_reason.items():
            lines.append(f'Skipped {len(keys)} checkpoint keys ({reason}): {_shorten(keys)}')
        if self.unexpected:
            lines.append(f'Checkpoint keys with no counterpart in the encoder: {_shorten(self.unexpected)}')
        if self.missing:
            lines.append(f'Encoder tensors not in the checkpoint (left as initialised): {_shorten(self.missing)}')
        return '\n'.join(lines)


def _shorten(keys: Sequence[str], limit: int = 12) -> str:
    keys = list(keys)
    more = f' ... (+{len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def read_foreign_weights(path: Union[str, Path], param_key: Optional[str] = None, what: str = "encoder 'pretrained' "
                         'checkpoint') -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """(weights, the entry they came from) of a checkpoint of ours or of another code base: ``param_key``, or
    the first of :data:`FOREIGN_WEIGHT_KEYS` present, or the file as a bare state dict. NaN/inf are left to the
    caller (converted official weights are checked as a whole by ``checkpoint.load_weights``)."""
    checkpoint = load_checkpoint(str(path), param_key, what, keys=FOREIGN_WEIGHT_KEYS, finite=False)
    return checkpoint.state_dict, checkpoint.param_key


def is_liif_checkpoint(checkpoint: Any, model_name: str) -> bool:
    """Whether a loaded checkpoint has LIIF's layout (``{'model': {'name': model_name, 'args', 'sd'}}``), as the
    official GaussianSR and ContinuousSR files do."""
    model = checkpoint.get('model') if isinstance(checkpoint, Mapping) else None
    return isinstance(model, Mapping) and model.get('name') == model_name and isinstance(model.get('sd'), Mapping)


def read_liif_checkpoint(source: Union[str, Path, Mapping[str, Any]], model_name: str,
                         method: str) -> Tuple[Mapping[str, Any], str]:
    """(the checkpoint, how errors name it) of an official ``method`` file in LIIF's layout: a path (read weights-only)
    or an already loaded dict.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: another layout (naming the keys found), or an unreadable file.
    """
    name = '<checkpoint>'
    what = f'official {method} checkpoint'
    if not isinstance(source, Mapping):
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'{what} {path}: no such file')
        name = str(path)
        source = load_torch_file(name, what)  # weights only, one-line errors
    if not is_liif_checkpoint(source, model_name):
        found = list(source)[:8] if isinstance(source, Mapping) else type(source).__name__
        raise ValueError(f"{name}: not an {what} (expected {{'model': {{'name': '{model_name}', 'args', 'sd'}}}}), "
                         f'found {found}')
    return source, name


def map_checkpoint_keys(state: Mapping[str, torch.Tensor], key_map: Sequence[Tuple[str, str]] = (),
                        skipped_keys: Sequence[Tuple[str, str]] = ()) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Rename checkpoint keys by ``key_map`` and drop those matching ``skipped_keys``.

    Returns ``(renamed, skipped)``: ``renamed`` maps our key to the checkpoint key it comes from,
    ``skipped`` maps each dropped checkpoint key to its reason.
    """
    renamed: Dict[str, str] = {}
    skipped: Dict[str, str] = {}
    for key in state:
        reason = next((why for pattern, why in skipped_keys if re.search(pattern, key)), None)
        if reason is not None:
            skipped[key] = reason
            continue
        target = key
        for pattern, replacement in key_map:
            if re.search(pattern, key):
                target = re.sub(pattern, replacement, key, count=1)
                break
        if target in renamed:
            raise ValueError(f"checkpoint keys '{renamed[target]}' and '{key}' both map onto '{target}'")
        renamed[target] = key
    return renamed, skipped


def load_pretrained_encoder(encoder: nn.Module, path: Union[str, Path], strict: bool = True,
                            param_key: Optional[str] = None, logger=None) -> PretrainedLoadReport:
    """Load ``path`` into ``encoder`` by the encoder's key map; report (and log) what was skipped.

    Args:
        encoder: The built encoder. Its class's ``official_key_map`` / ``official_skipped_keys`` are used
            when present (no renaming otherwise).
        path: Checkpoint file (``torch.save`` output).
        strict: Unknown checkpoint keys or encoder tensors missing from the checkpoint are errors if True,
            warnings if False. Shape mismatches are always errors.
        param_key: Entry of the checkpoint that holds the weights; None picks params_ema, params,
            state_dict or model, whichever is present first, else the top level.
        logger: Where to log the summary (BasicSR's root logger by default).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on shape mismatches, and with ``strict`` on unknown or missing keys; the message lists them.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder 'pretrained' checkpoint not found: {path}")
    state, chosen = read_foreign_weights(path, param_key)
    renamed, skipped = map_checkpoint_keys(state, getattr(encoder, 'official_key_map', ()),
                                           getattr(encoder, 'official_skipped_keys', ()))
    ours = encoder.state_dict()
    report = PretrainedLoadReport(str(path), chosen, skipped=skipped)
    mismatched = []
    to_load = {}
    for target, source in renamed.items():
        value = state[source]
        if target not in ours:
            report.unexpected.append(source)
        elif tuple(ours[target].shape) != tuple(value.shape):
            mismatched.append(f"'{source}' -> '{target}': checkpoint {tuple(value.shape)}, "
                              f'encoder {tuple(ours[target].shape)}')
        else:
            to_load[target] = value
    report.missing = [key for key in ours if key not in renamed]
    name = type(encoder).__name__
    if mismatched:
        raise ValueError(f'{path}: {len(mismatched)} tensors do not fit the {name} encoder built from the options '
                         f'(check embed_dim / depths / window_size / num_feat):\n  ' + '\n  '.join(mismatched))
    if strict and (report.unexpected or report.missing):
        raise ValueError(f'{path} does not match the {name} encoder (set strict: false to load anyway):\n'
                         + report.summary())
    encoder.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    if logger is None:
        from basicsr.utils import get_root_logger
        logger = get_root_logger()
    log = logger.warning if (report.unexpected or report.missing) else logger.info
    log(report.summary())
    return report

