"""Stage 5, record: what this pass made true, in ONE transaction, states last.

Mailboxes and their paths, the changed Emails, content hashes, the file list
(updated by this pass's actions; rewritten whole after a full read, a folder
move, or a `files_pending` mark left by a pass that died), the folders' times
for the next "unchanged" check -- and only then the new Email and Mailbox
state strings.  A crash before the commit leaves the old states: the next pass
fetches the same changes again and finds their files already in place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from sqlite3 import Connection

from jmapsync.jmap.types import MailboxId
from jmapsync.maildir.files import split_rel
from jmapsync.state.db import FileRecord
from jmapsync.state.staging import Staging
from jmapsync.sync import archive, letters
from jmapsync.sync import folders as local_folders
from jmapsync.sync import scope as local_scope
from jmapsync.sync.context import PassContext
from jmapsync.sync.plan import FilePlan
from jmapsync.sync.prints import Prints
from jmapsync.sync.remote import RemoteModel
from jmapsync.sync.stamp import Times

# The meta key of local_to_remote/adoption.py (which imports it from here):
# a pull-only pass must not load the two-way stages to name it.
LEFTOVERS = "leftover_folders"


def record(
    ctx: PassContext,
    account_id: str,
    model: RemoteModel,
    paths: Mapping[MailboxId, str],
    plan: FilePlan,
    scope: local_scope.Scope | None,
    pre_stamp: Times,
    removed_foreign: set[str],
    retry: list[str] | None = None,
) -> None:
    """`retry`: Emails whose download failed this pass (their files are not in
    the plan any more): the next passes plan them again until they arrive."""
    db = ctx.db
    emails, touched = model.emails, model.touched
    selected, folder_of = _selected(ctx, model, paths)

    def files() -> Iterator[FileRecord]:
        for rel, eid in plan.owned():
            folder, sub, name = split_rel(rel)
            yield FileRecord(folder, f"{sub}/{name}", eid)

    with db.transaction() as conn:
        _mailboxes(ctx, conn, model, paths)
        if touched is None:
            conn.execute("DELETE FROM emails")
            db.put_emails(conn, emails.values())
        else:
            db.delete_emails(conn, (e for e in touched if e not in emails))
            db.put_emails(conn, (emails[e] for e in touched if e in emails))
        if touched is None or ctx.rewrite_files or scope is None or scope.dirty:
            # After a full read, when an earlier pass died between its first
            # file action and its commit, or whenever a scanned folder may
            # hold the user's own renames (which are not the plan's actions:
            # a file moved out of a folder would stay recorded there, and a
            # later partial pass would trust that phantom): the table is
            # rewritten whole, streamed from the plan -- or, in a partial
            # pass, the rows of the Emails and folders it looked at.
            if scope is None:
                db.replace_all_files(conn, files())
            else:
                planned = scope.ids | {eid for _, eid in plan.owned()}
                db.replace_files_of(conn, planned, scope.dirty, files())
            db.prune_contents(conn)
        elif not plan.empty:
            db.update_files(conn, *_file_changes(plan))
            # Only a remove can take an Email's last file.
            db.prune_contents(conn, (r.email_id for r in plan.removes))
        if ctx.archive:
            looked = None if scope is None else scope.ids | {eid for _, eid in plan.owned()}
            archive.record(conn, archive.kept_pairs(emails, folder_of, plan.owned()), looked)
        else:
            archive.clear(conn)  # a forced pull removed what archive had kept
        db.put_contents(conn, ctx.new_contents)
        letters.record(ctx, conn, None if scope is None else scope.dirty)
        stamped = local_folders.stamped(ctx.store, paths, folder_of, ctx.account.layout)
        stamp = local_scope.stamp_to_record(
            ctx, stamped, pre_stamp, plan, scope, removed_foreign, conn
        )
        _meta(ctx, conn, account_id, model, selected, stamp, retry)


def record_streamed(
    ctx: PassContext,
    account_id: str,
    model: RemoteModel,
    paths: Mapping[MailboxId, str],
    staging: Staging,
    prints: Prints,
    pre_stamp: Times,
    retry: list[str] | None = None,
) -> None:
    """record() for a streamed pass (sync/stream.py): Emails, files, contents
    and kept pairs come from its temporary tables; every folder was scanned."""
    selected, folder_of = _selected(ctx, model, paths)
    with ctx.db.transaction() as conn:
        _mailboxes(ctx, conn, model, paths)
        staging.record_into(conn)
        if ctx.archive:
            archive.record(conn, staging.kept(), None)
        else:
            archive.clear(conn)
        letters.record(ctx, conn, None)
        stamped = local_folders.stamped(ctx.store, paths, folder_of, ctx.account.layout)
        stamp = local_scope.stamp_streamed(ctx, stamped, pre_stamp, prints)
        if ctx.two_way and ctx.db.get_meta(LEFTOVERS) is None:
            # A streamed two-way pass is a first sync into a Maildir without
            # folders: nothing there to adopt, and a folder made from now
            # on is the user's (adoption.py learns of the first two-way
            # pass from this key, which the unstreamed pass's stage writes).
            ctx.db.set_meta(conn, LEFTOVERS, "{}")
        _meta(ctx, conn, account_id, model, selected, stamp, retry)


def _selected(
    ctx: PassContext, model: RemoteModel, paths: Mapping[MailboxId, str]
) -> tuple[frozenset[MailboxId], dict[MailboxId, str]]:
    selected = frozenset(model.mailboxes) if ctx.selected is None else ctx.selected
    return selected, {m: p for m, p in paths.items() if m in selected}


def _mailboxes(
    ctx: PassContext, conn: Connection, model: RemoteModel, paths: Mapping[MailboxId, str]
) -> None:
    """Every mailbox with its path, mirrored or not: a rename is a folder
    move, and a mailbox selected later keeps its history.  A mailbox whose
    name cannot become a folder keeps the path it had (its files stay
    there; a later, safe name moves them); one that never had a folder is
    not recorded."""
    db = ctx.db
    recorded = {m: p for m, (_, p) in db.mailboxes().items()} if ctx.unmapped else {}
    kept = {m: recorded[m] for m in ctx.unmapped if m in recorded}
    db.put_mailboxes(
        conn,
        (
            (m, paths[m.id] if m.id in paths else kept[m.id])
            for m in model.mailboxes.values()
            if m.id in paths or m.id in kept
        ),
    )


def _meta(
    ctx: PassContext,
    conn: Connection,
    account_id: str,
    model: RemoteModel,
    selected: frozenset[MailboxId],
    stamp: str,
    retry: list[str] | None,
) -> None:
    """The rest of the record, the states last."""
    db, account = ctx.db, ctx.account
    db.set_meta(conn, "files_pending", None)
    db.journal_clear(conn, None)  # every intent of this pass is done and recorded
    db.set_meta(conn, "line_endings", account.line_endings)
    db.set_meta(conn, "contents_complete", "1")
    db.set_meta(conn, "local_stamp", stamp)
    db.set_meta(conn, "selected", json.dumps(sorted(selected)))
    db.set_meta(conn, "folders", " ".join(account.folders))
    db.set_meta(conn, "account_id", account_id)
    db.set_meta(conn, "skipped", json.dumps(ctx.report.skipped) if ctx.report.skipped else None)
    db.set_meta(conn, "unmapped", json.dumps(sorted(ctx.unmapped)) if ctx.unmapped else None)
    db.set_meta(conn, "retry_downloads", json.dumps(retry) if retry else None)
    # Only now, with every file of this pass on disk and the
    # directories fsynced, do the states advance.
    db.set_meta(conn, "email_state", model.email_state)
    db.set_meta(conn, "mailbox_state", model.mailbox_state)


def _file_changes(plan: FilePlan) -> tuple[list[tuple[str, str]], list[FileRecord]]:
    """(folder, "sub/name") rows that go, and rows that come, by the plan's actions."""

    def row(rel: str) -> tuple[str, str]:
        folder, sub, name = split_rel(rel)
        return folder, f"{sub}/{name}"

    gone = [row(r.src) for r in plan.renames] + [row(r.path) for r in plan.removes]
    came = [(r.dst, r.email_id) for r in plan.renames]
    came += [(lk.dst, lk.email_id) for lk in plan.links]
    for d in plan.downloads:
        came += [(dst, d.email_id) for dst in (d.dst, *d.links)]
    return gone, [FileRecord(*row(rel), eid) for rel, eid in came]
