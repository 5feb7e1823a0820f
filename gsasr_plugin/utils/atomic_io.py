"""Files written whole or not at all: every file the plugin writes goes through :func:`atomic_write`.

The bytes go to a temporary file in the destination folder (``<name>.partial-<pid>``), which is flushed,
fsynced and renamed over the destination, so readers see the old file or the complete new one, never a
part. A write that fails (disk full, read-only folder, no permission, quota) raises :class:`WriteError`
naming the file and the reason; the temporary file is removed and a previous file of that name is kept.
A process killed during a write leaves only its temporary file, which :func:`remove_partial_files`
deletes (``basicsr train`` does so in the run's folders when it resumes).

``torch.save`` turns a failing write into ``RuntimeError: ... unexpected pos`` without the cause; the
file object given to it here records the ``OSError`` so that the error still says "no space left".
"""
import contextlib
import errno
import io
import os
import re
import tempfile
from typing import Any, Iterator, List, Optional

__all__ = ['WriteError', 'atomic_write', 'write_bytes', 'write_text', 'write_image_file', 'atomic_save',
           'remove_partial_files', 'describe_os_error', 'PARTIAL_MARK', 'check_writable_folder',
           'FolderNotWritable']

PARTIAL_MARK = '.partial-'
# <name>.partial-<pid> (ours) and <name>.tmp<pid> (written by versions before this module)
_PARTIAL_RE = re.compile(r'^(?P<name>.+)(?:\.partial-|\.tmp)(?P<pid>\d+)$')

_REASONS = {
    errno.ENOSPC: 'no space left on device (the disk is full)',
    getattr(errno, 'EDQUOT', -1): 'disk quota exceeded',
    errno.EROFS: 'read-only file system',
    errno.EACCES: 'permission denied (is the folder read-only?)',
    errno.EPERM: 'operation not permitted (is the folder read-only?)',
    errno.EFBIG: 'file too large for this file system (or the process file-size limit)',
    errno.ENOENT: 'the folder does not exist',
    errno.ENOTDIR: 'a part of the path is a file, not a folder',
    errno.EIO: 'input/output error from the storage device',
}


def describe_os_error(error: BaseException) -> str:
    """A short reason for an ``OSError`` (disk full, read-only, ...) or the error's own text."""
    if isinstance(error, OSError) and error.errno in _REASONS:
        return _REASONS[error.errno]
    text = getattr(error, 'strerror', None) or str(error)
    return text.splitlines()[0] if text else type(error).__name__


class WriteError(OSError):
    """A file could not be written; the message names it and says why. Nothing partial is left behind."""

    def __init__(self, path: str, cause: BaseException, kept_previous: bool):
        self.path = str(path)
        self.cause = cause
        kept = 'the previous file is unchanged' if kept_previous else 'nothing was written'
        super().__init__(getattr(cause, 'errno', None) or errno.EIO,
                         f'cannot write {self.path}: {describe_os_error(cause)}; {kept}')

    def __str__(self) -> str:
        return self.strerror


class _RecordingFile(io.FileIO):
    """A raw file that remembers the first ``OSError`` of ``write`` (``torch.save`` hides it)."""
    failure: Optional[OSError] = None

    def write(self, data) -> int:
        try:
            return super().write(data)
        except OSError as error:
            if self.failure is None:
                self.failure = error
            raise


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (not possible on every platform / file system: then skipped)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[io.BufferedWriter]:
    """Open ``path`` for binary writing, atomically: ``with atomic_write(p) as f: f.write(...)``.

    The folder is created if needed. On leaving the block the data is flushed, fsynced and renamed to
    ``path``; on an exception in the block the temporary file is removed and ``path`` is left as it was.

    Raises:
        WriteError: when creating, writing, syncing or renaming fails (the message says which file and why).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    existed = os.path.exists(path)
    tmp = os.path.join(folder, f'{os.path.basename(path)}{PARTIAL_MARK}{os.getpid()}')
    raw = None
    try:
        os.makedirs(folder, exist_ok=True)
        raw = _RecordingFile(tmp, 'wb')
        with io.BufferedWriter(raw) as handle:
            yield handle
            handle.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        cause = raw.failure if raw is not None and raw.failure is not None else error
        if isinstance(cause, OSError) and not isinstance(cause, WriteError):
            raise WriteError(path, cause, existed) from error
        raise
    _fsync_folder(folder)


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)


def write_text(path: str, text: str, encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    write_bytes(path, text.encode(encoding))


def write_image_file(path: str, image: Any, params: Optional[List[int]] = None) -> None:
    """Encode ``image`` (an OpenCV array: BGR(A) or gray, uint8/uint16/float32) in the format of ``path``'s
    extension and write it atomically.

    Raises:
        ValueError: when OpenCV cannot encode this array in this format (the message names both).
        WriteError: when the file cannot be written (read-only folder, disk full, ...).
    """
    import cv2
    ext = os.path.splitext(os.fspath(path))[1].lower()
    try:
        ok, encoded = cv2.imencode(ext, image, params or [])
    except cv2.error as error:
        ok, encoded = False, str(error).strip().splitlines()[-1] if str(error).strip() else ''
    if not ok:
        detail = f' ({encoded})' if isinstance(encoded, str) and encoded else ''
        channels = image.shape[2] if getattr(image, 'ndim', 0) == 3 else 1
        raise ValueError(f'{path}: OpenCV cannot encode a {getattr(image, "dtype", "?")} image with {channels} '
                         f'channel(s) as {ext or "(no extension)"}{detail}')
    write_bytes(path, encoded.tobytes())


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through :func:`atomic_write`: a complete file or the previous one.

    Raises:
        WriteError: naming ``path`` and the reason (e.g. the disk is full) when it cannot be written.
    """
    import torch
    with atomic_write(path) as handle:
        torch.save(obj, handle)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class FolderNotWritable(OSError):
    """Files cannot be written into an output folder; the message names it and says why."""

    def __str__(self) -> str:
        return self.strerror


def check_writable_folder(folder: str, name: str = 'output folder') -> None:
    """Raise :class:`FolderNotWritable` naming ``name`` and ``folder`` when files cannot be written there,
    before anything is computed or created: the nearest existing part of the path must be a folder in which a
    folder can be made (tried for real with a temporary folder, removed at once: permission bits alone do not
    tell, e.g. for root, on read-only mounts or in ``/proc``)."""
    path = os.path.abspath(os.path.expanduser(folder))
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise FolderNotWritable(errno.ENOTDIR, f'{name} {folder}: {existing} is a file, not a folder')
    try:
        os.rmdir(tempfile.mkdtemp(prefix='.write-check-', dir=existing))
    except OSError as error:
        where = 'in it' if existing == path else f'in {existing} (to make {path})'
        reason = ('no folder can be made there (a virtual file system such as /proc?)' if error.errno == errno.ENOENT
                  else describe_os_error(error))
        raise FolderNotWritable(error.errno or errno.EIO, f'{name} {folder}: cannot write {where}: {reason}') from None


def remove_partial_files(folder: str) -> List[str]:
    """Delete the temporary files that killed writers left in ``folder``; returns their paths.

    Files of processes still running on this machine are left alone.
    """
    removed = []
    if not folder or not os.path.isdir(folder):
        return removed
    for entry in os.scandir(folder):
        match = _PARTIAL_RE.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False) or _pid_alive(int(match.group('pid'))):
            continue
        with contextlib.suppress(OSError):
            os.remove(entry.path)
            removed.append(entry.path)
    return removed
