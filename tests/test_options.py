"""Option files: loaded without building Python objects, misspelt keys reported, and every error that BasicSR
would hit later with a traceback found first, as one line naming the key, before experiments/ exists."""
import copy
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import yaml

import gsasr_plugin  # noqa: F401
import gsasr_plugin_cli as cli
from gsasr_plugin.commands import option_checks
from basicsr.archs import build_network
from gsasr_plugin.checkpoint import save_checkpoint
from gsasr_plugin.commands.option_checks import check_options
from gsasr_plugin.commands.pipeline import networks_from_weights
from gsasr_plugin.utils.option_keys import apply_overrides
from gsasr_plugin.utils.options import OptionError, OrderedSafeLoader, load_option_file, parse_override_value
from train_helpers import TINY_GSASR, tiny_options, write_options, write_photos

REPO = Path(__file__).resolve().parents[1]
HOSTILE = 'name: hostile\nmodel_type: !!python/object/apply:os.system ["touch {marker}"]\nnum_gpu: 0\n'


def _run(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


@pytest.fixture
def run_dir(tmp_path, monkeypatch, photo):
    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / 'train', photo)
    write_options(tmp_path / 'a.yml', tiny_options('opts', 'train'))
    return tmp_path


@pytest.mark.parametrize('command', ['train', 'test'])
def test_python_tags_in_an_option_file_do_not_run(run_dir, capsys, command):
    marker = run_dir / 'MARKER'
    (run_dir / 'hostile.yml').write_text(HOSTILE.format(marker=marker))
    code, err = _run(capsys, command, '-opt', 'hostile.yml')
    assert not marker.exists(), 'the option file ran code'
    assert code == 1 and len(err.splitlines()) == 1
    assert "option file 'hostile.yml': line 2, column 13: the tag !!python/object/apply:os.system is not allowed" in err
    assert not (run_dir / 'experiments').exists() and not (run_dir / 'results').exists()


def test_python_tags_in_the_option_file_of_infer_and_the_api_do_not_run(run_dir, capsys, photo):
    """-opt of basicsr infer, load_model(opt=...) and the demo read option files with the same safe loader."""
    from gsasr_plugin.api import load_model, network_options_from
    marker = run_dir / 'MARKER'
    (run_dir / 'hostile.yml').write_text(HOSTILE.format(marker=marker))
    with pytest.raises(ValueError, match='the tag !!python/object/apply:os.system is not allowed'):
        network_options_from('hostile.yml')
    with pytest.raises(ValueError, match='the tag !!python/object/apply:os.system is not allowed'):
        load_model('unused.pth', opt='hostile.yml', device='cpu')
    code, err = _run(capsys, 'infer', '-opt', 'hostile.yml', '-m', 'unused.pth', '-i', 'train', '-o', 'out', '-s', '2')
    assert code == 1 and len(err.splitlines()) == 1 and 'is not allowed' in err, err
    assert not marker.exists(), 'the option file ran code'


def test_basicsr_parse_options_itself_loads_safely_and_keeps_ordered_dicts(run_dir, monkeypatch):
    import basicsr.utils.options as basicsr_options
    from basicsr.utils.options import parse_options

    from gsasr_plugin.basicsr_patches import patched_basicsr
    marker = run_dir / 'MARKER'
    (run_dir / 'hostile.yml').write_text(HOSTILE.format(marker=marker))
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', 'hostile.yml'])
    with patched_basicsr('train', {}), pytest.raises(yaml.YAMLError):  # what basicsr train runs in
        parse_options(str(run_dir), is_train=True)
    assert not marker.exists()
    with patched_basicsr('test', {}):
        assert basicsr_options.ordered_yaml()[0] is OrderedSafeLoader
    assert basicsr_options.ordered_yaml()[0] is not OrderedSafeLoader  # undone after the run
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', 'a.yml', '--force_yml',
                                      f"train:total_iter=[__import__('os').system('touch {marker}')]"])
    with patched_basicsr('train', {}):
        opt, _ = parse_options(str(run_dir), is_train=True)  # BasicSR eval()s values starting with '['
    assert not marker.exists()
    assert isinstance(opt['train'], OrderedDict) and list(opt)[:3] == ['name', 'model_type', 'num_gpu']


