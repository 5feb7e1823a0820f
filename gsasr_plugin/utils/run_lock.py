"""One live run per experiment folder: a ``fcntl.flock`` on ``<folder>/.run.lock``, held while the run lives.

BasicSR renames an existing ``experiments/<name>`` (``results/<name>`` for ``basicsr test``) to
``<name>_archived_<time>`` when a run starts afresh, and a resumed run writes into it: two runs of one name at
once would write models and states into one folder, or archive the other's live folder. :class:`RunFolderLock`
refuses the second run instead:

* :meth:`RunFolderLock.check` (before anything is created): an existing folder whose lock is held by a live
  run stops the command with :class:`FolderInUseError` (one line naming the folder and the process); a free
  lock is taken and kept.
* :meth:`RunFolderLock.creating` wraps BasicSR's ``make_exp_dirs`` (archive and create): under a short lock
  on ``<parent>/.run.lock`` (so two runs that start together cannot both pass the check), it checks again,
  lets BasicSR archive and create, and moves the held lock into the new folder.

``flock`` locks belong to an open file and vanish with the process, so a lock file left by a killed run
(stale) never blocks: only a live holder does. The lock file holds the holder's pid, for the message.
"""
import contextlib
import errno
import fcntl
import os
import os.path as osp
from typing import Iterator, Optional

__all__ = ['LOCK_NAME', 'FolderInUseError', 'RunFolderLock']

LOCK_NAME = '.run.lock'


class FolderInUseError(RuntimeError):
    """The experiment (or results) folder belongs to a run that is still going."""


def _try_lock(path: str) -> Optional[int]:
    """An open descriptor of ``path`` (created if needed) holding an exclusive flock, or None when another open
    file holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _holder(path: str) -> str:
    try:
        with open(path, encoding='ascii', errors='replace') as handle:
            pid = handle.read().strip()
    except OSError:
        pid = ''
    return f'process {pid}' if pid.isdigit() else 'another process'


class RunFolderLock:
    """The lock of one run's folder (``experiments/<name>`` or ``results/<name>``).

    Args:
        folder: the run's folder (it may not exist yet).
        command: what the message calls the running program (``'basicsr train'``).
    """

    def __init__(self, folder: str, command: str = 'basicsr'):
        self.folder = osp.abspath(folder)
        self.command = command
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _busy(self) -> FolderInUseError:
        holder = _holder(osp.join(self.folder, LOCK_NAME))
        return FolderInUseError(f'{self.folder} is in use by a running {self.command} ({holder}); wait for it to end, '
                                'or give this run another name')

    def _take(self) -> None:
        """Take the lock of the existing folder (raises FolderInUseError when a live run holds it)."""
        path = osp.join(self.folder, LOCK_NAME)
        fd = _try_lock(path)
        if fd is None:
            raise self._busy()
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()}\n'.encode('ascii'))
        self._release_fd()
        self._fd = fd

    def check(self) -> None:
        """Before anything is created: refuse a folder a live run holds; take (and keep) a free one's lock.
        Creates nothing when the folder does not exist."""
        if osp.isdir(self.folder) and not self.held:
            self._take()

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        """Around BasicSR's archive-and-create of the folder: serialised with other runs by a lock on the parent's
        ``.run.lock``; afterwards the held lock is the new folder's."""
        parent = osp.dirname(self.folder)
        os.makedirs(parent, exist_ok=True)
        fd = os.open(osp.join(parent, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for milliseconds by any other run
            self.check()  # another run may have made the folder since our first check
            yield
            self._fd_moved()
        finally:
            os.close(fd)

    def _fd_moved(self) -> None:
        """After BasicSR archived the old folder (our lock file went with it) and created a new one."""
        if osp.isdir(self.folder):
            self._release_fd()
            self._take()

    def _release_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def release(self) -> None:
        """Release the lock (the lock file stays: a stale file never blocks)."""
        self._release_fd()
