"""``basicsr infer``: super-resolve images or folders at any scale or size with a trained model.

    basicsr infer -m MODEL -i FILE_OR_FOLDER -o OUT_FOLDER (-s S | -s SH,SW | --size WxH |
        --scales S1,S2,...) [-opt OPTIONS.yml] [-t N] [--bf16] [--ext auto|png|jpg|tif|webp] [--suffix TEXT]
        [--overwrite] [--save-gaussians] [--zoom FRAMES [--zoom-max Z]]

The arguments are parsed by the front end (:func:`gsasr_plugin_cli.parsers.infer_parser`, without torch).

A thin layer over :class:`gsasr_plugin.api.Upscaler`: it names the outputs (``<stem><suffix><ext>``,
the suffix naming the scale or size by default), refuses to replace an input unless ``--overwrite`` is
given, says once when an explicit ``--ext`` drops bit depth or alpha, and reports failures.

MODEL is a checkpoint file, ``official:<name>`` (a released model, downloaded into huggingface_hub's
cache), a folder holding a released model's official files, or those files joined by commas
(:func:`gsasr_plugin.checkpoint.load_weights`). ``-opt`` may be left out when the weights carry their
options (released models, checkpoints written by ``basicsr train`` or ``basicsr convert``).

Exit status: 0 when every image was written, 1 when any image (or the model) failed, 2 for bad
arguments (nothing is written). Each failure is one line on stderr naming the file or argument; the
other images of a folder are still processed.
"""
import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Set

import torch
from tqdm import tqdm

from gsasr_plugin.api import SlowPrecisionWarning, bf16_notice, load_model
from gsasr_plugin.utils.atomic_io import check_writable_folder, remove_partial_files
from gsasr_plugin.utils.cpu_tuning import keep_freed_memory
from gsasr_plugin.utils.image_io import IMAGE_EXTENSIONS, OUTPUT_FORMATS, read_image
from gsasr_plugin.utils.scale import scale_tag
from gsasr_plugin.visualize_gaussians import draw_gaussians
from gsasr_plugin.zoom import ZoomRenderer, save_frames, save_gif, zoom_frame_size, zoom_windows

__all__ = ['run', 'default_suffix', 'plan_outputs', 'write_zoom', 'OutputConflict']

PROG = 'basicsr infer'
_BITS = {'uint8': '8-bit', 'uint16': '16-bit', 'float32': '32-bit float'}


class OutputConflict(ValueError):
    """An output would replace an input, or two inputs would write one file (exit status 2: nothing written)."""


