"""CPU speed and memory of GSASR: where the forward stands against the CPU's matrix-product rate (not a test).

    .venv/bin/python benchmarks/bench_cpu_speed.py                     # the report (below), ~15 CPU minutes
    .venv/bin/python benchmarks/bench_cpu_speed.py --runs 1 --configs 64x4 --threads 1 --memory-sizes  # a quick look

In one run, in process CPU time (the machine may be shared: wall times are shown with the load average, but
depend on it), for ``network_g`` of ``--opt`` (default ``options/train_gsasr_edsr.yml``, GSASR-EDSR as released;
random weights time the same):

* the forward ``net(lq, scale)`` under ``torch.no_grad()`` (encoder, decoder, rasterizer) at each of
  ``--configs`` (default 64² LR x2, x4, x8 and 128² x4) with 1 and 2 threads (``--threads``), beside
  LIIF-EDSR-baseline (random weights, LIIF's test-time query batches of 30,000) and bicubic
  (``F.interpolate``) on the same inputs: median CPU and wall seconds, FLOPs (PyTorch's counter with
  oneDNN's linear layers and the CPU fused attention added, ``gsasr_plugin.utils.flops``; 2 FLOPs per
  multiply-add) and the achieved GFLOP/s (FLOPs / CPU seconds, so per busy core) beside the GFLOP/s of a
  plain float32 matrix product of 16384 x 180 by 180 x 180 (``torch.mm``, GSASR's token count at 128² and
  width) measured between the forwards of the same worker, with its spread. With several threads the
  speed-up over the first thread count is given in wall time beside the matmul's own wall speed-up in the
  same workers: on a shared machine the latter shows how much of the extra cores was there to be had;
* where GSASR's one-thread time goes at the first config (``torch.profiler``, self time per category of op,
  with the FLOPs and GFLOP/s of each);
* peak memory of ``super_resolve`` (what ``basicsr infer`` runs) at ``--memory-sizes`` LR (default 256²) x4,
  whole (``tile_size=0``) and in ``--tile`` LR tiles, each in a fresh process: the process's peak RSS after
  building the net and after the forward.

Each worker is a fresh process per thread count. On a shared machine, OpenMP threads spin at every
operation's barrier while the thread they wait for is descheduled, so a run with 2 threads can take several
times the CPU time of 1 under load (``OMP_WAIT_POLICY=PASSIVE`` in the environment avoids it); 1-thread CPU
time is the most stable measure of the work done.

Writes ``<out>.md`` (default ``benchmarks/results/bench_cpu_speed.md``) with the tables and the command, the
forward's tables as soon as they are measured.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = 'BENCH_RESULT '


def reply(message: dict) -> None:
    sys.stdout.write(RESULT_PREFIX + json.dumps(message) + '\n')
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------- helpers
def git(*args: str) -> str:
    return subprocess.run(['git', '-C', str(REPO), *args], check=True, capture_output=True, text=True).stdout


def load_average() -> str:
    try:
        return ' / '.join(f'{value:.1f}' for value in os.getloadavg())
    except OSError:
        return 'n/a'


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
    from gsasr_plugin.archs.edsr_encoder_arch import EDSREncoder

    class LIIF(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = EDSREncoder(num_feat=64, num_block=16)
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


def matmul_rate() -> dict:
    """GFLOP/s of a plain float32 ``torch.mm`` of ``MATMUL_SHAPE``, per CPU second and per wall second."""
    import torch
    m, k, n = MATMUL_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    torch.mm(a, b)
    reps = 8
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        torch.mm(a, b)
    flops = 2 * m * k * n * reps / 1e9
    return {'cpu': flops / (time.process_time() - start_cpu), 'wall': flops / (time.perf_counter() - start_wall)}


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
        if args.worker_profile:
            size, scale = configs[0]
            reply({'kind': 'profile', 'size': size, 'scale': scale, **profile_forward(gsasr, inputs[size], scale)})
        reply({'kind': 'matmul', **matmul_rate()})
        for run_index in range(args.runs):
            for size, scale in configs:
                for name, run in models.items():
                    start_wall, start_cpu = time.perf_counter(), time.process_time()
                    run(inputs[size], scale)
                    reply({'kind': 'time', 'model': name, 'size': size, 'scale': scale, 'run': run_index,
                           'cpu': time.process_time() - start_cpu, 'wall': time.perf_counter() - start_wall})
                reply({'kind': 'matmul', **matmul_rate()})
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
    output, _ = super_resolve(net, lq, args.scale, tile_size=args.memory_tile)
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


def bench_report(args: argparse.Namespace, header: List[str]) -> List[str]:
    import torch
    lines = header + [f'CPU: {cpu_description()}; torch {torch.__version__}, capability '
                      f'{torch.backends.cpu.get_cpu_capability()}', '']
    times: Dict[tuple, List[dict]] = {}
    flops: Dict[tuple, int] = {}
    matmul: Dict[int, List[dict]] = {}
    profile_result = None
    load_start = load_average()
    for index, threads in enumerate(args.threads):
        def show(result, threads=threads):
            nonlocal profile_result
            if result['kind'] == 'time':
                times.setdefault((threads, result['model'], result['size'], result['scale']), []).append(result)
                print(f'  [{threads} thread(s)] run {result["run"] + 1} {result["model"]} {result["size"]}² '
                      f'x{result["scale"]:g}: {result["cpu"]:.2f} s CPU, {result["wall"]:.2f} s wall '
                      f'(load {load_average()})', flush=True)
            elif result['kind'] == 'flops':
                flops[(result['model'], result['size'], result['scale'])] = result['flops']
            elif result['kind'] == 'matmul':
                matmul.setdefault(threads, []).append(result)
                print(f'  [{threads} thread(s)] matmul {result["cpu"]:.1f} GFLOP/s CPU, {result["wall"]:.1f} wall',
                      flush=True)
            elif result['kind'] == 'profile':
                profile_result = result
        extra = ['--worker-threads', str(threads), '--runs', str(args.runs), '--configs', *args.configs]
        if index == 0:
            extra += ['--count-flops'] + (['--worker-profile'] if args.profile else [])
        run_worker('report', extra, args, show)
    load_end = load_average()
    first = args.threads[0]
    lines += [f'### Forward (load average at start {load_start}, at end {load_end}; medians of {args.runs} runs)', '',
              'GFLOP/s = counted FLOPs / process CPU seconds (per busy core). The matmul column is '
              f'`torch.mm` of {MATMUL_SHAPE[0]}x{MATMUL_SHAPE[1]} by {MATMUL_SHAPE[1]}x{MATMUL_SHAPE[2]} float32 '
              'measured between the forwards of the same worker (median, [min-max]). The speed-up is the wall '
              f'time of {first} thread(s) over this row\'s, beside the matmul\'s wall-rate ratio in the same workers '
              '(what the cores gave a plain product meanwhile).', '',
              '| model | LR | scale | threads | CPU s | wall s | GFLOP | GFLOP/s (CPU) | matmul GFLOP/s '
              '| GFLOP/s / matmul | speed-up (wall), model / matmul |', '| --- ' * 11 + '|']
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
                mm = [r['cpu'] for r in matmul[threads]]
                mm_text = f'{statistics.median(mm):.1f} [{min(mm):.1f}-{max(mm):.1f}]'
                ratio = f'{rate / statistics.median(mm):.2f}' if count else '-'
                rate_text = f'{rate:.1f}' if count else '-'
                one = times.get((first, model, size, scale))
                speedup = '-'
                if threads != first and one:
                    mm_speedup = (statistics.median(r['wall'] for r in matmul[threads])
                                  / statistics.median(r['wall'] for r in matmul[first]))
                    speedup = f'{statistics.median(r["wall"] for r in one) / wall:.2f}x / {mm_speedup:.2f}x'
                lines.append(f'| {model} | {size}² | x{scale:g} | {threads} | {cpu:.3f} | {wall:.3f} | '
                             f'{count / 1e9:.1f} | {rate_text} | {mm_text} | {ratio} | {speedup} |')
    lines.append('')
    if profile_result:
        total = sum(profile_result['times'].values())
        size, scale = profile_result['size'], profile_result['scale']
        runs = times.get((first, 'GSASR', size, scale))
        cpu = statistics.median(r['cpu'] for r in runs) if runs else float('nan')
        lines += [f'### Where GSASR\'s time goes ({size}² x{scale:g}, {first} thread(s))', '',
                  'Shares of torch.profiler\'s self time per category of op, applied to the forward\'s median CPU '
                  f'time above ({cpu:.2f} s) for the CPU seconds and GFLOP/s of each.', '',
                  '| category | share of time | CPU s | GFLOP | GFLOP/s |', '| --- ' * 5 + '|']
        for category, seconds in sorted(profile_result['times'].items(), key=lambda item: -item[1]):
            share = seconds / total
            count = profile_result['flops'].get(category, 0)
            rate = f'{count / (share * cpu) / 1e9:.1f}' if count and share else '-'
            lines.append(f'| {category} | {100 * share:.1f} % | {share * cpu:.3f} | {count / 1e9:.1f} | {rate} |')
        lines.append('')
    write_result(args, lines)
    if args.memory_sizes:
        lines += [f'### Peak memory (fresh process per row, x{args.scale:g}, `super_resolve`, '
                  f'{first} thread(s))', '',
                  '| LR | tiles | peak RSS after building the net, MiB | peak RSS after the forward, MiB '
                  '| forward\'s share, MiB | CPU s |', '| --- ' * 6 + '|']
        for size in args.memory_sizes:
            for tile in (0, args.tile):
                result = run_worker('memory', ['--worker-threads', str(first), '--memory-size', str(size),
                                               '--memory-tile', str(tile)], args)[-1]
                label = 'none' if tile == 0 else f'{tile}² LR'
                print(f'  [memory] {size}² tiles {label}: peak {result["peak"]:.0f} MiB', flush=True)
                lines.append(f'| {size}² | {label} | {result["built"]:.0f} | {result["peak"]:.0f} | '
                             f'{result["peak"] - result["built"]:.0f} | {result["cpu"]:.1f} |')
        lines.append('')
        write_result(args, lines)
    return lines


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS,
                        help='LR side x scale, e.g. 64x4 (default: %(default)s)')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2],
                        help='torch threads per forward, the first one the reference (default: 1 2)')
    parser.add_argument('--runs', type=int, default=3, help='timed forwards per model and config (default: 3)')
    parser.add_argument('--no-profile', dest='profile', action='store_false',
                        help='skip the profile of where the time goes')
    parser.add_argument('--memory-sizes', type=int, nargs='*', default=[256],
                        help='LR sides of the peak-memory rows, none to skip (default: 256)')
    parser.add_argument('--tile', type=int, default=96, help='LR tile of the tiled memory rows (default: 96)')
    parser.add_argument('--opt', default=str(REPO / 'options' / 'train_gsasr_edsr.yml'),
                        help='option file whose network_g is timed (default: options/train_gsasr_edsr.yml)')
    parser.add_argument('--scale', type=float, default=4.0, help='scale of the memory rows (default: 4)')
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'bench_cpu_speed'),
                        help='output file without .md (default: benchmarks/results/bench_cpu_speed)')
    parser.add_argument('--worker', choices=('report', 'memory'), default=None, help=argparse.SUPPRESS)
    parser.add_argument('--count-flops', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--worker-profile', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--memory-size', type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument('--memory-tile', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--worker-threads', type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return {'report': report_worker, 'memory': memory_worker}[args.worker](args)
    for config in args.configs:
        try:
            parse_config(config)
        except ValueError:
            print(f'--configs: {config!r} is not SIZExSCALE (e.g. 64x4)', file=sys.stderr)
            return 2
    if not Path(args.opt).is_file():
        print(f'--opt: no such option file: {args.opt}', file=sys.stderr)
        return 2
    head = git('rev-parse', 'HEAD').strip()
    dirty = ' (with uncommitted changes)' if git('status', '--porcelain', '--', 'gsasr_plugin', 'ops').strip() else ''
    command = ' '.join(['python benchmarks/bench_cpu_speed.py'] + sys.argv[1:])
    header = ['# CPU speed and memory of GSASR', '', f'Command: `{command}`', '',
              f'Revision {head}{dirty}; {time.strftime("%Y-%m-%d %H:%M")}; network_g of {args.opt}', '']
    lines = bench_report(args, header)
    print('\n' + '\n'.join(lines))
    return 0


def write_result(args: argparse.Namespace, lines: List[str]) -> None:
    out = Path(args.out).with_suffix('.md')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    print(f'wrote {out}', flush=True)


if __name__ == '__main__':
    sys.exit(main())
