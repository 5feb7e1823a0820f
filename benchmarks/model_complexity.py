"""Parameters and FLOPs of GSASR with each registered encoder, via mmengine's complexity analysis.

Usage::

    python benchmarks/model_complexity.py                       # every registered encoder
    python benchmarks/model_complexity.py --encoders EDSREncoder RDNEncoder --lr-size 64 64 --scale 4
    python benchmarks/model_complexity.py --no-flops            # parameter counts only (fast)

Parameters are counted for the encoder, the Gaussian decoder (everything else in ``GSASR``) and the total.
FLOPs are mmengine's ``FlopAnalyzer`` count (one multiply-add = one FLOP, as fvcore/mmengine count) of
``GSASR.encode`` on one LR image, i.e. up to the Gaussians; the rasterizer is not counted (it is no
matmul/conv; its speed is measured by the rasterizer benchmarks). ``scaled_dot_product_attention``,
which mmengine does not know, is counted here as its two matmuls. Encoders other than EDSR-baseline and
RDN are built with their default options (``{'type': NAME}``).
"""
import argparse
import sys
from typing import Any, List, Sequence

import torch
from torch import nn

import gsasr_plugin  # noqa: F401  (registers GSASR and the encoders)
from gsasr_plugin.archs import ENCODER_REGISTRY
from gsasr_plugin.archs.gsasr_arch import GSASR

# Official GSASR figures (paper / released code), in millions of parameters.
OFFICIAL_PARAMS_M = {'decoder': 19.2, 'EDSREncoder': 1.22, 'RDNEncoder': 22.0, 'SwinIREncoder': 11.6}
# Encoder sizes that are options of a registered encoder rather than a name of their own.
ENCODER_PRESETS = {'HAT-L': {'type': 'HATEncoder', 'size': 'HAT-L'}}


class _EncodeOnly(nn.Module):
    """``GSASR.encode`` at a fixed scale as a one-input module returning tensors (what tracing needs)."""

    def __init__(self, net: GSASR, scale: float):
        super().__init__()
        self.net = net
        self.scale = scale

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        field = self.net.encode(lq, self.scale)
        return torch.cat([field.means, field.sigmas, field.rhos.unsqueeze(-1), field.colors], dim=-1)


def _sdpa_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """q @ k^T and attn @ v of ``aten::scaled_dot_product_attention`` as multiply-adds."""
    from mmengine.analysis.jit_handles import get_shape
    q_shape, k_shape, v_shape = (get_shape(v) for v in inputs[:3])
    batch = 1
    for dim in q_shape[:-2]:
        batch *= dim
    queries, head_dim = q_shape[-2:]
    keys = k_shape[-2]
    return batch * queries * keys * (head_dim + v_shape[-1])


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure_flops(net: GSASR, lr_size: Sequence[int], scale: float) -> int:
    from mmengine.analysis import FlopAnalyzer
    model = _EncodeOnly(net, scale).eval()
    lq = torch.rand(1, 3, *lr_size)
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (lq, ))
        analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_flops)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analyzer.total()
        skipped = analyzer.unsupported_ops()
    if skipped:
        print(f'    (not counted: {dict(skipped)})')
    return total


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
        header += f"{'GFLOPs':>10}"
    print(header)
    for name in names:
        net = GSASR(encoder=ENCODER_PRESETS.get(name, {'type': name})).eval()
        encoder = count_params(net.encoder)
        total = count_params(net)
        official = f"{OFFICIAL_PARAMS_M.get(name, '-')}/{OFFICIAL_PARAMS_M['decoder']}"
        row = f'{name:<14}{encoder / 1e6:>11.3f}{(total - encoder) / 1e6:>11.3f}{total / 1e6:>10.3f}{official:>20}'
        if not args.no_flops:
            row += f'{measure_flops(net, args.lr_size, args.scale) / 1e9:>10.1f}'
        print(row, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