def _alias_bomb(levels: int = 9) -> str:
    """The "billion laughs": nine anchors, each a list repeating the previous one nine times (9^9 values)."""
    lines = ['l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]']
    lines += [f'l{i}: &l{i} [' + ', '.join([f'*l{i - 1}'] * 9) + ']' for i in range(1, levels)]
    return 'labels:\n' + ''.join(f'  {line}\n' for line in lines)


def test_yaml_alias_bomb_is_refused_before_anything_is_created(run_dir, capsys):
    """Issue 26, item 4: an option file whose aliases expand to billions of values passed the checks, created
    experiments/<name>/ and hung; now one line naming the file, nothing created."""
    (run_dir / 'bomb.yml').write_text((run_dir / 'a.yml').read_text() + _alias_bomb())
    with pytest.raises(OptionError, match=r"option file '.*bomb.yml': its YAML aliases \(\*name\) expand to "
                       r'[\d,]{11} values, more than the 100,000'):
        load_option_file(str(run_dir / 'bomb.yml'))
    code, err = _run(capsys, 'train', '-opt', 'bomb.yml')
    assert code == 1 and len(err.splitlines()) == 1 and 'an alias bomb?' in err, err
    assert not (run_dir / 'experiments').exists()
    (run_dir / 'fine.yml').write_text((run_dir / 'a.yml').read_text() + _alias_bomb(levels=3))  # 9^3: fine
    assert load_option_file(str(run_dir / 'fine.yml'))['labels']['l2'][8][8] == ['lol'] * 9


def test_loader_keeps_order_and_standard_tags():
    data = yaml.load('b: 1\na: !!float 2e-4\nc: {y: 1, x: 2}\n', Loader=OrderedSafeLoader)
    assert isinstance(data, OrderedDict) and list(data) == ['b', 'a', 'c'] and list(data['c']) == ['y', 'x']
    assert data['a'] == 2e-4
    assert [parse_override_value(v) for v in ('~', 'none', 'true', '3', '1e-4', '[1, 2]', 'abc', '!!float 5')] == \
        [None, None, True, 3, 1e-4, [1, 2], 'abc', 5.0]


def test_force_yml_keys_misspelt_added_and_sections(run_dir, capsys):
    code, err = _run(capsys, 'train', '-opt', 'a.yml', '--force_yml', 'train:total_iterr=2')
    assert code == 1 and len(err.splitlines()) == 1
    assert "--force_yml 'train:total_iterr=2': train:total_iterr: no such key" in err
    assert "did you mean 'total_iter'" in err
    code, err = _run(capsys, 'train', '-opt', 'a.yml', '--force_yml', 'trian:total_iter=2')
    assert code == 1 and "no section 'trian' in the top level" in err and "did you mean 'train'" in err
    code, err = _run(capsys, 'train', '-opt', 'a.yml', '--force_yml', 'path=~')
    assert code == 1 and "with --force_yml 'path=~': path: is required by basicsr train" in err
    code, err = _run(capsys, 'train', '-opt', 'a.yml', '--force_yml', 'datasets:train=~')
    assert code == 1 and 'datasets:train: must be a section' in err
    code, err = _run(capsys, 'train', '-opt', 'a.yml', '--force_yml', 'train:total_iter:x=2')
    assert code == 1 and 'train:total_iter is not a section' in err
    assert not (run_dir / 'experiments').exists()

    opt = load_option_file('a.yml')
    notes = apply_overrides(opt, ['train:grad_clip_norm=0.5', 'val=~', 'datasets:train:scale_max=2.5'])
    assert opt['train']['grad_clip_norm'] == 0.5 and opt['val'] is None and opt['datasets']['train']['scale_max'] == 2.5
    assert notes == ['--force_yml train:grad_clip_norm: added (not in the option file)', '--force_yml val: added '
                     '(not in the option file)']
    check_options(opt, 'train')  # val: ~ turns validation off in training
    with pytest.raises(OptionError, match=r'val: is required by basicsr test'):
        check_options(opt, 'test')
    with pytest.raises(OptionError, match="is not an option key"):
        apply_overrides(opt, ['train"]; import os; x=["a=1'])


