"""CPU speed and memory of GSASR: where the forward stands against the CPU's matrix-product rate (not a test).

    .venv/bin/python benchmarks/bench_cpu_speed.py                     # the report (below), ~15 CPU minutes
    .venv/bin/python benchmarks/bench_cpu_speed.py --runs 1 --configs 64x4 --memory-sizes 64   # a quick look
    .venv/bin/python benchmarks/bench_cpu_speed.py --compare --sizes 64 128 --threads 1 --skip-train  # before/after

**The report** (default), in one run, in process CPU time (the machine is shared: wall times are shown but
depend on its load, which is reported), for ``network_g`` of ``--opt`` (default ``options/train_gsasr_edsr.yml``,
GSASR-EDSR as released; random weights time the same):

* the forward ``net(lq, scale)`` under ``torch.no_grad()`` (encoder, decoder, rasterizer) at each of
  ``--configs`` (default 64² LR x2, x4, x8 and 128² x4) with 1 and 2 threads (``--threads``), beside
  LIIF-EDSR-baseline (random weights, LIIF's test-time query batches of 30,000) and bicubic
  (``F.interpolate``) on the same inputs: median CPU and wall seconds, FLOPs (PyTorch's counter with
  oneDNN's linear layers and the CPU fused attention added, ``gsasr_plugin.utils.flops``; 2 FLOPs per
  multiply-add) and the achieved GFLOP/s (FLOPs / CPU seconds, so per busy core) beside the GFLOP/s of a
  plain float32 matrix product of 16384 x 180 by 180 x 180 (``torch.mm``, GSASR's token count at 128² and
  width) measured between the forwards of the same run, with its spread;
* where GSASR's one-thread time goes at the first config (``torch.profiler``, self time per category of op,
  with the FLOPs and GFLOP/s of each);
* peak memory of the forward at ``--memory-sizes`` LR (default 256²) x4, whole and in ``--tile`` LR tiles,
  each in a fresh process: the process's peak RSS after building the net and after the forward.

**The comparison** (``--compare``): this checkout against an earlier revision, side by side in one run.
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

Writes ``<out>.md`` (default ``benchmarks/results/bench_cpu_speed.md``, ``bench_cpu_speed_compare.md`` with
``--compare``) with the tables and the command.
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


# ------------------------------------------------------------------------------------------- the report
DEFAULT_CONFIGS = ['64x2', '64x4', '64x8', '128x4']
MATMUL_SHAPE = (16384, 180, 180)  # tokens x width by width x width: GSASR's decoder GEMMs at 128² LR
LIIF_QUERY_BATCH = 30000  # LIIF's eval_bsize


def parse_config(text: str) -> tuple:
    """'64x4' -> (64, 4.0): LR side and scale."""
    size, _, scale = text.lower().partition('x')
    return int(size), float(scale)


def build_liif():
    """LIIF (Chen et al., CVPR 2021) with an EDSR-baseline encoder, random weights: feature unfolding, local
    ensemble and cell decoding, as its released test configuration (written here for timing, not training)."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from gsasr_plugin.archs.edsr_encoder_arch import EDSRBaseline

    class LIIF(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = EDSRBaseline(num_feat=64, num_block=16)
            dims = [64 * 9 + 2 + 2, 256, 256, 256, 256]
            layers = []
            for d_in, d_out in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(d_in, d_out), nn.ReLU()]
            self.imnet = nn.Sequential(*layers, nn.Linear(256, 3))

        @staticmethod
        def centres(h: int, w: int) -> torch.Tensor:
            """(h * w, 2) pixel centres in [-1, 1], (y, x)."""
            ys = (torch.arange(h) * 2 + 1) / h - 1
            xs = (torch.arange(w) * 2 + 1) / w - 1
            return torch.stack(torch.meshgrid(ys, xs, indexing='ij'), dim=-1).view(-1, 2)

        def forward(self, lq: torch.Tensor, out_size: tuple) -> torch.Tensor:
            feat = self.encoder(lq)
            batch, channels, h, w = feat.shape
            feat = F.unfold(feat, 3, padding=1).view(batch, channels * 9, h, w)
            coord = self.centres(*out_size).unsqueeze(0).expand(batch, -1, -1)
            cell = torch.tensor([2 / out_size[0], 2 / out_size[1]]).expand_as(coord)
            out = torch.cat([self.query(feat, coord[:, i:i + LIIF_QUERY_BATCH], cell[:, i:i + LIIF_QUERY_BATCH])
                             for i in range(0, coord.shape[1], LIIF_QUERY_BATCH)], dim=1)
            return out.transpose(1, 2).reshape(batch, 3, *out_size)

        def query(self, feat: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
            batch, _, h, w = feat.shape
            half = torch.tensor([1 / h, 1 / w])
            feat_coord = self.centres(h, w).T.reshape(1, 2, h, w).expand(batch, -1, -1, -1)
            preds, areas = [], []
            for vy in (-1, 1):
                for vx in (-1, 1):
                    shifted = (coord + torch.tensor([vy, vx]) * half + 1e-6).clamp(-1 + 1e-6, 1 - 1e-6)
                    grid = shifted.flip(-1).unsqueeze(1)
                    q_feat = F.grid_sample(feat, grid, mode='nearest', align_corners=False)[:, :, 0].transpose(1, 2)
                    q_coord = F.grid_sample(feat_coord, grid, mode='nearest', align_corners=False)[:, :, 0]
                    rel = (coord - q_coord.transpose(1, 2)) * torch.tensor([h, w])
                    inp = torch.cat([q_feat, rel, cell * torch.tensor([h, w])], dim=-1)
                    preds.append(self.imnet(inp.view(-1, inp.shape[-1])).view(batch, coord.shape[1], -1))
                    areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
            total = sum(areas)
            areas = [areas[3], areas[2], areas[1], areas[0]]  # each prediction weighted by the opposite area
            return sum(pred * (area / total).unsqueeze(-1) for pred, area in zip(preds, areas))

    return LIIF()


def matmul_rate() -> float:
    """GFLOP/s (per CPU second) of a plain float32 ``torch.mm`` of ``MATMUL_SHAPE``."""
    import torch
    m, k, n = MATMUL_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    torch.mm(a, b)
    reps = 8
    start = time.process_time()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * m * k * n * reps / (time.process_time() - start) / 1e9


# (category, op-name patterns) for the profile, first match wins
PROFILE_CATEGORIES = [
    ('rasterizer', ('raster', )),
    ('linear layers (GEMM)', ('linear_pointwise', 'addmm', 'aten::mm', 'aten::linear', 'mkl_linear')),
    ('convolutions', ('convolution', 'conv2d')),
    ('window attention kernel', ('scaled_dot_product', 'flash_attention', 'bmm', 'softmax')),
    ('layer norms', ('layer_norm', )),
    ('data movement (copy, gather, pad, shuffle, cat)', ('copy', 'index', 'cat', 'pixel_shuffle', 'pad', 'repeat',
                                                          'clone', 'contiguous', 'gather', 'roll', 'unfold')),
    ('element-wise (add, activations, ...)', ('add', 'mul', 'relu', 'sigmoid', 'tanh', 'clamp', 'sub', 'div', 'exp',
                                              'log', 'threshold', 'where', 'abs', 'sum', 'mean')),
]
FLOP_CATEGORY = {'linear_pointwise': 'linear layers (GEMM)', 'addmm': 'linear layers (GEMM)',
                 'mm': 'linear layers (GEMM)', 'convolution': 'convolutions',
                 'scaled_dot_product': 'window attention kernel', 'bmm': 'window attention kernel'}


def categorize(name: str, table) -> str:
    lowered = name.lower()
    for category, patterns in table:
        if any(pattern in lowered for pattern in patterns):
            return category
    return 'other (allocation, views, Python)'


def profile_forward(net, lq, scale) -> dict:
    """Self CPU time per category of op (torch.profiler, one forward) and counted FLOPs per category."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from gsasr_plugin.utils.flops import flop_counter
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net(lq, scale)
    times: Dict[str, float] = {}
    for event in prof.key_averages():
        category = categorize(event.key, PROFILE_CATEGORIES)
        times[category] = times.get(category, 0.0) + event.self_cpu_time_total / 1e6
    with torch.no_grad(), flop_counter() as counter:
        net(lq, scale)
    flops: Dict[str, float] = {}
    for op, count in counter.get_flop_counts()['Global'].items():
        category = next((c for key, c in FLOP_CATEGORY.items() if key in str(op)), 'other (allocation, views, Python)')
        flops[category] = flops.get(category, 0) + count
    return {'times': times, 'flops': flops}


def report_worker(args: argparse.Namespace) -> int:
    """One thread count: the timed forwards of the report, printed as JSON lines."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(args.worker_threads)
    import yaml
    import gsasr_plugin  # noqa: F401  (registries)
    from basicsr.archs import build_network
    from gsasr_plugin.utils.flops import count_flops

    with open(args.opt, encoding='utf-8') as handle:
        network_opt = yaml.safe_load(handle)['network_g']
    torch.manual_seed(0)
    gsasr = build_network(dict(network_opt)).eval()
    liif = build_liif().eval()
    configs = [parse_config(c) for c in args.configs]
    inputs = {size: torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
              for size, _ in configs}

    def out_size(size, scale):
        return (round(size * scale), ) * 2

    models = {
        'GSASR': lambda lq, scale: gsasr(lq, scale),
        'LIIF': lambda lq, scale: liif(lq, out_size(lq.shape[-1], scale)),
        'bicubic': lambda lq, scale: F.interpolate(lq, size=out_size(lq.shape[-1], scale), mode='bicubic',
                                                   align_corners=False),
    }
    with torch.no_grad():
        for name, run in models.items():  # warm-up: first-call allocations, oneDNN primitives
            run(inputs[configs[0][0]], configs[0][1])
        if args.count_flops:
            for size, scale in configs:
                for name, run in models.items():
                    reply({'kind': 'flops', 'model': name, 'size': size, 'scale': scale,
                           'flops': count_flops(run, inputs[size], scale)})
        if args.profile:
            size, scale = configs[0]
            reply({'kind': 'profile', 'size': size, 'scale': scale, **profile_forward(gsasr, inputs[size], scale)})
        reply({'kind': 'matmul', 'gflops': matmul_rate()})
        for run_index in range(args.runs):
            for size, scale in configs:
                for name, run in models.items():
                    start_wall, start_cpu = time.perf_counter(), time.process_time()
                    run(inputs[size], scale)
                    reply({'kind': 'time', 'model': name, 'size': size, 'scale': scale, 'run': run_index,
                           'cpu': time.process_time() - start_cpu, 'wall': time.perf_counter() - start_wall})
                reply({'kind': 'matmul', 'gflops': matmul_rate()})
    return 0


def memory_worker(args: argparse.Namespace) -> int:
    """Peak RSS of one GSASR forward (super_resolve, as basicsr infer runs it) in this fresh process."""
    import resource
    import torch
    torch.set_num_threads(args.worker_threads)
    import yaml
    import gsasr_plugin  # noqa: F401
    from basicsr.archs import build_network
    from gsasr_plugin.inference import super_resolve

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with open(args.opt, encoding='utf-8') as handle:
        network_opt = yaml.safe_load(handle)['network_g']
    net = build_network(dict(network_opt)).eval()
    lq = torch.rand(1, 3, args.memory_size, args.memory_size, generator=torch.Generator().manual_seed(0))
    built = peak_mib()
    start = time.process_time()
    output, _ = super_resolve(net, lq, args.scale, tile=args.memory_tile)
    reply({'built': built, 'peak': peak_mib(), 'cpu': time.process_time() - start, 'shape': list(output.shape)})
    return 0


def run_worker(kind: str, extra: List[str], args: argparse.Namespace, on_line=None) -> List[dict]:
    command = [sys.executable, str(Path(__file__).resolve()), '--worker', kind, '--opt', str(Path(args.opt).resolve()),
               '--scale', str(args.scale), *extra]
    results = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO) as process:
        for line in process.stdout:
            if line.startswith(RESULT_PREFIX):
                results.append(json.loads(line[len(RESULT_PREFIX):]))
                if on_line:
                    on_line(results[-1])
    if process.returncode:
        raise RuntimeError(f'{kind} worker failed (code {process.returncode}): {" ".join(command)}')
    return results


