"""What the folders a pass did not scan gained and lost while it ran (inotify).

The stamp (sync/scope.py) records a folder's times only when what is on disk
is what the state says.  A folder a partial pass wrote into without scanning
it held, when the pass began, exactly what the last pass recorded: its times
had not moved.  So with an inotify watch on its cur/ and new/ taken BEFORE
those times were read, what it holds at the end is the recorded fingerprint
(sync/prints.py) plus the names the kernel reported created or moved in,
minus those deleted or moved out -- the answer listing the folder again
gives, without reading its names.  At a million messages in 13 folders,
listing the folders a 170-change pass wrote to took ~1.0 s of a 1.9 s pass
(os.listdir and the checksum sums, measured 2026-11-29); the events are a
few hundred.

Whatever the kernel cannot vouch for makes a folder "unknown", and the stamp
lists it as before: the event queue overflowed, cur/ or new/ itself was
moved, deleted or unmounted, a watch could not be added, or two folders are
one directory.  A rename onto an existing name reports no removal of the old
entry; the sum then counts one name more than the listing would, and the
folder's fingerprint differs from the state's -- scanned next time, never
the other way round.  (The kernel merges an event into the one before it
only if both are identical, cookie included -- every rename has its own
cookie, and a name cannot be created twice without a removal between: no
count is lost that way.)

Linux only (inotify_init1 and inotify_add_watch from the libc that
maildir/durable.py loads for syncfs), and only when a watch is worth it
(`WATCH_FROM`); elsewhere every folder is listed.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jmapsync.maildir import durable
from jmapsync.sync.prints import SUBS, Print, Prints

# Below this many recorded names in the folders a pass may write into
# without scanning, listing them again (~1 us per name) is cheaper than the
# watch: setting one up on 13 folders takes ~0.3 ms, but closing an inotify
# instance waits for the kernel (0.05-15 ms measured, 2026-11-30).
WATCH_FROM = 10_000

_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_MASK = (
    _IN_CREATE | _IN_DELETE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_DELETE_SELF | _IN_MOVE_SELF
) | _IN_ONLYDIR
_ADDED = _IN_CREATE | _IN_MOVED_TO
_REMOVED = _IN_DELETE | _IN_MOVED_FROM
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name


def _libc() -> Any:
    """libc with its inotify calls typed, or None (not Linux, no inotify)."""
    libc = durable.LIBC
    if libc is None:
        return None
    try:
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_init1.restype = ctypes.c_int
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
    except AttributeError:
        return None
    return libc


class Watch:
    """inotify watches on the cur/ and new/ of folders whose content at the
    start is known (`base`: their recorded fingerprints)."""

    def __init__(self, fd: int, base: Mapping[str, Print]) -> None:
        self._fd = fd
        self._base = dict(base)
        self._where: dict[int, tuple[str, str]] = {}  # watch descriptor -> (folder, sub)
        self._delta = Prints()
        self._unknown: set[str] = set()
        self._overflow = False

    @classmethod
    def start(cls, paths: Mapping[str, Path], base: Mapping[str, Print]) -> Watch | None:
        """Watch the folders of `base` (folder -> its directory in `paths`);
        None where inotify cannot be had (then every folder is listed)."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return None  # EMFILE: max_user_instances reached
        watch = cls(fd, {f: p for f, p in base.items() if f in paths})
        for folder in watch._base:
            for sub in SUBS:
                wd = libc.inotify_add_watch(fd, os.fsencode(paths[folder] / sub), _MASK)
                if wd < 0:  # missing, not a directory, max_user_watches reached
                    watch._unknown.add(folder)
                elif wd in watch._where:  # the same directory as another folder's
                    watch._unknown |= {folder, watch._where[wd][0]}
                else:
                    watch._where[wd] = (folder, sub)
        return watch

    def forget(self, folders: Iterable[str]) -> None:
        """These folders' content at the start is not the recorded one (their
        times moved): the watch cannot tell what they hold."""
        for f in folders:
            self._base.pop(f, None)

    def now(self, folder: str) -> Print | None:
        """The fingerprint of what `folder` holds now, or None if unknown.

        Read AFTER the folder's final times: a change made before them has
        queued its event by then (inotify queues it in the system call);
        one made after them moves the times past the marker."""
        self._drain()
        if self._overflow or folder in self._unknown or folder not in self._base:
            return None
        b, d = self._base[folder], self._delta.of(folder)
        return (b[0] + d[0], b[1] + d[1], b[2] + d[2])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _drain(self) -> None:
        while self._fd >= 0:
            try:
                buf = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return
            off = 0
            while off < len(buf):
                wd, mask, _cookie, size = _EVENT.unpack_from(buf, off)
                name = buf[off + _EVENT.size : off + _EVENT.size + size].rstrip(b"\0")
                off += _EVENT.size + size
                if mask & _IN_Q_OVERFLOW:
                    self._overflow = True
                    continue
                where = self._where.get(wd)
                if where is None:
                    continue
                folder, sub = where
                if mask & _ADDED:
                    self._delta.add_name(folder, sub, name)
                elif mask & _REMOVED:
                    self._delta.add_name(folder, sub, name, -1)
                else:  # cur/ or new/ itself moved, deleted or unmounted; watch gone
                    self._unknown.add(folder)