@pytest.mark.parametrize('change, needle', [
    (lambda o: o['network_g'].update(type='GSASRR'), "network_g:type: 'GSASRR' is not a registered network (did you "
     "mean 'GSASR'?)"),
    (lambda o: o['network_g'].update(embed_dimm=8), 'network_g: does not build:'),
    (lambda o: o['datasets']['train'].update(scale_min='a'), "datasets:train: 'scale_min' must be a number, got 'a'"),
    (lambda o: o['datasets']['train'].update(scale_max=float('inf')), "'scale_max' must be a finite number, got inf"),
    (lambda o: o['datasets']['train'].update(type='NoSuchDataset'), "'NoSuchDataset' is not a registered dataset"),
    (lambda o: o['datasets']['train'].update(lq_sise=8), "datasets:train:lq_sise: unknown key (did you mean "
     "'lq_size'?): nothing reads it here"),
    (lambda o: o['train'].update(total_iterr=4), "train:total_iterr: unknown key (did you mean 'total_iter'?)"),
    (lambda o: o['train'].pop('total_iter'), 'train:total_iter: is required by basicsr train'),
    (lambda o: o['train']['optim_g'].update(lr='2e-4'), "train:optim_g:lr: must be a number, got '2e-4' (YAML "
     'reads 2e-4 as text: write !!float 2e-4)'),
    (lambda o: o['train']['optim_g'].update(type='SGD'), "train:optim_g:type: 'SGD' is not supported by BasicSR"),
    (lambda o: o['train']['optim_g'].update(betaz=[0.9, 0.99]), "torch.optim.Adam takes no option 'betaz' (did you "
     "mean 'betas'?)"),
    (lambda o: o['train']['scheduler'].update(type='CosineLR'), "'CosineLR' is not a scheduler BasicSR"),
    (lambda o: o['train']['pixel_opt'].update(type='L2Loss'), "'L2Loss' is not a registered loss"),
    (lambda o: o['logger'].update(print_frq=1), "logger:print_frq: unknown key (did you mean 'print_freq'?)"),
    (lambda o: o['path'].update(pretrain_network_g='nowhere.pth'), "path:pretrain_network_g: 'nowhere.pth' does "
     'not exist'),
    (lambda o: o.update(num_gpu='two'), "num_gpu: must be an integer >= 0 or auto, got 'two'"),
    (lambda o: o.update(model_type='ArbitraryScaleModel'), "'ArbitraryScaleModel' is not a registered model type "
     "(did you mean 'ArbitraryScaleSRModel'?)"),
    (lambda o: o.update(name='a/b'), "name: 'a/b' must not contain /"),
])
def test_option_errors_are_one_line_before_anything_is_created(run_dir, capsys, change, needle):
    opt = copy.deepcopy(tiny_options('opts', 'train'))  # TINY_GSASR is shared
    change(opt)
    write_options(run_dir / 'bad.yml', opt)
    code, err = _run(capsys, 'train', '-opt', 'bad.yml')
    assert code == 1, err
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (run_dir / 'experiments').exists() and not (run_dir / 'tb_logger').exists()


def test_error_lines_name_the_line_of_the_key(run_dir, capsys):
    text = (run_dir / 'a.yml').read_text().replace('scale_min: 1.0', 'scale_min: a')
    (run_dir / 'b.yml').write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if 'scale_min' in row)
    code, err = _run(capsys, 'train', '-opt', 'b.yml')
    assert code == 1 and f"option file 'b.yml' line {line}: datasets:train: 'scale_min' must be a number" in err
    (run_dir / 'c.yml').write_text('name: x\n  bad: [\n')
    code, err = _run(capsys, 'train', '-opt', 'c.yml')
    assert code == 1 and "option file 'c.yml': line 2, column 6: not valid YAML" in err and len(err.splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason='the machine has a GPU')
def test_num_gpu_without_gpus(run_dir, capsys):
    code, err = _run(capsys, 'train', '-opt', 'a.yml', '--force_yml', 'num_gpu=8')
    assert code == 1 and 'num_gpu: 8 GPU(s) asked for, but no CUDA GPU is available here' in err
    assert not (run_dir / 'experiments').exists()