def cpu_description() -> str:
    model, flags = 'unknown CPU', set()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name') and model == 'unknown CPU':
                model = line.split(':', 1)[1].strip()
            elif line.startswith('flags') and not flags:
                flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    wanted = [f for f in ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in flags]
    return f'{model}, {os.cpu_count()} CPUs, flags: {" ".join(wanted) or "n/a"}'


def bench_report(args: argparse.Namespace) -> List[str]:
    import torch
    lines = [f'CPU: {cpu_description()}; torch {torch.__version__}', '']
    times: Dict[tuple, List[dict]] = {}
    flops: Dict[tuple, int] = {}
    matmul: Dict[int, List[float]] = {}
    profile_result = None
    load_start = load_average()
    for index, threads in enumerate(args.threads):
        def show(result, threads=threads):
            nonlocal profile_result
            if result['kind'] == 'time':
                times.setdefault((threads, result['model'], result['size'], result['scale']), []).append(result)
                print(f'  [{threads} thread(s)] run {result["run"] + 1} {result["model"]} {result["size"]}² '
                      f'x{result["scale"]:g}: {result["cpu"]:.2f} s CPU, {result["wall"]:.2f} s wall', flush=True)
            elif result['kind'] == 'flops':
                flops[(result['model'], result['size'], result['scale'])] = result['flops']
            elif result['kind'] == 'matmul':
                matmul.setdefault(threads, []).append(result['gflops'])
            elif result['kind'] == 'profile':
                profile_result = result
        extra = ['--worker-threads', str(threads), '--runs', str(args.runs), '--configs', *args.configs]
        if index == 0:
            extra += ['--count-flops', '--profile']
        run_worker('report', extra, args, show)
    load_end = load_average()
    lines += [f'### Forward (load average at start {load_start}, at end {load_end}; medians of {args.runs} runs)', '',
              'GFLOP/s = counted FLOPs / process CPU seconds (per busy core). The matmul column is '
              f'`torch.mm` of {MATMUL_SHAPE[0]}x{MATMUL_SHAPE[1]} by {MATMUL_SHAPE[1]}x{MATMUL_SHAPE[2]} float32 '
              'measured between the forwards of the same worker (median, [min-max]).', '',
              '| model | LR | scale | threads | CPU s | wall s | GFLOP | GFLOP/s (CPU) | matmul GFLOP/s '
              '| GFLOP/s / matmul | speed-up vs 1 thread (wall, CPU) |', '| --- ' * 11 + '|']
    for size, scale in (parse_config(c) for c in args.configs):
        for model in ('GSASR', 'LIIF', 'bicubic'):
            for threads in args.threads:
                runs = times.get((threads, model, size, scale))
                if not runs:
                    continue
                cpu = statistics.median(r['cpu'] for r in runs)
                wall = statistics.median(r['wall'] for r in runs)
                count = flops.get((model, size, scale), 0)
                rate = count / cpu / 1e9 if cpu > 0 else float('nan')
                mm = matmul[threads]
                mm_text = f'{statistics.median(mm):.1f} [{min(mm):.1f}-{max(mm):.1f}]'
                ratio = f'{rate / statistics.median(mm):.2f}' if count else '-'
                rate_text = f'{rate:.1f}' if count else '-'
                one = times.get((args.threads[0], model, size, scale))
                speedup = '-'
                if threads != args.threads[0] and one:
                    speedup = (f'{statistics.median(r["wall"] for r in one) / wall:.2f}x, '
                               f'{statistics.median(r["cpu"] for r in one) / cpu:.2f}x')
                lines.append(f'| {model} | {size}² | x{scale:g} | {threads} | {cpu:.3f} | {wall:.3f} | '
                             f'{count / 1e9:.1f} | {rate_text} | {mm_text} | {ratio} | {speedup} |')
    lines.append('')
    if profile_result:
        total = sum(profile_result['times'].values())
        size, scale = profile_result['size'], profile_result['scale']
        runs = times.get((args.threads[0], 'GSASR', size, scale))
        cpu = statistics.median(r['cpu'] for r in runs) if runs else float('nan')
        lines += [f'### Where GSASR\'s time goes ({size}² x{scale:g}, {args.threads[0]} thread(s))', '',
                  'Shares of torch.profiler\'s self time per category of op, applied to the forward\'s median CPU '
                  f'time above ({cpu:.2f} s) for the CPU seconds and GFLOP/s of each.', '',
                  '| category | share of time | CPU s | GFLOP | GFLOP/s |', '| --- ' * 5 + '|']
        for category, seconds in sorted(profile_result['times'].items(), key=lambda item: -item[1]):
            share = seconds / total
            count = profile_result['flops'].get(category, 0)
            rate = f'{count / (share * cpu) / 1e9:.1f}' if count and share else '-'
            lines.append(f'| {category} | {100 * share:.1f} % | {share * cpu:.3f} | {count / 1e9:.1f} | {rate} |')
        lines.append('')
    if args.memory_sizes:
        lines += [f'### Peak memory (fresh process per row, x{args.scale:g}, `super_resolve`, '
                  f'{args.threads[0]} thread(s))', '',
                  '| LR | tiles | peak RSS after building the net, MiB | peak RSS after the forward, MiB '
                  '| forward\'s share, MiB | CPU s |', '| --- ' * 6 + '|']
        for size in args.memory_sizes:
            for tile in (0, args.tile):
                result = run_worker('memory', ['--worker-threads', str(args.threads[0]), '--memory-size', str(size),
                                               '--memory-tile', str(tile)], args)[-1]
                label = 'none' if tile == 0 else f'{tile}² LR'
                print(f'  [memory] {size}² tiles {label}: peak {result["peak"]:.0f} MiB', flush=True)
                lines.append(f'| {size}² | {label} | {result["built"]:.0f} | {result["peak"]:.0f} | '
                             f'{result["peak"] - result["built"]:.0f} | {result["cpu"]:.1f} |')
        lines.append('')
    return lines


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--compare', action='store_true',
                        help='compare this checkout with --baseline (forward and demo training) instead of the report')
    parser.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS,
                        help='report: LR side x scale, e.g. 64x4 (default: %(default)s)')
    parser.add_argument('--memory-sizes', type=int, nargs='*', default=[256],
                        help='report: LR sides of the peak-memory rows, none to skip (default: 256)')
    parser.add_argument('--tile', type=int, default=96, help='report: LR tile of the tiled memory rows (default: 96)')
    parser.add_argument('--baseline', default=DEFAULT_BASELINE, help='the "before" revision (default: %(default)s)')
    parser.add_argument('--variants', default='before,decoder,after',
                        help='comma-separated subset of before, decoder, after (default: %(default)s)')
    parser.add_argument('--opt', default=str(REPO / 'options' / 'train_gsasr_edsr.yml'),
                        help='option file whose network_g is timed (default: options/train_gsasr_edsr.yml)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[60, 120], help='LR sides (default: 60 120)')
    parser.add_argument('--scale', type=float, default=4.0)
    parser.add_argument('--runs', type=int, default=3, help='timed forwards per model / variant and size (default: 3)')
    parser.add_argument('--threads', type=int, nargs='+', default=None,
                        help='torch threads per forward; the report: first one is the reference (default: 1 2); '
                        '--compare: 0 = torch default (default: 1 0)')
    parser.add_argument('--skip-forward', action='store_true')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--train-runs', type=int, default=1)
    parser.add_argument('--train-threads', type=int, default=1, help='OMP_NUM_THREADS of the training runs, '
                        '0 = unset (default: 1)')
    parser.add_argument('--train-iters', type=int, default=0,
                        help='quick check: train this many iterations, validating at the end (default: as the demo)')
    parser.add_argument('--out', default=None, help='output file without .md (default: benchmarks/results/'
                        'bench_cpu_speed, bench_cpu_speed_compare with --compare)')
    parser.add_argument('--worker', nargs='?', const='compare', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--count-flops', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--profile', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--memory-size', type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument('--memory-tile', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--weights', help=argparse.SUPPRESS)
    parser.add_argument('--worker-threads', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = [1, 0] if args.compare else [1, 2]
    if args.out is None:
        args.out = str(REPO / 'benchmarks' / 'results' / ('bench_cpu_speed_compare' if args.compare
                                                          else 'bench_cpu_speed'))
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return {'compare': worker, 'report': report_worker, 'memory': memory_worker}[args.worker](args)
    for config in args.configs:
        try:
            parse_config(config)
        except ValueError:
            print(f'--configs: {config!r} is not SIZExSCALE (e.g. 64x4)', file=sys.stderr)
            return 2
    if not args.compare:
        head = git('rev-parse', 'HEAD').strip()
        dirty = ' (with uncommitted changes)' if git('status', '--porcelain', '--', 'gsasr_plugin', 'ops').strip() else ''
        command = ' '.join(['python benchmarks/bench_cpu_speed.py'] + sys.argv[1:])
        lines = ['# CPU speed and memory of GSASR', '', f'Command: `{command}`', '',
                 f'Revision {head}{dirty}; {time.strftime("%Y-%m-%d %H:%M")}; network_g of {args.opt}', '']
        lines += bench_report(args)
        return write_result(args, lines)
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
    return write_result(args, lines)


def write_result(args: argparse.Namespace, lines: List[str]) -> int:
    text = '\n'.join(lines)
    print('\n' + text)
    out = Path(args.out).with_suffix('.md')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + '\n', encoding='utf-8')
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
