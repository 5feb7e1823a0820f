"""Mutation check of the host-executed CUDA tests: applies one mutation at a time to a copy of ops/csrc/rasterize.cu,
runs tests/test_cuda_on_host.py against it (the host build compiles the copy) and reports which tests fail.
A mutation no test catches is a hole in the tests; the script exits 1 when there is one.

    .venv/bin/python tests/cuda_host/mutate.py            # all mutations (~1-2 min of CPU each)
    .venv/bin/python tests/cuda_host/mutate.py sync-1 ... # some, by name
    .venv/bin/python tests/cuda_host/mutate.py --list
    .venv/bin/python tests/cuda_host/mutate.py -x        # stop each run at its first failing test (faster)

The copies and their one build folder live in a temporary folder (ninja recompiles only the host build's
translation unit of rasterize.cu between mutations); the checkout is never modified.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / 'ops' / 'csrc' / 'rasterize.cu'
TESTS = ROOT / 'tests' / 'test_cuda_on_host.py'

# name -> (what it breaks, text to replace, replacement, which occurrence (None: the text must occur once))
MUTATIONS = {
    'sync-1': ('delete the forward\'s 1st __syncthreads (before a shared-memory batch is overwritten)',
               '__syncthreads();', '', 0),
    'sync-2': ('delete the forward\'s 2nd __syncthreads (before the batch is read)', '__syncthreads();', '', 1),
    'tile-end': ('tile bound: each tile\'s list ends one Gaussian early', 'int64_t end = tile_starts[tile + 1];',
                 'int64_t end = tile_starts[tile + 1] - 1;', None),
    'tile-start': ('tile bound: each tile\'s list starts one Gaussian late', 'const int64_t start = tile_starts[tile];',
                   'const int64_t start = tile_starts[tile] + 1;', None),
    'tile-inside': ('tile bound: the last output column counts as outside', 'const bool inside = col < p.out_w &&',
                    'const bool inside = col < p.out_w - 1 &&', None),
    'tile-grid': ('tile bound: one tile column fewer in the launch grid', 'const dim3 grid(p.tiles_x,',
                  'const dim3 grid(p.tiles_x - 1,', None),
    'cap-forward': ('gsplat cap: the forward reads 255 Gaussians per tile', 'end = start + gsasr::kGsplatTileCap;',
                    'end = start + gsasr::kGsplatTileCap - 1;', None),
    'cap-backward': ('gsplat cap: the backward allows 257 per tile', ') < gsasr::kGsplatTileCap ? 1 : 0;',
                     ') <= gsasr::kGsplatTileCap ? 1 : 0;', None),
    'blocks': ('launch geometry: the per-Gaussian launches round their block count down',
               'const int blocks = static_cast<int>((total + threads - 1) / threads);',
               'const int blocks = static_cast<int>(total / threads);', None),
    # Equivalent mutant, kept to say so: lane 0's reduction tree (offsets GROUP/2, ..., 1) reads only lanes
    # 0..GROUP-1 whatever the width, and only lane 0 writes, so on a GPU too the results are the same bits.
    'shfl-width-32': ('shuffle width: the whole warp instead of the group (EQUIVALENT: lane 0 reads only its '
                      'group whatever the width)',
                      '__shfl_down_sync(0xffffffffu, v, offset, GROUP)', '__shfl_down_sync(0xffffffffu, v, offset, 32)',
                      None),
    'shfl-width-half': ('shuffle width: half the group', '__shfl_down_sync(0xffffffffu, v, offset, GROUP)',
                        '__shfl_down_sync(0xffffffffu, v, offset, GROUP / 2)', None),
    'shfl-offset-start': ('shuffle offset: the tree starts at GROUP / 4', 'int offset = GROUP / 2;',
                          'int offset = GROUP / 4;', None),
    'shfl-offset-step': ('shuffle offset: the tree halves twice per step', 'offset >>= 1)', 'offset >>= 2)', None),
    'shfl-offset-plus-one': ('shuffle offset: off by one', '__shfl_down_sync(0xffffffffu, v, offset, GROUP)',
                             '__shfl_down_sync(0xffffffffu, v, offset + 1, GROUP)', None),
    'lane-guard': ('every lane of a group writes its partial colour sum (write race, stands in for "drop an '
                   'atomic": rasterize.cu has no atomics)',
                   'if (lane == 0 && valid) g_colors', 'if (valid) g_colors', None),
    'early-return': ('lanes past the last Gaussian return before the shuffles',
                     'const int64_t gi = valid ? g : 0;', 'if (!valid) return;\n  const int64_t gi = g;', None),
    'chunk-colour': ('forward colour chunk: shared colours indexed by thread instead of Gaussian',
                     'acc[c] += w * sh_col[j * kChannelChunk + c];', 'acc[c] += w * sh_col[tid * kChannelChunk + c];',
                     None),
}


def apply(text, old, new, occurrence):
    spans = [m.start() for m in re.finditer(re.escape(old), text)]
    if occurrence is None:
        if len(spans) != 1:
            raise SystemExit(f'mutation text {old!r} occurs {len(spans)} times in rasterize.cu (expected once)')
        occurrence = 0
    if occurrence >= len(spans):
        raise SystemExit(f'mutation text {old!r} occurs {len(spans)} times, no occurrence {occurrence + 1}')
    start = spans[occurrence]
    return text[:start] + new + text[start + len(old):]


EQUIVALENT = {'shfl-width-32'}  # no test can tell them from the original (see above)


def run_tests(env, timeout, pytest_args):
    cmd = [sys.executable, '-m', 'pytest', '-q', '-rf', '-p', 'no:cacheprovider', *pytest_args, str(TESTS)]
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, [], time.time() - started, 'timed out'
    out = proc.stdout + proc.stderr
    failed = re.findall(r'^(?:FAILED|ERROR) \S+::(\S+)', out, re.MULTILINE)
    counts = re.findall(r'^=*\s*((?:\d+ (?:failed|passed|errors?|skipped)(?:, )?)+)', out, re.MULTILINE)
    summary = counts[-1].rstrip(', ') if counts else out.strip().splitlines()[-1][-200:]
    return proc.returncode, failed, time.time() - started, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('names', nargs='*', help='mutations to run (default: all)')
    parser.add_argument('--list', action='store_true', help='list the mutations and exit')
    parser.add_argument('--timeout', type=int, default=1200, help='seconds per mutation (compile included)')
    parser.add_argument('-x', '--exitfirst', action='store_true', help='stop each test run at its first failure')
    parser.add_argument('-k', dest='keyword', help="pytest's -k: run only these tests for each mutation")
    args = parser.parse_args()
    if args.list:
        for name, (what, *_rest) in MUTATIONS.items():
            print(f'{name:22s} {what}')
        return 0
    names = args.names or list(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        parser.error(f'unknown mutation(s) {unknown}; see --list')
    pytest_args = (['-x'] if args.exitfirst else []) + (['-k', args.keyword] if args.keyword else [])
    original = SOURCE.read_text()
    holes = []
    with tempfile.TemporaryDirectory(prefix='gsasr_mutate_') as tmp:
        csrc = Path(tmp) / 'csrc'
        shutil.copytree(SOURCE.parent, csrc)
        env = dict(os.environ, GSASR_CUDA_HOST_CSRC=str(csrc), GSASR_CUDA_HOST_CACHE=str(Path(tmp) / 'cache'),
                   GSASR_CUDA_HOST_NAME='gsasr_cuda_on_host_mutant')
        for name in names:
            what, old, new, occurrence = MUTATIONS[name]
            (csrc / 'rasterize.cu').write_text(apply(original, old, new, occurrence))
            code, failed, seconds, summary = run_tests(env, args.timeout, pytest_args)
            caught = code != 0
            if not caught and name not in EQUIVALENT:
                holes.append(name)
            shown = ', '.join(failed[:3]) + (f' (+{len(failed) - 3} more)' if len(failed) > 3 else '')
            print(f'{name}: {what}\n    {"CAUGHT" if caught else "NOT CAUGHT"} ({summary}; {seconds:.0f} s)'
                  + (f': {shown}' if shown else ''), flush=True)
    equivalent = [n for n in names if n in EQUIVALENT]
    print(f'{len(names) - len(holes) - len(equivalent)} of {len(names) - len(equivalent)} mutations caught'
          + (f' ({len(equivalent)} equivalent left aside: {equivalent})' if equivalent else '')
          + (f'; not caught: {holes}' if holes else ''))
    return 1 if holes else 0


if __name__ == '__main__':
    sys.exit(main())
