"""Released weights through the command line: ``load_weights``, ``basicsr infer``, ``convert`` and ``test``.

Uses the small official GSASR files of ``tests/fixtures/official_gsasr/edsr_paper`` (made by the official
code) and a stand-in for the Hugging Face download; nothing here needs the network or the official code.
"""
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import gsasr_plugin  # noqa: F401
from basicsr.archs import build_network
import gsasr_plugin_cli as cli
from gsasr_plugin.official import hub
from gsasr_plugin.checkpoint import NETWORK_KEY, build_with_weights, is_released_weights, load_weights
from gsasr_plugin.commands.pipeline import check_option_paths
from recorded_options import current_network_g

FOLDER = Path(__file__).resolve().parent / 'fixtures' / 'official_gsasr' / 'edsr_paper'
FILES = [FOLDER / 'encoder.pth', FOLDER / 'decoder.pth']


def _network_g(**overrides):
    options = current_network_g(torch.load(FOLDER / 'reference.pth', weights_only=True)['network_g'])
    options.update(box_cutoff=None)  # the plumbing under test does not depend on the rasterizer's box mode
    options.update(overrides)
    return options


@pytest.fixture
def options_file(tmp_path):
    path = tmp_path / 'tiny.yml'
    path.write_text(yaml.safe_dump({'network_g': _network_g()}))
    return path


@pytest.fixture
def fake_hub(monkeypatch):
    """hf_hub_download that finds the fixture files as if they were cached, and records the calls."""
    import huggingface_hub
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(FOLDER / Path(filename).name)

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
    return calls


@pytest.fixture
def offline_hub(monkeypatch):
    import huggingface_hub

    def refuse(**kwargs):
        raise OSError('offline: no connection to huggingface.co\nmore detail')

    monkeypatch.setattr(huggingface_hub, 'hf_hub_download', refuse)


def _expected_output(lq, scale):
    weights = load_weights(str(FOLDER), _network_g())
    net = build_with_weights(weights).eval()
    with torch.no_grad():
        return net(lq, scale=scale)


