"""What the package declares: every third-party import is an install requirement; scratch output is ignored."""
import ast
import re
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OURS = {'gsasr_plugin', 'gsasr_plugin_cli'}


def _requirement_names(items):
    return {re.split(r'[<>=!~\[ ]', item)[0].lower().replace('_', '-') for item in items}


def _setup_keyword(name):
    tree = ast.parse((REPO / 'setup.py').read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f'setup.py has no {name}')


def _install_requires():
    return _requirement_names(_setup_keyword('install_requires'))


# optional parts: a folder of the package whose extra imports come from an extras_require entry
OPTIONAL_PARTS = {'gsasr_plugin/app': 'app'}


def _imported_top_level_modules():
    found = {}
    for root in ('gsasr_plugin', 'gsasr_plugin_cli', 'ops'):
        for path in (REPO / root).rglob('*.py'):
            for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split('.')[0], str(path.relative_to(REPO)))
    return {m: where for m, where in found.items() if m not in sys.stdlib_module_names and m not in OURS}


def test_every_imported_package_is_declared():
    required = _install_requires()
    extras = {name: _requirement_names(items) for name, items in _setup_keyword('extras_require').items()}
    distributions = metadata.packages_distributions()
    missing = []
    for module, where in sorted(_imported_top_level_modules().items()):
        names = {d.lower().replace('_', '-') for d in distributions.get(module, [module])}
        optional = next((extra for part, extra in OPTIONAL_PARTS.items() if where.startswith(part + '/')), None)
        allowed = required | (extras[optional] if optional else set())
        if not names & allowed:
            missing.append(f'{module} ({where}; distribution {sorted(names)})')
    assert not missing, f'imported but not in setup.py install_requires: {missing}'


def test_benchmark_results_are_not_committed():
    lines = (REPO / '.gitignore').read_text().splitlines()
    assert '/benchmarks/results/' in lines
