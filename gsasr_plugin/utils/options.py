"""Reading BasicSR option files: safe YAML, one-line errors, ``--force_yml`` values, numbers checked.

* :class:`OrderedSafeLoader` reads YAML like BasicSR's ``ordered_yaml()`` loader (mappings become
  ``OrderedDict``) but builds no Python objects: ``!!python/...`` tags are an error, not code that runs.
  :mod:`gsasr_plugin.basicsr_patches` makes BasicSR's own ``parse_options`` use it, and parse ``--force_yml``
  values with :func:`parse_override_value` (YAML) instead of ``eval``.
* :func:`load_option_file` reads an option file with one-line errors (file, line, problem).
* :func:`option_number` reads a number option with a one-line error naming the key.

Which keys exist where and the ``--force_yml`` entries are :mod:`gsasr_plugin.utils.option_keys`; the checks
``basicsr train/test`` run first are :mod:`gsasr_plugin.commands.option_checks`.
"""
import math
import numbers
import re
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

__all__ = ['OptionError', 'OrderedSafeLoader', 'LoadedOptions', 'load_option_file', 'parse_override_value',
           'option_number', 'key_text']

# ------------------------------------------------------------------------------------------- loading
_SafeBase = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)


class OptionError(ValueError):
    """A bad option file, key or value; the message is one line naming the file and key."""


def _ordered_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> 'OrderedDict[Any, Any]':
    loader.flatten_mapping(node)
    return OrderedDict(loader.construct_pairs(node))


class OrderedSafeLoader(_SafeBase):
    """``yaml.SafeLoader`` whose mappings are ``OrderedDict`` (as BasicSR's ``ordered_yaml()`` gives).

    Only YAML's standard tags build values (``!!float 1e-4`` works); ``!!python/object/apply:...`` and the
    other Python tags raise ``yaml.constructor.ConstructorError`` instead of running code.
    """


OrderedSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _ordered_mapping)