def _write_image(path, height, width, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), image)
    return torch.from_numpy(image[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]


# ------------------------------------------------------------------------------------ load_weights
def test_every_way_of_naming_the_official_files_gives_the_same_weights(fake_hub):
    folder = load_weights(str(FOLDER))
    listed = load_weights(','.join(str(p) for p in FILES))
    named = load_weights('official:gsasr-edsr-paper', _network_g())
    assert folder.meta['released_model'] == listed.meta['released_model'] == named.meta['released_model'] \
        == 'gsasr-edsr-paper'
    assert fake_hub == [('mutou0308/GSASR', 'GSASR_paper/EDSR/encoder.pth'),
                        ('mutou0308/GSASR', 'GSASR_paper/EDSR/decoder.pth')]
    for other in (listed, named):
        assert other.state_dict.keys() == folder.state_dict.keys()
        assert all(torch.equal(other.state_dict[k], v) for k, v in folder.state_dict.items())
    assert folder.network_g == hub.released_model('gsasr-edsr-paper').network_g  # the released options
    assert named.network_g == _network_g()  # given options win
    assert is_released_weights(str(FOLDER)) and is_released_weights('official:x') and not is_released_weights(
        str(FILES[0]))


def test_released_weights_that_do_not_fit(tmp_path):
    with pytest.raises(FileNotFoundError, match='holds none of the released models'):
        load_weights(str(tmp_path))
    with pytest.raises(ValueError, match=r'not the files of any released GSASROfficial model \(gsasr-edsr-paper: '):
        load_weights(f'{FILES[1]},{FILES[0]}', {'type': 'GSASROfficial'})  # decoder first
    with pytest.raises(ValueError, match="unknown released model 'official:nope'"):
        load_weights('official:nope')
    with pytest.raises(ValueError, match='is a GSASROfficial model but network_g builds a ContinuousSR'):
        load_weights('official:gsasr-edsr-paper', {'type': 'ContinuousSR'})
    weights = load_weights(str(FOLDER), _network_g(embed_dim=16, num_heads=2))
    with pytest.raises(ValueError, match=r'does not fit network_g \(GSASROfficial\): .*of another shape'):
        build_with_weights(weights, 'the fixture')


def test_offline_official_name_is_one_line(offline_hub):
    with pytest.raises(hub.WeightsUnavailableError) as info:
        load_weights('official:gsasr-rdn-paper')
    text = str(info.value)
    assert '\n' not in text and 'GSASR_paper/RDN/encoder.pth GSASR_paper/RDN/decoder.pth' in text
    assert 'mutou0308/GSASR' in text and 'hf download mutou0308/GSASR' in text and '--local-dir' in text


def test_python_api_takes_every_form_of_weights(fake_hub):
    """load_model goes through the same loader as infer, convert and test: a folder, files joined by commas and
    the short name give the same network."""
    from gsasr_plugin import load_model
    lq = torch.rand(1, 3, 7, 5)
    expected = _expected_output(lq, 2.0)[0].clamp(0, 1)
    for spec in (str(FOLDER), f'{FILES[0]},{FILES[1]}', 'official:gsasr-edsr-paper'):
        model = load_model(spec, opt={'network_g': _network_g()}, device='cpu')
        assert torch.allclose(model.upscale(lq[0], scale=2, tile_size=0), expected, atol=1e-5), spec
    assert model.source.startswith('official:gsasr-edsr-paper (mutou0308/GSASR')
    with pytest.raises(ValueError, match=r'released model official:gsasr-edsr-paper does not fit network_g \(GSASROfficial\)'):
        load_model('official:gsasr-edsr-paper', device='cpu')  # the released options are larger than the fixture


# --------------------------------------------------------------------------------------- commands
def test_infer_by_folder_by_short_name_and_by_converted_checkpoint(tmp_path, options_file, fake_hub, capsys):
    lq = _write_image(tmp_path / 'in.png', 7, 5)
    expected = _expected_output(lq, 2.0)
    outputs = []
    for index, model_args in enumerate([['-opt', str(options_file), '--model', str(FOLDER)],
                                        ['-opt', str(options_file), '--model', 'official:gsasr-edsr-paper'],
                                        ['-opt', str(options_file), '-m', f'{FILES[0]},{FILES[1]}']]):
        out = tmp_path / f'out{index}'
        assert cli.main(['infer', *model_args, '-i', str(tmp_path / 'in.png'), '-o', str(out), '--scale', '2',
                         '--tile-size', '0']) == 0, capsys.readouterr().err
        outputs.append(cv2.imread(str(out / 'in_x2.png')))  # the default suffix names the scale
    converted = tmp_path / 'converted.pth'
    assert cli.main(['convert', '-m', str(FOLDER), '-opt', str(options_file), '-o', str(converted)]) == 0
    assert 'wrote' in capsys.readouterr().out
    checkpoint = torch.load(converted, weights_only=True)
    assert checkpoint[NETWORK_KEY] == _network_g() and 'edsr_paper' in checkpoint['gsasr_plugin']['source']
    assert cli.main(['infer', '-m', str(converted), '-i', str(tmp_path / 'in.png'), '-o', str(tmp_path / 'out3'),
                     '--scale', '2', '--tile-size', '0']) == 0  # no -opt: the checkpoint carries network_g
    outputs.append(cv2.imread(str(tmp_path / 'out3' / 'in_x2.png')))
    reference = (expected[0].clamp(0, 1).permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8)
    for output in outputs:
        assert output.shape == (14, 10, 3)
        assert np.abs(output.astype(int) - reference.astype(int)).max() <= 1


def test_infer_and_convert_errors_are_one_line(tmp_path, options_file, offline_hub, capsys):
    _write_image(tmp_path / 'in.png', 6, 6)
    assert cli.main(['infer', '-m', 'official:gsasr-edsr-paper', '-i', str(tmp_path / 'in.png'), '-o',
                     str(tmp_path / 'o'), '--scale', '2']) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'GSASR_paper/EDSR/encoder.pth' in err and 'mutou0308/GSASR' in err
    plain = tmp_path / 'plain.pth'
    torch.save({'params': build_network(_network_g()).state_dict()}, plain)
    assert cli.main(['infer', '-m', str(plain), '-i', str(tmp_path / 'in.png'), '-o', str(tmp_path / 'o'),
                     '--scale', '2']) == 1
    assert 'does not say which network it holds' in capsys.readouterr().err
    assert cli.main(['convert', '-m', str(FOLDER), '-o', str(tmp_path / 'x.pth')]) == 1  # released sizes
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'does not fit network_g' in err
    assert not (tmp_path / 'x.pth').exists()
    assert cli.main(['convert', '--list']) == 0
    assert 'official:gsasr-swinir-paper' in capsys.readouterr().out


def _test_options(tmp_path, weights):
    hr = tmp_path / 'hr'
    hr.mkdir(exist_ok=True)
    for index, size in enumerate([(14, 10), (13, 17)]):
        _write_image(hr / f'img{index}.png', *size, seed=index)
    return {
        'name': 'tiny_official', 'model_type': 'ArbitraryScaleSRModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'tiny', 'type': 'ArbitraryScaleTestDataset', 'dataroot_gt': str(hr),
                                'scales': [2, 2.5]}},
        'network_g': _network_g(),
        'path': {'pretrain_network_g': weights, 'strict_load_g': True, 'param_key_g': 'params_ema'},
        'val': {'save_img': False, 'bicubic_baseline': False, 'results_table': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': None, 'test_y_channel': True}}},
    }


