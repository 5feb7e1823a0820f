"""``basicsr convert``: write released (official) weights as one self-contained checkpoint of ours.

    basicsr convert --model WEIGHTS [-opt OPTIONS.yml] -o OUT.pth
    basicsr convert --list

WEIGHTS is what ``basicsr infer --model`` takes (:func:`gsasr_plugin.checkpoint.load_weights`):
``official:<name>``, a folder holding a released model's official files, those files joined by commas, or
a checkpoint. The network is built (from ``-opt`` when given, else from the weights' own options) and the
weights are loaded into it strictly before anything is written; the output holds the weights under
``params`` and the ``network_g`` options (:func:`gsasr_plugin.checkpoint.save_checkpoint`), so ``basicsr
infer --model OUT.pth``, ``load_model('OUT.pth')`` and an option file's ``pretrain_network_g: OUT.pth``
need nothing else. The arguments are parsed by the front end (:func:`gsasr_plugin_cli.parsers.convert_parser`).

Exit status: 0 on success, 1 when the weights cannot be read, converted or written, 2 for bad arguments.
"""
import argparse
import sys

from gsasr_plugin.api import network_options_from
from gsasr_plugin.checkpoint import build_with_weights, describe_weights, load_weights, save_checkpoint
from gsasr_plugin.official import hub

__all__ = ['run', 'list_models']

PROG = 'basicsr convert'


def list_models() -> str:
    """Two lines per registered released model: its short name, method and description; where its files are."""
    lines = []
    for name, model in sorted(hub.released_models().items()):
        lines.append(f'{hub.OFFICIAL_PREFIX}{name:<28} {model.method:<12} {model.description}')
        lines.append(f'{"":38}{model.hub_repo or model.source}: {", ".join(model.files)}')
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    """``basicsr convert ...`` with ``args`` parsed by :func:`gsasr_plugin_cli.parsers.convert_parser`."""
    if args.list:
        print(list_models())
        return 0
    if not args.model or not args.output:
        print(f'{PROG}: error: --model and -o/--output are required (or --list)', file=sys.stderr)
        return 2
    try:
        network_g = network_options_from(args.opt) if args.opt else None
        weights = load_weights(args.model, network_g)
        network = build_with_weights(weights, describe_weights(args.model), args.opt)
        state = network.state_dict()
        source = weights.meta.get('source', args.model)
        if weights.meta.get('origin'):
            source += f" ({weights.meta['origin']})"
        save_checkpoint(args.output, state, weights.network_g, source=source)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f'{PROG}: error: {message}', file=sys.stderr)
        return 1
    count = sum(v.numel() for v in state.values())
    print(f'{PROG}: wrote {args.output} ({weights.network_g.get("type")}, {count:,} values) from '
          f'{weights.meta.get("source")}')
    return 0
