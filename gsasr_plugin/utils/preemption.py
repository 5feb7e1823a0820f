"""Save a resumable state and stop when the job is preempted (SIGTERM) or interrupted (Ctrl-C, SIGINT).

The handlers only set a flag; the model checks it after each completed iteration (all ranks agree
through one all-reduce, so they stop at the same iteration), saves the network, EMA, optimisers,
schedulers and iteration like a checkpoint, and raises :class:`TrainingInterrupted`; ``basicsr train``
turns that into a one-line message and exit status 128 + signal (130 for Ctrl-C, 143 for SIGTERM).
A second Ctrl-C more than a second later stops at once (losing what came after the last checkpoint); under
torchrun a Ctrl-C reaches each worker twice within milliseconds (from the terminal and forwarded by
torchrun), which counts as one.

DataLoader workers ignore both signals (:func:`worker_init_fn`): a Ctrl-C reaches the whole process
group, and a worker killed by it would make the main process fail before it can save.
"""
import signal
import threading
import time
from typing import Optional

__all__ = ['TrainingStopped', 'TrainingInterrupted', 'NonFiniteLossError', 'install_handlers',
           'restore_handlers', 'requested_signal', 'request_stop', 'worker_init_fn']

_HANDLED = (signal.SIGTERM, signal.SIGINT)
_requested: Optional[int] = None
_requested_at = 0.0
_previous = {}


class TrainingStopped(Exception):
    """Training stopped early with a saved, resumable state; ``exit_code`` is the command's status."""
    exit_code = 1


class TrainingInterrupted(TrainingStopped):
    """A signal asked the run to stop; a resumable state was saved."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class NonFiniteLossError(TrainingStopped):
    """Too many consecutive non-finite losses; a resumable state was saved."""


def _handler(signum, frame):
    global _requested, _requested_at
    if _requested == signal.SIGINT and signum == signal.SIGINT and time.monotonic() - _requested_at > 1.0:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    if _requested is None:
        _requested, _requested_at = signum, time.monotonic()


def install_handlers() -> None:
    """Route SIGTERM and SIGINT to the stop flag (main thread only; elsewhere a no-op)."""
    global _requested
    _requested = None
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _HANDLED:
        previous = signal.signal(signum, _handler)
        _previous.setdefault(signum, previous)


def restore_handlers() -> None:
    """Put back the handlers that :func:`install_handlers` replaced."""
    global _requested
    if threading.current_thread() is threading.main_thread():
        for signum, previous in _previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    _previous.clear()
    _requested = None


def requested_signal() -> Optional[int]:
    """The signal that asked for a stop in this process, or None."""
    return _requested


def request_stop(signum: int = signal.SIGTERM) -> None:
    """Ask for a stop as if ``signum`` had arrived (for callers that handle signals themselves)."""
    global _requested
    if _requested is None:
        _requested = int(signum)


def worker_init_fn(worker_id: int, *, basicsr_init=None, **kwargs) -> None:
    """BasicSR's ``worker_init_fn`` plus: ignore SIGINT/SIGTERM in DataLoader workers."""
    for signum in _HANDLED:
        signal.signal(signum, signal.SIG_IGN)
    if basicsr_init is not None:
        basicsr_init(worker_id, **kwargs)

