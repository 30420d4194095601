"""Stage 2, local scope: which folders can have changed since the last pass.

Any create, delete or rename in a Maildir folder (a flag change is a rename)
changes the modification time of the folder's directory, its cur/ or its
new/.  The last pass recorded those times ("the stamp"), so:

- nothing changed remotely and no time moved: the pass is over after one
  stat() per directory (`local_unchanged`);
- otherwise an incremental pass scans only the folders whose times moved and
  plans only the Emails changed remotely or with a file there (`Scope`): at
  100 000 messages a pass after a few changes touches a few records.

A time is recorded only if it is older than a marker file touched on the
same file system right after the times were read (git's "racy index" rule):
a change made later gets a time no older than the marker, so it shows --
also where time stamps have whole seconds (ext3, ext4 with 128-byte inodes,
some NFS servers) and where the file server's clock is not ours (NFS).  A
time not older than the marker is "racy": that folder is scanned next time.
Never the local wall clock: on a 1-second file system a change in the same
second as our last write would otherwise be hidden (it was, before).

The times recorded at the end of a pass are those taken just BEFORE its
scan; a folder whose times moved during the pass is listed again and
recorded only if it holds exactly what the pass leaves there
(`stamp_to_record`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from jmapsync.config import AccountConfig
from jmapsync.jmap.changes import Delta
from jmapsync.jmap.types import Email, EmailId, MailboxId
from jmapsync.maildir.files import TRASHED, LocalFile, Subdir, join, split_rel
from jmapsync.maildir.flags import parse_name
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import JOURNAL_IMPORT, StateDB
from jmapsync.sync import guards, watched
from jmapsync.sync.context import PassContext
from jmapsync.sync.plan import FilePlan
from jmapsync.sync.prints import Print, Prints, listing
from jmapsync.sync.prints import parse as parse_prints
from jmapsync.sync.stamp import ROOT_KEY, Times, local_times, recorded_times, retry_downloads

# Touched right after the times are read (see _marker_places for where).
MARKER = ".jmapsync-marker"
# A pass that wrote waits (up to about this long in all) for the file
# system clock to pass its last write, so that the next pass may skip the
# folders it wrote: ~10 ms on ext4, up to a second or two on coarse clocks.
_SETTLE_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5)


@dataclass
class Scope:
    """An incremental pass that looks only where something can have changed.

    Folders whose directory times did not move since the last pass hold
    exactly the files the state recorded there, so only the other folders are
    scanned, and only the Emails changed remotely or with a file in a scanned
    folder are read and planned."""

    dirty: list[str]  # folders scanned
    ids: set[str]  # Emails planned
    records: dict[EmailId, Email]  # their records as last synced
    dirty_files: list[LocalFile]
    clean_files: list[LocalFile]  # their recorded files in the other folders
    times: Times  # the folders' times just before the scan
    # Mailboxes that lost many of our Emails but, by the state and the
    # changes, still hold one: not emptied (remote.py's check).
    holding: frozenset[MailboxId] = frozenset()

    def files(self) -> list[LocalFile]:
        return self.dirty_files + self.clean_files

    def scan(self, store: MaildirStore) -> list[LocalFile]:
        return list(store.scan(self.dirty)) + self.clean_files


def _marker_places(ctx: PassContext, folders: list[str]) -> list[Path]:
    """Where the marker may live: beside the state database when that is on
    the Maildir's file system (the Maildir stays untouched), else in a
    folder's tmp/ (mail readers never look there), else in the root."""
    store = ctx.store
    places = []
    try:
        if ctx.db.path.parent.stat().st_dev == store.root.stat().st_dev:
            places.append(ctx.db.path.with_suffix(".marker"))
    except OSError:
        pass
    places += [store.path(f) / "tmp" / MARKER for f in folders[:1]]
    places.append(store.root / MARKER)
    return places


def _marker_time(ctx: PassContext, folders: list[str]) -> int | None:
    """Touch the marker and return its time: "now" by the clock of the file
    system that holds the folders.  None when it cannot be written (a
    read-only Maildir: then nothing is trusted, and the folders are scanned)."""
    for marker in _marker_places(ctx, folders):
        if not marker.parent.is_dir():
            continue
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.close(fd)
            os.utime(marker)  # the file system's "now", not ours
            return marker.stat().st_mtime_ns
        except OSError:
            continue
    return None