def test_unknown_keys_warn_where_readers_are_not_all_known(tmp_path):
    opt = load_option_file(str(REPO / 'options' / 'train_gsasr_demo.yml'))
    opt['my_plugin_key'] = 1
    opt['train']['foo'] = 1
    with pytest.raises(OptionError, match=r"train:foo: unknown key"):
        check_options(opt, 'train')
    opt['train'].pop('foo')
    opt['model_type'] = 'SRGANModel'  # a BasicSR model whose train: keys the checker does not list
    opt['train']['gan_opt'] = {'type': 'GANLoss'}
    result = check_options(opt, 'train')
    assert any('my_plugin_key: unknown key' in w for w in result.warnings)
    assert not any('gan_opt' in w for w in result.warnings)
    (tmp_path / 'dup.yml').write_text('name: a\nname: b\n')
    warnings = load_option_file(str(tmp_path / 'dup.yml')).warnings
    assert 'line 2: key name appears twice; the last value is used' in warnings[0]


def test_model_keys_main_added_are_known_and_checked_early(tmp_path, monkeypatch):
    """tile: (top level), val: pbar, the metric's crop_border_max and the datasets' lq_bits / lq_resize are read
    by the plugin, so they raise no unknown-key warning; a bad tile: is one line naming its line before anything
    is created, as the model would only say at the first validation image."""
    monkeypatch.setattr(option_checks, 'check_weights_fit', lambda *args, **kwargs: None)  # weights are not shipped
    (tmp_path / 'a.yml').write_text((REPO / 'options' / 'test_benchmarks.yml').read_text() +
                                    f'network_g: {dict(TINY_GSASR)}\n' + '\ntile:\n  tile_size: 64\n  tile_pad: 8\n')
    opt = load_option_file(str(tmp_path / 'a.yml'))
    opt['num_gpu'] = 'auto'
    opt['val']['pbar'] = False
    first = next(iter(opt['datasets'].values()))
    first.update(lq_bits=8, lq_resize='matlab')
    next(iter(opt['val']['metrics'].values()))['crop_border_max'] = 8
    assert check_options(opt, 'test').warnings == []
    opt['tile']['tile_size'] = 0
    with pytest.raises(OptionError, match=r"option file '.*a\.yml' line \d+: tile:tile_size must be an integer >= 1"):
        check_options(opt, 'test')
    opt['tile'] = {'tile_size': 64, 'tile_pads': 8}
    with pytest.raises(OptionError, match=r"tile: unknown key\(s\) \['tile_pads'\]"):
        check_options(opt, 'test')


@pytest.mark.parametrize('name', sorted(p.name for p in (REPO / 'options').glob('*.yml')))
def test_shipped_option_files_pass_the_checks(name, monkeypatch, tmp_path):
    monkeypatch.setattr(option_checks, 'check_weights_fit', lambda *args, **kwargs: None)  # weights are not shipped
    opt = load_option_file(str(REPO / 'options' / name))
    if opt.get('num_gpu') not in (0, 'auto'):
        opt['num_gpu'] = 'auto'
    if name.startswith('test_'):  # one file per protocol, any model: the weights (-m) bring network_g
        assert 'network_g' not in opt and opt['path']['pretrain_network_g'] is None
        save_checkpoint(str(tmp_path / 'any.pth'), build_network(dict(TINY_GSASR)).state_dict(), TINY_GSASR)
        opt['path']['pretrain_network_g'] = str(tmp_path / 'any.pth')
        assert networks_from_weights(opt) == [f"network_g: GSASR as checkpoint {tmp_path / 'any.pth'} describes it"]
    result = check_options(opt, 'train' if name.startswith('train') else 'test')
    assert result.warnings == []


def test_options_hold_one_test_file_per_protocol():
    names = sorted(p.name for p in (REPO / 'options').glob('*.yml'))
    assert len(names) <= 25, names
    assert [n for n in names if n.startswith('test_')] == [
        'test_benchmarks.yml', 'test_benchmarks_full.yml', 'test_benchmarks_liif.yml', 'test_div2k_val.yml',
        'test_div2k_val_liif.yml']


