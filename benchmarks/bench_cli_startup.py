"""Start-up time of the ``basicsr`` console script against its baselines, side by side in one run.

    python benchmarks/bench_cli_startup.py
    python benchmarks/bench_cli_startup.py --repeat 7 --commands help infer-h python import

The front end (``gsasr_plugin_cli``) answers ``--help``, ``--version`` and every ``-h`` without importing the
library; the baselines say what that buys: ``python -c pass`` (the interpreter alone: the floor),
``import torch``, and ``import gsasr_plugin`` (the library with its registries: torch, torchvision, basicsr,
what every command would cost without the front end). Each command runs in a fresh Python of this
environment from a neutral folder, commands interleaved so that machine load hits all alike; one untimed run
per command (``--warmup``) warms the file cache; the table gives the median and the minimum wall time of
``--repeat`` runs. Results: ``benchmarks/results/cli_startup.{md,csv}`` (``--out``).
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
FRONT_END = "import sys; sys.argv[0] = 'basicsr'; from gsasr_plugin_cli import main; sys.exit(main())"
COMMANDS: Dict[str, Tuple[str, List[str]]] = {  # name -> (label, command line after the interpreter)
    'help': ('`basicsr --help`', ['-c', FRONT_END, '--help']),
    'version': ('`basicsr --version`', ['-c', FRONT_END, '--version']),
    'infer-h': ('`basicsr infer -h`', ['-c', FRONT_END, 'infer', '-h']),
    'train-h': ('`basicsr train -h`', ['-c', FRONT_END, 'train', '-h']),
    'test-h': ('`basicsr test -h`', ['-c', FRONT_END, 'test', '-h']),
    'python': ('baseline: `python -c pass`', ['-c', 'pass']),
    'torch': ('baseline: `import torch`', ['-c', 'import torch']),
    'import': ('baseline: `import gsasr_plugin`', ['-c', 'import gsasr_plugin']),
}


def time_once(name: str, cwd: Path) -> Tuple[float, int]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE='1')
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *COMMANDS[name][1]], cwd=cwd, env=env, capture_output=True, timeout=600)
    return time.perf_counter() - start, proc.returncode


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=5, help='timed runs per command (default 5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs per command first (default 1)')
    parser.add_argument('--commands', nargs='+', default=list(COMMANDS), choices=list(COMMANDS))
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results'), help='folder for the results')
    args = parser.parse_args(argv)

    times: Dict[str, List[float]] = {}
    codes: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix='bench_cli_') as neutral:
        for _ in range(max(0, args.warmup)):  # warm the file cache
            for name in args.commands:
                time_once(name, Path(neutral))
        for _ in range(max(1, args.repeat)):
            for name in args.commands:
                seconds, codes[name] = time_once(name, Path(neutral))
                times.setdefault(name, []).append(seconds)

    lines = [f'CLI start-up, {max(1, args.repeat)} runs each, {os.cpu_count()} CPUs, Python '
             f"{'.'.join(map(str, sys.version_info[:3]))}", '', '| command | median (min) s |', '|---|---|']
    rows = []
    for name in args.commands:
        values = times[name]
        failed = f' (exit {codes[name]})' if codes[name] != 0 else ''
        lines.append(f'| {COMMANDS[name][0]} | {statistics.median(values):.2f} ({min(values):.2f}){failed} |')
        rows.append([name, f'{statistics.median(values):.4f}', f'{min(values):.4f}', codes[name]])
    text = '\n'.join(lines) + '\n'
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'cli_startup.md').write_text(text, encoding='utf-8')
    with open(out / 'cli_startup.csv', 'w', newline='', encoding='utf-8') as handle:
        writer = csv.writer(handle)
        writer.writerow(['command', 'median_s', 'min_s', 'exit_code'])
        writer.writerows(rows)
    return 0


if __name__ == '__main__':
    sys.exit(main())
