"""OS process helpers shared by the studio command and the worker: no orphans, one worker per folder.

* `die_with_parent`: a child started by the studio (its worker) or by a worker (training ranks) asks
  Linux to signal it when its parent dies, so `kill -9` of the parent leaves nothing running.
* `FolderLock`: an advisory lock file (flock) held by the studio's worker for its lifetime. The
  kernel releases it when the process dies, so a lock is never stale; a second worker on the same
  data folder sees it held and stops.
"""

from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (call it in the child, e.g. as
    Popen's preexec_fn); exit at once if the parent is already gone (the fork/prctl race). Best
    effort: a no-op where prctl does not exist. The signal fires when the *thread* that forked
    exits, so fork from a thread that lives as long as the parent (its main thread)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):
        return
    if os.getppid() == 1 or (parent is not None and os.getppid() != parent):
        os._exit(1)


class FolderLock:
    """An exclusive flock on `path`, with the holder's pid written in the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def holder(self) -> int | None:
        """The pid of the process holding the lock, or None when it is free."""
        if self._fd is not None:
            return os.getpid()
        if not self.acquire():
            try:
                return int(self.path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return -1  # held, by a process that has not written its pid yet
        self.release()
        return None
