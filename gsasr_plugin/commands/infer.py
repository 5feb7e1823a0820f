"""``basicsr infer``: super-resolve images or folders at any scale or size with a trained model.

    basicsr infer [-opt OPTIONS.yml] --model WEIGHTS -i FILE_OR_FOLDER -o OUT_FOLDER \\
        (--scale S | --scale SH,SW | --size WxH | --scales S1,S2,...) [--tile N] [--bf16] [--save-gaussians]
        [--zoom FRAMES [--zoom-max Z]]

WEIGHTS is a checkpoint file, ``official:<name>`` (a released model, downloaded into huggingface_hub's
cache), a folder holding a released model's official files, or those files joined by commas
(:func:`gsasr_plugin.checkpoint.load_weights`). ``-opt`` may be left out when the weights carry their
options (released models, checkpoints written by ``basicsr convert``).

Exit status: 0 when every image was written, 1 when any image (or the model) failed, 2 for bad
arguments. Each failure is one line on stderr naming the file or argument; the other images of a
folder are still processed.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ['run', 'build_parser']

PROG = 'basicsr infer'


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage dump) through ``_UsageError``."""

    def error(self, message):
        raise _UsageError(message)


def _text_arg(parser_name: str, flag: str):
    """An argparse ``type`` running ``gsasr_plugin.utils.scale.<parser_name>(text, flag)``.

    Its ValueError becomes an ArgumentTypeError without the leading flag (argparse prints
    ``argument --flag: <message>``).
    """

    def parse(text):
        from gsasr_plugin.utils import scale
        try:
            return getattr(scale, parser_name)(text, flag)
        except ValueError as error:
            message = str(error)
            raise argparse.ArgumentTypeError(message[len(flag):].lstrip(': ') if message.startswith(flag)
                                             else message) from None

    parse.__name__ = flag.lstrip('-')  # argparse names the type in 'invalid <name> value' messages
    return parse


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be an integer >= 0, got {text!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be an integer >= 0, got {text!r}')
    return value


def _zoom_max_arg(text):
    try:
        value = float(text)
    except ValueError:
        value = float('nan')
    if not value >= 1 or value == float('inf'):
        raise argparse.ArgumentTypeError(f'must be a number >= 1, got {text!r}')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description='Super-resolve images at any scale (or size) with a GSASR-family model.')
    parser.add_argument('-opt', '--opt', default=None, metavar='OPTIONS.yml',
                        help='BasicSR option file (train or test) whose network_g builds the network; optional '
                        'when the weights carry their options (official:<name>, basicsr convert output)')
    parser.add_argument('-m', '--model', required=True, metavar='WEIGHTS',
                        help="a checkpoint ('params_ema' or 'params', a bare state dict, or a basicsr convert "
                        "output), official:<name> (a released model), a folder of a released model's official "
                        'files, or those files joined by commas')
    parser.add_argument('-i', '--input', required=True, metavar='FILE_OR_FOLDER', help='an image or a folder of images')
    parser.add_argument('-o', '--output', required=True, metavar='OUT_FOLDER', help='folder for the results')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('--scale', type=_text_arg('parse_scale_text', '--scale'), metavar='S|SH,SW',
                        help='scale factor, any positive number; SH,SW for a different factor per axis')
    target.add_argument('--size', type=_text_arg('parse_size_text', '--size'), metavar='WxH',
                        help='output size in pixels, e.g. 1920x1080')
    target.add_argument('--scales', type=_text_arg('parse_scale_list_text', '--scales'), metavar='S1,S2,...',
                        help='several scales from one encoding (SH:SW items for two axes), one file per scale')
    parser.add_argument('--tile', type=_non_negative_int, default=None, metavar='N',
                        help='LR tile side in pixels (0: never tile); default: chosen from free memory')
    parser.add_argument('--tile-margin', type=_non_negative_int, default=None, metavar='M',
                        help='LR context pixels around each tile (default: two attention windows, >= 8)')
    parser.add_argument('--bf16', action='store_true', help='run the network in bfloat16 autocast')
    parser.add_argument('--device', default=None, help="'cuda', 'cuda:1', 'cpu' (default: cuda when available)")
    parser.add_argument('--param-key', default=None, help="checkpoint key to load (default: 'params_ema', then 'params')")
    parser.add_argument('--suffix', default='', help="added to each output file's stem, e.g. '_x4'")
    parser.add_argument('--ext', default=None, choices=['png', 'jpg', 'tif', 'webp'],
                        help="output format (default: the input's)")
    parser.add_argument('--save-gaussians', action='store_true',
                        help='also draw the predicted Gaussians (centres and ellipses coloured by opacity) '
                        'over a crop of each image, as <name>_gaussians.png')
    parser.add_argument('--gaussians-crop', type=_non_negative_int, default=12, metavar='N',
                        help='LR side of the centre crop drawn by --save-gaussians (default 12)')
    parser.add_argument('--zoom', type=_non_negative_int, default=0, metavar='FRAMES',
                        help='also write a continuous zoom into the centre: FRAMES frames (PNG) and a GIF')
    parser.add_argument('--zoom-max', type=_zoom_max_arg, default=4.0, metavar='Z',
                        help='magnification of the last zoom frame over the first (default 4)')
    return parser


