"""CPU speed of GSASR against an earlier revision, side by side in one run (not a test).

    .venv/bin/python benchmarks/bench_cpu_speed.py                       # forward 60² and 120² LR x4, demo training
    .venv/bin/python benchmarks/bench_cpu_speed.py --skip-train --sizes 60 --runs 5 --threads 1 0
    .venv/bin/python benchmarks/bench_cpu_speed.py --skip-forward --train-runs 2
    .venv/bin/python benchmarks/bench_cpu_speed.py --baseline <rev> --opt options/train_gsasr_edsr_ours.yml

Variants (each in its own Python process, importing its own ``gsasr_plugin``):

* ``before``: ``gsasr_plugin`` and ``ops/`` of ``--baseline`` (default: the last revision before the CPU
  speed work, issue 15), extracted with ``git archive`` into a temporary folder;
* ``after``: this checkout, as installed (with whatever rasterizer extension is built here);
* ``decoder``: this checkout's ``gsasr_plugin`` with the baseline's ``ops/`` (the pure-PyTorch rasterizer of
  then), shown when ``ops/`` differs from the baseline's, to tell the decoder's share of the speed-up from the
  rasterizer's.

Forward: ``network_g`` of ``--opt`` (default ``options/train_gsasr_edsr.yml``, GSASR-EDSR as released; random
weights made by the first variant and loaded by the others, so the state dicts must match), one image of
``--sizes`` LR pixels square at x``--scale``, ``net(lq, scale)`` under ``torch.no_grad()`` (encoder, decoder
and rasterizer). Runs alternate between the variants (order reversed every run) after one untimed warm-up
each; the table gives the median wall and process CPU seconds per forward and before / variant ratios, and
the largest difference between the variants' outputs. ``--threads`` sets torch's intra-op threads per
comparison (0: torch's default).

Training: the demo as ``scripts/demo.sh`` runs it (``basicsr train -opt options/train_gsasr_demo.yml``, the
option file of each variant's revision, photos written by ``python -m gsasr_plugin.demo write-data``), in a
temporary folder, one variant after the other (``--train-runs`` times, order alternating). Seconds per
iteration are the median of the 25-iteration intervals of the log's timestamps that hold no validation or
checkpoint; the validation PSNR / SSIM are the log's last (iteration 300). ``--train-threads`` (default 1)
sets ``OMP_NUM_THREADS`` for the runs.

On a shared machine the wall times depend on the load (reported) and on OpenMP: with more busy threads
than cores, OpenMP threads spin at every operation's barrier while the thread they wait for is descheduled,
and a run with 2 threads can take several times longer than with 1 (``OMP_WAIT_POLICY=PASSIVE`` avoids it).
Process CPU time (1 thread) is the most stable measure of the work done.

Writes ``<out>.md`` (default ``benchmarks/results/bench_cpu_speed.md``) with the tables and the command.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
# The last main revision before the CPU speed work (issue 15): "before" of the targets.
DEFAULT_BASELINE = '3ddb466eeb5b03f74f9e36a1e3caef4602a759c5'
RESULT_PREFIX = 'BENCH_RESULT '


# ----------------------------------------------------------------------------------------- worker process
def worker(args: argparse.Namespace) -> int:
    """Serve forward timings on stdin/stdout (one JSON command per line) for the imported gsasr_plugin."""
    import torch
    if args.worker_threads > 0:
        torch.set_num_threads(args.worker_threads)
    import yaml
    import gsasr_plugin  # noqa: F401  (registries)
    from basicsr.archs import build_network

    with open(args.opt, encoding='utf-8') as handle:
        network_opt = yaml.safe_load(handle)['network_g']
    torch.manual_seed(0)
    net = build_network(dict(network_opt)).eval()
    if Path(args.weights).is_file():
        net.load_state_dict(torch.load(args.weights), strict=True)
    else:
        torch.save(net.state_dict(), args.weights)
    reply({'ready': True, 'package': str(Path(gsasr_plugin.__file__).parent), 'threads': torch.get_num_threads()})
    for line in sys.stdin:
        command = json.loads(line)
        if command.get('quit'):
            break
        generator = torch.Generator().manual_seed(command['size'])
        lq = torch.rand(1, 3, command['size'], command['size'], generator=generator)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        with torch.no_grad():
            out = net(lq, command['scale'])
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
        if command.get('save'):
            torch.save(out, command['save'])
        reply({'wall': wall, 'cpu': cpu, 'shape': list(out.shape)})
    return 0


def reply(message: dict) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(message) + '\n')
    sys.stdout.flush()


class Worker:
    """A variant's worker process."""

    def __init__(self, name: str, root: Optional[Path], opt: str, weights: Path, threads: int, workdir: Path):
        env = dict(os.environ)
        if root is not None:
            env['PYTHONPATH'] = str(root) + os.pathsep + env.get('PYTHONPATH', '')
        command = [sys.executable, str(Path(__file__).resolve()), '--worker', '--opt', str(Path(opt).resolve()),
                   '--weights', str(weights), '--worker-threads', str(threads)]
        # cwd outside the repository: python puts the cwd first on sys.path, before PYTHONPATH
        self.name = name
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=workdir)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX):])
        raise RuntimeError(f'worker {self.name} exited (code {self.process.wait()})')

    def forward(self, size: int, scale: float, save: Optional[Path] = None) -> dict:
        self.process.stdin.write(json.dumps({'size': size, 'scale': scale, 'save': str(save) if save else None}) + '\n')
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({'quit': True}) + '\n')
            self.process.stdin.flush()
            self.process.wait(timeout=60)


