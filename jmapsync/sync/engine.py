"""Thin executor: gather the remote model and a local scan, plan, do, record.

One pass for one account (`Engine.sync`); docs/DESIGN.md has the long form.

1. Take the account lock; open the state database.
2. Remote: with stored Email and Mailbox states, fetch the changes since them
   (one round trip when nothing changed); a state the server cannot compute
   from means a full reconcile.  Without states: full reconcile.
3. Nothing changed remotely and no folder's directory times moved since the
   last pass: done ("unchanged"), without reading a record or a file name.
4. Apply the delta to the Emails recorded in the database -> the remote model.
5. Folders: map mailboxes to folder paths, move renamed mailboxes' folders,
   create missing folders.
6. Scan the local folders.  Two-way: merge local flag changes per keyword
   and folder changes (sync/twoway.py, pure) and send them (sync/push.py),
   guarded by ifInState; import new local messages.
7. Plan (sync/plan.py, pure) and execute: renames, links, downloads
   (concurrent, each tmp -> fsync -> rename), removes; line-ending rewrites;
   then fsync every touched directory.
8. Record mailboxes, Emails, files, content hashes and the NEW state strings
   in one transaction.  A crash before this point leaves the old states: the
   next run fetches the same changes again, and the plan, finding the files
   already in place, has nothing left to do for them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from jmapsync import log
from jmapsync.config import AccountConfig, Config
from jmapsync.errors import (
    CannotCalculateChanges,
    DeletionRefused,
    HTTPStatusError,
    JmapsyncError,
    LocalError,
    MethodError,
    ProtocolError,
    TransportError,
)
from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId, Mailbox, MailboxId, State
from jmapsync.maildir.flags import parse_name
from jmapsync.maildir.lineendings import (
    Form,
    Inspector,
    inspect,
    local_form,
    server_bytes,
    to_crlf,
    to_lf,
)
from jmapsync.maildir.names import MailboxNode, folder_paths
from jmapsync.maildir.store import LocalFile, MaildirStore, Subdir
from jmapsync.state.db import Content, FileRecord, StateDB, account_lock
from jmapsync.sync import plan as planner
from jmapsync.sync import twoway
from jmapsync.sync.plan import TRASHED, Download, FilePlan, FolderPlan
from jmapsync.sync.push import JOURNAL_IMPORT, TwoWay

IN_MEMORY_BYTES = 4 * 1024 * 1024  # messages up to this size are downloaded into memory
MAX_ATTEMPTS = 4  # passes tried when the server keeps changing under our writes

# Directory times this close to "now" may hide a change made in the same tick.
RACY_NS = 100_000_000
ROOT_KEY = "/"  # the Maildir root's own time in the stamp (never a folder path)


@dataclass
class SyncReport:
    """What one pass did, for the CLI, logs and tests."""

    account: str
    mode: str = "incremental"  # or "full", "unchanged"
    partial: bool = False  # incremental, looking only at changed folders and Emails (Scope)
    planned: int = 0  # Emails the plan looked at
    downloaded: int = 0
    bytes: int = 0
    renamed: int = 0
    linked: int = 0
    removed: int = 0
    folders_created: int = 0
    folders_moved: int = 0
    folders_removed: int = 0
    rewritten: int = 0  # files converted between LF and exact form
    pushed: int = 0  # Emails whose local flag or folder changes went to the server
    destroyed: int = 0  # Emails destroyed on the server (deleted here from Trash)
    imported: int = 0  # local new messages sent with Email/import
    adopted: int = 0  # MUA copies of known messages taken over under our name
    superseded: int = 0  # MUA copies replaced by the server's bytes
    mailboxes_created: int = 0
    mailboxes_destroyed: int = 0
    foreign: int = 0
    seconds: float = 0.0
    email_state: str | None = None
    warnings: list[str] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "warnings"} | {
            "warnings": len(self.warnings)
        }


@dataclass
class Scope:
    """An incremental pass that looks only where something can have changed.

    Folders whose directory times did not move since the last pass hold
    exactly the files the state recorded there (any create, delete or rename
    changes them), so only the other folders are scanned, and only the Emails
    changed remotely or with a file in a scanned folder are read and planned:
    at 100 000 messages a pass after a few changes touches a few records."""

    dirty: list[str]  # folders scanned
    ids: set[str]  # Emails planned
    records: dict[EmailId, Email]  # their records as last synced
    dirty_files: list[LocalFile]
    clean_files: list[LocalFile]  # their recorded files in the other folders

    def scan(self, store: MaildirStore) -> list[LocalFile]:
        return list(store.scan(self.dirty)) + self.clean_files


class Commits:
    """Downloaded files waiting in tmp/ to become durable and take their names.

    They are committed in batches (MaildirStore.commit_batch: one syncfs for
    the batch, then the renames and the hard links of each): the journal
    commit per fsync() was the largest single cost of a first sync."""

    BATCH_FILES = 64
    BATCH_BYTES = 32 * 1024 * 1024

    def __init__(self, store: MaildirStore) -> None:
        self.store = store
        self.pending: list[tuple[Path, Download]] = []
        self.bytes = 0
        self.lock = asyncio.Lock()

    async def add(self, tmp: Path, d: Download) -> None:
        self.pending.append((tmp, d))
        self.bytes += d.size
        if len(self.pending) >= self.BATCH_FILES or self.bytes >= self.BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            batch, self.pending, self.bytes = self.pending, [], 0
            if batch:
                await asyncio.to_thread(self._commit, batch)

    def _commit(self, batch: list[tuple[Path, Download]]) -> None:
        self.store.commit_batch((tmp, d.dst) for tmp, d in batch)
        for _, d in batch:
            for dst in d.links:
                self.store.link(d.dst, dst)


ProgressFactory = Callable[[int, int], "Progress"]


class Progress:
    """Download progress; the CLI swaps in a tqdm bar on a TTY."""

    def update(self, n: int, nbytes: int) -> None:
        """Called after each finished download."""

    def close(self) -> None:
        """Called once at the end."""


class Engine:
    """Syncs one account, one pass at a time."""

    def __init__(
        self,
        config: Config,
        account: AccountConfig,
        *,
        client_factory: Callable[[AccountConfig], JmapClient] | None = None,
        progress: ProgressFactory | None = None,
        force_deletes: bool = False,
        full: bool = False,
    ) -> None:
        self.config = config
        self.force_deletes = force_deletes
        self.full = full  # read the whole account, whatever the stored states say
        self.account = account
        self.client_factory = client_factory or (JmapClient)
        self.progress = progress
        self.log = log.get().bind(account=account.name)
        self.store = MaildirStore(account.maildir)
        self.new_contents: dict[str, Content] = {}  # learnt during the pass
        self.base: dict[EmailId, Email] = {}  # Emails as last synced
        self.files_pending = False  # an earlier pass died mid-way (files table stale)
        self.commits = Commits(self.store)
        self.pre_stamp: dict[str, list[int] | None] = {}  # folder times just before the scan
        self.removed_foreign: set[str] = set()  # MUA copies this pass removed

    async def sync(self) -> SyncReport:
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = account_lock(self.config.state_dir / f"{self.account.name}.lock")
        with lock:
            db = StateDB.for_account(self.config.state_dir, self.account.name)
            try:
                try:
                    report = await self._sync_retrying(db)
                except JmapsyncError as exc:
                    db.record_result(False, str(exc))
                    raise
                db.record_result(True)
                return report
            finally:
                db.close()

    # -- the pass ------------------------------------------------------------------

    async def _sync_retrying(self, db: StateDB) -> SyncReport:
        """A pass; again (up to MAX_ATTEMPTS, with growing pauses) when a write
        met a server that changed meanwhile (stateMismatch)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._sync(db)
            except MethodError as exc:
                if exc.type != "stateMismatch" or attempt == MAX_ATTEMPTS:
                    raise
                self.log.info("state-mismatch", attempt=attempt, action="read again, re-merge")
                await asyncio.sleep(0.2 * attempt * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sync(self, db: StateDB) -> SyncReport:
        started = time.monotonic()
        report = SyncReport(self.account.name)
        async with self.client_factory(self.account) as client:
            delta = await self._connect_and_read_changes(client, db)
            assert client.session is not None  # noqa: S101
            session = client.session
            if delta is not None and delta.empty and self._local_unchanged(db):
                # Nothing new on either side: no need to read 100 000 records
                # and scan as many files to find that out.
                with db.transaction() as conn:
                    db.set_meta(conn, "email_state", delta.email_state)
                    db.set_meta(conn, "mailbox_state", delta.mailbox_state)
                report.mode = "unchanged"
                report.email_state = delta.email_state
            else:
                await self._full_pass(db, client, session.account_id, delta, report, started)
        report.seconds = round(time.monotonic() - started, 3)
        self.log.info("sync-done", **report.as_dict())
        return report

    async def _full_pass(
        self,
        db: StateDB,
        client: JmapClient,
        account_id: str,
        delta: mail.Delta | None,
        report: SyncReport,
        started: float,
    ) -> None:
        """Everything but the unchanged fast path; fills in `report`."""
        self.new_contents = {}
        self.commits = Commits(self.store)  # nothing of a failed attempt carries over
        self.pre_stamp = {}
        self.files_pending = db.get_meta("files_pending") == "1"
        root_existed = self.account.maildir.is_dir()
        if not root_existed and db.has_files() and self.account.direction == "pull":
            # Pull mode: the server is the truth, so a vanished root is simply
            # rebuilt.  Say so loudly: it may be an unmounted disk.
            msg = f"Maildir root {self.account.maildir} is missing; rebuilding it from the server"
            self.log.warning("local-root-missing", path=str(self.account.maildir))
            report.warnings.append(msg)
        if self.account.direction == "two-way" and not root_existed and db.has_files():
            self._refuse_vanished({}, [], root_missing=True)
        self.store.ensure_root()

        old_paths = {m: p for m, (_, p) in db.mailboxes().items()}
        scope = self._scope(db, delta, old_paths) if root_existed else None
        emails, mailboxes, mailbox_state, email_state, touched = await self._remote(
            client, db, report, delta, scope
        )
        report.phases["remote"] = round(time.monotonic() - started, 3)
        if any(m not in mailboxes for e in emails.values() for m in e.mailbox_ids):
            # An Email names a mailbox created after our Mailbox read.
            mailbox_state, mailboxes = await mail.fetch_mailboxes(client)
        folder_of = self._folder_map(mailboxes)

        tw: TwoWay | None = None
        vanished: list[str] = []
        root_missing = not root_existed and db.has_files()
        if self.account.direction == "two-way":
            tw = TwoWay(self, db, client, report)
            held = db.files_per_folder()
            vanished = tw.vanished(old_paths, folder_of) if root_existed else []
            self._refuse_vanished(held, vanished, root_missing)
            if await tw.folders(old_paths, mailboxes, folder_of, held, vanished):
                mailbox_state, mailboxes = await mail.fetch_mailboxes(client)
                folder_of = self._folder_map(mailboxes)
        fplan = planner.plan_folders(old_paths, folder_of)
        self._folders_before(db, report, fplan)

        local_folders = set(self.store.folders(self.account.layout)) | set(folder_of.values())
        self.store.clean_partials(local_folders)
        t = time.monotonic()
        if scope is not None:
            scan = scope.dirty_files + scope.clean_files
        else:
            self.pre_stamp = self._local_stamp(sorted(set(folder_of.values())))
            scan = list(self.store.scan(sorted(local_folders)))
        superseded: list[tuple[str, str]] = []
        if tw is not None:
            out = await tw.push(
                scan,
                emails,
                folder_of,
                mailboxes,
                email_state,
                touched,
                held=held,
                vanished=vanished,
                root_missing=root_missing,
            )
            email_state, touched, superseded = out.email_state, out.touched, out.superseded
            if out.rescan:
                scan = (
                    scope.scan(self.store)
                    if scope
                    else list(self.store.scan(sorted(local_folders)))
                )
        plan = planner.plan_files(emails, folder_of, scan)
        report.planned = len(emails)
        del scan  # 100 000 entries; the plan holds what is still needed
        report.phases["scan_plan"] = round(time.monotonic() - t, 3)
        report.foreign = len(plan.foreign)
        if plan.foreign:
            self.log.info(
                "local-files-left-alone",
                count=len(plan.foreign),
                reason="not written by jmapsync; left as they are",
            )
        if not plan.empty:
            self.mark_files_pending(db)
        t = time.monotonic()
        await self._execute(client, plan, report)
        report.phases["execute"] = round(time.monotonic() - t, 3)

        self.removed_foreign = set()
        if tw is not None and superseded:
            placed = set(plan.final.values()) | {d.email_id for d in plan.downloads}
            self.removed_foreign = tw.remove_superseded(superseded, placed)
        self._folders_after(report, fplan)
        await asyncio.to_thread(self._line_endings, db, plan, report)
        self.store.dirsync.flush()
        self._record(
            db,
            account_id,
            mailboxes,
            folder_of,
            emails,
            touched,
            plan,
            mailbox_state,
            email_state,
            scope,
        )
        report.email_state = email_state

    def _folder_map(self, mailboxes: Mapping[MailboxId, Mailbox]) -> dict[MailboxId, str]:
        paths = folder_paths(
            (MailboxNode(m.id, m.name, m.parent_id, m.role) for m in mailboxes.values()),
            self.account.layout,
        )
        return {MailboxId(k): v for k, v in paths.items()}

    def _refuse_vanished(
        self, held: Mapping[str, int], vanished: list[str], root_missing: bool
    ) -> None:
        """Two-way, before anything is created on disk: a vanished root or a
        folder that vanished with its messages is far more likely an unmounted
        disk or a bad `rm -r` than a wish to delete all that mail."""
        if self.force_deletes:
            return
        lost = [f for f in vanished if held.get(f)]
        if root_missing:
            what = f"the Maildir root {self.account.maildir} is missing"
        elif lost:
            listed = ", ".join(repr(f) for f in lost[:5]) + (" ..." if len(lost) > 5 else "")
            what = f"folder(s) {listed} vanished with {sum(held[f] for f in lost)} messages"
        else:
            return
        raise DeletionRefused(
            f"refusing to sync: {what}; in two-way mode that would delete the mail on the"
            " server. Nothing was changed. Restore it (is a disk unmounted?), or run"
            " `jmapsync sync --force-deletes` to delete it on the server too"
        )

    async def _connect_and_read_changes(self, client: JmapClient, db: StateDB) -> mail.Delta | None:
        """The session (cached from the last run when we have it, so that a pass
        with nothing new is ONE request) and the remote changes."""
        cached = db.get_meta("session")
        if cached is not None:
            entry = json.loads(cached)
            if entry.get("for") == self.account.session_url:
                try:
                    client.use_cached(entry["url"], entry["data"])
                    delta = await self._changes(client, db)
                except (HTTPStatusError, TransportError, ProtocolError) as exc:
                    # The server moved its API, or the cache is bad: ask afresh.
                    self.log.info("session-refetch", reason=str(exc))
                else:
                    if not client.session_stale:
                        return delta
        await client.connect()
        if client.session_json is not None:
            url, data = client.session_json
            with db.transaction() as conn:
                entry = {"for": self.account.session_url, "url": url, "data": data}
                db.set_meta(conn, "session", json.dumps(entry))
        return await self._changes(client, db)

    async def _changes(self, client: JmapClient, db: StateDB) -> mail.Delta | None:
        """Remote changes since the stored states; None when a full reconcile is due."""
        es, ms = db.email_state, db.mailbox_state
        assert client.session is not None  # noqa: S101 - connected by the caller
        # States are per account: after the config points at another account,
        # the stored ones mean nothing there.
        same_account = db.get_meta("account_id") in (None, client.session.account_id)
        if not (es and ms and same_account) or self.full:
            return None
        try:
            return await mail.fetch_changes(client, ms, es)
        except CannotCalculateChanges as exc:
            self.log.info("full-reconcile", reason=str(exc))
            return None

    async def _remote(
        self,
        client: JmapClient,
        db: StateDB,
        report: SyncReport,
        delta: mail.Delta | None,
        scope: Scope | None,
    ) -> tuple[dict[EmailId, Email], dict[MailboxId, Mailbox], State, State, set[EmailId] | None]:
        """The remote model (only the Emails in `scope`, if given); `touched` is
        None after a full reconcile."""
        two_way = self.account.direction == "two-way"
        if delta is not None:
            if scope is not None:
                report.partial = True
                emails = dict(scope.records)
            else:
                emails = db.emails()
            # The base of the three-way merge: Emails as last synced.  A second
            # dict over the same Email objects; pull mode does not need it.
            self.base = dict(emails) if two_way else {}
            left: Counter[MailboxId] = Counter()  # Emails that left each mailbox
            for eid in delta.destroyed | set(delta.changed):
                old, new = emails.get(eid), delta.changed.get(eid)
                if old is not None:
                    left.update(old.mailbox_ids - (new.mailbox_ids if new else frozenset()))
            for eid in delta.destroyed:
                emails.pop(eid, None)
            emails.update(delta.changed)
            if self._emptied_remotely(emails, left):
                # A mailbox we held many messages of is suddenly empty: check
                # with a full read before any local file is removed.
                report.mode = "full"
                snap = await mail.fetch_all(client)
                return snap.emails, snap.mailboxes, snap.mailbox_state, snap.email_state, None
            if delta.mailboxes is None:
                mailboxes = {m: box for m, (box, _) in db.mailboxes().items()}
            else:
                mailboxes = delta.mailboxes
            touched = set(delta.changed) | delta.destroyed
            self.log.debug(
                "remote-changes",
                changed=len(delta.changed),
                destroyed=len(delta.destroyed),
                mailboxes_changed=delta.mailboxes is not None,
            )
            return emails, mailboxes, delta.mailbox_state, delta.email_state, touched
        report.mode = "full"
        self.base = db.emails() if two_way else {}
        snap = await mail.fetch_all(client)
        self.log.info("remote-read", emails=len(snap.emails), mailboxes=len(snap.mailboxes))
        return snap.emails, snap.mailboxes, snap.mailbox_state, snap.email_state, None

    def _scope(
        self, db: StateDB, delta: mail.Delta | None, old_paths: Mapping[MailboxId, str]
    ) -> Scope | None:
        """The Emails and folders an incremental pass needs to look at; None
        when it must look at everything (see Scope)."""
        if delta is None or self.files_pending:
            return None
        if db.get_meta("line_endings") != self.account.line_endings:
            return None  # files get rewritten: every one of them is visited
        if db.get_meta("contents_complete") != "1" or db.journal(JOURNAL_IMPORT):
            return None
        if delta.mailboxes is not None and self._folder_map(delta.mailboxes) != old_paths:
            return None  # folders move, appear or go
        known = self._recorded_times(db)
        if known is None:
            return None
        known.pop(ROOT_KEY, None)  # new folders are found by listing them below
        now = self._local_stamp(sorted(known))
        dirty = {f for f, times in known.items() if times is None or now[f] != times}
        dirty |= set(self.store.folders(self.account.layout)) - set(known)
        self.pre_stamp = now
        dirty_files = list(self.store.scan(sorted(dirty)))
        if self.account.direction == "two-way" and any(
            f.email_id is None and TRASHED not in f.flags for f in dirty_files
        ):
            return None  # an MUA's file: matching it may need any record
        ids = set(delta.changed) | set(delta.destroyed) | db.emails_with_files_in(dirty)
        ids.update(f.email_id for f in dirty_files if f.email_id is not None)
        records = db.emails_by_id(ids)
        left: Counter[MailboxId] = Counter()
        for eid in delta.destroyed | set(delta.changed):
            old, new = records.get(eid), delta.changed.get(eid)
            if old is not None:
                left.update(old.mailbox_ids - (new.mailbox_ids if new else frozenset()))
        if any(k >= twoway.EMPTIED_MIN for k in left.values()):
            return None  # the emptied-mailbox check needs every record
        clean = [
            LocalFile(r.folder, cast(Subdir, sub), name, r.email_id, parse_name(name).flags)
            for r in db.files_of(ids)
            if r.folder not in dirty
            for sub, name in [r.name.split("/", 1)]
        ]
        self.log.debug("partial-pass", dirty=len(dirty), emails=len(ids))
        return Scope(sorted(dirty), ids, records, dirty_files, clean)

    def _emptied_remotely(self, emails: Mapping[EmailId, Email], left: Counter[MailboxId]) -> bool:
        many = {m for m, k in left.items() if k >= twoway.EMPTIED_MIN}
        if not many:
            return False
        for e in emails.values():
            many -= e.mailbox_ids
            if not many:
                return False
        self.log.warning(
            "mailbox-emptied-remotely", mailboxes=sorted(many), action="full reconcile first"
        )
        return True

    # -- the unchanged fast path -------------------------------------------------------

    def _local_stamp(self, folders: list[str]) -> dict[str, list[int] | None]:
        """mtime_ns of each folder's directory and of its cur/ and new/.

        Any create, delete or rename in them (a flag change, a move, a new
        file, a child folder) changes one of these.  A time within
        RACY_NS of "now" cannot be trusted -- the file system clock is coarse
        and a change in the same tick would not show -- so such a folder gets
        None and is scanned next time ("racy git")."""
        now = time.time_ns()
        stamp: dict[str, list[int] | None] = {}
        try:  # the root too: a new top-level folder changes only its time
            root = self.store.root.stat().st_mtime_ns
            stamp[ROOT_KEY] = None if root > now - RACY_NS else [root]
        except OSError:
            stamp[ROOT_KEY] = None
        for folder in folders:
            base = self.store.path(folder)
            try:
                times = [base.stat().st_mtime_ns] + [
                    (base / sub).stat().st_mtime_ns for sub in ("cur", "new")
                ]
            except OSError:
                stamp[folder] = None
                continue
            stamp[folder] = None if max(times) > now - RACY_NS else times
        return stamp

    def _recorded_times(self, db: StateDB) -> dict[str, list[int] | None] | None:
        """The folder times the last pass recorded, if they are for this
        Maildir root and layout."""
        raw = db.get_meta("local_stamp")
        if raw is None:
            return None
        recorded = json.loads(raw)
        if recorded.get("layout") != self.account.layout or recorded.get("root") != str(
            self.account.maildir
        ):
            return None
        folders: dict[str, list[int] | None] = recorded.get("folders", {})
        return folders

    def _local_unchanged(self, db: StateDB) -> bool:
        """True when no folder changed since the last pass recorded its stamp,
        and the settings that shape the files are the same."""
        folders = self._recorded_times(db)
        if folders is None or db.get_meta("line_endings") != self.account.line_endings:
            return False
        if ROOT_KEY not in folders or any(v is None for v in folders.values()):
            return False
        return self._local_stamp(sorted(f for f in folders if f != ROOT_KEY)) == folders

    def _record_stamp(
        self,
        conn: sqlite3.Connection,
        folders: list[str],
        plan: FilePlan | None = None,
        scope: Scope | None = None,
    ) -> None:
        """Record the folders' times for the next pass's fast path -- only
        where the state being recorded is known to be what is on disk.

        A folder whose times did not move since just before the scan holds
        what the scan saw, plus nothing.  One whose times moved during the
        pass (our own writes, or the user's mutt at the same moment) is listed
        again and compared with what this pass leaves there: equal -> its new
        times are recorded; different, or not listable from this pass's plan
        -> None, scanned next time.  Times within RACY_NS of now are never
        trusted; a pass that wrote waits that out once."""
        pre = self.pre_stamp
        times = self._local_stamp(folders)
        if any(t is None for t in times.values()) and self.store.root.is_dir():
            time.sleep(RACY_NS / 1e9)
            times = self._local_stamp(folders)
        moved = [f for f in folders if times[f] is not None and pre.get(f) != times[f]]
        if moved:
            checkable = set(folders) if scope is None else set(scope.dirty)
            expected = self._expected_files(plan, [f for f in moved if f in checkable])
            for f in moved:
                if (
                    f not in expected
                    or _fingerprint(x.relpath for x in self.store.scan([f])) != expected[f]
                ):
                    times[f] = None
        if pre.get(ROOT_KEY) != times.get(ROOT_KEY):
            times[ROOT_KEY] = None  # folders came or went: the next pass lists them
        stamp = {
            "layout": self.account.layout,
            "root": str(self.account.maildir),
            "folders": times,
        }
        StateDB.set_meta(conn, "local_stamp", json.dumps(stamp, sort_keys=True))

    def _expected_files(
        self, plan: FilePlan | None, folders: list[str]
    ) -> dict[str, tuple[int, int]]:
        """folder -> fingerprint of every file this pass leaves there (ours
        and others'): a count and a hash sum, so that 100 000 names are not
        held twice at the end of a first sync."""
        if plan is None or not folders:
            return {}
        acc: dict[str, list[int]] = {f: [0, 0] for f in folders}

        def add(folder: str, rel: str) -> None:
            a = acc.get(folder)
            if a is not None:
                a[0] += 1
                a[1] = (a[1] + hash(rel)) & _MASK

        for rel, _eid in plan.owned():
            add(planner.split_rel(rel)[0], rel)
        for f in plan.foreign:
            if f.relpath not in self.removed_foreign:
                add(f.folder, f.relpath)
        return {f: (a[0], a[1]) for f, a in acc.items()}

    # -- folders -------------------------------------------------------------------

    def mark_files_pending(self, db: StateDB, *, rewrite: bool = False) -> None:
        """Journal, before any file action: the files table may no longer match
        the disk until this pass commits; if it never does, the next pass
        rewrites the table whole.  `rewrite`: this pass does too (its file
        actions are not all in the plan)."""
        self.files_pending = self.files_pending or rewrite
        if db.get_meta("files_pending") != "1":
            with db.transaction() as conn:
                db.set_meta(conn, "files_pending", "1")

    def _folders_before(self, db: StateDB, report: SyncReport, fplan: FolderPlan) -> None:
        if fplan.moves:
            # Moved folders carry their files to new paths: the table is
            # rewritten whole at the end of this pass.
            self.mark_files_pending(db, rewrite=True)
        for src, dst in fplan.moves:
            if self.store.move_folder(src, dst):
                report.folders_moved += 1
                self.log.info("folder-moved", src=src, dst=dst)
        for folder in fplan.create:
            if self.store.ensure_folder(folder):
                report.folders_created += 1

    def _folders_after(self, report: SyncReport, fplan: FolderPlan) -> None:
        gone = fplan.remove_if_empty
        # Deepest first, so that a parent emptied by its children's moves goes too.
        for folder in sorted(gone, key=lambda f: f.count("/"), reverse=True):
            if not self.store.path(folder).is_dir():
                continue
            was_folder = self.store.is_folder(folder)  # else: a leftover of a folder move
            if self.store.remove_folder_if_empty(folder):
                if was_folder:
                    report.folders_removed += 1
                    self.log.info("folder-removed", folder=folder)
            else:
                msg = (
                    f"folder {folder!r} belongs to no mailbox any more but holds other files; kept"
                )
                self.log.warning("folder-kept", folder=folder, reason="not empty")
                report.warnings.append(msg)

    # -- actions -------------------------------------------------------------------

    async def _execute(self, client: JmapClient, plan: FilePlan, report: SyncReport) -> None:
        store = self.store
        for r in plan.renames:
            if store.rename(r.src, r.dst):
                report.renamed += 1
            else:
                raise LocalError(f"{r.src} vanished while syncing; run sync again")
        for lk in plan.links:
            store.link(lk.src, lk.dst)
            report.linked += 1
        if plan.downloads:
            await self._download_all(client, plan.downloads, report)
        for rm in plan.removes:
            if store.remove(rm.path):
                report.removed += 1

    async def _download_all(
        self, client: JmapClient, downloads: list[Download], report: SyncReport
    ) -> None:
        assert client.session is not None  # noqa: S101
        width = self.account.download_connections or client.session.limits.max_concurrent_requests
        total_bytes = sum(d.size for d in downloads)
        progress = self.progress(len(downloads), total_bytes) if self.progress else Progress()
        queue: asyncio.Queue[Download] = asyncio.Queue()
        for d in downloads:
            queue.put_nowait(d)

        async def worker() -> None:
            while True:
                try:
                    d = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                n = await self._download_one(client, d)
                report.downloaded += 1
                report.bytes += n
                report.linked += len(d.links)
                progress.update(1, n)

        try:
            workers = [asyncio.create_task(worker()) for _ in range(max(1, width))]
            try:
                await asyncio.gather(*workers)
                await self.commits.flush()
            except BaseException:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        finally:
            progress.close()

    async def _download_one(self, client: JmapClient, d: Download) -> int:
        if d.size <= IN_MEMORY_BYTES:
            return await self._download_small(client, d)  # links when committed
        n = await self._download_large(client, d)
        for dst in d.links:
            self.store.link(d.dst, dst)
        return n

    async def _download_small(self, client: JmapClient, d: Download) -> int:
        """Most messages: read into memory, decide the form, write ONE file.

        (A file create costs ~0.7 ms of kernel time on the test machine; the
        streamed path below needs two for a message stored in LF form.)"""
        data = bytearray()
        inspector = Inspector()

        def sink(chunk: bytes) -> None:
            inspector.feed(chunk)
            data.extend(chunk)

        n = await client.stream_blob(d.blob_id, d.size, sink)
        seen = inspector.finish()
        form = local_form(self.account.line_endings, seen)
        body = to_lf(bytes(data)) if form == "lf" else bytes(data)
        folder, _sub, _name = planner.split_rel(d.dst)
        # open() and write() in a thread: they must not stall the other
        # downloads (an ext4 create waits for the journal while others sync).
        tmp = await asyncio.to_thread(self.store.write_unsynced, folder, d.email_id, body)
        self.new_contents[d.email_id] = Content(seen.sha256, seen.size, seen.crlf_only, form)
        await self.commits.add(tmp, d)
        return n

    async def _download_large(self, client: JmapClient, d: Download) -> int:
        """Big messages stream to tmp/ and are converted from there if needed."""
        folder, _sub, _name = planner.split_rel(d.dst)
        fd, tmp = await asyncio.to_thread(self.store.open_partial, folder, d.email_id)
        inspector = Inspector()
        try:
            n = await client.download_to(d.blob_id, fd, d.size, inspector.feed)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        seen = inspector.finish()
        form = local_form(self.account.line_endings, seen)
        commit = self.store.commit_partial_lf if form == "lf" else self.store.commit_partial
        await asyncio.to_thread(commit, fd, tmp, d.dst)
        self.new_contents[d.email_id] = Content(seen.sha256, seen.size, seen.crlf_only, form)
        return n

    # -- line endings --------------------------------------------------------------

    def _line_endings(self, db: StateDB, plan: FilePlan, report: SyncReport) -> None:
        """Bring every file into the form `line_endings` asks for, from the files
        themselves: no download, no server write.  Skipped when the mode is the
        one last applied and every file's content is recorded."""
        mode = self.account.line_endings
        if db.get_meta("line_endings") == mode and db.get_meta("contents_complete") == "1":
            return  # new downloads were written in the right form already
        known = db.contents()
        paths: dict[str, list[str]] = defaultdict(list)
        for rel, eid in plan.owned():
            paths[eid].append(rel)
        for eid, rels in paths.items():
            rels.sort()
            content = self.new_contents.get(eid) or known.get(eid)
            if content is None:
                # Backfill (state from before line_endings): the file holds the
                # server's exact bytes, as version 1 wrote them.
                seen = inspect(self.store.read(rels[0]))
                content = Content(seen.sha256, seen.size, seen.crlf_only, "exact")
                self.new_contents[eid] = content
            want: Form = "lf" if mode == "lf" and content.crlf_only else "exact"
            if content.form == want:
                continue
            data = self.store.read(rels[0])
            if hashlib.sha256(server_bytes(data, content.form)).hexdigest() != content.sha256:
                msg = f"{rels[0]} differs from the server's message; not converted (see verify)"
                self.log.warning("line-endings-skipped", path=rels[0], reason="altered")
                report.warnings.append(msg)
                continue
            self.store.rewrite(rels, to_lf if want == "lf" else to_crlf)
            self.new_contents[eid] = Content(content.sha256, content.size, content.crlf_only, want)
            report.rewritten += 1

    # -- record --------------------------------------------------------------------

    def _record(
        self,
        db: StateDB,
        account_id: str,
        mailboxes: Mapping[MailboxId, Mailbox],
        folder_of: Mapping[MailboxId, str],
        emails: Mapping[EmailId, Email],
        touched: set[EmailId] | None,
        plan: FilePlan,
        mailbox_state: State,
        email_state: State,
        scope: Scope | None,
    ) -> None:
        def files() -> Iterator[FileRecord]:
            for rel, eid in plan.owned():
                folder, sub, name = planner.split_rel(rel)
                yield FileRecord(folder, f"{sub}/{name}", eid)

        with db.transaction() as conn:
            db.put_mailboxes(conn, ((m, folder_of[m.id]) for m in mailboxes.values()))
            if touched is None:
                conn.execute("DELETE FROM emails")
                db.put_emails(conn, emails.values())
            else:
                db.delete_emails(conn, (e for e in touched if e not in emails))
                db.put_emails(conn, (emails[e] for e in touched if e in emails))
            if touched is None or self.files_pending:
                # After a full read, or when an earlier pass died between its
                # first file action and its commit: the table is rewritten
                # whole, streamed from the plan -- or, in a partial pass, the
                # rows of the Emails and folders it looked at.
                if scope is None:
                    db.replace_all_files(conn, files())
                else:
                    planned = scope.ids | {eid for _, eid in plan.owned()}
                    db.replace_files_of(conn, planned, scope.dirty, files())
                db.prune_contents(conn)
            elif not plan.empty:
                db.update_files(conn, *_file_changes(plan))
                if plan.removes or plan.renames:
                    db.prune_contents(conn)
            db.put_contents(conn, self.new_contents)
            db.set_meta(conn, "files_pending", None)
            db.journal_clear(conn, None)  # every intent of this pass is done and recorded
            db.set_meta(conn, "line_endings", self.account.line_endings)
            db.set_meta(conn, "contents_complete", "1")
            self._record_stamp(conn, sorted(set(folder_of.values())), plan, scope)
            db.set_meta(conn, "account_id", account_id)
            # Only now, with every file of this pass on disk and the
            # directories fsynced, do the states advance.
            db.set_meta(conn, "email_state", email_state)
            db.set_meta(conn, "mailbox_state", mailbox_state)


_MASK = (1 << 64) - 1


def _fingerprint(relpaths: Iterable[str]) -> tuple[int, int]:
    """(count, sum of hashes) of a set of paths: equal sets, equal prints; a
    rename, a new or a missing file changes it (for _record_stamp)."""
    n = total = 0
    for rel in relpaths:
        n += 1
        total = (total + hash(rel)) & _MASK
    return n, total


def _file_changes(plan: FilePlan) -> tuple[list[tuple[str, str]], list[FileRecord]]:
    """(folder, "sub/name") rows that go, and rows that come, by the plan's actions."""

    def row(rel: str) -> tuple[str, str]:
        folder, sub, name = planner.split_rel(rel)
        return folder, f"{sub}/{name}"

    gone = [row(r.src) for r in plan.renames] + [row(r.path) for r in plan.removes]
    came = [(r.dst, r.email_id) for r in plan.renames]
    came += [(lk.dst, lk.email_id) for lk in plan.links]
    for d in plan.downloads:
        came += [(dst, d.email_id) for dst in (d.dst, *d.links)]
    return gone, [FileRecord(*row(rel), eid) for rel, eid in came]


def progress_bar_factory() -> ProgressFactory | None:
    """A tqdm bar on a TTY, nothing otherwise (structured logs say the rest)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # only on a TTY: keeps start-up light

    class Bar(Progress):
        def __init__(self, total: int, total_bytes: int) -> None:
            self.bar = tqdm(total=total, unit="msg", desc="downloading", leave=False)

        def update(self, n: int, nbytes: int) -> None:
            self.bar.update(n)

        def close(self) -> None:
            self.bar.close()

    return Bar


async def sync_accounts(
    config: Config,
    names: list[str] | None,
    progress: ProgressFactory | None = None,
    *,
    force_deletes: bool = False,
) -> dict[str, SyncReport | JmapsyncError]:
    """Sync the named (or all) accounts concurrently; errors are returned, not raised."""
    accounts = config.select(names)

    async def one(account: AccountConfig) -> SyncReport | JmapsyncError:
        try:
            engine = Engine(config, account, progress=progress, force_deletes=force_deletes)
            return await engine.sync()
        except JmapsyncError as exc:
            log.get().error(
                "sync-failed", account=account.name, error=str(exc), retry=exc.retry.value
            )
            return exc

    results = await asyncio.gather(*(one(a) for a in accounts))
    return {a.name: r for a, r in zip(accounts, results, strict=True)}
