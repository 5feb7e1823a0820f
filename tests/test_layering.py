"""The import graph's layers, read from the source (``scripts/import_graph.py``; nothing is imported).

The rules (see docs/layout.md): ``utils/`` imports nothing of the plugin above it; no module imports the package
root; the units form no cycle; the torch-free front end ``gsasr_plugin_cli`` imports the library and the library
never imports it back; imports are at module level, and the few left inside functions say why.
"""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'scripts'))
import import_graph  # noqa: E402

MAX_IN_FUNCTION = 15
# What utils/ may import of the plugin: itself and the modules below it (the torchvision alias, the version).
BELOW_UTILS = {'gsasr_plugin.utils', 'gsasr_plugin.compat', 'gsasr_plugin.version'}


@pytest.fixture(scope='module')
def imports():
    return import_graph.scan(REPO)


def _where(items):
    return '; '.join(f'{i.path}:{i.line} {i.text}' for i in items)


def test_utils_import_nothing_above_them(imports):
    upward = [i for i in imports if import_graph.unit_of(i.source) == 'gsasr_plugin.utils'
              and import_graph.unit_of(i.target) not in BELOW_UTILS]
    assert not upward, f'utils/ imports above itself: {_where(upward)}'


def test_no_module_imports_the_package_root(imports):
    """The root (``gsasr_plugin/__init__.py``) fills the registries from everything; importing it from inside
    makes every module depend on every other. Python runs it before any submodule anyway."""
    root = [i for i in imports if i.target == 'gsasr_plugin']
    assert not root, f'imports of the package root: {_where(root)}'


def test_the_units_form_no_cycle(imports):
    assert import_graph.cycles(import_graph.unit_edges(imports)) == []


def test_the_library_does_not_import_the_front_end(imports):
    back = [i for i in imports
            if i.target.startswith('gsasr_plugin_cli') and not i.source.startswith('gsasr_plugin_cli')]
    assert not back, f'the library imports the torch-free front end: {_where(back)}'


def test_in_function_imports_are_few_and_say_why(imports):
    inside = [i for i in imports if i.in_function]
    assert len(inside) <= MAX_IN_FUNCTION, f'{len(inside)} in-function imports: {_where(inside)}'
    silent = [i for i in inside if '#' not in i.text]
    assert not silent, f'in-function imports without a reason: {_where(silent)}'


def test_the_graph_reader_sees_cycles_and_function_level_imports(tmp_path):
    """The checks above can fail: a planted upward import inside a function and a cycle are found."""
    for folder in ('gsasr_plugin/utils', 'gsasr_plugin/models', 'ops', 'gsasr_plugin_cli'):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / '__init__.py').write_text('')
    (tmp_path / 'gsasr_plugin' / '__init__.py').write_text('')
    (tmp_path / 'gsasr_plugin' / 'utils' / 'a.py').write_text(
        'def f():\n    from gsasr_plugin.models.m import g  # planted\n')
    (tmp_path / 'gsasr_plugin' / 'models' / 'm.py').write_text('from gsasr_plugin.utils import a\n')
    found = import_graph.scan(tmp_path)
    assert [(i.source, i.target, i.in_function) for i in found] == [
        ('gsasr_plugin.models.m', 'gsasr_plugin.utils.a', False),
        ('gsasr_plugin.utils.a', 'gsasr_plugin.models.m', True)]
    assert import_graph.cycles(import_graph.unit_edges(found)) == [['gsasr_plugin.models', 'gsasr_plugin.utils']]
