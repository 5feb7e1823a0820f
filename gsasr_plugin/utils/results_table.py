"""Per-run results tables: dataset x scale x metric, the model beside bicubic, as Markdown, CSV and a plot.

``ArbitraryScaleSRModel`` reports metrics per scale as ``<metric>_x<scale>`` (``psnr_x2``,
``ssim_x3.5``, ``lpips_x2x3``) for the model and for MATLAB bicubic on the same images. During
``basicsr test`` each dataset's results are added with :func:`update_results_table`, which keeps
``results.json`` in the run's results folder and rewrites from it:

* ``results.md``: one table per dataset, a row per scale, for every metric the model and bicubic;
* ``results.csv``: ``dataset,scale,metric,model,bicubic``, one line per value;
* ``psnr_vs_scale.png``: PSNR against scale per dataset, model and bicubic (when a PSNR metric exists);
* ``results_per_image.csv``: ``dataset,scale,image,metric,model,bicubic``, every image's own values (when
  the caller passes them, as ``basicsr test`` does).

Every file is written atomically (``gsasr_plugin.utils.atomic_io``): complete, or the previous version.
"""
import csv
import io
import json
import math
import os
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional, Tuple

from gsasr_plugin.utils.atomic_io import atomic_write, write_text

__all__ = ['ResultRow', 'parse_metric_key', 'scale_sort_key', 'rows_from_results', 'metric_label', 'to_markdown',
           'write_csv', 'write_per_image_csv', 'plot_psnr_vs_scale', 'write_results_table', 'update_results_table']

# dataset -> scale tag -> image name -> {'model': {metric: value}, 'bicubic': {metric: value}}
PerImage = Mapping[str, Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]]

# (dataset, scale tag, metric) -> (model value, bicubic value or None)
ResultRow = Tuple[str, str, str, float, Optional[float]]


def parse_metric_key(key: str) -> Tuple[str, str]:
    """``'psnr_x3.5'`` -> (``'psnr'``, ``'3.5'``); a key without ``_x<scale>`` -> (key, '')."""
    metric, sep, tag = key.rpartition('_x')
    if not sep or not metric or not tag or not tag[0].isdigit():
        return key, ''
    return metric, tag


def scale_sort_key(tag: str) -> Tuple[float, float]:
    """Numeric order of scale tags: ``'2'`` < ``'2.4'`` < ``'2x3'`` < ``'3'``; unparsable tags last."""
    try:
        parts = [float(p) for p in tag.split('x')]
    except ValueError:
        return (math.inf, math.inf)
    return (parts[0], parts[-1])


def rows_from_results(dataset: str, metric_results: Mapping[str, float],
                      bicubic_results: Optional[Mapping[str, float]] = None) -> List[ResultRow]:
    """Rows (dataset, scale, metric, model, bicubic) from the model's per-scale metric dicts."""
    rows = []
    bicubic_results = bicubic_results or {}
    for key, value in metric_results.items():
        metric, tag = parse_metric_key(key)
        bic = bicubic_results.get(key)
        rows.append((dataset, tag, metric, float(value), None if bic is None else float(bic)))
    return rows


def metric_label(metric: str, metric_opts: Optional[Mapping[str, Mapping[str, Any]]] = None) -> str:
    """Column title: ``PSNR-Y`` for a PSNR/SSIM computed on Y, else the metric's name in capitals."""
    opt = (metric_opts or {}).get(metric) or {}
    label = metric.upper()
    if opt.get('test_y_channel') and not label.endswith('-Y'):
        label += '-Y'
    better = opt.get('better', 'lower' if metric.lower() in ('lpips', 'dists', 'niqe') else 'higher')
    return label + (' ↓' if better == 'lower' else ' ↑')


def _format(value: Optional[float], metric: str) -> str:
    if value is None:
        return '–'
    if math.isinf(value):
        return 'inf'
    return f'{value:.2f}' if 'psnr' in metric.lower() else f'{value:.4f}'


def _metrics_in_order(rows: List[ResultRow]) -> List[str]:
    return list(OrderedDict((r[2], None) for r in rows))