def _list_inputs(path: Path) -> List[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return [path]


def default_suffix(args) -> str:
    """``_x<scale>`` for ``--scale`` (``_x4``, ``_x2.5``, ``_x1.5x3``), ``_<W>x<H>`` for ``--size``, '' for
    ``--scales`` (each file is named by its own scale)."""
    if args.scale is not None:
        return f'_x{scale_tag(args.scale)}'
    if args.size is not None:
        return f'_{args.size[1]}x{args.size[0]}'
    return ''


def _extension(args, path: Path) -> str:
    """The output extension: ``--ext``, or with ``--ext auto`` the input's own format (which holds its bit
    depth and alpha), PNG for an input format we cannot write."""
    if args.ext != 'auto':
        return '.' + args.ext
    return path.suffix if path.suffix.lower() in OUTPUT_FORMATS else '.png'


def plan_outputs(args, files: List[Path]) -> Dict[Path, List[Path]]:
    """The image files each input will write (the main output, or one per ``--scales`` entry, and the
    ``--save-gaussians`` figure).

    Raises:
        OutputConflict: when an output would replace an input (unless ``--overwrite``) or two inputs would
            write the same file.
    """
    out_folder = Path(args.output)
    inputs = {os.path.realpath(p): p for p in files}
    plan: Dict[Path, List[Path]] = {}
    taken: Dict[str, Path] = {}
    for path in files:
        name, ext = f'{path.stem}{args.suffix}', _extension(args, path)
        if args.scales:
            outputs = [out_folder / f'{name}_x{scale_tag(s)}{ext}' for s in args.scales]
        else:
            outputs = [out_folder / f'{name}{ext}']
        if args.save_gaussians:
            outputs.append(out_folder / f'{name}_gaussians.png')
        for output in outputs:
            real = os.path.realpath(output)
            if real in inputs and not args.overwrite:
                raise OutputConflict(f'output {output} would replace the input image {inputs[real]}; pass --overwrite '
                                 'to allow it, or choose another -o/--output or --suffix')
            if real in taken:
                raise OutputConflict(f'inputs {taken[real]} and {path} would both be written to {output}; use '
                                 '--ext auto or separate folders')
            taken[real] = path
        plan[path] = outputs
    return plan


class _Notes:
    """One-line notes on stderr, each said once per run."""

    def __init__(self):
        self.said: Set[str] = set()

    def say(self, key: str, text: str) -> None:
        if key not in self.said:
            self.said.add(key)
            print(f'{PROG}: note: {text}', file=sys.stderr)

    def lossy_output(self, args, source: Path, input_dtype, output_dtype, alpha_dropped: bool) -> None:
        """Explicit ``--ext`` choices that drop bit depth or alpha (``--ext auto`` never does)."""
        if args.ext == 'auto':
            return
        bits_in = _BITS.get(str(input_dtype), str(input_dtype))
        bits_out = _BITS.get(str(output_dtype), str(output_dtype))
        if bits_in != bits_out:
            self.say('depth', f'--ext {args.ext} holds {bits_out} images: {bits_in} input {source.name} (and any '
                     f'other) is written with less precision; --ext auto keeps the input format and depth')
        if alpha_dropped:
            self.say('alpha', f'--ext {args.ext} has no alpha channel: the transparency of {source.name} (and any '
                     'other) is dropped; --ext auto or png keeps it')


def write_zoom(network, lq, stem: str, args) -> List[Path]:
    """``--zoom N``: ``<stem><suffix>_zoom.gif`` and its N frames as PNGs in ``<stem><suffix>_zoom/``, zooming up
    to ``--zoom-max`` into the image centre at the ``--scale`` / ``--size`` frame size (x4 with ``--scales``),
    all rendered from one encoding (:class:`gsasr_plugin.zoom.ZoomRenderer`)."""
    out_folder = Path(args.output)
    name = f'{stem}{args.suffix}'
    renderer = ZoomRenderer(network, lq, size_rule=args.size_rule)
    lr_size = renderer.lr_size
    frame_size = zoom_frame_size(lr_size, args.scale, args.size, rule=renderer.size_rule)
    frames = renderer.render_windows(zoom_windows(lr_size, args.zoom, args.zoom_max), frame_size)
    written = save_frames(frames, out_folder / f'{name}_zoom', stem=name)
    written.append(save_gif(frames, out_folder / f'{name}_zoom.gif'))
    return written


def _process(model, path: Path, outputs: List[Path], args, notes: _Notes) -> None:
    progress = sys.stderr.isatty()
    options = dict(tile_size=args.tile_size, tile_pad=args.tile_pad, bf16=args.bf16, progress=progress,
                   size_rule=args.size_rule, overwrite=args.overwrite, max_input_pixels=args.max_input_pixels)
    if args.scales:  # each file exactly what -s <scale> writes, from one encoding
        requests = [(output, scale, None) for output, scale in zip(outputs, args.scales)]
        results = model.upscale_file_many(path, requests, **options)
    else:
        results = [model.upscale_file(path, outputs[0], scale=args.scale, out_size=args.size, **options)]
    for result in results:
        notes.lossy_output(args, path, result.input_dtype, result.output_dtype, result.alpha_dropped)
    if args.zoom:
        rgb, _ = read_image(str(path), max_pixels=args.max_input_pixels)
        write_zoom(model.network, torch.from_numpy(rgb).permute(2, 0, 1)[None].to(model.device), path.stem, args)
    if args.save_gaussians:
        rgb, _ = read_image(str(path), max_pixels=args.max_input_pixels)
        field = model.network.gaussians(results[0].field)
        if field is None:
            raise ValueError('--save-gaussians: this network has no per-pixel Gaussians to draw (GaussianSR with '
                             'splatting: patches)')
        draw_gaussians(field, rgb, str(outputs[-1]), crop=args.gaussians_crop)


def run(args: argparse.Namespace) -> int:
    """``basicsr infer ...`` with ``args`` parsed by :func:`gsasr_plugin_cli.parsers.infer_parser`."""
    input_path = Path(args.input)
    if not input_path.exists():
        print(f'{PROG}: error: input {input_path}: no such file or folder', file=sys.stderr)
        return 1
    files = _list_inputs(input_path)
    if not files:
        print(f'{PROG}: error: input folder {input_path} holds no images', file=sys.stderr)
        return 1
    if args.suffix is None:
        args.suffix = default_suffix(args)
    try:
        plan = plan_outputs(args, files)
        check_writable_folder(args.output, '-o/--output')  # before anything is computed
    except (OutputConflict, OSError) as error:
        print(f'{PROG}: error: {error}', file=sys.stderr)
        return 2
    remove_partial_files(args.output)  # temporary files of an earlier run that was killed while writing

    keep_freed_memory()
    try:
        model = load_model(args.model, opt=args.opt, device=args.device, param_key=args.param_key)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        print(f'{PROG}: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}', file=sys.stderr)
        return 1
    notes = _Notes()
    if args.bf16 and bf16_notice(model.device):
        notes.say('bf16', f'--bf16: {bf16_notice(model.device)}; drop --bf16 here')

    failures = 0
    iterator = files
    if len(files) > 1:
        iterator = tqdm(files, desc='images', unit='img', disable=not sys.stderr.isatty())
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SlowPrecisionWarning)  # said once above
        for path in iterator:
            try:
                _process(model, path, plan[path], args, notes)
            except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as error:
                failures += 1
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
                if isinstance(error, MemoryError):
                    message = f'out of memory ({message}); lower the scale or --tile-size'
                if str(path) not in message:
                    message = f'{path}: {message}'
                print(f'{PROG}: error: {message}', file=sys.stderr)
    done = len(files) - failures
    print(f'{PROG}: wrote {done} of {len(files)} image(s) to {args.output}')
    return 1 if failures else 0