# ------------------------------------------------------------------------------ basicsr test: checkpoints
def _test_options(tmp_path, photo, weights, **path_extra):
    write_photos(tmp_path / 'val', photo, names=('astronaut', ), size=(24, 24))
    opt = {'name': 'ckpt', 'model_type': 'ArbitraryScaleSRModel', 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'test_1': {'name': 'v', 'type': 'ArbitraryScaleTestDataset', 'dataroot_gt': 'val',
                                   'scales': [2]}},
           'network_g': copy.deepcopy(TINY_GSASR), 'path': {'pretrain_network_g': weights, **path_extra},
           'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': None}}}}
    return write_options(tmp_path / 't.yml', opt)


def _tiny_net(**changes):
    from basicsr.archs import build_network
    return build_network(dict(copy.deepcopy(TINY_GSASR), **changes))


def _checkpoints(tmp_path):
    torch.save({'params': _tiny_net().state_dict()}, tmp_path / 'good.pth')
    data = (tmp_path / 'good.pth').read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 2])
    torch.save({'weights': _tiny_net().state_dict()}, tmp_path / 'no_params.pth')
    torch.save({'params': _tiny_net(embed_dim=12).state_dict()}, tmp_path / 'shape.pth')
    torch.save({'params': torch.nn.Conv2d(3, 3, 3).state_dict()}, tmp_path / 'other.pth')


@pytest.mark.parametrize('weights, needle', [
    ('truncated.pth', 'truncated or damaged'),
    ('no_params.pth', "checkpoint no_params.pth: unknown layout, no weights under 'params'; keys found: [weights]"),
    ('shape.pth', 'checkpoint shape.pth does not fit network_g (GSASR): '),
    ('other.pth', "checkpoint other.pth does not fit network_g (GSASR): none of the network's"),
])
def test_basicsr_test_bad_checkpoints_are_one_line(tmp_path, monkeypatch, capsys, photo, weights, needle):
    monkeypatch.chdir(tmp_path)
    _checkpoints(tmp_path)
    _test_options(tmp_path, photo, weights)
    code, err = _run(capsys, 'test', '-opt', 't.yml')
    assert code == 1 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / 'results').exists()


def test_model_load_network_errors_and_loud_non_strict_loading(tmp_path, photo, basicsr_log):
    from gsasr_plugin.models.arbitrary_scale_model import ArbitraryScaleSRModel
    _checkpoints(tmp_path)
    opt = copy.deepcopy(tiny_options('load', 'unused'))
    opt.update(dist=False, rank=0, world_size=1, is_train=False, auto_resume=False)
    opt['path'].update(visualization=str(tmp_path), strict_load_g=True)
    model = ArbitraryScaleSRModel(opt)
    assert 'TESTING AN UNTRAINED NETWORK: path: pretrain_network_g is not set' in basicsr_log.text
    for name, needle in (('truncated.pth', 'truncated or damaged'), ('no_params.pth', "no weights under 'params'"),
                         ('shape.pth', 'does not fit network_g'), ('other.pth', 'does not fit network_g')):
        with pytest.raises(ValueError, match=needle):
            model.load_network(model.net_g, str(tmp_path / name), strict=True)
    model.load_network(model.net_g, str(tmp_path / 'shape.pth'), strict=False)
    assert 'LOADING NON-STRICTLY: checkpoint' in basicsr_log.text
    assert 'keep their random initial values' in basicsr_log.text
    marker = tmp_path / 'MARKER'
    from test_resume_fallback import _RunsCode
    torch.save({'params': _tiny_net().state_dict(), 'x': _RunsCode(marker)}, tmp_path / 'hostile.pth')
    with pytest.raises(ValueError, match='refused'):
        model.load_network(model.net_g, str(tmp_path / 'hostile.pth'))
    assert not marker.exists()


