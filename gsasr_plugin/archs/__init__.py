"""Architectures (``*_arch.py``, registered in BasicSR's ARCH_REGISTRY) and encoders.

Encoders register in :data:`ENCODER_REGISTRY` and are built from a nested ``encoder: {type: ...}``
option by :func:`build_encoder`, so that one registered arch (e.g. ``GSASR``) holds encoder and decoder.
"""
import importlib
from pathlib import Path

from gsasr_plugin.archs.encoder_registry import ENCODER_REGISTRY, build_encoder

__all__ = ['ENCODER_REGISTRY', 'build_encoder']

_module_names = sorted(p.stem for p in Path(__file__).parent.glob('*_arch.py'))
_modules = [importlib.import_module(f'{__name__}.{name}') for name in _module_names]