def to_markdown(rows: List[ResultRow], metric_opts: Optional[Mapping[str, Mapping[str, Any]]] = None,
                title: Optional[str] = None) -> str:
    """One Markdown table per dataset: a row per scale, for each metric 'model' and 'bicubic' columns."""
    lines = [f'# {title}', ''] if title else []
    datasets = list(OrderedDict((r[0], None) for r in rows))
    for dataset in datasets:
        mine = [r for r in rows if r[0] == dataset]
        metrics = _metrics_in_order(mine)
        with_bicubic = any(r[4] is not None for r in mine)
        header = ['scale']
        for metric in metrics:
            label = metric_label(metric, metric_opts)
            header += [label, f'{label} bicubic'] if with_bicubic else [label]
        lines += [f'## {dataset}', '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
        table = {(r[1], r[2]): (r[3], r[4]) for r in mine}
        for tag in sorted(OrderedDict((r[1], None) for r in mine), key=scale_sort_key):
            cells = [f'×{tag}' if tag else '–']
            for metric in metrics:
                model, bic = table.get((tag, metric), (None, None))
                cells += [_format(model, metric)] + ([_format(bic, metric)] if with_bicubic else [])
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
    return '\n'.join(lines)


def write_csv(rows: List[ResultRow], path: str) -> None:
    text = io.StringIO(newline='')
    writer = csv.writer(text)
    writer.writerow(['dataset', 'scale', 'metric', 'model', 'bicubic'])
    for dataset, tag, metric, model, bic in rows:
        writer.writerow([dataset, tag, metric, f'{model:.6g}', '' if bic is None else f'{bic:.6g}'])
    write_text(path, text.getvalue())


def write_per_image_csv(per_image: PerImage, path: str) -> None:
    """``dataset,scale,image,metric,model,bicubic``: one line per image, scale and metric."""
    text = io.StringIO(newline='')
    writer = csv.writer(text)
    writer.writerow(['dataset', 'scale', 'image', 'metric', 'model', 'bicubic'])
    for dataset, scales in per_image.items():
        for tag in sorted(scales, key=scale_sort_key):
            for image, values in scales[tag].items():
                bicubic = values.get('bicubic') or {}
                for metric, value in (values.get('model') or {}).items():
                    bic = bicubic.get(metric)
                    bic_text = '' if bic is None else f'{bic:.6g}'
                    writer.writerow([dataset, tag, image, metric, f'{value:.6g}', bic_text])
    write_text(path, text.getvalue())


def _psnr_metric(rows: List[ResultRow]) -> Optional[str]:
    return next((m for m in _metrics_in_order(rows) if 'psnr' in m.lower()), None)


def plot_psnr_vs_scale(rows: List[ResultRow], path: str, metric: Optional[str] = None) -> Optional[str]:
    """PNG of PSNR against scale (log axis), one panel per dataset, model and bicubic; isotropic scales.

    Returns the path, or None when there is no PSNR metric or no isotropic scale to plot.
    """
    metric = metric or _psnr_metric(rows)
    if metric is None:
        return None
    points = [r for r in rows if r[2] == metric and r[1] and 'x' not in r[1] and math.isfinite(r[3])]
    if not points:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    datasets = list(OrderedDict((r[0], None) for r in points))
    columns = min(4, len(datasets))
    grid_rows = math.ceil(len(datasets) / columns)
    fig, axes = plt.subplots(grid_rows, columns, figsize=(4.2 * columns, 3.4 * grid_rows), squeeze=False, dpi=100)
    for ax, dataset in zip(axes.flat, datasets):
        mine = sorted((r for r in points if r[0] == dataset), key=lambda r: float(r[1]))
        scales = [float(r[1]) for r in mine]
        ax.plot(scales, [r[3] for r in mine], 'o-', label='model')
        bic = [(s, r[4]) for s, r in zip(scales, mine) if r[4] is not None and math.isfinite(r[4])]
        if bic:
            ax.plot([b[0] for b in bic], [b[1] for b in bic], 's--', color='gray', label='bicubic')
        ax.set_xscale('log')
        ax.set_xticks(scales)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ''))
        ax.set_title(dataset)
        ax.set_xlabel('scale')
        ax.set_ylabel(f'{metric.upper()} (dB)')
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(datasets):]:
        ax.axis('off')
    fig.tight_layout()
    try:
        with atomic_write(path) as handle:
            fig.savefig(handle, format='png')
    finally:
        plt.close(fig)
    return path


def write_results_table(rows: List[ResultRow], folder: str, metric_opts: Optional[Mapping[str, Any]] = None,
                        title: Optional[str] = None) -> Dict[str, str]:
    """Write results.md, results.csv and (with a PSNR metric) psnr_vs_scale.png; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {'markdown': os.path.join(folder, 'results.md'), 'csv': os.path.join(folder, 'results.csv')}
    write_text(paths['markdown'], to_markdown(rows, metric_opts, title))
    write_csv(rows, paths['csv'])
    plot = plot_psnr_vs_scale(rows, os.path.join(folder, 'psnr_vs_scale.png'))
    if plot:
        paths['plot'] = plot
    return paths


def update_results_table(folder: str, dataset: str, metric_results: Mapping[str, float],
                         bicubic_results: Optional[Mapping[str, float]] = None,
                         metric_opts: Optional[Mapping[str, Any]] = None, title: Optional[str] = None,
                         per_image: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """Add (or replace) one dataset's results in ``folder/results.json`` and rewrite the tables from it.

    ``per_image`` (scale tag -> image -> ``{'model': {metric: value}, 'bicubic': {...}}``) is kept too and
    written as ``results_per_image.csv``.
    """
    os.makedirs(folder, exist_ok=True)
    store_path = os.path.join(folder, 'results.json')
    store: Dict[str, Any] = {'datasets': {}}
    if os.path.isfile(store_path):
        with open(store_path, encoding='utf-8') as handle:
            store = json.load(handle)
    store['datasets'][dataset] = {'model': dict(metric_results), 'bicubic': dict(bicubic_results or {})}
    if per_image is not None:
        store.setdefault('per_image', {})[dataset] = per_image
    if metric_opts:
        store['metric_opts'] = {k: {kk: vv for kk, vv in dict(v).items() if kk in ('test_y_channel', 'better')}
                                for k, v in metric_opts.items()}
    write_text(store_path, json.dumps(store, indent=1))
    rows = []
    for name, results in store['datasets'].items():
        rows += rows_from_results(name, results['model'], results['bicubic'])
    paths = write_results_table(rows, folder, store.get('metric_opts'), title)
    if store.get('per_image'):
        paths['per_image'] = os.path.join(folder, 'results_per_image.csv')
        write_per_image_csv(store['per_image'], paths['per_image'])
    return paths
