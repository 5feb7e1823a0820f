"""Nothing lost: every file is written whole or not at all. A full disk (simulated by a write that raises
ENOSPC, and for real on a small tmpfs where the machine allows mounting one) or a read-only folder is an
error naming the file and the reason, the previous file stays, and no partial file is left behind."""
import errno
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from gsasr_plugin.utils import atomic_io
from gsasr_plugin.utils.atomic_io import WriteError, atomic_save, remove_partial_files, write_text
from train_helpers import env, tiny_options, write_options, write_photos


@pytest.fixture
def disk_full_after(monkeypatch):
    """``disk_full_after(n, name_part)``: writes to files whose name contains ``name_part`` raise ENOSPC once
    ``n`` bytes have been written to that file (as a full disk does)."""

    def install(limit: int = 0, name_part: str = ''):
        original = atomic_io._RecordingFile.write

        def write(self, data):
            if name_part in os.path.basename(self.name):
                self.written = getattr(self, 'written', 0) + len(data)
                if self.written > limit:
                    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    self.failure = self.failure or error
                    raise error
            return original(self, data)

        monkeypatch.setattr(atomic_io._RecordingFile, 'write', write)

    return install


def _no_partial_files(folder):
    return [p.name for p in folder.iterdir() if '.partial-' in p.name or '.tmp' in p.name]


def test_disk_full_during_torch_save_names_file_and_reason_and_keeps_previous(tmp_path, disk_full_after):
    path = tmp_path / 'net_g_latest.pth'
    atomic_save({'params': {'w': torch.ones(4)}}, str(path))
    disk_full_after(100, 'net_g_latest')
    with pytest.raises(WriteError, match=r'cannot write .*net_g_latest\.pth: no space left on device \(the disk '
                                         r'is full\); the previous file is unchanged') as caught:
        atomic_save({'params': {'w': torch.zeros(100000)}}, str(path))
    assert caught.value.errno == errno.ENOSPC
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(4))
    assert _no_partial_files(tmp_path) == []
    disk_full_after(10, 'results')
    with pytest.raises(WriteError, match=r'results\.md: no space left.*nothing was written'):
        write_text(str(tmp_path / 'results.md'), 'x' * 1000)
    assert not (tmp_path / 'results.md').exists()


def test_read_only_folder_is_named_as_such(tmp_path, monkeypatch):
    # root ignores directory permissions, so the refusal is simulated where the file is created
    def refuse(self, path, mode='r', *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(atomic_io._RecordingFile, '__init__', refuse)
    from gsasr_plugin.utils.image_io import ImageMeta, write_image
    with pytest.raises(WriteError, match=r'cannot write .*out\.png: read-only file system; nothing was written'):
        write_image(str(tmp_path / 'out.png'), np.zeros((4, 4, 3), np.float32), ImageMeta(np.dtype(np.uint8), False,
                                                                                          None))


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_read_only_folder_for_real(tmp_path):  # pragma: no cover - CI runs as root here
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match='permission denied'):
            write_text(str(folder / 'a.txt'), 'x')
    finally:
        folder.chmod(0o755)


def test_kill_debris_is_removed_but_live_writers_are_kept(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f'7.state.partial-{dead_pid}').write_bytes(b'half')
    (tmp_path / f'7.state.tmp{dead_pid}').write_bytes(b'half')  # the name the old writer used
    (tmp_path / f'net_g_7.pth.partial-{os.getpid()}').write_bytes(b'being written')
    (tmp_path / '7.state').write_bytes(b'kept')
    removed = remove_partial_files(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == [f'7.state.partial-{dead_pid}', f'7.state.tmp{dead_pid}']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['7.state', f'net_g_7.pth.partial-{os.getpid()}']


def test_model_save_on_a_full_disk_raises_instead_of_leaving_a_truncated_file(tmp_path, disk_full_after):
    from test_nonfinite import _batch, _model
    model = _model(tmp_path)
    model.feed_data(_batch())
    model.optimize_parameters(1)
    model.save(0, 1)
    good = torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True)
    disk_full_after(1000, 'net_g_2')
    with pytest.raises(WriteError, match=r'net_g_2\.pth: no space left'):
        model.save(0, 2)  # BasicSR: "Still cannot save ... Just ignore it" and a partial file
    assert sorted(p.name for p in (tmp_path / 'models').iterdir()) == ['net_g_1.pth']
    assert sorted(p.name for p in (tmp_path / 'training_states').iterdir()) == ['1.state']  # no state without model
    assert torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True).keys() == good.keys()


_FULL_DISK_RUNNER = textwrap.dedent('''
    import errno, os, sys
    from gsasr_plugin.utils import atomic_io
    original = atomic_io._RecordingFile.write
    def write(self, data):  # the disk is full when the final model is written
        if 'net_g_latest' in os.path.basename(self.name):
            self.failure = self.failure or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise self.failure
        return original(self, data)
    atomic_io._RecordingFile.write = write
    from gsasr_plugin_cli import main
    sys.exit(main(sys.argv[1:]))
''')


