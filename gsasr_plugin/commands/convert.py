"""``basicsr convert``: write released (official) weights as one self-contained checkpoint of ours.

    basicsr convert --model WEIGHTS [-opt OPTIONS.yml] -o OUT.pth
    basicsr convert --list

WEIGHTS is what ``basicsr infer --model`` takes: ``official:<name>``, a folder holding a released model's
official files, those files joined by commas, or a checkpoint. The network is built (from ``-opt`` when
given, else from the released model's options) and the converted weights are loaded into it strictly
before anything is written; the output holds the weights under ``params`` and the
``network_g`` options (:mod:`gsasr_plugin.checkpoint`), so ``basicsr infer --model OUT.pth`` and an
option file's ``pretrain_network_g: OUT.pth`` need nothing else.

Exit status: 0 on success, 1 when the weights cannot be read, converted or written, 2 for bad arguments.
"""
import argparse
import sys
from typing import List, Optional

__all__ = ['run', 'build_parser']

PROG = 'basicsr convert'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description='Convert released (official) weights into one '
                                     'self-contained checkpoint (weights + network_g options).')
    parser.add_argument('-m', '--model', metavar='WEIGHTS',
                        help="official:<name>, a folder of a released model's official files, those files "
                        'joined by commas, or a checkpoint')
    parser.add_argument('-opt', '--opt', default=None, metavar='OPTIONS.yml',
                        help="option file whose network_g builds the network (default: the released model's)")
    parser.add_argument('-o', '--output', metavar='OUT.pth', help='the checkpoint to write')
    parser.add_argument('--list', action='store_true', help='list the released models and exit')
    return parser


def list_models() -> str:
    import gsasr_plugin  # noqa: F401  (methods register their released models)
    from gsasr_plugin import hub
    lines = []
    for name, model in sorted(hub.released_models().items()):
        lines.append(f'{hub.OFFICIAL_PREFIX}{name:<28} {model.method:<12} {model.description}')
        lines.append(f'{"":38}{model.hub_repo or model.source}: {", ".join(model.files)}')
    return '\n'.join(lines)


def run(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        print(list_models())
        return 0
    if not args.model or not args.output:
        print(f'{PROG}: error: --model and -o/--output are required (or --list)', file=sys.stderr)
        return 2
    from gsasr_plugin.checkpoint import build_with_weights, load_weights, save_checkpoint
    from gsasr_plugin.inference import read_network_options
    try:
        network_g = read_network_options(args.opt) if args.opt else None
        weights = load_weights(args.model, network_g)
        network = build_with_weights(weights, f'weights {args.model}')
        state = network.state_dict()
        save_checkpoint(args.output, state, weights.network_g, source=weights.meta.get('source'))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f'{PROG}: error: {message}', file=sys.stderr)
        return 1
    count = sum(v.numel() for v in state.values())
    print(f'{PROG}: wrote {args.output} ({weights.network_g.get("type")}, {count:,} values) from '
          f'{weights.meta.get("source")}')
    return 0
