"""The plugin's version, the one place it is written: ``setup.py`` and ``basicsr --version`` read this file's
text, checkpoints record it (:mod:`gsasr_plugin.checkpoint`)."""
__version__ = '0.1.0'
