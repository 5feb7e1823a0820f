"""Argument parsers of the ``basicsr`` subcommands, importable without torch (for fast ``-h``).

Values that need the library (scales, sizes) are converted by ``type`` functions that import it only
when such a value is parsed, i.e. when the command really runs.
"""
import argparse

__all__ = ['UsageError', 'pipeline_parser', 'infer_parser', 'convert_parser', 'app_parser', 'INFER_EXTENSIONS']

INFER_EXTENSIONS = ('auto', 'png', 'jpg', 'tif', 'webp')
SIZE_RULES = ('round', 'floor', 'ceil')  # gsasr_plugin.utils.scale.SIZE_RULES (no torch import here)


class UsageError(Exception):
    """A bad command-line argument (``basicsr infer`` prints it as one line and exits with status 2)."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (no usage dump) through ``UsageError``."""

    def error(self, message):
        raise UsageError(message)


class _TestParser(argparse.ArgumentParser):
    """``basicsr test``: an option file (``-opt``), or a model and images without one (``-m`` and ``-i``)."""

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if parsed.opt is None and parsed.input is None:
            self.error('give -opt OPTIONS.yml, or -m MODEL -i FOLDER_OR_IMAGE to evaluate without an option file')
        if parsed.opt is not None and parsed.input is not None:
            self.error('-i evaluates without an option file: give -opt or -i, not both (with -opt, the datasets '
                       'are the file\'s)')
        if parsed.input is not None and parsed.model is None:
            self.error('-i needs -m MODEL: the weights to evaluate')
        if parsed.input is None:
            given = [flag for flag, value in (('--scales', parsed.scales), ('--metrics', parsed.metrics))
                     if value is not None]
            if given or parsed.save_img:
                self.error(f"{', '.join(given + ['--save-img'] * parsed.save_img)}: only with -i (an option file "
                           'sets these in its datasets and val sections)')
        return parsed


def pipeline_parser(command: str) -> argparse.ArgumentParser:
    """The flags of ``basicsr.utils.options.parse_options`` (``basicsr train`` / ``basicsr test``); ``basicsr
    test`` also takes ``-m`` (the weights) and, instead of an option file, ``-i`` images to evaluate."""
    testing = command == 'test'
    parser = (_TestParser if testing else argparse.ArgumentParser)(
        prog=f'basicsr {command}', description=f'BasicSR {command} pipeline with gsasr_plugin registered.')
    parser.add_argument('-opt', type=str, required=not testing, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='resume from experiments/<name>/training_states')
    parser.add_argument('--debug', action='store_true', help="BasicSR debug mode (name prefixed with 'debug_')")
    parser.add_argument('--local_rank', type=int, default=0)
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='override existing options, e.g. train:total_iter=4 num_gpu=0')
    if testing:
        parser.add_argument('-m', '--model', default=None, metavar='MODEL',
                            help="the weights to evaluate (path:pretrain_network_g): a checkpoint, official:NAME, "
                            "a folder of a released model's official files; a checkpoint of basicsr train or "
                            'convert and a released model bring their network_g')
        evaluate = parser.add_argument_group('without an option file (-m MODEL -i ...)')
        evaluate.add_argument('-i', '--input', nargs='+', default=None, metavar='FOLDER_OR_IMAGE',
                              help='HR images to evaluate on: folders of images (a dataset each) and image files '
                              '(one dataset together); LR made by MATLAB-style bicubic, as the test datasets do')
        evaluate.add_argument('--scales', type=_text_arg('parse_scale_list_text', '--scales'), default=None,
                              metavar='S1,S2,...', help='scales (SH:SW items for two axes); default 2,3,4')
        evaluate.add_argument('--metrics', default=None, metavar='M1,M2,...',
                              help='of psnr, ssim (Y channel, border ceil(scale) cropped), lpips, dists (RGB; '
                              'need torchvision backbones); default psnr,ssim')
        parser.add_argument('--name', default=None, help="results go to results/NAME (default: the option file's "
                            'name; with -i: from the model)')
        evaluate.add_argument('--save-img', action='store_true', help='also save the SR images')
    return parser


def _text_arg(parser_name: str, flag: str):
    """An argparse ``type`` running ``gsasr_plugin.utils.scale.<parser_name>(text, flag)``.

    Its ValueError becomes an ArgumentTypeError without the leading flag (argparse prints
    ``argument --flag: <message>``).
    """

    def parse(text):
        from gsasr_plugin.utils import scale  # here, not above: the front end stays torch-free until it runs
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


class _InferParser(_OneLineParser):
    """``basicsr infer``'s parser: also the flags that mean something only with another one, and their defaults."""

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if parsed.gaussians_crop is not None and not parsed.save_gaussians:
            raise UsageError('--gaussians-crop sets the crop drawn by --save-gaussians; add --save-gaussians or drop '
                             'it')
        if parsed.zoom_max is not None and not parsed.zoom:
            raise UsageError('--zoom-max sets the last frame of --zoom FRAMES; add --zoom or drop it')
        parsed.gaussians_crop = 12 if parsed.gaussians_crop is None else parsed.gaussians_crop
        parsed.zoom_max = 4.0 if parsed.zoom_max is None else parsed.zoom_max
        return parsed


def infer_parser() -> argparse.ArgumentParser:
    """``basicsr infer``'s flags (short ones where Real-ESRGAN users reach for them: -m/-n, -s, -t)."""
    parser = _InferParser(
        prog='basicsr infer', description='Super-resolve images at any scale (or size) with a GSASR-family model.',
        epilog='A checkpoint saved by basicsr train (or by the converter) carries its network options, so '
        '-m model.pth is enough; older checkpoints and bare state dicts need -opt. Outputs are '
        '<name><suffix>.<ext> in OUT_FOLDER and never replace an input unless --overwrite is given.')
    parser.add_argument('-m', '-n', '--model', required=True, metavar='MODEL',
                        help="CHECKPOINT.pth saved by basicsr train or basicsr convert, a BasicSR checkpoint "
                        "('params_ema' or 'params') or bare state dict (with -opt), official:NAME for a released "
                        "model (basicsr convert --list), a folder of a released model's official files, or those "
                        'files joined by commas')
    parser.add_argument('-opt', '--opt', default=None, metavar='OPTIONS.yml',
                        help="BasicSR option file (train or test) whose network_g builds the network; wins over "
                        "the weights' own network options (default: those)")
    parser.add_argument('-i', '--input', required=True, metavar='FILE_OR_FOLDER', help='an image or a folder of images')
    parser.add_argument('-o', '--output', required=True, metavar='OUT_FOLDER', help='folder for the results')
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('-s', '--scale', '--outscale', dest='scale', type=_text_arg('parse_scale_text', '--scale'),
                        metavar='S|SH,SW', help='scale factor, any positive number; SH,SW for a different factor '
                        'per axis')
    target.add_argument('--size', type=_text_arg('parse_size_text', '--size'), metavar='WxH',
                        help='output size in pixels, e.g. 1920x1080')
    target.add_argument('--scales', type=_text_arg('parse_scale_list_text', '--scales'), metavar='S1,S2,...',
                        help='several scales from one encoding (SH:SW items for two axes), one file per scale')
    parser.add_argument('--size-rule', choices=SIZE_RULES, default=None,
                        help="output size of a scale S for an h x w image: rule(S*h) x rule(S*w); default: the "
                        "model's (floor for the released GSASR models, as their authors' inference; else round)")
    parser.add_argument('-t', '--tile-size', type=_non_negative_int, default=None, metavar='N',
                        help='LR tile side in pixels (0: never tile); default: chosen from free memory')
    parser.add_argument('--tile-pad', type=_non_negative_int, default=None, metavar='M',
                        help='LR context pixels around each tile (default: two attention windows, >= 8)')
    _add_max_input_pixels(parser, 'input image')
    parser.add_argument('--bf16', action='store_true',
                        help='run the network in bfloat16 autocast where that is faster (CUDA GPUs, CPUs with AVX512-BF16 or AMX); '
                        'float32 elsewhere, with a note')
    parser.add_argument('--device', default=None, help="'cuda', 'cuda:1', 'cpu' (default: cuda when available)")
    parser.add_argument('--param-key', default=None,
                        help="checkpoint key to load (default: 'params_ema', then 'params')")
    parser.add_argument('--suffix', default=None,
                        help="added to each output file's stem (default: the scale, '_x4', '_x1.5x3', or the size, "
                        "'_1920x1080'; '' for none)")
    parser.add_argument('--ext', default='auto', choices=INFER_EXTENSIONS,
                        help="output format; auto (default): the input's, PNG where that format cannot hold the "
                        "image's bit depth or alpha")
    parser.add_argument('--overwrite', action='store_true',
                        help='allow outputs to replace input images (refused otherwise)')
    parser.add_argument('--save-gaussians', action='store_true',
                        help='also draw the predicted Gaussians (centres and ellipses coloured by opacity) '
                        'over a crop of each image, as <name>_gaussians.png')
    parser.add_argument('--gaussians-crop', type=_positive_int, default=None, metavar='N',
                        help='LR side of the centre crop drawn by --save-gaussians (default 12)')
    parser.add_argument('--zoom', type=_positive_int, default=None, metavar='FRAMES',
                        help='also write a continuous zoom into the centre: FRAMES frames (PNG) and a GIF')
    parser.add_argument('--zoom-max', type=_zoom_max_arg, default=None, metavar='Z',
                        help='magnification of the last zoom frame over the first (default 4)')
    return parser