# ------------------------------------------------------------------------------------------- variants
def git(*args: str) -> str:
    return subprocess.run(['git', '-C', str(REPO), *args], check=True, capture_output=True, text=True).stdout


# Top-level packages of the product besides ops/ (gsasr_plugin_cli: the console script's front end, newer revisions)
PACKAGES = ('gsasr_plugin', 'gsasr_plugin_cli')


def extract_revision(revision: str, dest: Path, plugin_from_checkout: bool = False) -> Path:
    """``dest/gsasr_plugin`` (with ``ops`` inside) and its sibling packages from ``revision``; with
    ``plugin_from_checkout`` the packages are this checkout's and only ``ops`` is the revision's."""
    dest.mkdir(parents=True)
    present = [path for path in PACKAGES + ('ops', ) if subprocess.run(
        ['git', '-C', str(REPO), 'cat-file', '-e', f'{revision}:{path}'], capture_output=True).returncode == 0]
    archive = subprocess.run(['git', '-C', str(REPO), 'archive', revision, *present], check=True,
                             capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', str(dest)], input=archive, check=True)
    if plugin_from_checkout:
        for package in PACKAGES:
            shutil.rmtree(dest / package, ignore_errors=True)
            if (REPO / package).is_dir():
                shutil.copytree(REPO / package, dest / package, ignore=shutil.ignore_patterns('__pycache__'))
    shutil.rmtree(dest / 'gsasr_plugin' / 'ops', ignore_errors=True)
    shutil.move(str(dest / 'ops'), str(dest / 'gsasr_plugin' / 'ops'))
    return dest


def make_variants(baseline: str, tmp: Path, wanted: List[str]) -> Dict[str, Optional[Path]]:
    """name -> folder to put first on PYTHONPATH (None: this checkout as installed)."""
    ops_changed = subprocess.run(['git', '-C', str(REPO), 'diff', '--quiet', baseline, '--', 'ops'],
                                 check=False).returncode != 0
    variants: Dict[str, Optional[Path]] = {}
    if 'before' in wanted:
        variants['before'] = extract_revision(baseline, tmp / 'before')
    if 'decoder' in wanted and ops_changed:
        variants['decoder'] = extract_revision(baseline, tmp / 'decoder', plugin_from_checkout=True)
    if 'after' in wanted:
        variants['after'] = None
    return variants


def load_average() -> str:
    try:
        return ' / '.join(f'{value:.1f}' for value in os.getloadavg())
    except OSError:
        return 'n/a'


# -------------------------------------------------------------------------------------------- forward
def bench_forward(args: argparse.Namespace, variants: Dict[str, Optional[Path]], tmp: Path) -> List[str]:
    import torch
    lines = []
    for threads in args.threads:
        label = f'{threads} thread(s)' if threads > 0 else 'torch default threads'
        weights = tmp / f'weights_{threads}.pt'
        workers = {}
        load_start = load_average()
        try:
            for name, root in variants.items():  # the first one writes the weights, the others load them
                try:
                    workers[name] = Worker(name, root, args.opt, weights, threads, tmp)
                except RuntimeError as error:
                    if name != 'decoder':
                        raise
                    # this plugin may need an ops/ newer than the baseline's: no mixed variant then
                    print(f'  skipping the decoder variant: {error}', flush=True)
            names = list(workers)
            for worker_ in workers.values():  # warm-up: first-call allocations, oneDNN kernels
                worker_.forward(min(args.sizes + [24]), args.scale)
            times: Dict[tuple, List[dict]] = {}
            for run in range(args.runs):
                order = names if run % 2 == 0 else names[::-1]
                for size in args.sizes:
                    for name in order:
                        save = tmp / f'out_{name}_{size}.pt' if run == 0 else None
                        result = workers[name].forward(size, args.scale, save)
                        times.setdefault((name, size), []).append(result)
                        print(f'  [{label}] run {run + 1}/{args.runs} {size}x{size} {name}: '
                              f'{result["wall"]:.2f} s wall, {result["cpu"]:.2f} s CPU', flush=True)
        finally:
            for worker_ in workers.values():
                worker_.close()
        load_end = load_average()
        packages = '; '.join(f'{name}: {w.info["package"]} ({w.info["threads"]} threads)'
                             for name, w in workers.items())
        lines += [f'### Forward, {label} (load average at start {load_start}, at end {load_end})', '',
                  f'Packages: {packages}', '',
                  '| LR | variant | wall s (median) | CPU s (median) | wall runs | before / variant (wall) '
                  '| before / variant (CPU) | max abs diff vs before |', '| --- ' * 8 + '|']
        for size in args.sizes:
            base = times.get(('before', size))
            reference = torch.load(tmp / f'out_before_{size}.pt') if base else None
            for name in names:
                runs = times[(name, size)]
                wall = statistics.median(r['wall'] for r in runs)
                cpu = statistics.median(r['cpu'] for r in runs)
                if base:
                    base_wall = statistics.median(r['wall'] for r in base)
                    base_cpu = statistics.median(r['cpu'] for r in base)
                    ratios = f'{base_wall / wall:.2f}x | {base_cpu / cpu:.2f}x'
                    diff = (torch.load(tmp / f'out_{name}_{size}.pt') - reference).abs().max().item()
                    diff_text = f'{diff:.2e}'
                else:
                    ratios, diff_text = '- | -', '-'
                all_runs = ', '.join(f'{r["wall"]:.1f}' for r in runs)
                lines.append(f'| {size}x{size} x{args.scale:g} | {name} | {wall:.2f} | {cpu:.2f} | {all_runs} | '
                             f'{ratios} | {diff_text} |')
        lines.append('')
    return lines


# ------------------------------------------------------------------------------------------- training
def demo_options(name: str, root: Optional[Path], baseline: str, workdir: Path) -> Path:
    """The demo's option file of the variant's revision."""
    path = workdir / f'train_demo_{name}.yml'
    if name == 'before':
        path.write_text(git('show', f'{baseline}:options/train_gsasr_demo.yml'), encoding='utf-8')
    else:
        shutil.copy(REPO / 'options' / 'train_gsasr_demo.yml', path)
    return path


def parse_training_log(log: Path, print_freq: int, busy_every: List[int]) -> dict:
    """Median seconds/iteration over the logging intervals that start at no multiple of ``busy_every``
    (validation, checkpoints: they run right after their iteration's log line), and the last metrics."""
    stamps = {}
    val_iters = set()
    metrics: Dict[str, float] = {}
    pattern = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: \[.*?iter:\s*(\d+),')
    for line in log.read_text(encoding='utf-8', errors='replace').splitlines():
        match = pattern.match(line)
        if match:
            seconds = time.mktime(time.strptime(match.group(1)[:19], '%Y-%m-%d %H:%M:%S'))
            stamps[int(match.group(2))] = seconds + int(match.group(1)[20:]) / 1e3
        found = re.search(r'Validation .*\(iter (\d+)\)', line)
        if found:
            val_iters.add(int(found.group(1)))
        metric = re.match(r"^\s*# ([\w.]+): ([-\d.]+)", line)
        if metric:
            metrics[metric.group(1)] = float(metric.group(2))
    intervals = []
    for it in sorted(stamps):
        prev = it - print_freq
        if prev in stamps and prev not in val_iters and all(prev % every for every in busy_every if every):
            intervals.append((stamps[it] - stamps[prev]) / print_freq)
    return {'s_per_iter': statistics.median(intervals) if intervals else float('nan'), 'intervals': len(intervals),
            'metrics': metrics, 'last_iter': max(stamps) if stamps else 0}


def bench_training(args: argparse.Namespace, variants: Dict[str, Optional[Path]], tmp: Path) -> List[str]:
    import yaml
    workdir = tmp / 'train'
    workdir.mkdir()
    subprocess.run([sys.executable, '-m', 'gsasr_plugin.demo', 'write-data', 'demo_data'], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    results: Dict[str, List[dict]] = {}
    load_start = load_average()
    names = list(variants)
    for run in range(args.train_runs):
        for name in (names if run % 2 == 0 else names[::-1]):
            root = variants[name]
            env = dict(os.environ)
            if root is not None:
                env['PYTHONPATH'] = str(root) + os.pathsep + env.get('PYTHONPATH', '')
            if args.train_threads > 0:
                env['OMP_NUM_THREADS'] = str(args.train_threads)
            experiment = f'bench_{name}_{run}'
            options = demo_options(name, root, args.baseline, workdir)
            overrides = [f'name={experiment}']
            if args.train_iters:
                overrides += [f'train:total_iter={args.train_iters}', f'val:val_freq={args.train_iters}',
                              f'logger:save_checkpoint_freq={args.train_iters}']
            with open(options, encoding='utf-8') as handle:
                opt = yaml.safe_load(handle)
            busy = [args.train_iters or opt['val']['val_freq'],
                    args.train_iters or opt['logger']['save_checkpoint_freq']]
            start = time.perf_counter()
            done = subprocess.run([sys.executable, '-m', 'gsasr_plugin_cli', 'train', '-opt', str(options),
                                   '--force_yml', *overrides], cwd=workdir, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
            elapsed = time.perf_counter() - start
            logs = sorted((workdir / 'experiments' / experiment).glob(f'train_{experiment}_*.log'))
            if done.returncode != 0 or not logs:
                if name == 'decoder':  # this plugin may need an ops/ newer than the baseline's
                    print(f'  skipping the decoder variant: training failed (code {done.returncode})', flush=True)
                    continue
                raise RuntimeError(f'training {name} failed (code {done.returncode}):\n{done.stdout[-3000:]}')
            parsed = parse_training_log(logs[-1], opt['logger']['print_freq'], busy)
            parsed['total'] = elapsed
            results.setdefault(name, []).append(parsed)
            print(f'  [train] run {run + 1}/{args.train_runs} {name}: {parsed["s_per_iter"]:.3f} s/iter, '
                  f'{elapsed:.0f} s in all, ' + ', '.join(f'{k} {v:.4f}' for k, v in parsed['metrics'].items()),
                  flush=True)
    load_end = load_average()
    threads = f'OMP_NUM_THREADS={args.train_threads}' if args.train_threads > 0 else 'default threads'
    metric_names = sorted({k for runs in results.values() for r in runs for k in r['metrics']})
    lines = [f'### Demo training ({threads}; load average at start {load_start}, at end {load_end})', '',
             '| variant | s/iter (median) | runs s/iter | before / variant | whole run s | '
             + ' | '.join(metric_names) + ' |', '| --- ' * (5 + len(metric_names)) + '|']
    base = results.get('before')
    for name, runs in results.items():
        s_iter = statistics.median(r['s_per_iter'] for r in runs)
        ratio = f'{statistics.median(r["s_per_iter"] for r in base) / s_iter:.2f}x' if base else '-'
        values = ' | '.join(f'{runs[-1]["metrics"].get(m, float("nan")):.4f}' for m in metric_names)
        all_runs = ', '.join(f'{r["s_per_iter"]:.3f}' for r in runs)
        total = statistics.median(r['total'] for r in runs)
        lines.append(f'| {name} | {s_iter:.3f} | {all_runs} | {ratio} | {total:.0f} | {values} |')
    if base and 'after' in results:
        deltas = [results['after'][-1]['metrics'].get(m, float('nan')) - base[-1]['metrics'].get(m, float('nan'))
                  for m in metric_names if m.startswith('psnr')]
        lines += ['', f'Largest PSNR difference after - before: {max(deltas, key=abs):+.4f} dB' if deltas else '']
    lines.append('')
    return lines


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--baseline', default=DEFAULT_BASELINE, help='the "before" revision (default: %(default)s)')
    parser.add_argument('--variants', default='before,decoder,after',
                        help='comma-separated subset of before, decoder, after (default: %(default)s)')
    parser.add_argument('--opt', default=str(REPO / 'options' / 'train_gsasr_edsr.yml'),
                        help='option file whose network_g is timed (default: options/train_gsasr_edsr.yml)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[60, 120], help='LR sides (default: 60 120)')
    parser.add_argument('--scale', type=float, default=4.0)
    parser.add_argument('--runs', type=int, default=3, help='timed forwards per variant and size (default: 3)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 0],
                        help='torch threads per forward comparison, 0 = torch default (default: 1 0)')
    parser.add_argument('--skip-forward', action='store_true')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--train-runs', type=int, default=1)
    parser.add_argument('--train-threads', type=int, default=1, help='OMP_NUM_THREADS of the training runs, '
                        '0 = unset (default: 1)')
    parser.add_argument('--train-iters', type=int, default=0,
                        help='quick check: train this many iterations, validating at the end (default: as the demo)')
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'bench_cpu_speed'))
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--weights', help=argparse.SUPPRESS)
    parser.add_argument('--worker-threads', type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    wanted = [v.strip() for v in args.variants.split(',') if v.strip()]
    unknown = set(wanted) - {'before', 'decoder', 'after'}
    if unknown:
        print(f'--variants: unknown {sorted(unknown)}', file=sys.stderr)
        return 2
    head = git('rev-parse', 'HEAD').strip()
    dirty = ' (with uncommitted changes)' if git('status', '--porcelain', '--', 'gsasr_plugin', 'ops').strip() else ''
    command = ' '.join(['python benchmarks/bench_cpu_speed.py'] + sys.argv[1:])
    lines = ['# CPU speed: before vs after', '', f'Command: `{command}`', '',
             f'before = {args.baseline}; after = {head}{dirty}; machine: {os.cpu_count()} CPUs; '
             f'{time.strftime("%Y-%m-%d %H:%M")}', '']
    with tempfile.TemporaryDirectory(prefix='bench_cpu_speed_') as name:
        tmp = Path(name)
        variants = make_variants(args.baseline, tmp, wanted)
        if 'decoder' in wanted and 'decoder' not in variants:
            lines += ['(no `decoder` variant: `ops/` is the baseline\'s, so `after` is the decoder alone)', '']
        if not args.skip_forward:
            lines += bench_forward(args, variants, tmp)
        if not args.skip_train:
            lines += bench_training(args, variants, tmp)
    text = '\n'.join(lines)
    print('\n' + text)
    out = Path(args.out).with_suffix('.md')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + '\n', encoding='utf-8')
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