def test_train_with_a_full_disk_at_the_final_save_exits_nonzero_naming_the_file(tmp_path, photo):
    write_photos(tmp_path / 'train', photo)
    write_options(tmp_path / 'a.yml', tiny_options('full_disk', 'train', total_iter=2))
    proc = subprocess.run([sys.executable, '-c', _FULL_DISK_RUNNER, 'train', '-opt', 'a.yml'], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert 'basicsr train: error: cannot write ' in out and 'net_g_latest.pth: no space left on device' in out, out
    assert 'Traceback' not in out
    models = tmp_path / 'experiments' / 'full_disk' / 'models'
    assert not (models / 'net_g_latest.pth').exists() and _no_partial_files(models) == []


def _mount_tmpfs(folder, size):
    try:
        result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(folder)],
                                capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def test_really_full_disk_on_a_small_tmpfs(tmp_path):
    folder = tmp_path / 'small'
    folder.mkdir()
    if not _mount_tmpfs(folder, '256k'):
        pytest.skip('cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)')
    try:
        atomic_save({'w': torch.ones(8)}, str(folder / 'm.pth'))
        with pytest.raises(WriteError, match=r'm\.pth: no space left on device.*previous file is unchanged'):
            atomic_save({'w': torch.zeros(200000)}, str(folder / 'm.pth'))  # 800 KB on 256 KB
        assert torch.equal(torch.load(folder / 'm.pth', weights_only=True)['w'], torch.ones(8))
        assert sorted(p.name for p in folder.iterdir()) == ['m.pth']
    finally:
        subprocess.run(['umount', str(folder)], capture_output=True, timeout=30)


_KILLED_WRITER = textwrap.dedent('''
    import os, sys, time
    import torch
    from gsasr_plugin.utils import atomic_io
    original = atomic_io._RecordingFile.write
    def write(self, data):  # after the first bytes, say so and hang: the parent kills -9 mid-write
        written = original(self, data)
        print('writing', flush=True)
        time.sleep(60)
        return written
    atomic_io._RecordingFile.write = write
    atomic_io.atomic_save({'params': {'w': torch.zeros(100000)}}, sys.argv[1])
''')


def test_kill_9_during_a_model_write_leaves_the_previous_file_and_only_removable_debris(tmp_path):
    path = tmp_path / 'net_g_3.pth'
    atomic_save({'params': {'w': torch.ones(4)}}, str(path))
    proc = subprocess.Popen([sys.executable, '-c', _KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                            env=env())
    try:
        assert proc.stdout.readline().strip() == 'writing'
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(4))  # not 0 bytes, not partial
    debris = _no_partial_files(tmp_path)
    assert debris == [f'net_g_3.pth.partial-{proc.pid}']
    assert [os.path.basename(p) for p in remove_partial_files(str(tmp_path))] == debris
    assert sorted(p.name for p in tmp_path.iterdir()) == ['net_g_3.pth']


_LOG_DISK_FULL_RUNNER = textwrap.dedent('''
    import errno, logging, os, sys
    class Full:  # the log file's stream: the disk is full after the first 2000 bytes
        def __init__(self, stream):
            self.stream, self.written = stream, 0
        def write(self, text):
            self.written += len(text)
            if self.written > 2000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.stream.write(text)
        def __getattr__(self, name):
            return getattr(self.stream, name)
    original = logging.FileHandler._open
    logging.FileHandler._open = lambda self: Full(original(self))
    from gsasr_plugin_cli import main
    sys.exit(main(sys.argv[1:]))
''')


@pytest.mark.parametrize('fault', ['disk_full', 'file_size_limit'])
def test_a_log_file_that_cannot_be_written_stops_the_run_in_one_line(tmp_path, photo, fault):
    """Issue 26, item 9: logging's '--- Logging error ---' traceback was printed for every later log line; now
    the first failed write stops the run with one line naming the log file and the reason."""
    import resource
    write_photos(tmp_path / 'train', photo)
    write_options(tmp_path / 'a.yml', tiny_options('log_full', 'train', total_iter=4))
    if fault == 'disk_full':
        argv, limit = [sys.executable, '-c', _LOG_DISK_FULL_RUNNER], None
    else:  # for real: RLIMIT_FSIZE (Python ignores SIGXFSZ, so a write past it fails with EFBIG)
        argv, limit = [sys.executable, '-m', 'gsasr_plugin_cli'], 3000
    proc = subprocess.run(argv + ['train', '-opt', 'a.yml'], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=240, preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
                          if limit else None)
    out = proc.stdout + proc.stderr
    reason = 'no space left on device' if fault == 'disk_full' else 'file too large'
    assert proc.returncode == 1, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith('basicsr train: error:')]
    assert len(errors) == 1 and 'error: cannot write the log ' in errors[0] and reason in errors[0], out
    assert '--- Logging error ---' not in out and 'Traceback' not in out, out