def convert_parser() -> argparse.ArgumentParser:
    """``basicsr convert``'s flags: released (official) weights -> one self-contained checkpoint of ours."""
    parser = argparse.ArgumentParser(prog='basicsr convert', description='Convert released (official) weights into '
                                     'one self-contained checkpoint (weights + network_g options).')
    parser.add_argument('-m', '--model', metavar='WEIGHTS',
                        help="official:<name>, a folder of a released model's official files, those files "
                        'joined by commas, or a checkpoint')
    parser.add_argument('-opt', '--opt', default=None, metavar='OPTIONS.yml',
                        help="option file whose network_g builds the network (default: the weights' own, e.g. "
                        "the released model's)")
    parser.add_argument('-o', '--output', metavar='OUT.pth', help='the checkpoint to write')
    parser.add_argument('--list', action='store_true', help='list the released models and exit')
    return parser


def _port_arg(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f'must be a port number 0..65535, got {text!r}')
    return value


def _positive_int(text):
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}')
    return value


def _add_max_input_pixels(parser: argparse.ArgumentParser, what: str) -> None:
    """``--max-input-pixels N`` of ``basicsr infer`` and ``basicsr app``."""
    parser.add_argument('--max-input-pixels', type=_non_negative_int, default=100_000_000, metavar='N',  # image_io's
                        help=f'the largest {what} (width x height) read; files whose header declares more are '
                        'refused before decoding (default 100000000; 0: no limit)')


def app_parser() -> argparse.ArgumentParser:
    """``basicsr app``'s flags: a local web page (Gradio) for one image at any scale."""
    parser = _OneLineParser(
        prog='basicsr app', description='Serve a local web page to super-resolve images at any scale: a slider '
        're-renders the result from the cached Gaussians. Needs the [app] extra (Gradio).',
        epilog='The page offers the models given with -m (first: the default), then the released models '
        '(official:NAME, downloaded on first use). It listens on 127.0.0.1 only unless --host says otherwise.')
    parser.add_argument('-m', '-n', '--model', action='append', default=[], metavar='MODEL',
                        help='a checkpoint (.pth of basicsr train or basicsr convert), official:NAME, or a folder of '
                        "a released model's files; repeat for several")
    parser.add_argument('--host', default='127.0.0.1',
                        help="address to listen on (default 127.0.0.1: this machine only; '0.0.0.0' for the network)")
    parser.add_argument('--port', type=_port_arg, default=7860, help='port (default 7860)')
    parser.add_argument('--device', default=None, help="'cuda', 'cuda:1' or 'cpu' (default: cuda when available)")
    parser.add_argument('-t', '--tile-size', type=_non_negative_int, default=None, metavar='N',
                        help='LR tile side for encoding large images (0: never tile); default: chosen from free '
                        'memory')
    parser.add_argument('--max-pixels', type=_positive_int, default=40_000_000, metavar='N',
                        help='the largest result (width x height) the page makes (default 40000000)')
    _add_max_input_pixels(parser, 'uploaded image')
    return parser
