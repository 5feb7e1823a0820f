"""Per-run results tables: rows from per-scale metrics, Markdown/CSV/plot, accumulation over datasets,
and the table written by a real ``basicsr test`` run (LPIPS/DISTS with the random backbone)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import yaml

from gsasr_plugin.utils.results_table import (metric_label, parse_metric_key, plot_psnr_vs_scale, rows_from_results,
                                              scale_sort_key, to_markdown, update_results_table)

REPO = Path(__file__).resolve().parents[1]


def test_parse_metric_key_and_scale_order():
    assert parse_metric_key('psnr_x2') == ('psnr', '2')
    assert parse_metric_key('ssim_x3.5') == ('ssim', '3.5')
    assert parse_metric_key('my_lpips_x2x3') == ('my_lpips', '2x3')
    assert parse_metric_key('niqe') == ('niqe', '')
    tags = ['12', '2.4', '30', '2', '1.5', '2x3', '3.6']
    assert sorted(tags, key=scale_sort_key) == ['1.5', '2', '2x3', '2.4', '3.6', '12', '30']


def _results():
    model = {'psnr_x2': 33.1, 'ssim_x2': 0.91, 'lpips_x2': 0.12, 'psnr_x12': 21.5, 'ssim_x12': 0.61,
             'lpips_x12': 0.52, 'psnr_x2.4': 31.0, 'ssim_x2.4': 0.88, 'lpips_x2.4': 0.2}
    bicubic = {k: (v - 2.0 if k.startswith('psnr') else v * 0.9) for k, v in model.items()}
    return model, bicubic


METRIC_OPTS = {'psnr': {'type': 'calculate_psnr', 'test_y_channel': True},
               'ssim': {'type': 'calculate_ssim', 'test_y_channel': True},
               'lpips': {'type': 'calculate_lpips', 'better': 'lower'}}


def test_markdown_rows_are_scales_with_bicubic_beside():
    model, bicubic = _results()
    md = to_markdown(rows_from_results('Set5', model, bicubic), METRIC_OPTS, title='run')
    lines = md.splitlines()
    assert lines[0] == '# run' and '## Set5' in lines
    header = next(line for line in lines if line.startswith('| scale'))
    assert header == ('| scale | PSNR-Y ↑ | PSNR-Y ↑ bicubic | SSIM-Y ↑ | SSIM-Y ↑ bicubic | LPIPS ↓ | LPIPS ↓ bicubic |')
    body = [line for line in lines if line.startswith('| ×')]
    assert [b.split(' | ')[0] for b in body] == ['| ×2', '| ×2.4', '| ×12']  # numeric, not string, order
    assert body[0] == '| ×2 | 33.10 | 31.10 | 0.9100 | 0.8190 | 0.1200 | 0.1080 |'


def test_metric_label():
    assert metric_label('psnr', METRIC_OPTS) == 'PSNR-Y ↑'
    assert metric_label('dists') == 'DISTS ↓'
    assert metric_label('psnr') == 'PSNR ↑'


def test_update_accumulates_datasets_and_writes_csv_md_png(tmp_path):
    model, bicubic = _results()
    update_results_table(str(tmp_path), 'Set5', model, bicubic, METRIC_OPTS, title='run')
    paths = update_results_table(str(tmp_path), 'Urban100', {'psnr_x4': 26.0, 'lpips_x4': 0.3},
                                 {'psnr_x4': 23.1, 'lpips_x4': 0.45}, METRIC_OPTS, title='run')
    assert set(paths) == {'markdown', 'csv', 'plot'}
    with open(paths['csv'], newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(model) + 2
    assert {'dataset': 'Urban100', 'scale': '4', 'metric': 'psnr', 'model': '26', 'bicubic': '23.1'} in rows
    md = Path(paths['markdown']).read_text()
    assert '## Set5' in md and '## Urban100' in md and '| ×4 | 26.00 | 23.10 | 0.3000 | 0.4500 |' in md
    image = cv2.imread(paths['plot'])
    assert image is not None and image.shape[1] > 600 and image.std() > 5
    # replacing a dataset (a re-run) keeps one copy of it
    update_results_table(str(tmp_path), 'Urban100', {'psnr_x4': 27.0}, {'psnr_x4': 23.1})
    store = json.loads((tmp_path / 'results.json').read_text())
    assert list(store['datasets']) == ['Set5', 'Urban100'] and store['datasets']['Urban100']['model'] == {'psnr_x4': 27.0}


def test_plot_needs_psnr_and_isotropic_scales(tmp_path):
    assert plot_psnr_vs_scale(rows_from_results('A', {'ssim_x2': 0.9}), str(tmp_path / 'a.png')) is None
    assert plot_psnr_vs_scale(rows_from_results('A', {'psnr_x2x3': 30.0}), str(tmp_path / 'b.png')) is None
    assert plot_psnr_vs_scale(rows_from_results('A', {'psnr_x2': 30.0}), str(tmp_path / 'c.png')) is not None


def test_no_bicubic_means_no_bicubic_columns():
    md = to_markdown(rows_from_results('Set5', {'psnr_x2': 30.0}))
    assert '| scale | PSNR ↑ |' in md and 'bicubic' not in md


def test_benchmark_option_files_cover_the_protocol():
    """The shipped full benchmark option file: 7 datasets x the issue's scales, PSNR/SSIM-Y, LPIPS, DISTS (any
    model: the weights, named with -m, bring their network_g)."""
    files = [REPO / 'options' / 'test_benchmarks_full.yml']
    wanted_scales = {2, 3, 4, 6, 8, 12, 16, 18, 24, 30, 1.5, 2.4, 3.6}
    for path in files:
        opt = yaml.safe_load(path.read_text())
        datasets = {d['name'] for d in opt['datasets'].values()}
        assert {'Set5', 'Set14', 'B100', 'Urban100', 'Manga109', 'General100', 'DIV2K_val'} <= datasets, path
        for d in opt['datasets'].values():
            assert set(d['scales']) == wanted_scales, path
        metrics = opt['val']['metrics']
        assert {m['type'] for m in metrics.values()} == {'calculate_psnr', 'calculate_ssim', 'calculate_lpips',
                                                        'calculate_dists'}, path
        assert metrics['lpips']['better'] == 'lower' and metrics['dists']['better'] == 'lower'
        assert opt['model_type'] == 'ArbitraryScaleSRModel' and 'network_g' not in opt


def test_basicsr_test_writes_the_results_table(tmp_path, photo):
    """A tiny GSASR evaluated by ``basicsr test`` on two folders at x2, x2.4 and (1.5, 3): the run's
    results folder gets results.md/.csv/.json and the plot, with bicubic beside the model."""
    from basicsr.archs import build_network

    import gsasr_plugin  # noqa: F401
    tiny = dict(type='GSASR', encoder=dict(type='EDSREncoder', num_feat=8, num_block=1), embed_dim=8, num_heads=2,
                window_size=4, num_injection_layers=1, num_blocks=1, num_layers_per_block=1, gaussian_density=4,
                num_upsample_stages=1)
    torch.save({'params': build_network(dict(tiny)).state_dict()}, tmp_path / 'net.pth')
    for folder, names in (('setA', ('chelsea', 'coffee')), ('setB', ('rocket', ))):
        (tmp_path / folder).mkdir()
        for name in names:
            cv2.imwrite(str(tmp_path / folder / f'{name}.png'), photo(name, (48, 48))[:, :, ::-1])
    dataset = dict(type='ArbitraryScaleTestDataset', scales=[2, 2.4, [1.5, 3]], io_backend={'type': 'disk'})
    opt = {
        'name': 'tiny_bench', 'model_type': 'ArbitraryScaleSRModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': dict(dataset, name='SetA', dataroot_gt='setA'),
                     'test_2': dict(dataset, name='SetB', dataroot_gt='setB')},
        'network_g': tiny,
        'path': {'pretrain_network_g': 'net.pth', 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': False, 'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': None, 'test_y_channel': True},
            'ssim': {'type': 'calculate_ssim', 'crop_border': None, 'test_y_channel': True},
            'lpips': {'type': 'calculate_lpips', 'crop_border': None, 'better': 'lower', 'pretrained_backbone': False},
            'dists': {'type': 'calculate_dists', 'crop_border': None, 'better': 'lower', 'pretrained_backbone': False}}},
    }
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(opt, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS='2')
    proc = subprocess.run([sys.executable, '-m', 'gsasr_plugin_cli', 'test', '-opt', 'test.yml'], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = tmp_path / 'results' / 'tiny_bench'
    with open(results / 'results.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 * 4  # datasets x scales x metrics
    assert {(r['dataset'], r['scale'], r['metric']) for r in rows} >= {('SetA', '1.5x3', 'dists'), ('SetB', '2.4', 'psnr')}
    assert all(r['bicubic'] != '' for r in rows)
    md = (results / 'results.md').read_text()
    assert '## SetA' in md and '## SetB' in md and 'PSNR-Y ↑ bicubic' in md and 'DISTS ↓' in md
    assert (results / 'psnr_vs_scale.png').stat().st_size > 1000
    with open(results / 'results_per_image.csv', newline='') as handle:
        per_image = list(csv.DictReader(handle))
    assert len(per_image) == 3 * 3 * 4  # images (2 + 1) x scales x metrics, each with bicubic beside
    assert {(r['dataset'], r['image']) for r in per_image} == {('SetA', 'chelsea'), ('SetA', 'coffee'),
                                                               ('SetB', 'rocket')}
    assert all(r['bicubic'] != '' for r in per_image)
