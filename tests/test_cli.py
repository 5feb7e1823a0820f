"""The ``basicsr`` command's train/test front end, the shipped option files, and errors for bad options."""
import copy
import os
from pathlib import Path

import cv2
import pytest
import torch
import yaml

import gsasr_plugin  # noqa: F401
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.models import build_model
import gsasr_plugin_cli as cli
from gsasr_plugin.commands.pipeline import check_option_paths

REPO = Path(__file__).resolve().parents[1]
OPTIONS = REPO / 'options'


def _load(name):
    return yaml.safe_load((OPTIONS / name).read_text())


def test_help_and_missing_option_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(['train', '-h']) == 0
    assert '--auto_resume' in capsys.readouterr().out
    assert cli.main(['test', '-opt', 'nowhere.yml']) == 2
    err = capsys.readouterr().err
    assert "option file 'nowhere.yml' does not exist" in err and len(err.strip().splitlines()) == 1


def test_missing_dataset_folder_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(['train', '-opt', str(OPTIONS / 'train_gsasr_edsr.yml')]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "datasets:train:dataroot_gt: 'datasets/DIV2K/DIV2K_train_HR' does not exist" in err
    assert not (tmp_path / 'experiments').exists(), 'nothing may be created before the checks pass'
    # --force_yml is applied before the check.
    (tmp_path / 'hr').mkdir()
    assert cli.main(['train', '-opt', str(OPTIONS / 'train_gsasr_edsr.yml'), '--force_yml',
                     'datasets:train:dataroot_gt=hr']) == 1
    assert "datasets:val:dataroot_gt: 'datasets/DIV2K/DIV2K_valid_HR'" in capsys.readouterr().err


def test_missing_pretrained_weights_for_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt = _load('test_benchmarks.yml')
    for dataset in opt['datasets'].values():
        dataset['dataroot_gt'] = str(tmp_path)
    opt['path']['pretrain_network_g'] = 'experiments/x/models/net_g_latest.pth'
    with pytest.raises(FileNotFoundError, match='pretrain_network_g.*net_g_latest.pth'):
        check_option_paths(opt, is_train=False)


@pytest.mark.parametrize('name', ['train_gsasr_edsr.yml', 'train_gsasr_rdn.yml', 'train_gsasr_edsr_ours.yml',
                                  'train_gsasr_rdn_ours.yml', 'train_gsasr_demo.yml'])
def test_shipped_options_build_by_name(name, tmp_path, photo):
    opt = _load(name)
    if not name.endswith('demo.yml'):
        # Paper setup checks.
        # the released paper models' forward (GSASROfficial) or ours (*_ours.yml)
        assert opt['network_g']['type'] == ('GSASR' if name.endswith('_ours.yml') else 'GSASROfficial')
        assert opt['model_type'] == 'ArbitraryScaleSRModel'
    if name.startswith('train_gsasr_') and 'demo' not in name:
        train = opt['train']
        assert train['total_iter'] == 500000 and train['warmup_iter'] == 2000
        assert float(train['optim_g']['lr']) == 2e-4
        assert train['scheduler']['milestones'] == [250000, 400000, 450000, 475000]
        assert train['scheduler']['gamma'] == 0.5
        assert opt['datasets']['train']['lq_size'] == 48
        assert (opt['datasets']['train']['scale_min'], opt['datasets']['train']['scale_max']) == (1, 4)
    # Every dataset builds by name (data roots redirected to a scratch folder of photos).
    (tmp_path / 'hr').mkdir()
    cv2.imwrite(str(tmp_path / 'hr' / 'a.png'), photo('astronaut', (200, 200))[:, :, ::-1])
    for phase, dataset_opt in opt['datasets'].items():
        dataset_opt = dict(dataset_opt, dataroot_gt=str(tmp_path / 'hr'), phase=phase.split('_')[0])
        item = build_dataset(dataset_opt)[0]
        assert item['scale'].shape == (2, )
    # The network builds by name; the demo's is small enough to run here.
    if 'demo' in name:
        net = build_network(copy.deepcopy(opt['network_g']))
        out = net(torch.rand(1, 3, 12, 16), scale=(2.5, 1.5))
        assert out.shape == (1, 3, 30, 24)


def test_demo_model_builds_and_trains_one_step(tmp_path):
    opt = _load('train_gsasr_demo.yml')
    opt.update(dist=False, rank=0, world_size=1, is_train=True, root_path=str(tmp_path))
    opt['path'].update(models=str(tmp_path), training_states=str(tmp_path), visualization=str(tmp_path))
    model = build_model(opt)
    model.feed_data({'lq': torch.rand(2, 3, 12, 12), 'gt': torch.rand(2, 3, 21, 21),
                     'scale': torch.tensor([[1.75, 1.75]] * 2)})
    model.update_learning_rate(1, warmup_iter=opt['train']['warmup_iter'])
    model.optimize_parameters(1)
    assert model.output.shape == (2, 3, 21, 21)
    assert model.get_current_learning_rate()[0] == pytest.approx(1e-3 / 20)


def test_bad_options_are_clear_errors(tmp_path):
    net_opt = _load('train_gsasr_demo.yml')['network_g']
    with pytest.raises(ValueError, match="unknown encoder type 'NoSuchEncoder'"):
        build_network(dict(net_opt, encoder={'type': 'NoSuchEncoder'}))
    net = build_network(copy.deepcopy(net_opt))
    with pytest.raises(ValueError, match='scale'):
        net(torch.rand(1, 3, 8, 8), scale=0)
    with pytest.raises(ValueError, match='scale'):
        net(torch.rand(1, 3, 8, 8), scale=(2, -1))
    with pytest.raises(ValueError, match=r'scales\[0\]'):
        build_dataset(dict(name='v', type='ArbitraryScaleTestDataset', phase='val', dataroot_gt=str(tmp_path),
                           scales=[0]))
    with pytest.raises(FileNotFoundError, match='dataroot_gt'):
        build_dataset(dict(name='t', type='ArbitraryScaleTrainDataset', phase='train',
                           dataroot_gt=str(tmp_path / 'missing')))


def test_cpu_resume_patch_is_what_basicsr_train_calls(tmp_path, monkeypatch):
    """basicsr's own load_resume_state calls torch.cuda.current_device(); the plugin's loads on the CPU."""
    import basicsr.train

    from gsasr_plugin.basicsr_patches import patched_basicsr
    monkeypatch.chdir(tmp_path)
    states = tmp_path / 'experiments' / 'cpu_resume' / 'training_states'
    states.mkdir(parents=True)
    (tmp_path / 'models').mkdir()
    for it in (2, 10):
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': [], 'w': torch.ones(1)},
                   states / f'{it}.state')
        torch.save({'params': {'w': torch.ones(1)}}, tmp_path / 'models' / f'net_g_{it}.pth')
    opt = {'name': 'cpu_resume', 'auto_resume': True, 'num_gpu': 0, 'network_g': {},
           'path': {'resume_state': None, 'models': str(tmp_path / 'models')}}
    original = basicsr.train.load_resume_state
    with patched_basicsr('train', opt):  # what basicsr train runs in
        state = basicsr.train.load_resume_state(opt)  # looked up in basicsr.train at call time, as train_pipeline does
    assert state['iter'] == 10 and state['w'].device.type == 'cpu'
    assert opt['path']['resume_state'].endswith('10.state')
    assert basicsr.train.load_resume_state is original  # undone after the run