def local_stamp(ctx: PassContext, folders: list[str]) -> Times:
    """The times of `folders` (and the root) that may be recorded: each read
    before the marker is touched, and None where it is not older than the
    marker ("racy": a change in the same clock tick would not show)."""
    times = local_times(ctx.store.root, folders)
    if ctx.dry is not None:
        return times  # a dry run records nothing and must not touch a marker
    marker = _marker_time(ctx, folders)
    return {
        k: None if v is None or marker is None or max(v) >= marker else v for k, v in times.items()
    }


def _settled_stamp(ctx: PassContext, folders: list[str]) -> Times:
    """local_stamp, after waiting (briefly) for racy times to become older
    than the file system's clock: a pass that wrote leaves a stamp the next
    pass can use."""
    stamp = local_stamp(ctx, folders)
    if not ctx.store.root.is_dir():
        return stamp
    for pause in _SETTLE_S:
        raw = local_times(ctx.store.root, folders)
        if not any(stamp[k] is None and raw[k] is not None for k in stamp):
            break
        time.sleep(pause)
        stamp = local_stamp(ctx, folders)
    return stamp


def compute(
    ctx: PassContext,
    delta: Delta | None,
    old_paths: Mapping[MailboxId, str],
    new_paths: Mapping[MailboxId, str] | None,
) -> Scope | None:
    """The Emails and folders an incremental pass needs to look at; None
    when it must look at everything.  `new_paths`: the folders of the
    changed mailbox tree (None: the tree did not change)."""
    db, account, store = ctx.db, ctx.account, ctx.store
    if delta is None or ctx.rewrite_files:
        return None
    if db.get_meta("line_endings") != account.line_endings:
        return None  # files get rewritten: every one of them is visited
    if db.get_meta("contents_complete") != "1" or db.journal(JOURNAL_IMPORT):
        return None
    if new_paths is not None and new_paths != old_paths:
        return None  # folders move, appear or go
    known = recorded_times(db, account)
    if known is None:
        return None
    known.pop(ROOT_KEY, None)  # new folders are found by listing them below
    _watch(ctx, known)  # before the times are read: see sync/watched.py
    now = local_stamp(ctx, sorted(known))
    dirty = {f for f, times in known.items() if times is None or now[f] != times}
    if ctx.watch is not None:
        ctx.watch.forget(dirty)
    dirty |= set(store.folders(account.layout)) - set(known)
    dirty_files = list(store.scan(sorted(dirty)))
    if ctx.two_way and any(f.email_id is None and TRASHED not in f.flags for f in dirty_files):
        return None  # an MUA's file: matching it may need any record
    ids = set(delta.changed) | set(delta.destroyed) | db.emails_with_files_in(dirty)
    ids |= retry_downloads(db)  # failed downloads: planned until they arrive
    ids.update(f.email_id for f in dirty_files if f.email_id is not None)
    records = db.emails_by_id(ids)
    left = guards.left_by_mailbox(records, delta.changed, delta.destroyed, ctx.selected)
    many = guards.many_left(left)
    holding = frozenset(_still_holding(db, many, delta))
    if holding != many:
        return None  # perhaps emptied: the emptied-mailbox check reads everything
    clean = [
        LocalFile(r.folder, cast(Subdir, sub), name, r.email_id, parse_name(name).flags)
        for r in db.files_of(ids)
        if r.folder not in dirty
        for sub, name in [r.name.split("/", 1)]
    ]
    watched_now = ctx.watch is not None  # sync/watched.py: the written folders are not listed
    ctx.log.debug("partial-pass", dirty=len(dirty), emails=len(ids), watched=watched_now)
    return Scope(sorted(dirty), ids, records, dirty_files, clean, now, holding)


def _watch(ctx: PassContext, known: Times) -> None:
    """Watch the folders a pass may write into without scanning (sync/watched.py),
    when listing them again at the end would cost more than the watch."""
    base = {f: p for f, p in recorded_prints(ctx.db, ctx.account).items() if known.get(f)}
    if ctx.dry is not None or sum(p[0] for p in base.values()) < watched.WATCH_FROM:
        return
    ctx.watch = watched.Watch.start({f: ctx.store.path(f) for f in base}, base)


def _still_holding(db: StateDB, many: set[MailboxId], delta: Delta) -> set[MailboxId]:
    """Of the mailboxes that lost many of our Emails, those that still hold
    one: a changed Email now in it, or a recorded one the changes did not
    touch.  (A batch of moves out of the inbox is common; a full pass over
    300 000 messages to learn that it is not empty cost 26 s.)"""
    touched = set(delta.changed) | set(delta.destroyed)
    now_in = {m for e in delta.changed.values() for m in e.mailbox_ids}
    return {m for m in many if m in now_in or db.holds_mailbox(m, touched)}


