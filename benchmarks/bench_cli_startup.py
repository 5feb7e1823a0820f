"""Start-up time of the ``basicsr`` console script: an older commit and this working tree, side by side.

    python benchmarks/bench_cli_startup.py                    # old = the commit before the light front end
    python benchmarks/bench_cli_startup.py --old 414c550 --repeat 7
    python benchmarks/bench_cli_startup.py --old none         # this tree only

Each tree is copied to a scratch folder (the old one with ``git archive``) and its own console-script entry
point (read from its ``setup.py``) is run in a fresh Python with only that tree on ``PYTHONPATH``, from a
neutral folder, interleaving trees and commands so that machine load hits both alike. One untimed run
per command (``--warmup``) warms the file cache; the table gives the median and the minimum wall time of
``--repeat`` runs. ``import gsasr_plugin`` (the plugin with its registries: torch, torchvision, basicsr) is timed as a
reference. Results: ``benchmarks/results/cli_startup.{md,csv}`` (``--out``).
"""
import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    'help': ['--help'],
    'version': ['--version'],
    'infer-h': ['infer', '-h'],
    'train-h': ['train', '-h'],
    'test-h': ['test', '-h'],
    'import': None,  # reference: python -c "import gsasr_plugin"
}
PACKAGES = ('gsasr_plugin', 'gsasr_plugin_cli', 'ops')


def _git(*args: str) -> str:
    return subprocess.run(['git', '-C', str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def default_old() -> str:
    """The parent of the commit that added the light front end (``gsasr_plugin_cli``), else HEAD."""
    added = _git('log', '--diff-filter=A', '--format=%H', '--', 'gsasr_plugin_cli/__init__.py').splitlines()
    return f'{added[-1]}^' if added else 'HEAD'


def _link_ops(tree: Path) -> None:
    """setup.py installs ops/ as gsasr_plugin.ops; a symlink gives the same layout on PYTHONPATH."""
    if (tree / 'ops').is_dir() and not (tree / 'gsasr_plugin' / 'ops').exists():
        (tree / 'gsasr_plugin' / 'ops').symlink_to(tree / 'ops', target_is_directory=True)


def export_commit(rev: str, folder: Path) -> Path:
    """The packages of commit ``rev`` (and its setup.py) in ``folder``, via ``git archive``."""
    folder.mkdir(parents=True)
    present = [p for p in ('setup.py', *PACKAGES)
               if subprocess.run(['git', '-C', str(REPO), 'cat-file', '-e', f'{rev}:{p}'],
                                 capture_output=True).returncode == 0]
    archive = subprocess.run(['git', '-C', str(REPO), 'archive', rev, *present], check=True,
                             capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', str(folder)], input=archive, check=True)
    _link_ops(folder)
    return folder


def copy_working_tree(folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copy2(REPO / 'setup.py', folder / 'setup.py')
    for name in PACKAGES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns('__pycache__', '*.so'))
    _link_ops(folder)
    return folder


def entry_point(tree: Path) -> Tuple[str, str]:
    """(module, function) of the ``basicsr`` console script in the tree's setup.py."""
    match = re.search(r"'basicsr\s*=\s*([\w.]+):(\w+)'", (tree / 'setup.py').read_text())
    if not match:
        raise SystemExit(f'{tree}/setup.py: no basicsr console script')
    return match.group(1), match.group(2)


def command_line(tree: Path, name: str) -> List[str]:
    if COMMANDS[name] is None:
        return [sys.executable, '-c', 'import gsasr_plugin']
    module, function = entry_point(tree)
    code = f"import sys; sys.argv[0] = 'basicsr'; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, '-c', code, *COMMANDS[name]]


def time_once(tree: Path, name: str, cwd: Path) -> Tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE='1')
    start = time.perf_counter()
    proc = subprocess.run(command_line(tree, name), cwd=cwd, env=env, capture_output=True, timeout=600)
    return time.perf_counter() - start, proc.returncode


def label(name: str) -> str:
    return '`import gsasr_plugin`' if COMMANDS[name] is None else f"`basicsr {' '.join(COMMANDS[name])}`"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--old', default=None, help="git revision to compare with ('none': this tree only; "
                        'default: the commit before gsasr_plugin_cli)')
    parser.add_argument('--repeat', type=int, default=5, help='timed runs per command and tree (default 5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs per command and tree first (default 1)')
    parser.add_argument('--commands', nargs='+', default=list(COMMANDS), choices=list(COMMANDS))
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results'), help='folder for the results')
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix='bench_cli_') as scratch:
        scratch = Path(scratch)
        trees: Dict[str, Path] = {}
        old = None if args.old == 'none' else (args.old or default_old())
        if old is not None:
            trees[f'old ({_git("rev-parse", "--short", old)})'] = export_commit(old, scratch / 'old')
        trees['new (working tree)'] = copy_working_tree(scratch / 'new')
        neutral = scratch / 'cwd'
        neutral.mkdir()
        times: Dict[Tuple[str, str], List[float]] = {}
        codes: Dict[Tuple[str, str], int] = {}
        for _ in range(max(0, args.warmup)):  # warm the file cache
            for tree in trees.values():
                for name in args.commands:
                    time_once(tree, name, neutral)
        for _ in range(max(1, args.repeat)):
            for name in args.commands:
                for tree_name, tree in trees.items():
                    seconds, code = time_once(tree, name, neutral)
                    times.setdefault((tree_name, name), []).append(seconds)
                    codes[(tree_name, name)] = code

    header = ['command'] + [f'{t} median (min) s' for t in trees]
    lines = [f'CLI start-up, {max(1, args.repeat)} runs each, {os.cpu_count()} CPUs, Python '
             f"{'.'.join(map(str, sys.version_info[:3]))}", '', '| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    rows = []
    for name in args.commands:
        cells = [label(name)]
        for tree_name in trees:
            values = times[(tree_name, name)]
            failed = ' (exit %d)' % codes[(tree_name, name)] if codes[(tree_name, name)] not in (0, ) else ''
            cells.append(f'{statistics.median(values):.2f} ({min(values):.2f}){failed}')
            rows.append([name, tree_name, f'{statistics.median(values):.4f}', f'{min(values):.4f}',
                         codes[(tree_name, name)]])
        lines.append('| ' + ' | '.join(cells) + ' |')
    text = '\n'.join(lines) + '\n'
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'cli_startup.md').write_text(text, encoding='utf-8')
    with open(out / 'cli_startup.csv', 'w', newline='', encoding='utf-8') as handle:
        writer = csv.writer(handle)
        writer.writerow(['command', 'tree', 'median_s', 'min_s', 'exit_code'])
        writer.writerows(rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
