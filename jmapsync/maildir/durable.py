"""Durability on Linux file systems: batched directory fsyncs, syncfs(2).

The Maildir rule needs a file's data on disk before its name appears, and
the name on disk before the state database records it.  `DirSync` collects
the directories whose entries changed and fsyncs each once per batch;
`SYNCFS` makes a whole batch of written files durable with one journal
commit instead of one fsync() each (see MaildirStore.commit_batch).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


def copy_fd(src: int, dst: int, transform: Callable[[bytes], bytes], carry: bytes) -> None:
    """Copy src (from offset 0) to dst through `transform`, chunk by chunk; a chunk
    ending in `carry` keeps that byte for the next one, so that a CRLF split
    across chunks is still seen whole."""
    offset = 0
    pending = b""
    while True:
        chunk = os.pread(src, 1 << 20, offset)
        if not chunk:
            break
        offset += len(chunk)
        data = pending + chunk
        pending = b""
        if data.endswith(carry):
            data, pending = data[: -len(carry)], carry
        out = memoryview(transform(data))
        while out:
            out = out[os.write(dst, out) :]
    if pending:
        os.write(dst, transform(pending))


def _libc() -> ctypes.CDLL | None:
    """The C library on Linux (for syncfs here, inotify in sync/watched.py);
    None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


LIBC = _libc()


def _syncfs() -> Callable[[int], None] | None:
    """syncfs(2) from libc on Linux; None elsewhere (then: fsync per file)."""
    fn = getattr(LIBC, "syncfs", None)  # (None: not Linux, or a libc without it)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def call(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


SYNCFS = _syncfs()


class DirSync:
    """Directories whose entries changed and must be fsynced before a commit."""

    def __init__(self) -> None:
        self._dirs: set[Path] = set()

    def add(self, path: Path) -> None:
        self._dirs.add(path)

    def flush(self) -> int:
        count = 0
        for d in sorted(self._dirs):
            try:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # removed later in the same batch: nothing to persist
            try:
                with name_errors(d):
                    os.fsync(fd)
            finally:
                os.close(fd)
            count += 1
        self._dirs.clear()
        return count


@contextlib.contextmanager
def name_errors(path: Path | str) -> Iterator[None]:
    """Put `path` on an OSError that names no file (write(2), fsync(2) and
    syncfs(2) report only an errno), so the user reads which file system is
    full or broken."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise
