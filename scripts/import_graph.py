"""The plugin's import graph, read from the source (no imports run): its units, layers, cycles and in-function imports.

    python scripts/import_graph.py            # units by layer, edges, cycles, in-function imports
    python scripts/import_graph.py --json     # the same as JSON

A *unit* is a subpackage (``gsasr_plugin.utils``, ``gsasr_plugin.archs``, ...), a top-level module
(``gsasr_plugin.checkpoint``), a module listed in ``OWN_UNITS``, the package root (``gsasr_plugin``, its
``__init__.py``) or the torch-free front end ``gsasr_plugin_cli``. An edge is an ``import`` of one unit by another, at module level or inside a function
(``importlib.import_module('gsasr_plugin.commands....')`` counts as a module-level edge to ``gsasr_plugin.commands``).
Imports under ``if TYPE_CHECKING:`` are not edges. A unit's layer is 0 when it imports no other unit, else one more
than the highest layer it imports; units on a cycle share a layer and are reported. ``tests/test_layering.py``
enforces the rules this prints.
"""
import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional, Set, Tuple

__all__ = ['Import', 'scan', 'unit_of', 'unit_edges', 'cycles', 'layers', 'ROOT']

ROOT = Path(__file__).resolve().parents[1]
# Source folders and the module prefix each one installs as (setup.py's package_dir).
SOURCES = {'gsasr_plugin': 'gsasr_plugin', 'ops': 'gsasr_plugin.ops', 'gsasr_plugin_cli': 'gsasr_plugin_cli'}
# Modules that are units of their own although they lie in a subpackage: the registry of released models imports
# nothing of the plugin, and everything below the compatibility layer may import it (official/__init__ is empty).
OWN_UNITS = ('gsasr_plugin.official.hub', )
SUBPACKAGES = ('gsasr_plugin.app', 'gsasr_plugin.archs', 'gsasr_plugin.commands', 'gsasr_plugin.data', 'gsasr_plugin.losses',
               'gsasr_plugin.metrics', 'gsasr_plugin.models', 'gsasr_plugin.official', 'gsasr_plugin.ops',
               'gsasr_plugin.utils')


class Import(NamedTuple):
    """One import of a plugin module: where it is, what it names, and whether it runs inside a function."""
    source: str  # importing module, e.g. gsasr_plugin.checkpoint
    target: str  # imported module, e.g. gsasr_plugin.utils.safe_load
    path: str  # file, relative to the repository
    line: int
    in_function: bool
    text: str  # the source line, stripped (its comment says why an in-function import is one)


def _modules(root: Path = ROOT) -> Dict[str, Path]:
    found = {}
    for folder, prefix in SOURCES.items():
        for path in sorted((root / folder).rglob('*.py')):
            parts = list(path.relative_to(root / folder).with_suffix('').parts)
            if parts[-1] == '__init__':
                parts = parts[:-1]
            found['.'.join([prefix] + parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == '__init__.py'


def _resolve(name: str, modules: Dict[str, Path]) -> Optional[str]:
    """The longest known module that ``name`` is or lies in (``a.b.func`` -> ``a.b``); None if not ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition('.')[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or \
        (isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[Tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield from _walk_one(sub, in_function)
            continue
        yield from _walk_one(child, in_function)


def _walk_one(node: ast.AST, in_function: bool) -> Iterator[Tuple[ast.AST, bool]]:
    yield node, in_function
    yield from _walk(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def _dynamic_target(call: ast.Call) -> Optional[str]:
    """``importlib.import_module('x.y')`` or ``(f'x.y.{name}')``: the fixed dotted prefix, else None."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ''
    if name != 'import_module' or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value).rstrip('.')
    return None


def scan(root: Path = ROOT) -> List[Import]:
    """Every import of a plugin module by a plugin module, in file order."""
    modules = _modules(root)
    found = []
    for source, path in modules.items():
        text = path.read_text(encoding='utf-8')
        lines = text.splitlines()
        package = source if _is_package(path) else source.rpartition('.')[0]
        for node, in_function in _walk(ast.parse(text, str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = package.split('.')
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = '.'.join(anchor + ([base] if base else []))
                targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base
                           for alias in node.names]
            elif isinstance(node, ast.Call):
                dynamic = _dynamic_target(node)
                targets = [dynamic] if dynamic else []
            for target in dict.fromkeys(targets):
                resolved = _resolve(target, modules)
                if resolved is None or resolved == source:
                    continue
                found.append(Import(source, resolved, str(path.relative_to(root)), node.lineno, in_function,
                                    lines[node.lineno - 1].strip()))
    return found


def unit_of(module: str) -> str:
    """The unit a module belongs to (its subpackage, else itself)."""
    if module in OWN_UNITS:
        return module
    for package in SUBPACKAGES:
        if module == package or module.startswith(package + '.'):
            return package
    if module.startswith('gsasr_plugin_cli'):
        return 'gsasr_plugin_cli'
    return module


def unit_edges(imports: List[Import]) -> Dict[Tuple[str, str], Dict[str, int]]:
    """``{(importer, imported): {'module': n, 'function': m}}`` between different units."""
    edges: Dict[Tuple[str, str], Dict[str, int]] = defaultdict(lambda: {'module': 0, 'function': 0})
    for item in imports:
        a, b = unit_of(item.source), unit_of(item.target)
        if a != b:
            edges[a, b]['function' if item.in_function else 'module'] += 1
    return dict(edges)


def _graph(edges) -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
        graph.setdefault(b, set())
    return graph


def cycles(edges) -> List[List[str]]:
    """Strongly connected groups of more than one unit (Tarjan), each sorted."""
    graph = _graph(edges)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def layers(edges) -> Dict[str, int]:
    """Each unit's layer: 0 imports nothing of ours, else 1 + the highest layer it imports (a cycle shares one)."""
    graph = _graph(edges)
    group_of = {unit: unit for unit in graph}
    for group in cycles(edges):
        for unit in group:
            group_of[unit] = group[0]
    condensed: Dict[str, Set[str]] = defaultdict(set)
    for a, targets in graph.items():
        condensed.setdefault(group_of[a], set())
        for b in targets:
            if group_of[a] != group_of[b]:
                condensed[group_of[a]].add(group_of[b])
    memo: Dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in memo:
            memo[node] = 1 + max((depth(n) for n in condensed[node]), default=-1)
        return memo[node]

    return {unit: depth(group_of[unit]) for unit in graph}


def report(root: Path = ROOT) -> dict:
    imports = scan(root)
    edges = unit_edges(imports)
    every_unit = {unit_of(m) for m in _modules(root)}
    unit_layers = layers(edges)
    for unit in every_unit:
        unit_layers.setdefault(unit, 0)
    in_function = [i for i in imports if i.in_function]
    return {
        'layers': {unit: unit_layers[unit] for unit in sorted(unit_layers, key=lambda u: (unit_layers[u], u))},
        'edges': {f'{a} -> {b}': counts for (a, b), counts in sorted(edges.items())},
        'cycles': cycles(edges),
        'in_function_imports': len(in_function),
        'in_function': [f'{i.path}:{i.line}: {i.text}' for i in in_function],
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print the report as JSON')
    args = parser.parse_args(argv)
    data = report()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    by_layer: Dict[int, List[str]] = defaultdict(list)
    for unit, layer in data['layers'].items():
        by_layer[layer].append(unit)
    print('Layers (a unit imports only units of lower layers, unless on a cycle):')
    for layer in sorted(by_layer):
        print(f'  {layer}: ' + ', '.join(by_layer[layer]))
    print('Edges between units (module-level + in-function imports):')
    for edge, counts in data['edges'].items():
        print(f"  {edge}: {counts['module']} + {counts['function']}")
    print('Cycles:', '; '.join(' <-> '.join(group) for group in data['cycles']) or 'none')
    print(f"In-function imports of plugin modules: {data['in_function_imports']}")
    for line in data['in_function']:
        print('  ' + line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