def test_the_package_loads_nothing_unsafely_and_writes_only_through_atomic_io():
    """Static guard over both packages (gsasr_plugin and the torch-free gsasr_plugin_cli): no torch.load without
    weights_only=True, and none outside safe_load.load_torch_file (the one reader: one-line errors); no unsafe
    YAML loader; no shell strings; every file write goes through gsasr_plugin.utils.atomic_io (a complete file
    or the previous one)."""
    import re
    problems = []
    patterns = {  # pattern: (what it finds, the one file allowed to do it)
        r'torch\.load\((?!.*weights_only=True)': ('torch.load without weights_only=True (on the same line)', None),
        r'^[^`]*torch\.load\(': ('torch.load outside gsasr_plugin.utils.safe_load.load_torch_file', 'safe_load.py'),
        r'yaml\.(load|full_load|unsafe_load)\((?!.*SafeLoader)': ('YAML loaded unsafely', None),
        r'shell=True|getoutput\(|os\.system\(|os\.popen\(': ('a shell command line', None),
        r'cv2\.imwrite\(|\.savefig\((?!handle)|torch\.save\((?!obj, handle)|open\([^)]*[\'"][wa]b?[\'"]':
            ('a file written without gsasr_plugin.utils.atomic_io', 'atomic_io.py'),
    }
    files = sorted((REPO / 'gsasr_plugin').rglob('*.py')) + sorted((REPO / 'gsasr_plugin_cli').rglob('*.py'))
    assert any(p.parent.name == 'gsasr_plugin_cli' for p in files)
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for pattern, (what, allowed_in) in patterns.items():
                if path.name != allowed_in and re.search(pattern, line) and not line.lstrip().startswith('#'):
                    problems.append(f'{path.relative_to(REPO)}:{number}: {what}: {line.strip()}')
    assert problems == []
    setup = (REPO / 'setup.py').read_text()
    assert "'torch>=2.6'" in setup  # torch.load's default is weights_only=True from 2.6


# ------------------------------------------------------------------ issue 26: faults found before anything exists
@pytest.mark.parametrize('fault, needle', [
    ('small', "datasets:train: training image 'train/small.png' is 16x16, smaller than the largest crop 24x24 "
     '(round(lq_size * scale_max))'),
    ('text', "datasets:train: cannot read image 'train/notes.png'"),
    ('no_network', 'network_g: is required'),
])
def test_training_set_and_network_faults_stop_before_the_experiment_folder(run_dir, capsys, photo, fault, needle):
    """Issue 26, item 8: these were found after experiments/<name>/ existed; the training images' headers are
    checked (sizes, readability) with the options now, and a missing network_g is an option error."""
    import cv2
    opt = copy.deepcopy(tiny_options('opts', 'train'))
    if fault == 'small':
        cv2.imwrite(str(run_dir / 'train' / 'small.png'), photo('coffee', (16, 16)))
    elif fault == 'text':
        (run_dir / 'train' / 'notes.png').write_text('not an image\n')
    else:
        del opt['network_g']
    write_options(run_dir / 'bad.yml', opt)
    code, err = _run(capsys, 'train', '-opt', 'bad.yml')
    assert code == 1 and len(err.splitlines()) == 1 and needle in err, err
    assert not (run_dir / 'experiments').exists() and not (run_dir / 'tb_logger').exists()


def test_a_network_too_large_for_memory_is_refused_unbuilt(run_dir, tmp_path, capsys, monkeypatch):
    """Issue 26, item 7: a checkpoint whose network_g asks for embed_dim 65536 made the allocator fail after
    asking for ~154 GB; the size is checked on the meta device first (infer, load_model, train options)."""
    from gsasr_plugin.checkpoint import NetworkTooLargeError, save_checkpoint
    huge = dict(TINY_GSASR, embed_dim=65536, num_heads=4)
    ckpt = tmp_path / 'huge.pth'
    save_checkpoint(str(ckpt), {'w': torch.zeros(2)}, huge)
    with pytest.raises(NetworkTooLargeError, match=r'the network_g of .*huge.pth is a GSASR of [\d,]+ parameters: it '
                       r'needs [\d,.]+ GiB of memory, more than the [\d,.]+ GiB free here'):
        gsasr_plugin.load_model(ckpt, device='cpu')
    code, err = _run(capsys, 'infer', '-m', str(ckpt), '-i', 'train', '-o', 'out', '-s', '2')
    assert code == 1 and len(err.splitlines()) == 1 and 'GiB free here' in err, err
    assert not (run_dir / 'out').exists()
    opt = copy.deepcopy(tiny_options('opts', 'train'))
    opt['network_g'] = huge
    write_options(run_dir / 'huge.yml', opt)
    code, err = _run(capsys, 'train', '-opt', 'huge.yml')
    assert code == 1 and len(err.splitlines()) == 1 and 'network_g: is a GSASR of' in err and 'to train' in err, err
    assert not (run_dir / 'experiments').exists()
