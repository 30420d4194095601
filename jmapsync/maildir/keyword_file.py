"""A folder's ``dovecot-keywords`` file on disk: read it, change it safely.

The format and the numbering rules are in maildir/keywords.py (pure).  Here
is how a change reaches the disk without breaking a Dovecot that reads the
same Maildir:

- Dovecot changes ``dovecot-keywords`` only while it holds the folder's
  ``dovecot-uidlist.lock`` dotlock ("everything here depends on uidlist
  file being locked", maildir-keywords.c), and re-reads the file when its
  mtime differs from the one it last read.  So we take that same lock
  (O_EXCL create, as a dotlock), read the file afresh under it, add our
  slots to what is there, and replace the file atomically (write + fsync a
  temp file in the folder's tmp/, rename, fsync the directory).  A
  Dovecot that added a keyword meanwhile keeps it; one that comes next
  reads ours.
- Dovecot compares the mtime in whole seconds ("mtime must grow every
  time", maildir_keywords_write_fd): a file replaced within the same second
  would be taken as unchanged, and a letter we just wrote would make Dovecot
  invent ``unknown-N`` for it.  The new file gets an mtime at least one
  second past the old one.
- A lock held by a live Dovecot is waited for briefly; one older than
  Dovecot's own stale timeout (2 minutes) is taken over, as Dovecot does.
  Still locked: nothing is written this pass (the keywords stay without a
  letter until the next one).

The file must exist before any file name carries one of its new letters:
the caller writes it before the pass renames anything.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from jmapsync.maildir.files import PART_SUFFIX
from jmapsync.maildir.keywords import FILE_NAME, Slots, format_file, parse_file
from jmapsync.maildir.store import MaildirStore

LOCK_NAME = "dovecot-uidlist.lock"
LOCK_STALE_SECONDS = 120  # Dovecot's MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT
LOCK_WAIT_SECONDS = 2.0


def read(store: MaildirStore, folder: str) -> Slots | None:
    """The folder's slots; None when it has no such file."""
    try:
        raw = (store.path(folder) / FILE_NAME).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    # Names are ASCII atoms; anything else is kept byte for byte through
    # surrogateescape and then refused as a keyword (keywords.is_mappable).
    return parse_file(raw.decode("utf-8", "surrogateescape"))


class Locked(Exception):
    """Dovecot holds the folder's uidlist lock; try again next pass."""


@contextlib.contextmanager
def _dovecot_lock(store: MaildirStore, folder: str) -> Iterator[None]:
    path = store.path(folder) / LOCK_NAME
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            break
        except FileExistsError:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > LOCK_STALE_SECONDS:
                path.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise Locked(str(path)) from None
            time.sleep(0.05)
    os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def update(
    store: MaildirStore, folder: str, change: Callable[[Slots | None], Slots | None]
) -> Slots | None:
    """Apply `change` to the folder's slots as they are on disk now, under
    Dovecot's lock, and write the result if it differs.  Returns the slots
    now in force.  Raises Locked when Dovecot keeps the folder locked."""
    current = read(store, folder)
    wanted = change(current)
    if wanted is None or wanted == current:
        return current  # nothing to write: no lock taken, the directory untouched
    with _dovecot_lock(store, folder):
        before = read(store, folder)
        after = change(before)
        if after is None or after == before:
            return before
        _replace(store, folder, format_file(after).encode("utf-8", "surrogateescape"))
        return after


def _replace(store: MaildirStore, folder: str, data: bytes) -> None:
    base = store.path(folder)
    target = base / FILE_NAME
    tmp = base / "tmp" / (FILE_NAME + PART_SUFFIX)
    try:
        old_mtime: float | None = target.stat().st_mtime
    except FileNotFoundError:
        old_mtime = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if old_mtime is not None and int(os.fstat(fd).st_mtime) <= int(old_mtime):
            now = time.time()
            os.utime(fd, (now, float(int(old_mtime) + 1)))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.rename(tmp, target)
    store.dirsync.add(base)


def move(store: MaildirStore, src: str, dst: str) -> None:
    """Carry a folder's file along when the folder moves (its letters mean
    nothing without it); a destination that has its own is left alone."""
    s, d = store.path(src) / FILE_NAME, store.path(dst) / FILE_NAME
    if s.exists() and not d.exists():
        os.rename(s, d)
        store.dirsync.add(s.parent)
        store.dirsync.add(d.parent)
