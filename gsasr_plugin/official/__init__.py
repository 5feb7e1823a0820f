"""The compatibility layer: the authors' released checkpoints of GSASR, GaussianSR and ContinuousSR.

The core (``gsasr_plugin.archs``) holds the methods and our choices and knows nothing of this package. Here:

- :mod:`.hub`: the registry of released models (``official:<name>``) and fetching their files;
- :mod:`.gsasr_official_arch`: the forward the GSASR checkpoints need (``GSASROfficial``,
  ``GSASRRoPEOfficial``: the authors' attention shifts, padded canvas and square cut-off), as subclasses;
- :mod:`.gsasr`, :mod:`.gaussiansr`, :mod:`.continuoussr`: per method, the converters of the authors' files
  into our state dicts, the ``network_g`` that reproduces each released model, and their registration.

Importing ``gsasr_plugin`` imports every module here (registering the archs and the released models); this
``__init__`` imports nothing, so that ``gsasr_plugin.official.hub`` can be imported from anywhere below.
See ``docs/official_compatibility.md``.
"""
