"""Imports every ``*_loss.py`` module of this folder so that its classes register with BasicSR."""
import importlib
from pathlib import Path

_module_names = sorted(p.stem for p in Path(__file__).parent.glob('*_loss.py'))
_modules = [importlib.import_module(f'{__name__}.{name}') for name in _module_names]
