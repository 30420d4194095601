"""A pass over everything, streamed: a million Emails without a million objects.

A pass that looks at every Email and every file (no `Scope`: a first sync,
the daily full reconcile, a pass after a crash or a settings change) held
the whole remote model, the whole scan and the whole plan in memory: ~1 KB
per message, linear in the account (141 MB at 100 000).  Here the remote
read (each page of Email/get as it arrives) and the scan go into temporary
tables (state/staging.py), and the plan is made and carried out chunk by
chunk of Email ids -- each Email with all its files, which is all
`plan_files` looks at together, so the chunks' plans are exactly the plan
of the whole (sync/plan.py decides per Email).  What the pass leaves (files,
contents, archive) goes back into temporary tables, and the record copies
them into the state in its one transaction.  Memory stays flat: one chunk,
one page, the mailbox tree.

The stages are the engine's (sync/engine.py `_pass`), in the same order
with the same guards: folder selection and its deletion guard, folder
moves, keyword letters (allocated from the whole model before any chunk is
planned), the emptied-mailbox check of remote changes (a full read first),
arrival times, line endings, direction = archive (`keep`), foreign files
left alone, the folder stamp checked against what the pass leaves.

Not streamed: dry runs (they list every action anyway), partial passes
(small by nature) and two-way passes, whose three-way merge needs the scan,
the model and the last synced state together -- except a two-way first sync
into a Maildir with no folder at all, which has nothing to send and is a pull.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from jmapsync.jmap import changes, mail
from jmapsync.jmap.types import MailboxId
from jmapsync.maildir.files import split_rel
from jmapsync.state.db import JOURNAL_IMPORT, FileRecord
from jmapsync.state.staging import Staging
from jmapsync.sync import archive, arrival, folders, guards, letters, record, remote, scope
from jmapsync.sync import plan as planner
from jmapsync.sync.context import PassContext
from jmapsync.sync.execute import Executor
from jmapsync.sync.prints import Prints
from jmapsync.sync.report import ProgressFactory

if TYPE_CHECKING:
    from jmapsync.jmap.client import JmapClient

CHUNK = 4096  # Emails planned and carried out at a time


def applies(ctx: PassContext, partial: scope.Scope | None) -> bool:
    """Is this pass one to stream (see the module docstring)?"""
    if partial is not None or ctx.dry is not None:
        return False
    if not ctx.two_way:
        return True
    db, store = ctx.db, ctx.store
    return (
        db.email_state is None
        and not db.has_files()
        and not db.journal(JOURNAL_IMPORT)
        and not store.folders(ctx.account.layout)
    )


async def run(
    ctx: PassContext,
    client: JmapClient,
    delta: changes.Delta | None,
    *,
    account_id: str,
    started: float,
    old_paths: Mapping[MailboxId, str],
    was: frozenset[MailboxId],
    progress: ProgressFactory | None,
) -> None:
    """Steps 4-8 of the engine's pass, streamed."""
    db, store, report, layout = ctx.db, ctx.store, ctx.report, ctx.account.layout
    staging = Staging(db.conn)
    try:
        model = await _read(ctx, client, delta, staging)
        report.phases["remote"] = round(time.monotonic() - started, 3)
        t = time.monotonic()
        paths, folder_of = folders.mapped(ctx, model.mailboxes)
        deselected = sorted(
            old_paths[m]
            for m in was - (ctx.selected or frozenset())
            if m in model.mailboxes and m not in ctx.unmapped
        )
        was_paths = {m: p for m, p in old_paths.items() if m in was and m not in ctx.unmapped}
        folders.adopt_imap_names(ctx, folder_of)
        folders.refuse_deselected(ctx, db.files_per_folder() if deselected else {}, deselected)
        fplan = planner.plan_folders(was_paths, folder_of)
        folders.apply_before(ctx, fplan)
        letters.load(ctx, sorted(set(folder_of.values())), fplan.moves)
        excluded = frozenset(model.mailboxes) - (ctx.selected or frozenset()) - ctx.unmapped.keys()
        local_folders = set(store.folders(layout)) | set(folder_of.values())
        store.clean_partials(local_folders)
        report.phases["folders"] = round(time.monotonic() - t, 3)

        t = time.monotonic()
        pre_stamp = scope.local_stamp(ctx, folders.stamped(store, paths, folder_of, layout))
        staging.add_scan(store.scan(sorted(local_folders), lazy=True))
        letters.allocate(ctx, staging.emails(), folder_of)
        report.planned = staging.model_size()
        prints = Prints()
        foreign = 0
        for f in staging.foreign():
            foreign += 1
            prints.add(f.relpath)
        report.foreign = foreign
        if foreign:
            ctx.log.info(
                "local-files-left-alone",
                count=foreign,
                reason="not written by jmapsync; left as they are",
            )
        report.phases["scan_plan"] = round(time.monotonic() - t, 3)

        t = time.monotonic()
        executor = Executor(ctx, client, progress)
        await _chunks(ctx, executor, model, staging, folder_of, excluded, prints)
        folders.apply_after(ctx, fplan, set())
        store.dirsync.flush()
        report.phases["execute"] = round(time.monotonic() - t, 3)

        t = time.monotonic()
        if model.touched is None:
            arrival.mark_stamped(ctx)
        retry = sorted({d.email_id for d in executor.failed})
        record.record_streamed(ctx, account_id, model, paths, staging, prints, pre_stamp, retry)
        report.phases["record"] = round(time.monotonic() - t, 3)
        report.email_state = model.email_state
    finally:
        staging.close()
    if executor.error is not None:
        raise executor.error  # recorded, everything else done: as the engine's pass


