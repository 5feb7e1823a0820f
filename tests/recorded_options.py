"""Network options recorded in the reference fixtures, in today's names.

The fixtures (``tests/fixtures/*``) store the ``network_g`` / constructor options they were made with, under
the names of the revision that made them; they stay as recorded (their outputs are the reference). This maps
those options onto today's classes and names: the official-forward options of GSASR moved to the
``GSASROfficial`` / ``GSASRRoPEOfficial`` subclasses (whose shift defaults are the official ones, where
``GSASR``'s were ours), and the encoders were registered under their networks' names (``EDSRBaseline``,
``RDN``, ``SwinIR``, ``HAT``, ``HATRoPE``). Nothing in the package accepts the old names.
"""
from typing import Any, Dict, Mapping, Tuple

# GSASR's options of the official forward at the time of recording, with their defaults then (ours).
SHIFT_DEFAULTS = {'cross_attention_shift': 'masked', 'shift_mask': True, 'shift_single_window': False}
CANVAS_DEFAULTS = {'pad_input_to': None, 'canvas_rounding': 'ceil', 'box_cutoff': None}
ENCODER_TYPES = {'EDSRBaseline': 'EDSREncoder', 'RDN': 'RDNEncoder', 'SwinIR': 'SwinIREncoder', 'HAT': 'HATEncoder',
                 'HATRoPE': 'HATRoPEEncoder'}


def current_options(network_type: str, options: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """(today's registered type, today's constructor options) for options recorded for ``network_type``."""
    options = dict(options)
    if isinstance(options.get('encoder'), Mapping):
        encoder = dict(options['encoder'])
        encoder['type'] = ENCODER_TYPES.get(encoder.get('type'), encoder.get('type'))
        options['encoder'] = encoder
    if network_type == 'GSASR':
        recorded = {**SHIFT_DEFAULTS, **CANVAS_DEFAULTS, **options}
        forward = {k: recorded.pop(k) for k in (*SHIFT_DEFAULTS, *CANVAS_DEFAULTS)}
        if forward == {**SHIFT_DEFAULTS, **CANVAS_DEFAULTS}:
            return 'GSASR', recorded
        return 'GSASROfficial', {**recorded, **forward}
    if network_type == 'GSASRRoPE':
        for key in SHIFT_DEFAULTS:  # GSASRRoPE accepted the official values only; its blocks shift so
            options.pop(key, None)
        canvas = {k: options[k] for k in CANVAS_DEFAULTS if k in options}
        if any(canvas.get(k, v) != v for k, v in CANVAS_DEFAULTS.items()):
            return 'GSASRRoPEOfficial', options
        return 'GSASRRoPE', {k: v for k, v in options.items() if k not in CANVAS_DEFAULTS}
    return network_type, options


def current_network_g(network_g: Mapping[str, Any]) -> Dict[str, Any]:
    """A recorded ``network_g`` (with ``type``) in today's names."""
    options = dict(network_g)
    network_type, options = current_options(options.pop('type'), options)
    return {'type': network_type, **options}