# ------------------------------------------------------------------------- a fast front end
_HEAVY = ('torch', 'torchvision', 'basicsr', 'cv2', 'numpy', 'gsasr_plugin')


@pytest.mark.parametrize('argv', [['--help'], ['--version'], ['infer', '-h'], ['train', '-h'], ['test', '--help'],
                                  ['convert', '-h'], []])
def test_help_and_version_import_nothing_heavy(argv):
    """`basicsr --help`, `--version` and every `-h` answer without importing torch or the plugin (seconds)."""
    import subprocess
    import sys
    code = ('import sys\nfrom gsasr_plugin_cli import main\nrc = main(%r)\n'
            'print("HEAVY", sorted(m for m in %r if m in sys.modules))\nsys.exit(rc)') % (argv, _HEAVY)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == (2 if not argv else 0), proc.stderr
    assert 'HEAVY []' in proc.stdout, proc.stdout
    assert 'usage: basicsr' in proc.stdout + proc.stderr or 'gsasr-basicsr' in proc.stdout


def test_version_and_console_script(capsys):
    assert cli.main(['--version']) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f'gsasr-basicsr {gsasr_plugin.__version__} (basicsr 1.4.2, torch ')
    assert len(out.splitlines()) == 1
    setup = (REPO / 'setup.py').read_text()
    assert "'basicsr = gsasr_plugin_cli:main'" in setup  # the console script is the light front end
    assert cli.main(['infer', '-h']) == 0
    assert '-m MODEL' in capsys.readouterr().out


