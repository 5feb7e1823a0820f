"""Parameters and FLOPs of GSASR with each registered encoder, via PyTorch's FLOP counter.

Usage::

    python benchmarks/model_complexity.py                       # every registered encoder
    python benchmarks/model_complexity.py --encoders EDSREncoder RDNEncoder --lr-size 64 64 --scale 4
    python benchmarks/model_complexity.py --no-flops            # parameter counts only (fast)

Parameters are counted for the encoder, the Gaussian decoder (everything else in ``GSASR``) and the total.
FLOPs are counted on one run of ``GSASR.encode`` on one LR image, i.e. up to the Gaussians (the rasterizer is
no matmul/conv and is not counted; its speed is measured by the rasterizer benchmarks), by
``torch.utils.flop_counter.FlopCounterMode`` with the CPU ops it does not know added
(``gsasr_plugin.utils.flops``: oneDNN's linear layers, the CPU fused attention), and printed as multiply-adds
(GMACs; the counter's FLOPs / 2), the unit of fvcore/mmengine and of the paper's tables.

Why not mmengine's ``FlopAnalyzer`` (used before): it traces the model with ``torch.jit.trace``, which on
torch 2.14.1 stops with ``RuntimeError: outputs_[i]->uses().empty() INTERNAL ASSERT FAILED`` (jit/ir.cpp)
on the oneDNN linear op (``mkldnn::_linear_pointwise``) that GSASR's linear layers run by on the CPU; with that
path off (``GSASR_ONEDNN_LINEAR=0``) the trace works but the count misses the batched products of the scale
attention (``aten::baddbmm``, unknown to it). TorchScript tracing is deprecated; the dispatcher-level counter
sees every op as it runs, whatever the Python code around it.
"""
import argparse
import sys
from typing import Sequence, Tuple

import torch
from torch import nn

import gsasr_plugin  # noqa: F401  (registers GSASR and the encoders)
from gsasr_plugin.archs import ENCODER_REGISTRY
from gsasr_plugin.archs.gsasr_arch import GSASR
from gsasr_plugin.utils.flops import count_flops

# Official GSASR figures (paper / released code), in millions of parameters.
OFFICIAL_PARAMS_M = {'decoder': 19.2, 'EDSREncoder': 1.22, 'RDNEncoder': 22.0, 'SwinIREncoder': 11.6}
# Encoder sizes that are options of a registered encoder rather than a name of their own.
ENCODER_PRESETS = {'HAT-L': {'type': 'HATEncoder', 'size': 'HAT-L'}}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure_macs(net: GSASR, lr_size: Sequence[int], scale: float) -> Tuple[int, int]:
    """Multiply-adds of ``net.encoder`` and of ``net.encode`` (up to the Gaussians) on one random LR image of
    ``lr_size``."""
    lq = torch.rand(1, 3, *lr_size)
    with torch.no_grad():
        return count_flops(net.encoder, lq) // 2, count_flops(net.encode, lq, scale) // 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--encoders', nargs='+', default=None,
                        help='encoder types from ENCODER_REGISTRY (default: all registered)')
    parser.add_argument('--lr-size', nargs=2, type=int, default=(64, 64), metavar=('H', 'W'))
    parser.add_argument('--scale', type=float, default=4.0)
    parser.add_argument('--no-flops', action='store_true', help='only count parameters')
    args = parser.parse_args(argv)

    registered = sorted(ENCODER_REGISTRY.keys())
    names = args.encoders or (['EDSREncoder', 'RDNEncoder'] + [n for n in registered if n not in ('EDSREncoder', 'RDNEncoder')]
                              + sorted(ENCODER_PRESETS))
    unknown = [n for n in names if n not in registered and n not in ENCODER_PRESETS]
    if unknown:
        print(f'error: unknown encoder(s) {unknown}; registered: {registered}', file=sys.stderr)
        return 2

    torch.set_grad_enabled(False)
    print(f'GSASR defaults; FLOPs of encode() for one {args.lr_size[0]}x{args.lr_size[1]} LR image at x{args.scale:g}')
    header = f"{'encoder':<14}{'encoder M':>11}{'decoder M':>11}{'total M':>10}{'official enc/dec M':>20}"
    if not args.no_flops:
        header += f"{'encoder GMACs':>15}{'GMACs':>10}"
    print(header)
    for name in names:
        net = GSASR(encoder=ENCODER_PRESETS.get(name, {'type': name})).eval()
        encoder = count_params(net.encoder)
        total = count_params(net)
        official = f"{OFFICIAL_PARAMS_M.get(name, '-')}/{OFFICIAL_PARAMS_M['decoder']}"
        row = f'{name:<14}{encoder / 1e6:>11.3f}{(total - encoder) / 1e6:>11.3f}{total / 1e6:>10.3f}{official:>20}'
        if not args.no_flops:
            encoder_macs, macs = measure_macs(net, args.lr_size, args.scale)
            row += f'{encoder_macs / 1e9:>15.1f}{macs / 1e9:>10.1f}'
        print(row, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