def stamp_to_record(
    ctx: PassContext,
    folders: list[str],
    pre: Times,
    plan: FilePlan,
    scope: Scope | None,
    removed_foreign: set[str],
    conn: sqlite3.Connection,
) -> str:
    """The folders' times for the next pass's fast path (JSON) -- only
    where the state being recorded is known to be what is on disk.

    A folder whose times did not move since just before the scan holds
    what the scan saw, plus nothing.  One whose times moved during the
    pass (our own writes, or the user's mutt at the same moment) is listed
    again and compared with what this pass leaves there (sync/prints.py):
    equal -> its new times are recorded; different -> None, scanned next
    time.  What the pass leaves there: in a folder it scanned, the plan's
    files and the foreign ones seen; in a folder a partial pass did not scan
    (its times had not moved: it held what the state said) but wrote to,
    the fingerprint recorded with the folder plus this pass's actions there
    -- or, from a stamp without fingerprints, the files table as this
    transaction leaves it (`conn`).  Without this, the pass after every
    download would scan the folders it wrote to instead of finding nothing
    to do.  Racy times are never recorded; a pass that wrote waits them out
    (`_settled_stamp`)."""
    scanned = set(folders) if scope is None else set(scope.dirty)
    planned = Prints()
    for rel, _eid in plan.owned():
        if split_rel(rel)[0] in scanned:
            planned.add(rel)
    planned.add_all(
        f.relpath for f in plan.foreign if f.folder in scanned and f.relpath not in removed_foreign
    )
    old = recorded_prints(ctx.db, ctx.account)
    delta = Prints()
    for r in plan.renames:
        delta.add(r.src, -1)
        delta.add(r.dst)
    delta.add_all(lk.dst for lk in plan.links)
    delta.add_all(p for d in plan.downloads for p in (d.dst, *d.links))
    for rm in plan.removes:
        delta.add(rm.path, -1)
    for rel in removed_foreign:
        delta.add(rel, -1)

    def expected(folder: str, moved: bool) -> Print | None:
        if folder in scanned:
            return planned.of(folder)
        if folder in old:
            if not moved:
                return old[folder]
            base, d = old[folder], delta.of(folder)
            return (base[0] + d[0], base[1] + d[1], base[2] + d[2])
        if not moved:
            return None
        table = Prints()
        table.add_all(
            join(folder, name)
            for (name,) in conn.execute("SELECT name FROM files WHERE folder=?", (folder,))
        )
        return table.of(folder)

    return _stamp(ctx, folders, pre, expected)


def stamp_streamed(ctx: PassContext, folders: list[str], pre: Times, planned: Prints) -> str:
    """stamp_to_record for a streamed pass (sync/stream.py): every folder was
    scanned, and `planned` holds what the pass leaves in each."""
    return _stamp(ctx, folders, pre, lambda folder, _moved: planned.of(folder))


def _stamp(
    ctx: PassContext,
    folders: list[str],
    pre: Times,
    expected: Callable[[str, bool], Print | None],
) -> str:
    times = _settled_stamp(ctx, folders)
    kept: dict[str, Print] = {}
    for f in folders:
        if times[f] is None:
            continue
        moved = pre.get(f) != times[f]
        want = expected(f, moved)
        if moved and (want is None or _holds(ctx, f) != want):
            times[f] = None
        elif want is not None:
            kept[f] = want
    for f in ctx.unsettled & set(times):
        times[f] = None  # new letters reached only some of its files: plan it all next time
        kept.pop(f, None)
    if pre.get(ROOT_KEY) != times.get(ROOT_KEY):
        times[ROOT_KEY] = None  # folders came or went: the next pass lists them
    for f in ctx.kept_folders:
        times[f] = None  # holds a file of a mail program: the next pass syncs it
        kept.pop(f, None)
    stamp = {
        "layout": ctx.account.layout,
        "root": str(ctx.account.maildir),
        "folders": times,
        "prints": {f: list(p) for f, p in kept.items()},
    }
    return json.dumps(stamp, sort_keys=True)


def _holds(ctx: PassContext, folder: str) -> Print:
    """The fingerprint of what `folder` holds now: from the watch when it can
    tell (a folder the pass did not scan), else by listing it."""
    seen = ctx.watch.now(folder) if ctx.watch is not None else None
    return seen if seen is not None else listing(ctx.store.path(folder))


def recorded_prints(db: StateDB, account: AccountConfig) -> dict[str, Print]:
    """The folder fingerprints the last pass recorded with its stamp."""
    if recorded_times(db, account) is None:
        return {}
    return parse_prints(json.loads(db.get_meta("local_stamp") or "{}").get("prints"))