def _key_lines(node: yaml.Node, prefix: Tuple[str, ...] = ()) -> Dict[Tuple[str, ...], int]:
    """(key path) -> 1-based line of every mapping key of a composed YAML document."""
    lines: Dict[Tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = prefix + (str(key_node.value), )
                lines.setdefault(path, key_node.start_mark.line + 1)
                lines.update(_key_lines(value_node, path))
    return lines


def _duplicate_keys(node: yaml.Node, prefix: Tuple[str, ...] = ()) -> List[Tuple[Tuple[str, ...], int]]:
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: Set[str] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = prefix + (str(key_node.value), )
                if key_node.value in seen:
                    found.append((path, key_node.start_mark.line + 1))
                seen.add(key_node.value)
                found += _duplicate_keys(value_node, path)
    return found


# An option file holds hundreds of values; YAML aliases can make a few lines stand for billions of them (the
# "billion laughs": nine anchors, each repeating the previous nine times), which anything walking the options
# (BasicSR's logging of them, deep copies) then expands for ever.
MAX_OPTION_VALUES = 100_000


def _expanded_size(node: yaml.Node, sizes: Dict[int, int]) -> int:
    """The number of values ``node`` stands for with every alias expanded, counted without expanding (an
    alias is the anchored node object itself, so each node is counted once and reused)."""
    key = id(node)
    if key not in sizes:
        sizes[key] = 1  # a recursive alias counts once (safe loaders reject them later anyway)
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(_expanded_size(child, sizes) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
        else:
            total = 1
        sizes[key] = total
    return sizes[key]


class LoadedOptions(OrderedDict):
    """The options of one file, with ``source`` (the file), ``lines`` (key path -> line) and ``overrides``
    (key path -> what set it on the command line: ``--force_yml '...'``, ``-m ...``) for messages, and
    ``from_command`` (key path -> value) for the options the command set that the file does not hold (``-m``,
    ``network_g`` from the weights), which BasicSR's own reading of the file then gets too."""
    source: str = ''
    lines: Dict[Tuple[str, ...], int] = {}
    overrides: Dict[Tuple[str, ...], str] = {}
    from_command: Dict[Tuple[str, ...], Any] = {}
    warnings: List[str] = []
    label: Optional[str] = None  # how messages name the options when not "option file '<source>'"

    def set_from_command(self, path: Sequence[str], value: Any, origin: str) -> None:
        """Set the option at ``path`` (its parents must be sections) as the command line says (``origin``)."""
        node: Any = self
        for key in path[:-1]:
            node = node.setdefault(key, OrderedDict())
        node[path[-1]] = value
        self.overrides = {**self.overrides, tuple(path): origin}
        self.from_command = {**self.from_command, tuple(path): value}


def load_option_file(path: str) -> LoadedOptions:
    """Read a BasicSR option file safely.

    Raises:
        OptionError: naming the file (and line) when it is not readable, not YAML, holds Python tags or
            is not a mapping.
    """
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise OptionError(f"option file '{path}': cannot read it ({error})") from None
    loader = OrderedSafeLoader(text)
    try:
        node = loader.get_single_node()
        values = _expanded_size(node, {}) if node is not None else 0
        if values > MAX_OPTION_VALUES:
            raise OptionError(f"option file '{path}': its YAML aliases (*name) expand to {values:,} values, more than "
                              f"the {MAX_OPTION_VALUES:,} any option file needs (an alias bomb?); write the values out")
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as error:
        raise OptionError(f"option file '{path}': {_yaml_error_text(error)}") from None
    finally:
        loader.dispose()
    if not isinstance(data, Mapping):
        raise OptionError(f"option file '{path}' is not a YAML mapping of options (got {type(data).__name__})")
    opt = LoadedOptions(data)
    opt.source = str(path)
    opt.lines = _key_lines(node)
    opt.overrides = {}
    opt.from_command = {}
    opt.warnings = [f"option file '{path}' line {line}: key {key_text(key)} appears twice; the last value is used"
                    for key, line in _duplicate_keys(node)]
    return opt


def _yaml_error_text(error: yaml.YAMLError) -> str:
    mark = getattr(error, 'problem_mark', None) or getattr(error, 'context_mark', None)
    where = f'line {mark.line + 1}, column {mark.column + 1}: ' if mark is not None else ''
    problem = getattr(error, 'problem', None) or str(error).splitlines()[0]
    if isinstance(error, yaml.constructor.ConstructorError) and 'tag' in str(problem):
        tag = re.search(r"tag '([^']+)'", str(problem))
        name = tag.group(1).replace('tag:yaml.org,2002:', '!!') if tag else 'used here'
        return (f'{where}the tag {name} is not allowed: option files hold plain values (numbers, text, lists, '
                'mappings) and build no Python objects')
    context = getattr(error, 'context', None)
    return f"{where}not valid YAML ({problem}{'; ' + context if context else ''})"


def key_text(path: Sequence[str]) -> str:
    """A key path as option messages and ``--force_yml`` write it: ``train:scheduler:type``."""
    return ':'.join(str(p) for p in path)


# ------------------------------------------------------------------------------- --force_yml values
_NUMBER = re.compile(r'^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$')


def parse_override_value(text: str) -> Any:
    """A ``--force_yml`` value as YAML would read it (never ``eval``): ``~``/``none`` -> None, ``true``,
    numbers (``1e-4`` too), ``[1, 2]`` lists, ``!!float 2e-4``; anything else stays text."""
    text = text.strip()
    if text.lower() == 'none':  # BasicSR's spelling of null
        return None
    try:
        value = yaml.load(text, Loader=OrderedSafeLoader)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _NUMBER.match(value):  # YAML 1.1 reads 1e-4 as text
        value = float(value)
    return value




# ----------------------------------------------------------------------------------- value checks
def option_number(opt: Mapping[str, Any], key: str, default: Any = None, *, integer: bool = False,
                  minimum: Optional[float] = None, above: Optional[float] = None, name: Optional[str] = None) -> Any:
    """``opt[key]`` (or ``default``) as a finite number, with a ValueError naming the key otherwise.

    Args:
        integer: require an integer (a float with an integral value is accepted and converted).
        minimum: the value must be >= this. above: the value must be > this.
        name: how the message calls the key (default ``key``).
    """
    label = name or key
    value = opt.get(key, default) if isinstance(opt, Mapping) else default
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        hint = ''
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            hint = f' (YAML reads {value} as text: write !!float {value})'
        raise ValueError(f"'{label}' must be a number, got {value!r}{hint}")
    if not math.isfinite(float(value)):
        raise ValueError(f"'{label}' must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"'{label}' must be an integer, got {value!r}")
        value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"'{label}' must be >= {minimum:g}, got {value!r}")
    if above is not None and value <= above:
        raise ValueError(f"'{label}' must be > {above:g}, got {value!r}")
    return value

