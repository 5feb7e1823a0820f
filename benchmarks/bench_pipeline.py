"""Speed and peak memory of the whole GSASR pipeline (encoder, decoder, rendering), the paper's Table 2 protocol.

Protocol (GSASR paper, Table 2): 720 x 720 GT crops, LR = GT / s for s in 2, 3, 4, 6, 8, 12, one image at a
time, time of one full forward (``net(lq, scale)``: encoder + Gaussian decoder + rasterizer) averaged over
the runs, and the peak memory of that forward. The paper's numbers (A100, GSASR-EDSR) are printed beside.

Usage::

    python benchmarks/bench_pipeline.py --full            # the protocol: 720 x 720, 10 timed runs (GPU)
    python benchmarks/bench_pipeline.py                   # quick: 96 x 96 crops, 2 timed runs (CPU-friendly)
    python benchmarks/bench_pipeline.py --crop 360 --scales 4 8 --runs 5 --bf16 --opt options/train_gsasr_rdn.yml

Images: ``--images DIR`` (crops from its centre), else ``$GSASR_SHARED_DATASETS/train/Sun_Hays80`` (or
../shared/datasets/...) images at least as large as the crop, else scikit-image photos resized up. The network is
``network_g`` of ``--opt`` (default ``options/train_gsasr_edsr.yml``), randomly initialised unless ``--model``
gives weights (timing hardly depends on them). Memory: CUDA ``max_memory_allocated`` over the forward (as the
paper's, tensors only); on the CPU the process's peak resident set (VmHWM, reset before each forward), which
also counts the weights and libraries: an upper bound, not comparable with the GPU figure. Writes ``<out>.csv`` and ``<out>.md`` (default ``benchmarks/results/bench_pipeline_<device>``).
"""
import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# GSASR paper, Table 2: A100, 720 x 720 output, GSASR with the EDSR-baseline encoder: (ms, MB)
PAPER_A100_EDSR = {2: (1573, 13367), 3: (806, 6000), 4: (543, 3420), 6: (265, 1578), 8: (195, 1051), 12: (91, 472)}


def _rss_peak_bytes() -> Optional[int]:
    try:
        with open('/proc/self/status', encoding='ascii') as handle:
            for line in handle:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w', encoding='ascii') as handle:
            handle.write('5')  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def load_crops(crop: int, count: int, images: Optional[str]) -> List[np.ndarray]:
    """``count`` (crop, crop, 3) RGB uint8 centre crops, from a folder or scikit-image photos."""
    import cv2
    folders = [Path(images)] if images else []
    shared = Path(os.environ.get('GSASR_SHARED_DATASETS', REPO.parent / 'shared' / 'datasets'))
    folders.append(shared / 'train' / 'Sun_Hays80')
    crops = []
    for folder in folders:
        if not folder.is_dir():
            if images and folder == Path(images):
                raise FileNotFoundError(f'--images {images}: no such folder')
            continue
        for path in sorted(folder.iterdir()):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None or min(image.shape[:2]) < crop:
                continue
            top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
            crops.append(np.ascontiguousarray(image[top:top + crop, left:left + crop, ::-1]))
            if len(crops) == count:
                return crops
    import skimage.data
    for name in ('astronaut', 'coffee', 'chelsea', 'rocket', 'motorcycle_left'):
        image = getattr(skimage.data, name)()[..., :3]
        factor = crop / min(image.shape[:2])
        if factor > 1:
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        crops.append(np.ascontiguousarray(image[top:top + crop, left:left + crop]))
        if len(crops) == count:
            break
    return crops


def build_network(opt_path: str, checkpoint: Optional[str], device: torch.device) -> torch.nn.Module:
    """The option file's network_g with the checkpoint's weights (random weights without a checkpoint)."""
    from gsasr_plugin.api import load_model, network_options_from
    if checkpoint is not None:
        return load_model(checkpoint, opt=opt_path, device=device).network
    import gsasr_plugin  # noqa: F401  (registers the networks)
    from basicsr.archs import build_network as build_registered
    return build_registered(network_options_from(opt_path)).to(device).eval()


def _lr_of(gt: np.ndarray, scale: int) -> torch.Tensor:
    from gsasr_plugin.utils.resize import matlab_bicubic_resize
    size = (gt.shape[0] // scale, gt.shape[1] // scale)
    lr = matlab_bicubic_resize(gt.astype(np.float32) / 255.0, size)
    return torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].float().clamp(0, 1)


def measure(network, lqs: Sequence[torch.Tensor], scale: int, out_size: int, runs: int, warmup: int,
            device: torch.device, bf16: bool) -> Dict[str, float]:
    """Average ms and peak memory (MB) of ``network(lq, scale, out_size)`` over ``runs`` forwards."""
    cuda = device.type == 'cuda'

    def forward(lq):
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = network(lq, scale=(float(scale), float(scale)), out_size=(out_size, out_size))
        if cuda:
            torch.cuda.synchronize(device)
        return out

    for i in range(warmup):
        forward(lqs[i % len(lqs)].to(device))
    times, peaks = [], []
    for i in range(runs):
        lq = lqs[i % len(lqs)].to(device)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            _reset_rss_peak()
            base = _rss_peak_bytes()
        start = time.perf_counter()
        out = forward(lq)
        times.append((time.perf_counter() - start) * 1000)
        if cuda:
            peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2**20)
        else:
            peak = _rss_peak_bytes()
            if peak is not None:
                peaks.append(peak / 2**20)  # the whole process (weights, libraries): freed memory is reused
        assert out.shape[-2:] == (out_size, out_size), out.shape
        del out
    return {'ms': statistics.mean(times), 'ms_std': statistics.pstdev(times) if len(times) > 1 else 0.0,
            'peak_mb': max(peaks) if peaks else float('nan')}


