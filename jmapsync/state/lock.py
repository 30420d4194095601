"""Exclusive locks held for the whole of a sync (per account) or a daemon
(per state directory), released on close or on the holder's death.

flock() on a file in the state directory: a second jmapsync process that
wants the same lock fails at once, and the file names the holder's pid so
the message can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from jmapsync.errors import LockedError


class PidLock:
    """An exclusive flock() on a file that names its holder's pid, released on
    close or death.  `busy` is the error message, with {pid} for the holder."""

    def __init__(self, path: Path, busy: str) -> None:
        self.path = path
        self.busy = busy
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(self.busy.format(pid=other)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def account_lock(path: Path) -> PidLock:
    """`<state_dir>/<account>.lock`: one sync of an account at a time."""
    return PidLock(
        path, f"another jmapsync process (pid {{pid}}) is syncing this account (lock {path})"
    )
