"""Local change detection: a watchdog observer on an account's Maildir.

Events are hints, not data: they only say "look at this account soon".  The
pass itself finds what changed (directory times, then a scan), so a lost or
duplicated event costs nothing but latency.  The events our own pass causes
(renames, deliveries) lead to no pass: the runner first asks the folder
times the pass recorded (daemon/account.py).  Reading mail is not even
delivered: the inotify watch asks the kernel for creates, deletes and
renames only (`EVENT_FILTER`) -- a mail program opening 20 000 files would
otherwise wake us 60 000 times (open, read, close) for nothing.  tmp/
traffic is ignored.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

_RELEVANT = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MOVED})
# What the inotify watch asks for (IN_CREATE, IN_DELETE, IN_MOVE): nothing
# for opening, reading or closing a file.
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileMovedEvent,
    DirMovedEvent,
]


def relevant(event_type: str, src: str, dest: str = "") -> bool:
    """Does this file system event possibly change what the mirror holds?

    Creates, deletes and renames do (a flag change is a rename); content
    modifications, opens and closes do not.  Anything inside a tmp/
    directory is an unfinished delivery, never mail yet."""
    if event_type not in _RELEVANT:
        return False
    paths = [p for p in (src, dest) if p]
    return any(Path(p).parent.name != "tmp" for p in paths)


class _Handler(FileSystemEventHandler):
    def __init__(self, loop: asyncio.AbstractEventLoop, hint: Callable[[], None]) -> None:
        self._loop = loop
        self._hint = hint

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Runs in watchdog's thread: hand over to the event loop, nothing more.
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if relevant(event.event_type, src, dest):
            self._loop.call_soon_threadsafe(self._hint)


class MaildirWatcher:
    """Watches one Maildir tree recursively; calls `hint` on the event loop.
    `also`: more directories (existing) whose new entries are hints too --
    the account's outbox, so that a message `jmapsync send` queued while the
    daemon runs is sent at once, not at the next pass."""

    def __init__(self, root: Path, hint: Callable[[], None], also: tuple[Path, ...] = ()) -> None:
        self.root = root
        self._hint = hint
        self._also = also
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        """Start watching (the tree must exist).  New folders are picked up by
        the recursive watch on their own."""
        loop = asyncio.get_running_loop()
        observer = Observer()
        observer.daemon = True  # never keeps the process alive at exit
        observer.schedule(
            _Handler(loop, self._hint), str(self.root), recursive=True, event_filter=EVENT_FILTER
        )
        for extra in self._also:
            observer.schedule(
                _Handler(loop, self._hint), str(extra), recursive=False, event_filter=EVENT_FILTER
            )
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        """Stop the observer thread; does not wait for it longer than 2 s."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None
