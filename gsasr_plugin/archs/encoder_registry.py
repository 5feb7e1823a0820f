"""The registry of LR feature encoders and the builder for nested ``encoder:`` options."""
import copy
from typing import Any, Mapping

from torch import nn

from gsasr_plugin import compat  # noqa: F401
from basicsr.utils.registry import Registry
from gsasr_plugin.archs.pretrained import load_pretrained_encoder

__all__ = ['ENCODER_REGISTRY', 'build_encoder']

ENCODER_REGISTRY = Registry('encoder')


def build_encoder(opt: Mapping[str, Any]) -> nn.Module:
    """Build an encoder from its options, e.g. ``{'type': 'EDSREncoder', 'num_block': 16}``.

    Every encoder maps an LR image (B, 3, h, w) in [0, 1] to features (B, C, h, w) of the same spatial
    size and exposes ``out_channels`` (C).

    ``pretrained: PATH`` (with optional ``strict``, default True, and ``param_key``) loads a checkpoint
    into the built encoder, official SwinIR / HAT ones included (see :mod:`gsasr_plugin.archs.pretrained`).

    Raises:
        ValueError: if ``type`` is missing or names no registered encoder (the message lists them).
    """
    if not isinstance(opt, Mapping) or 'type' not in opt:
        raise ValueError(f"encoder options need a 'type' key (one of {sorted(ENCODER_REGISTRY.keys())}), got {opt!r}")
    opt = copy.deepcopy(dict(opt))
    encoder_type = opt.pop('type')
    if encoder_type not in ENCODER_REGISTRY:
        raise ValueError(f"unknown encoder type '{encoder_type}' in 'encoder: type'; "
                         f'registered encoders: {sorted(ENCODER_REGISTRY.keys())}')
    pretrained, strict, param_key = opt.pop('pretrained', None), opt.pop('strict', True), opt.pop('param_key', None)
    encoder = ENCODER_REGISTRY.get(encoder_type)(**opt)
    if pretrained:
        load_pretrained_encoder(encoder, pretrained, strict=strict, param_key=param_key)
    return encoder