async def _chunks(
    ctx: PassContext,
    executor: Executor,
    model: remote.RemoteModel,
    staging: Staging,
    folder_of: Mapping[MailboxId, str],
    excluded: frozenset[MailboxId],
    prints: Prints,
) -> None:
    """Plan and carry out each chunk; keep what it leaves in `staging`.  A
    download that fails leaves the plan (execute.py): its Email is recorded
    for the next passes to retry, and the pass ends failed after the record."""
    marked = False
    try:
        for emails, files in staging.chunks(CHUNK):
            plan = planner.plan_files(
                emails, folder_of, files, ctx.letters, excluded, keep=ctx.archive
            )
            if not plan.empty and not marked:
                ctx.mark_files_pending()  # before the first file action, as the engine does
                marked = True
            await executor.run(plan)
            if model.touched is None:  # a full read: every file's arrival time
                await asyncio.to_thread(arrival.set_times, ctx, plan, emails)
            await asyncio.to_thread(executor.line_endings, plan)
            owned = list(plan.owned())
            staging.add_files(_records(owned))
            prints.add_all(rel for rel, _eid in owned)
            staging.add_contents(ctx.new_contents)
            ctx.new_contents.clear()
            if ctx.archive:
                staging.add_kept(archive.kept_pairs(emails, folder_of, owned))
    except BaseException:
        # What did arrive is kept (the executor records the contents of its
        # own chunk when downloads fail): the earlier chunks' too.
        staging.add_contents(ctx.new_contents)
        with ctx.db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO main.contents SELECT * FROM temp.stage_contents")
        raise


def _records(owned: Iterable[tuple[str, str]]) -> Iterable[FileRecord]:
    for rel, eid in owned:
        folder, sub, name = split_rel(rel)
        yield FileRecord(folder, f"{sub}/{name}", eid)


async def _read(
    ctx: PassContext, client: JmapClient, delta: changes.Delta | None, staging: Staging
) -> remote.RemoteModel:
    """remote.read_model into `staging`: the model's Emails are there, the
    returned model holds the mailboxes and states only."""
    db, report = ctx.db, ctx.report
    if delta is not None:
        records = db.emails_by_id(set(delta.changed) | delta.destroyed)
        left = guards.left_by_mailbox(records, delta.changed, delta.destroyed, ctx.selected)
        staging.copy_records()
        staging.apply(delta.changed, delta.destroyed)
        emptied = {m for m in guards.many_left(left) if not staging.holds_mailbox(m)}
        if emptied:
            ctx.log.warning(
                "mailbox-emptied-remotely", mailboxes=sorted(emptied), action="full reconcile first"
            )
            delta = None
            staging.clear_model()
    if delta is not None:
        boxes = delta.mailboxes
        if boxes is None:
            boxes = {m: box for m, (box, _) in db.mailboxes().items()}
        touched = set(delta.changed) | delta.destroyed
        model = remote.RemoteModel({}, boxes, delta.mailbox_state, delta.email_state, touched)
    else:
        report.mode = "full"
        snap = await mail.fetch_all(client, sink=staging.add_emails)
        model = remote.RemoteModel({}, snap.mailboxes, snap.mailbox_state, snap.email_state, None)
        ctx.log.info("remote-read", emails=staging.model_size(), mailboxes=len(model.mailboxes))
    if not _named(staging) <= model.mailboxes.keys():
        # An Email names a mailbox created after our Mailbox read.
        model.mailbox_state, model.mailboxes = await mail.fetch_mailboxes(client)
    return model


def _named(staging: Staging) -> set[MailboxId]:
    """Every mailbox some Email of the model is in."""
    out: set[MailboxId] = set()
    for (ids,) in staging.conn.execute("SELECT DISTINCT mailbox_ids FROM temp.stage_model"):
        out.update(MailboxId(m) for m in str(ids).split())
    return out
