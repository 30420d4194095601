"""One pass for one account: the stages in order (docs/DESIGN.md has the long form).

    remote read -> local scope -> plan both directions -> execute -> record

1. Lock the account; open its state database.
2. Remote read (sync/remote.py): with stored states, what changed since them
   (one round trip when nothing did); else the whole account.
3. Local scope (sync/scope.py): nothing changed remotely and no folder's
   directory times moved -> done ("unchanged").  Otherwise only the folders
   whose times moved are scanned, and only the Emails that changed on either
   side are planned (a partial pass), unless everything must be looked at.
4. The remote model: the recorded Emails plus the delta (or the full read).
5. Folders (sync/folders.py): two-way first creates mailboxes for new local
   folders (sync/local_to_remote/); then renamed mailboxes' folders move and
   every mailbox's folder is created.
6. Scan; two-way: local changes go to the server (sync/local_to_remote/,
   deciding in the pure sync/twoway.py), and what they did comes back as an
   Outcome applied to the remote model.
7. Plan the local side (sync/plan.py, pure) and execute it (sync/execute.py);
   line-ending rewrites; fsync every touched directory.
8. Record (sync/record.py), the new state strings last.  A crash before this
   point leaves the old states: the next run fetches the same changes again,
   and the plan, finding the files already in place, has nothing left to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from jmapsync import log
from jmapsync.config import AccountConfig, Config, Secret
from jmapsync.errors import JmapsyncError, MethodError, disk_error
from jmapsync.jmap import changes
from jmapsync.jmap.api import Invocation, Responses
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import EmailId
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import StateDB, db_error
from jmapsync.state.lock import account_lock
from jmapsync.sync import archive, arrival, folders, letters, remote, scope, stamp, stream
from jmapsync.sync import plan as planner
from jmapsync.sync.context import PassContext
from jmapsync.sync.execute import Executor
from jmapsync.sync.record import record
from jmapsync.sync.report import ProgressFactory, SyncReport

__all__ = ["Engine", "SyncReport", "sync_accounts"]

MAX_ATTEMPTS = 4  # passes tried when the server keeps changing under our writes


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
        dry_run: bool = False,
        cache_failed: str | None = None,
    ) -> None:
        self.config = config
        self.force_deletes = force_deletes
        self.full = full  # read the whole account, whatever the stored states say
        self.dry_run = dry_run  # decide everything, change nothing (sync/dryrun.py)
        # Why a request to the cached session's API URL already failed (the
        # no-change fast path, sync/quick.py): the first pass asks afresh.
        self.cache_failed = cache_failed
        self.account = account
        self.client_factory = client_factory or (JmapClient)
        self.progress = progress
        self.log = log.get().bind(account=account.name)
        self.store = MaildirStore(account.maildir)

    async def sync(self) -> SyncReport:
        """One pass (again after a stateMismatch).  Every failure is a
        JmapsyncError: a full disk, a read-only or unreadable Maildir, an I/O
        error become one line naming the path (DiskError), never a traceback;
        the pass stops where it is, as safe as a crash there."""
        if self.dry_run:
            from jmapsync.sync import dryrun

            # Not even the state directory is created: the pass runs on a copy.
            with dryrun.state_copy(self.config.state_dir, self.account.name) as copy:
                return await self._sync_retrying(copy)
        state_dir = self.config.state_dir
        db: StateDB | None = None
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with account_lock(state_dir / f"{self.account.name}.lock"):
                db = StateDB.for_account(state_dir, self.account.name)
                try:
                    report = await self._sync_retrying(db)
                except BaseException as exc:
                    error = _as_error(exc, db.path)
                    if error is not None:
                        # Best effort: the disk that failed may hold the database.
                        with contextlib.suppress(OSError, sqlite3.Error, JmapsyncError):
                            db.record_result(False, str(error))
                    raise
                else:
                    db.record_result(True)
                    return report
                finally:
                    db.close()
        except (OSError, sqlite3.Error) as exc:
            error = _as_error(exc, db.path if db else state_dir)
            assert error is not None  # noqa: S101
            raise error from None

    async def _sync_retrying(self, db: StateDB) -> SyncReport:
        """A pass; again (up to MAX_ATTEMPTS, with growing pauses) when a write
        met a server that changed meanwhile (stateMismatch)."""
        done: SyncReport | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            report = SyncReport(self.account.name, dry_run=self.dry_run)
            if done is not None:
                # What the failed attempt did before the mismatch (a mailbox
                # created, a folder moved) was done by this pass: it counts.
                report.add_counts(done)
            try:
                return await self._sync(db, report)
            except MethodError as exc:
                done = report
                if exc.type != "stateMismatch" or attempt == MAX_ATTEMPTS:
                    raise
                self.log.info("state-mismatch", attempt=attempt, action="read again, re-merge")
                await asyncio.sleep(0.2 * attempt * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _sync(self, db: StateDB, report: SyncReport) -> SyncReport:
        started = time.monotonic()
        # A fresh context per attempt: nothing of a failed attempt carries
        # over but the counts in `report`.
        dry = None
        if self.dry_run:
            from jmapsync.sync.dryrun import DryRun

            dry = DryRun()
        ctx = PassContext(
            self.account,
            db,
            self.store,
            self.log,
            report,
            force_deletes=self.force_deletes,
            dry=dry,
        )
        archive.refuse_switch(ctx)  # archive -> pull / two-way: what it kept would go
        async with self.client_factory(self.account) as client:
            try:
                await self._in_session(ctx, client, started)
            finally:
                remote.store_session(ctx, client)  # one the client fetched mid-pass
                if ctx.watch is not None:
                    ctx.watch.close()
        report.seconds = round(time.monotonic() - started, 3)
        if ctx.dry is not None:
            report.would = [w.as_dict() for w in ctx.dry.actions]
        self.log.info("dry-run-done" if self.dry_run else "sync-done", **report.as_dict())
        return report

    async def _in_session(self, ctx: PassContext, client: JmapClient, started: float) -> None:
        """The pass proper, with the client open."""
        db, report = ctx.db, ctx.report
        full = self.full or arrival.needs_full(db)  # mtimes of an older mirror
        cache_failed, self.cache_failed = self.cache_failed, None
        delta = await remote.read_changes(ctx, client, full=full, cache_failed=cache_failed)
        assert client.session is not None  # noqa: S101
        if (
            delta is not None
            and delta.empty
            and not ctx.rewrite_files  # archive released: every folder is looked at
            and not stamp.retry_downloads(db)  # failed downloads wait for a pass
            and stamp.local_unchanged(db, self.account)
        ):
            # Nothing new on either side: no need to read 100 000 records
            # and scan as many files to find that out.
            with db.transaction() as conn:
                db.set_meta(conn, "email_state", delta.email_state)
                db.set_meta(conn, "mailbox_state", delta.mailbox_state)
            report.mode = "unchanged"
            report.email_state = delta.email_state
        else:
            await self._pass(ctx, client, client.session.account_id, delta, started)

    async def _pass(
        self,
        ctx: PassContext,
        client: JmapClient,
        account_id: str,
        delta: changes.Delta | None,
        started: float,
    ) -> None:
        """Everything but the unchanged fast path: steps 3-8 of the module docstring."""
        db, store, report, layout = ctx.db, self.store, ctx.report, self.account.layout
        ctx.rewrite_files = ctx.rewrite_files or db.get_meta("files_pending") == "1"  # died
        root_existed = self.account.maildir.is_dir()
        root_missing = not root_existed and db.has_files()
        if root_missing and not ctx.two_way:
            # Pull mode: the server is the truth, so a vanished root is simply
            # rebuilt.  Say so loudly: it may be an unmounted disk.
            msg = f"Maildir root {self.account.maildir} is missing; rebuilding it from the server"
            ctx.warn("local-root-missing", msg, path=str(self.account.maildir))
        if root_missing and ctx.two_way:
            folders.refuse_missing(ctx, {}, [], root_missing=True)
        if ctx.dry is None:
            store.ensure_root()

        # 3. local scope, 4. the remote model
        recorded = db.mailboxes()
        old_paths = {m: p for m, (_, p) in recorded.items()}
        was = folders.was_mirrored(db, old_paths)  # what `folders =` selected last time
        boxes = delta.mailboxes if delta is not None else None  # None: unchanged
        known = boxes if boxes is not None else {m: b for m, (b, _) in recorded.items()}
        ctx.selected = folders.mirrored(known, self.account)
        new_paths = folders.folder_map(boxes, layout)[0] if boxes is not None else None
        partial = None
        if root_existed and ctx.selected == was:  # a new selection looks at everything
            partial = scope.compute(ctx, delta, old_paths, new_paths)
        if stream.applies(ctx, partial):  # everything, chunk by chunk (sync/stream.py)
            await stream.run(
                ctx,
                client,
                delta,
                account_id=account_id,
                started=started,
                old_paths=old_paths,
                was=was,
                progress=self.progress,
            )
            return
        model = await remote.read_model(ctx, client, delta, partial)
        report.phases["remote"] = round(time.monotonic() - started, 3)
        t_folders = time.monotonic()
        paths, folder_of = folders.mapped(ctx, model.mailboxes)
        # Mirrored last time and not now: their files go (never a server write).
        # (A mailbox whose name cannot become a folder is neither: left alone.)
        deselected = sorted(
            old_paths[m]
            for m in was - ctx.selected
            if m in model.mailboxes and m not in ctx.unmapped
        )
        was_paths = {m: p for m, p in old_paths.items() if m in was and m not in ctx.unmapped}

        # 5. folders (two-way: new local folders become mailboxes first)
        folders.adopt_imap_names(ctx, folder_of)
        to_remote: LocalToRemote | None = None
        held = db.files_per_folder() if ctx.two_way or deselected else {}
        folders.refuse_deselected(ctx, held, deselected)
        if ctx.two_way:
            from jmapsync.sync.local_to_remote import LocalToRemote  # two-way only

            to_remote = LocalToRemote(ctx, client)
            vanished = folders.vanished(store, was_paths, folder_of) if root_existed else []
            folders.refuse_missing(ctx, held, vanished, root_missing)
            new_boxes = await to_remote.folders(
                old_paths, model.mailboxes, paths, held, vanished, model.emails
            )
            if new_boxes:
                model.mailbox_state, model.mailboxes = await to_remote.mailboxes(
                    model.mailbox_state, model.mailboxes
                )
                paths, folder_of = folders.mapped(ctx, model.mailboxes)
        fplan = planner.plan_folders(was_paths, folder_of)
        folders.apply_before(ctx, fplan)
        letters.load(ctx, sorted(set(folder_of.values())), fplan.moves)
        excluded = frozenset(model.mailboxes) - (ctx.selected or frozenset()) - ctx.unmapped.keys()

        # 6. scan; two-way: local changes to the server
        local_folders = set(store.folders(layout)) | set(folder_of.values())
        if ctx.dry is None:
            store.clean_partials(local_folders)
        t = time.monotonic()
        report.phases["folders"] = round(t - t_folders, 3)
        if partial is not None:
            pre_stamp = partial.times
            scan = partial.files()
        else:
            pre_stamp = scope.local_stamp(ctx, folders.stamped(store, paths, folder_of, layout))
            scan = list(store.scan(sorted(local_folders)))
            if ctx.dry is not None:
                scan = ctx.dry.after_folder_moves(scan)
        superseded: list[tuple[str, str]] = []
        if to_remote is not None:
            # Not compared this pass: excluded, or selected only since the last
            # one (also a mailbox whose name had no folder until now: its
            # Emails have no file here yet, which is no local delete).
            since = old_paths.keys() | folders.was_unmapped(db)
            ignore = excluded | ((ctx.selected or frozenset()) & since) - was
            out = await to_remote.run(
                scan, model.emails, paths, model.mailboxes, model.email_state, held, ignore
            )
            model.apply_writes(out.email_state, out.changed, out.destroyed)
            superseded = out.superseded
            if out.rescan and ctx.dry is not None:
                scan = ctx.dry.overlay(scan)
            elif out.rescan:
                scan = partial.scan(store) if partial else list(store.scan(sorted(local_folders)))

        # 7. plan the local side and execute it
        letters.allocate(ctx, model.emails.values(), folder_of)
        plan = planner.plan_files(
            model.emails, folder_of, scan, ctx.letters, excluded, keep=ctx.archive
        )
        report.planned = len(model.emails)
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
            ctx.mark_files_pending()
        t = time.monotonic()
        executor = Executor(ctx, client, self.progress)
        if ctx.dry is not None:
            ctx.dry.files(report, plan, ctx.fetched)
        else:
            settled = partial_record(ctx, model) if ctx.two_way else None
            await executor.run(plan, settled=settled)
            if model.touched is None:  # a full read: every file's arrival time
                await asyncio.to_thread(arrival.stamp, ctx, plan, model.emails)
        removed_foreign: set[str] = set()
        if to_remote is not None and superseded:
            placed = set(plan.final.values()) | {d.email_id for d in plan.downloads}
            removed_foreign = to_remote.remove_superseded(superseded, placed)
        folders.apply_after(ctx, fplan, removed_foreign)
        await asyncio.to_thread(executor.line_endings, plan)
        store.dirsync.flush()
        report.phases["execute"] = round(time.monotonic() - t, 3)
        if ctx.dry is not None:
            return  # nothing to record: nothing was done

        # 8. record, the states last
        t = time.monotonic()
        retry = sorted({d.email_id for d in executor.failed})
        record(ctx, account_id, model, paths, plan, partial, pre_stamp, removed_foreign, retry)
        report.phases["record"] = round(time.monotonic() - t, 3)
        report.email_state = model.email_state
        if executor.error is not None:
            # Recorded, everything else done: the pass still says it failed
            # (exit 1, `status`), and the next one fetches the rest.
            raise executor.error


def _as_error(exc: BaseException, db_path: Path) -> JmapsyncError | None:
    """The JmapsyncError for a failure of a pass; None for a cancellation or
    an interrupt (not a failure of the account)."""
    if isinstance(exc, JmapsyncError):
        return exc
    if isinstance(exc, OSError):
        return disk_error(exc)
    if isinstance(exc, sqlite3.Error):
        return db_error(db_path, exc)
    return None


def partial_record(ctx: PassContext, model: remote.RemoteModel) -> Callable[[set[str]], None]:
    """Record, ahead of the pass, the Emails whose files the pull has made
    final: they are the base the next pass merges against (see Executor.run)."""

    def settled(ids: set[str]) -> None:
        with ctx.db.transaction() as conn:
            ctx.db.put_emails(conn, (model.emails[EmailId(e)] for e in ids if e in model.emails))

    return settled


async def sync_accounts(
    config: Config,
    names: list[str] | None,
    progress: ProgressFactory | None = None,
    *,
    force_deletes: bool = False,
    dry_run: bool = False,
    secrets: Mapping[str, Secret] | None = None,
    cache_failed: Mapping[str, str] | None = None,
    answers: dict[str, tuple[list[Invocation], Responses]] | None = None,
) -> dict[str, SyncReport | JmapsyncError]:
    """Sync the named (or all) accounts concurrently; errors are returned, not raised.
    `secrets`, `cache_failed`, `answers`: what sync/quick.py learnt (its
    Handover), by account."""
    accounts = config.select(names)
    known = secrets or {}
    failed = cache_failed or {}
    first = answers if answers is not None else {}

    def client(account: AccountConfig) -> JmapClient:
        c = JmapClient(account, secret=known.get(account.name))
        if account.name in first:  # for the first attempt's client only
            c.preload(*first.pop(account.name))
        return c

    async def one(account: AccountConfig) -> SyncReport | JmapsyncError:
        try:
            engine = Engine(
                config,
                account,
                client_factory=client,
                progress=progress,
                force_deletes=force_deletes,
                dry_run=dry_run,
                cache_failed=failed.get(account.name),
            )
            report = await engine.sync()
        except JmapsyncError as exc:
            log.get().error(
                "sync-failed", account=account.name, error=str(exc), retry=exc.retry.value
            )
            return exc
        # After the account lock is released: a hook may run `jmapsync status`.
        if not dry_run and account.post_sync_command is not None:  # (dry: nothing to announce)
            from jmapsync import hooks

            await hooks.after_pass(config, account, report)
        return report

    results = await asyncio.gather(*(one(a) for a in accounts))
    return {a.name: r for a, r in zip(accounts, results, strict=True)}