def _list_inputs(path: Path) -> List[Path]:
    from gsasr_plugin.inference import IMAGE_EXTENSIONS
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return [path]


def _process(network, path: Path, args, device) -> None:
    import numpy as np
    import torch

    from gsasr_plugin.inference import read_image, super_resolve, write_image
    rgb, meta = read_image(str(path))
    lq = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
    if args.scales or args.zoom:  # several renders of one encoding (gsasr_plugin.zoom)
        from gsasr_plugin.zoom import write_scales_and_zoom
        write_scales_and_zoom(network, lq, meta, path.stem, ('.' + args.ext) if args.ext else path.suffix, args)
        if args.scales:
            return
    progress = sys.stderr.isatty()
    kwargs = dict(scale=args.scale, out_size=args.size, tile=args.tile, margin=args.tile_margin, bf16=args.bf16,
                  progress=progress)
    output, field = super_resolve(network, lq, **kwargs)
    alpha = None
    if meta.alpha is not None:
        alpha_lq = torch.from_numpy(meta.alpha)[None, None].expand(1, 3, -1, -1).contiguous().to(device)
        alpha = super_resolve(network, alpha_lq, **kwargs)[0][0].mean(0).cpu().numpy()
    sr = output[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)
    ext = ('.' + args.ext) if args.ext else path.suffix
    out_path = Path(args.output) / f'{path.stem}{args.suffix}{ext}'
    write_image(str(out_path), sr, meta, alpha)
    if args.save_gaussians:
        from gsasr_plugin.utils.visualize_gaussians import draw_gaussians
        field = getattr(field, 'gaussians', field)  # GaussianSR wraps its Gaussians with features
        if field is None:
            raise ValueError('--save-gaussians: this network has no per-pixel Gaussians to draw (GaussianSR with '
                             'splatting: patches)')
        draw_gaussians(field, rgb, str(Path(args.output) / f'{path.stem}{args.suffix}_gaussians.png'),
                       crop=args.gaussians_crop or None)


def run(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        print(f'{PROG}: error: {error}', file=sys.stderr)
        return 2
    import torch

    from gsasr_plugin.inference import load_network

    input_path = Path(args.input)
    if not input_path.exists():
        print(f'{PROG}: error: input {input_path}: no such file or folder', file=sys.stderr)
        return 1
    files = _list_inputs(input_path)
    if not files:
        print(f'{PROG}: error: input folder {input_path} holds no images', file=sys.stderr)
        return 1
    try:
        device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        if device.type == 'cuda' and not torch.cuda.is_available():
            raise ValueError(f'--device {args.device}: CUDA is not available here')
        network = load_network(args.opt, args.model, device, args.param_key)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        print(f'{PROG}: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}', file=sys.stderr)
        return 1
    if not hasattr(network, 'encode'):
        print(f'{PROG}: error: network_g {type(network).__name__} has no encode(): not a Gaussian-splatting SR network',
              file=sys.stderr)
        return 1

    failures = 0
    iterator = files
    if len(files) > 1:
        from tqdm import tqdm
        iterator = tqdm(files, desc='images', unit='img', disable=not sys.stderr.isatty())
    for path in iterator:
        try:
            _process(network, path, args, device)
        except (OSError, ValueError, TypeError, RuntimeError) as error:
            failures += 1
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            if str(path) not in message:
                message = f'{path}: {message}'
            print(f'{PROG}: error: {message}', file=sys.stderr)
    done = len(files) - failures
    print(f'{PROG}: wrote {done} of {len(files)} image(s) to {args.output}')
    return 1 if failures else 0
