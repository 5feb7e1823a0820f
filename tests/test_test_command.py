"""``basicsr test``: networks from their checkpoints (``network_g`` left out of the options), ``-m``, and
``basicsr test -m MODEL -i FOLDER_OR_IMAGE`` without an option file."""
import csv

import pytest
import torch
import yaml

import gsasr_plugin  # noqa: F401  (registers the networks; basicsr imports after it)
import gsasr_plugin_cli as cli
from basicsr.archs import build_network
from gsasr_plugin.checkpoint import save_checkpoint
from train_helpers import TINY_GSASR, write_photos


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    net = build_network(dict(TINY_GSASR))
    save_checkpoint(str(tmp_path / 'tiny.pth'), net.state_dict(), TINY_GSASR, source='unit')
    torch.save({'params': net.state_dict()}, tmp_path / 'basicsr.pth')  # BasicSR's layout: no network_g
    return tmp_path / 'tiny.pth'


def _test_file(tmp_path, weights=None, network_g=None, name='t'):
    opt = {'name': name, 'model_type': 'ArbitraryScaleSRModel', 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'photos', 'type': 'ArbitraryScaleTestDataset',
                                   'dataroot_gt': str(tmp_path / 'hr'), 'scales': [2]}},
           'path': {'pretrain_network_g': weights},
           'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': None}}}}
    if network_g is not None:
        opt['network_g'] = network_g
    path = tmp_path / f'{name}.yml'
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_without_an_option_file_gives_the_results_files(tmp_path, monkeypatch, capsys, photo, tiny_checkpoint):
    write_photos(tmp_path / 'hr', photo, names=('astronaut', 'coffee'), size=(32, 40))
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, 'test', '-m', tiny_checkpoint, '-i', 'hr', tmp_path / 'hr' / 'coffee.png',
                     'hr/astronaut.png', '--scales', '2,4', '--metrics', 'psnr,ssim')
    assert code == 0, err
    assert 'note: network_g: GSASR as checkpoint' in err
    results = tmp_path / 'results' / 'tiny'
    table = (results / 'results.md').read_text()
    assert '## hr' in table and '## images' in table and '×2' in table and '×4' in table and 'SSIM' in table
    with open(results / 'results_per_image.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert {(r['dataset'], r['image']) for r in rows} == {('hr', 'astronaut'), ('hr', 'coffee'),
                                                          ('images', 'coffee'), ('images', 'astronaut')}
    assert (results / 'psnr_vs_scale.png').is_file()


@pytest.mark.parametrize('argv, needle', [
    (['-i', 'hr'], '-i needs -m MODEL'),
    (['-opt', 't.yml', '-m', 'x.pth', '-i', 'hr'], 'give -opt or -i, not both'),
    (['-opt', 't.yml', '--scales', '2'], '--scales: only with -i'),
    ([], 'give -opt OPTIONS.yml, or -m MODEL -i FOLDER_OR_IMAGE'),
])
def test_argument_errors_create_nothing(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, 'test', *argv)
    assert code == 2 and needle in err
    assert not (tmp_path / 'results').exists()


@pytest.mark.parametrize('argv, needle', [
    (['--metrics', 'psnr,fid'], '--metrics: unknown metric fid; choose from psnr, ssim, lpips, dists'),
    (['-i', 'missing'], '-i missing: no such file or folder'),
    (['-m', 'nowhere.pth'], "-m: 'nowhere.pth' does not exist"),
])
def test_bad_inputs_without_an_option_file_are_one_line(tmp_path, monkeypatch, capsys, photo, tiny_checkpoint,
                                                        argv, needle):
    write_photos(tmp_path / 'hr', photo, names=('astronaut', ), size=(16, 16))
    monkeypatch.chdir(tmp_path)
    args = {'-m': 'tiny.pth', '-i': 'hr'}
    for flag, value in zip(argv[::2], argv[1::2]):
        args[flag] = value
    code, err = _run(capsys, 'test', *[x for pair in args.items() for x in pair])
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'results').exists()


def test_network_g_comes_from_the_checkpoint_named_in_the_file_or_by_m(tmp_path, monkeypatch, capsys, photo,
                                                                       tiny_checkpoint):
    write_photos(tmp_path / 'hr', photo, names=('astronaut', ), size=(16, 16))
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, 'test', '-opt', _test_file(tmp_path, 'tiny.pth', name='from_file'))
    assert code == 0 and 'note: network_g: GSASR as checkpoint tiny.pth describes it' in err, err
    assert '| ×2 |' in (tmp_path / 'results' / 'from_file' / 'results.md').read_text()
    # -m wins over the file's weights (which do not exist: the run would stop at the path check)
    code, err = _run(capsys, 'test', '-opt', _test_file(tmp_path, 'nowhere.pth', name='by_m'), '-m', 'tiny.pth')
    assert code == 0, err
    assert (tmp_path / 'results' / 'by_m' / 'results.md').is_file()


@pytest.mark.parametrize('weights, needle', [
    ('basicsr.pth', 'no network_g in option file'),
    (None, 'path:pretrain_network_g is not set'),
])
def test_no_network_g_and_no_self_describing_weights_is_one_line_before_anything(tmp_path, monkeypatch, capsys,
                                                                                   photo, tiny_checkpoint, weights,
                                                                                   needle):
    write_photos(tmp_path / 'hr', photo, names=('astronaut', ), size=(16, 16))
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, 'test', '-opt', _test_file(tmp_path, weights))
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'results').exists()


def test_training_without_network_g_or_weights_names_the_key(tmp_path, monkeypatch, capsys, photo):
    from train_helpers import tiny_options, write_options
    write_photos(tmp_path / 'hr', photo)
    monkeypatch.chdir(tmp_path)
    opt = tiny_options('no_net', str(tmp_path / 'hr'))
    del opt['network_g']
    code, err = _run(capsys, 'train', '-opt', write_options(tmp_path / 'train.yml', opt))
    assert code == 1 and 'network_g: is required: the network to build' in err, err
    assert not (tmp_path / 'experiments').exists()


def test_force_yml_reaches_the_network_the_weights_bring_and_name_names_the_run(tmp_path, monkeypatch, capsys,
                                                                                 photo, tiny_checkpoint):
    """--force_yml network_g:... applies to the network_g the checkpoint brings (here a cut-off, which has no
    weights; a changed shape shows that it arrived: the weights no longer fit)."""
    write_photos(tmp_path / 'hr', photo, names=('astronaut', ), size=(16, 16))
    monkeypatch.chdir(tmp_path)
    option_file = _test_file(tmp_path, 'tiny.pth')
    code, err = _run(capsys, 'test', '-opt', option_file, '--force_yml', 'network_g:cutoff=2.5', '--name', 'cut')
    assert code == 0, err
    log = next((tmp_path / 'results' / 'cut').glob('*.log'), None)
    assert (tmp_path / 'results' / 'cut' / 'results.md').is_file() and not (tmp_path / 'results' / 't').exists()
    if log is not None:  # BasicSR's logger writes its file for the first run of a process only
        assert 'cutoff: 2.5' in log.read_text()
    code, err = _run(capsys, 'test', '-opt', option_file, '--force_yml', 'network_g:gaussian_density=16')
    assert code == 1 and 'does not fit network_g (GSASR)' in err and len(err.strip().splitlines()) == 1, err
    code, err = _run(capsys, 'test', '-opt', _test_file(tmp_path, 'basicsr.pth', name='b'), '--force_yml',
                     'network_g:cutoff=2.5')
    assert code == 1 and 'does not say which network it holds' in err, err
