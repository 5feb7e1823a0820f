"""The README's examples run as written: its Python API example, and every ``basicsr`` command line parses."""
import contextlib
import io
import re
import shlex
from pathlib import Path

import cv2
import pytest
import skimage.data
import torch
import yaml

import gsasr_plugin  # noqa: F401  (registers the networks)
import gsasr_plugin_cli
from basicsr.archs import build_network
from gsasr_plugin.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text(encoding='utf-8')


def _section(title: str) -> str:
    start = README.index(f'\n## {title}\n')
    end = README.find('\n## ', start + 1)
    return README[start:end if end != -1 else None]


def test_readme_is_a_manual_of_at_most_450_lines():
    assert len(README.splitlines()) <= 450
    for title in ('Install', 'Demo', 'Released models', 'Infer', 'Python API', 'Evaluate', 'Train on DIV2K',
                  'Train on your own data', 'Multi-GPU and resuming', 'Troubleshooting'):
        assert f'\n## {title}\n' in README, title


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch):
    """The example uses the demo's checkpoint (``bash scripts/demo.sh``): here the demo network with random
    weights stands in for the trained one (the same architecture, written as basicsr train writes it)."""
    code = re.search(r'```python\n(.*?)```', _section('Python API'), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    network_g = yaml.safe_load((REPO / 'options' / 'train_gsasr_demo.yml').read_text())['network_g']
    torch.manual_seed(0)
    checkpoint = tmp_path / 'experiments' / 'train_GSASR_demo' / 'models' / 'net_g_latest.pth'
    checkpoint.parent.mkdir(parents=True)
    save_checkpoint(str(checkpoint), build_network(dict(network_g)).state_dict(), network_g)
    (tmp_path / 'demo_data' / 'val').mkdir(parents=True)
    cv2.imwrite(str(tmp_path / 'demo_data' / 'val' / 'chelsea.png'), skimage.data.chelsea()[:, :, ::-1])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, 'README.md (Python API)', 'exec'), {'__name__': '__readme__'})
    assert printed.getvalue().strip() == '(474, 474, 3) (256, 448, 3) (270, 480, 3) GSASR'
    assert cv2.imread(str(tmp_path / 'chelsea_x2.png')).shape == (600, 902, 3)


def _command_lines():
    """Every ``basicsr <subcommand> ...`` line of the README's code blocks (continuations joined), as argv."""
    text = re.sub(r'\\\n\s*', ' ', README)
    found = []
    for line in text.splitlines():
        match = re.match(r'\s{4}(?:.*--no-python |.*\d )?(?:\.venv/bin/)?basicsr (train|test|infer|convert|app)(?= |$)(.*)',
                         line)
        if match is None or re.search(r'[(|…]|\.\.\.|[A-Z_]+\.yml|FILE_OR|OUT_FOLDER', match.group(2)):
            continue  # a synopsis with placeholders, not a command
        found.append([match.group(1)] + shlex.split(match.group(2).split('#')[0]))
    return found


@pytest.mark.parametrize('argv', _command_lines(), ids=lambda argv: ' '.join(argv)[:60])
def test_every_command_line_of_the_readme_parses(argv):
    """Flags that no longer exist (renamed options) fail here, not in a user's terminal."""
    gsasr_plugin_cli.SUBCOMMANDS[argv[0]].parser().parse_args(argv[1:])


def test_the_command_lines_were_found():
    assert len(_command_lines()) >= 15