@pytest.mark.parametrize('weights', ['folder', 'official'])
def test_basicsr_test_with_official_weights(tmp_path, monkeypatch, fake_hub, caplog, weights):
    # caplog: basicsr's logger writes its file only in the first run of a process
    caplog.set_level(logging.INFO, logger='basicsr')
    monkeypatch.chdir(tmp_path)
    opt = _test_options(tmp_path, str(FOLDER) if weights == 'folder' else 'official:gsasr-edsr-paper')
    (tmp_path / 'opt.yml').write_text(yaml.safe_dump(opt))
    assert cli.main(['test', '-opt', str(tmp_path / 'opt.yml')]) == 0
    assert 'psnr_x2' in caplog.text and 'psnr_x2.5' in caplog.text
    assert ('official files of gsasr-edsr-paper' if weights == 'folder' else 'official:gsasr-edsr-paper (') \
        in caplog.text


def test_basicsr_test_offline_or_unknown_weights_stop_before_running(tmp_path, monkeypatch, offline_hub, capsys):
    monkeypatch.chdir(tmp_path)
    for weights, needle in (('official:gsasr-edsr-paper', 'cannot get GSASR_paper/EDSR/encoder.pth'),
                            ('official:nope', "path:pretrain_network_g: unknown released model 'official:nope'"),
                            (str(tmp_path / 'none'), "path:pretrain_network_g: '")):
        opt = _test_options(tmp_path, weights)
        with pytest.raises((ValueError, FileNotFoundError, hub.WeightsUnavailableError)):
            check_option_paths(opt, is_train=False)
        (tmp_path / 'opt.yml').write_text(yaml.safe_dump(opt))
        assert cli.main(['test', '-opt', str(tmp_path / 'opt.yml')]) == 1
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / 'results').exists()


def test_option_check_reads_released_weights_with_the_one_loader(tmp_path, fake_hub):
    """path:pretrain_network_g naming official:<name>, a folder or a comma list of official files passes the same
    pre-check as a checkpoint (check_options -> checkpoint.check_weights_fit -> load_weights): weights that fit
    pass, weights of other shapes are one line naming the key before anything is created, whatever
    strict_load_g says (released weights always load strictly); NaN/inf in official files is refused."""
    from gsasr_plugin.commands.option_checks import check_options
    from gsasr_plugin.utils.options import OptionError
    for spec in (str(FOLDER), f'{FILES[0]},{FILES[1]}', 'official:gsasr-edsr-paper'):
        opt = _test_options(tmp_path, spec)
        assert check_options(opt, 'test', 'opt.yml').warnings == [], spec
        opt['network_g'] = _network_g(embed_dim=16, num_heads=2)
        opt['path']['strict_load_g'] = False
        with pytest.raises(OptionError, match=r"path:pretrain_network_g: .* does not fit network_g \(GSASROfficial\): "
                                              r'.*of another shape') as info:
            check_options(opt, 'test', 'opt.yml')
        assert '\n' not in str(info.value) and 'strict_load_g: false' not in str(info.value), spec
    broken = tmp_path / 'broken'
    broken.mkdir()
    for path in FILES:
        state = torch.load(path, weights_only=True)
        for entry in state.values():  # params_ema / params: the first float tensor becomes NaN
            if isinstance(entry, dict):
                next(v for v in entry.values() if v.is_floating_point()).fill_(float('nan'))
        torch.save(state, broken / path.name)
    with pytest.raises(OptionError, match=r'pretrain_network_g: weights .*broken: 2 tensor\(s\) hold NaN/inf'):
        check_options(_test_options(tmp_path, str(broken)), 'test', 'opt.yml')
