"""Does ``torch.compile`` speed up GSASR on the CPU? Eager vs compiled, side by side (not a test).

    .venv/bin/python benchmarks/bench_compile_cpu.py                    # both checks, 1 thread
    .venv/bin/python benchmarks/bench_compile_cpu.py --skip-train --size 60 --threads 2

* inference: ``net.decode_tokens`` (the decoder up to the heads, where GSASR's work is) of
  ``network_g`` in ``--opt`` (default ``options/train_gsasr_edsr.yml``) on encoder features of one
  ``--size``² LR image at x4, under ``torch.no_grad()``; compiled with TorchInductor and
  ``torch._inductor.config.freezing`` (weights folded and pre-packed for oneDNN, its best CPU inference mode);
* training: one step of the demo network (``options/train_gsasr_demo.yml``: batch 4 of 24x24 LR crops at
  x3, L1 loss, Adam) with the encoder, decoder and heads compiled and the rasterizer eager, at one fixed
  scale (the most favourable case: in training the scale changes every batch).

Prints the compile time (first call) and the median of ``--runs`` calls after it, wall and process CPU
seconds, and the largest output difference. GSASR has no ``torch.compile`` option because this comparison
did not show a clear win on the CPU (see the README, "CPU speed").
"""
import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Tuple

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(function: Callable[[], object], runs: int) -> Tuple[float, float, float, object]:
    """(first-call wall s, median wall s, median CPU s) of ``function`` and its last result."""
    start = time.perf_counter()
    result = function()
    first = time.perf_counter() - start
    walls: List[float] = []
    cpus: List[float] = []
    for _ in range(runs):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - start_wall)
        cpus.append(time.process_time() - start_cpu)
    return first, statistics.median(walls), statistics.median(cpus), result


def build(option_file: Path, train: bool) -> torch.nn.Module:
    import gsasr_plugin  # noqa: F401  (registries)
    from basicsr.archs import build_network
    with open(option_file, encoding='utf-8') as handle:
        network_opt = yaml.safe_load(handle)['network_g']
    torch.manual_seed(0)
    return build_network(network_opt).train(train)


def check_inference(args: argparse.Namespace) -> None:
    import torch._inductor.config as inductor_config
    net = build(Path(args.opt), train=False)
    with torch.no_grad():
        features = net.encoder(torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)))
        eager = timed(lambda: net.decode_tokens(features, (4.0, 4.0)), args.runs)
        inductor_config.freezing = True
        compiled_fn = torch.compile(net.decode_tokens)
        compiled = timed(lambda: compiled_fn(features, (4.0, 4.0)), args.runs)
    diff = (compiled[3] - eager[3]).abs().max().item()
    print(f'inference, decode_tokens at {args.size}x{args.size} x4 ({torch.get_num_threads()} threads):')
    print(f'  eager:    first call {eager[0]:.2f} s, then {eager[1]:.3f} s wall / {eager[2]:.3f} s CPU')
    print(f'  compiled: first call {compiled[0]:.2f} s, then {compiled[1]:.3f} s wall / {compiled[2]:.3f} s CPU '
          f'(max abs diff {diff:.2e})', flush=True)


def check_training(args: argparse.Namespace) -> None:
    from gsasr_plugin.archs.gaussian_field import GaussianField
    results = {}
    for mode in ('eager', 'compiled'):
        net = build(REPO / 'options' / 'train_gsasr_demo.yml', train=True)
        optimizer = torch.optim.Adam(net.parameters(), 1e-3)
        generator = torch.Generator().manual_seed(0)
        lq, gt = torch.rand(4, 3, 24, 24, generator=generator), torch.rand(4, 3, 72, 72, generator=generator)

        def predict(image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
            field = net.gaussians_from_tokens(net.decode_tokens(net.encoder(image), (3.0, 3.0)), (24, 24), image)
            return field.means, field.sigmas, field.rhos, field.colors

        model = torch.compile(predict) if mode == 'compiled' else predict

        def step() -> float:
            optimizer.zero_grad()
            means, sigmas, rhos, colors = model(lq)
            loss = (GaussianField(means, sigmas, rhos, colors, (24, 24)).render((72, 72)) - gt).abs().mean()
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        results[mode] = timed(step, args.runs)
    print(f'training step of the demo network ({torch.get_num_threads()} threads):')
    for mode, (first, wall, cpu, _) in results.items():
        print(f'  {mode:8s}: first step {first:.2f} s, then {wall:.3f} s wall / {cpu:.3f} s CPU per step', flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--opt', default=str(REPO / 'options' / 'train_gsasr_edsr.yml'))
    parser.add_argument('--size', type=int, default=60)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1, help='torch threads (0: torch default; default: 1)')
    parser.add_argument('--skip-inference', action='store_true')
    parser.add_argument('--skip-train', action='store_true')
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.skip_inference:
        check_inference(args)
    if not args.skip_train:
        check_training(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