def test_startup_benchmark_script_runs(tmp_path):
    """benchmarks/bench_cli_startup.py times `basicsr --help` etc. against its baselines side by side (a generous
    check: the light front end must be faster than importing the plugin, whatever the machine's load)."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(REPO / 'benchmarks' / 'bench_cli_startup.py'), '--repeat', '1',
                           '--warmup', '0', '--commands', 'help', 'import', '--out', str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / 'cli_startup.md').read_text()
    assert '`basicsr --help`' in table and 'baseline: `import gsasr_plugin`' in table
    import csv
    with open(tmp_path / 'cli_startup.csv', newline='') as handle:
        medians = {row['command']: float(row['median_s']) for row in csv.DictReader(handle)}
    assert medians['help'] < medians['import'], medians


# ------------------------------------------------------------------------- what basicsr test refuses
def test_a_training_file_cannot_be_tested_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(['test', '-opt', str(OPTIONS / 'train_gsasr_demo.yml')]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'datasets:train (ArbitraryScaleTrainDataset) is a training dataset' in err and 'basicsr train' in err
    assert not (tmp_path / 'results').exists()
    (tmp_path / 'hr').mkdir()
    assert cli.main(['test', '-opt', str(OPTIONS / 'test_benchmarks.yml')]) == 1  # no -m
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'path:pretrain_network_g is not set' in err and '-m CHECKPOINT' in err


@pytest.mark.parametrize('argv, says', [([], 'no subcommand given'), (['trian'], "unknown subcommand 'trian' (did "
                                                                                  "you mean 'train'?)")])
def test_missing_or_unknown_subcommand_is_one_error_line(argv, says, capsys):
    """`basicsr` alone or with a misspelt subcommand: exit 2, an error line saying what is wrong and the
    subcommands, then the usage (issue 26, item 17)."""
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    first = captured.err.splitlines()[0]
    assert first.startswith('basicsr: error: ') and says in first, captured.err
    assert 'train, test, infer, convert' in first and 'usage: basicsr' in captured.err and not captured.out


def test_a_live_runs_folder_is_never_archived_or_shared(tmp_path, monkeypatch, capsys, photo):
    """Issue 26, item 5: a second `basicsr train` of the same name archived the first's live folder and both
    wrote into one. A live run holds a flock on experiments/<name>/.run.lock: the second refuses in one line and
    touches nothing; the lock moves into the folder BasicSR creates, is held while the run lives, is released
    at the end, and a stale lock file (no live holder) blocks nothing."""
    import basicsr.train

    from gsasr_plugin.utils.run_lock import LOCK_NAME, FolderInUseError, RunFolderLock
    from train_helpers import tiny_options, write_options, write_photos
    monkeypatch.chdir(tmp_path)
    write_photos(tmp_path / 'train', photo)
    write_options(tmp_path / 'a.yml', tiny_options('same', 'train', total_iter=2))
    live = tmp_path / 'experiments' / 'same'
    live.mkdir(parents=True)
    (live / 'net_g_1.pth').write_bytes(b'the live run writes here')
    first = RunFolderLock(str(live), 'basicsr train')
    first.check()  # the live run holds its folder
    assert cli.main(['train', '-opt', 'a.yml']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f'{live} is in use by a running basicsr train (process {os.getpid()})' in err and 'another name' in err
    assert sorted(p.name for p in (tmp_path / 'experiments').iterdir()) == ['same']  # nothing archived
    assert sorted(p.name for p in live.iterdir()) == [LOCK_NAME, 'net_g_1.pth']
    first.release()  # the run ended: its lock file stays behind (stale) and blocks nothing
    held_during_run = []

    def copy_opt_file(opt_file, root):  # called by train_pipeline right after make_exp_dirs
        try:
            RunFolderLock(root).check()
        except FolderInUseError:
            held_during_run.append(root)
        return original_copy(opt_file, root)

    original_copy = basicsr.train.copy_opt_file
    monkeypatch.setattr(basicsr.train, 'copy_opt_file', copy_opt_file)
    assert cli.main(['train', '-opt', 'a.yml']) == 0, capsys.readouterr().err
    archived = [p for p in (tmp_path / 'experiments').iterdir() if p.name.startswith('same_archived_')]
    assert len(archived) == 1 and (archived[0] / 'net_g_1.pth').exists()  # BasicSR's archive of a folder not in use
    assert held_during_run == [str(live)] and (live / LOCK_NAME).exists()
    RunFolderLock(str(live)).check()  # released at the end


def test_two_runs_starting_together_cannot_both_take_a_folder(tmp_path):
    """Both pass the first check (no folder yet); the one that creates the folder second finds it held."""
    from gsasr_plugin.utils.run_lock import FolderInUseError, RunFolderLock
    folder = tmp_path / 'experiments' / 'same'
    first, second = RunFolderLock(str(folder)), RunFolderLock(str(folder))
    first.check()
    second.check()
    assert not first.held and not second.held
    with first.creating():
        folder.mkdir(parents=True)  # what BasicSR's make_exp_dirs does
    assert first.held
    with pytest.raises(FolderInUseError, match='is in use by a running basicsr'):
        with second.creating():
            raise AssertionError('the second run must not get to archive the first one\'s folder')
    assert sorted(p.name for p in folder.parent.iterdir()) == ['.run.lock', 'same']  # nothing archived
    first.release()