def _markdown(rows: List[Dict], device_name: str, crop: int, encoder: str, note: str) -> str:
    memory = 'CUDA max_memory_allocated' if 'CPU' not in device_name else 'process peak RSS (upper bound)'
    lines = [f'# GSASR pipeline speed and memory ({encoder} encoder)', '',
             f'Device: {device_name}; GT/output {crop} x {crop}; {note}; memory: {memory}', '',
             '| scale | LR | ms (ours) | peak MB (ours) | ms (paper, A100, 720², EDSR) | MB (paper) |',
             '|---|---|---|---|---|---|']
    for row in rows:
        paper = PAPER_A100_EDSR.get(row['scale'])
        paper_ms, paper_mb = (f'{paper[0]:,}', f'{paper[1]:,}') if paper else ('–', '–')
        lines.append(f"| ×{row['scale']} | {row['lr']}² | {row['ms']:.0f} ± {row['ms_std']:.0f} | "
                     f"{row['peak_mb']:,.0f} | {paper_ms} | {paper_mb} |")
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--full', action='store_true', help='the paper protocol: 720 crops, 3 warm-up, 10 runs')
    parser.add_argument('--crop', type=int, default=None, help='GT crop side (default 96, 720 with --full)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4, 6, 8, 12])
    parser.add_argument('--runs', type=int, default=None, help='timed forwards per scale (default 2, 10 with --full)')
    parser.add_argument('--warmup', type=int, default=None, help='untimed forwards first (default 1, 3 with --full)')
    parser.add_argument('--images', default=None, help='folder of images to crop (default: shared data or photos)')
    parser.add_argument('--opt', default=str(REPO / 'options' / 'train_gsasr_edsr.yml'), help='option file (network_g)')
    parser.add_argument('--model', default=None, help='checkpoint (default: random weights)')
    parser.add_argument('--device', default=None, help="default: 'cuda' when available, else 'cpu'")
    parser.add_argument('--bf16', action='store_true', help='bfloat16 autocast')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--out', default=None, help='output stem for .csv/.md')
    args = parser.parse_args(argv)

    crop = args.crop or (720 if args.full else 96)
    runs = args.runs or (10 if args.full else 2)
    warmup = args.warmup if args.warmup is not None else (3 if args.full else 1)
    bad = [s for s in args.scales if s < 1 or crop % s]
    if bad:
        parser.error(f'--scales {bad}: the crop side {crop} must be divisible by every scale')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    device_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'

    import gsasr_plugin  # noqa: F401
    network = build_network(args.opt, args.model, device)
    encoder = getattr(getattr(network, 'encoder', None), '__class__', type(None)).__name__
    crops = load_crops(crop, min(runs, 5), args.images)
    from gsasr_plugin.ops import cpu_op_available, cuda_op_available
    if device.type == 'cuda':
        rasterizer = 'CUDA op' if cuda_op_available() else 'pure-PyTorch (CUDA op not built)'
    else:
        rasterizer = 'CPU kernel' if cpu_op_available() else 'pure-PyTorch (compiled op not built)'
    note = (f"{len(crops)} image(s), {warmup} warm-up + {runs} timed forwards per scale, "
            f"{'bf16' if args.bf16 else 'fp32'}, rasterizer: {rasterizer}, torch {torch.__version__}")
    print(f'{device_name}: {note}', flush=True)

    rows = []
    for scale in args.scales:
        lqs = [_lr_of(c, scale) for c in crops]
        result = measure(network, lqs, scale, crop, runs, warmup, device, args.bf16)
        row = dict(scale=scale, lr=crop // scale, out=crop, **result)
        paper = PAPER_A100_EDSR.get(scale)
        row['paper_ms'], row['paper_mb'] = paper if paper else (None, None)
        rows.append(row)
        paper_text = f'   paper A100 (720², EDSR): {paper[0]} ms / {paper[1]:,} MB' if paper else ''
        print(f"x{scale:<3} LR {crop // scale:>4}²  {result['ms']:9.1f} ms  {result['peak_mb']:9.1f} MB{paper_text}",
              flush=True)

    tag = 'cuda' if device.type == 'cuda' else 'cpu'
    stem = Path(args.out) if args.out else REPO / 'benchmarks' / 'results' / f'bench_pipeline_{tag}'
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(f'{stem}.csv', 'w', newline='', encoding='utf-8') as handle:
        writer = csv.writer(handle)
        writer.writerow(['device', 'encoder', 'dtype', 'scale', 'lr_side', 'out_side', 'ms_mean', 'ms_std', 'peak_mb',
                         'paper_a100_ms', 'paper_a100_mb'])
        for row in rows:
            writer.writerow([device_name, encoder, 'bf16' if args.bf16 else 'fp32', row['scale'], row['lr'], row['out'],
                             f"{row['ms']:.2f}", f"{row['ms_std']:.2f}", f"{row['peak_mb']:.1f}",
                             row['paper_ms'] or '', row['paper_mb'] or ''])
    markdown = _markdown(rows, device_name, crop, encoder, note)
    Path(f'{stem}.md').write_text(markdown, encoding='utf-8')
    print('\n' + markdown + f'\nwrote {stem}.csv and {stem}.md')
    return 0


if __name__ == '__main__':
    sys.exit(main())
