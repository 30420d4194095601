"""The server writes of the local->remote direction: Email/set, then imports.

Membership and keyword patches and the destroys go in Email/set calls of at
most maxObjectsInSet, each guarded by ifInState (a stateMismatch raises
MethodError: the engine runs the pass again from a fresh read).  Imports
come after, unguarded (Cyrus 3.6 refuses ifInState on Email/import; an
import only adds).  Every write is journaled, and committed, before it is
sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path

from jmapsync.errors import ProtocolError
from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId, MailboxId
from jmapsync.maildir import message
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.keywords import NO_LETTERS
from jmapsync.state.db import JOURNAL_IMPORT, JOURNAL_WRITE
from jmapsync.sync import twoway
from jmapsync.sync.context import PassContext
from jmapsync.sync.local_to_remote.mua_files import adopt
from jmapsync.sync.local_to_remote.outcome import Import, Outcome


def received_at(path: Path) -> str:
    """The file's time as receivedAt: mutt keeps a message's date as the mtime
    of the copies it writes, so the server sorts the message where it was."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))


async def send_updates(
    ctx: PassContext,
    client: JmapClient,
    plan: twoway.PushPlan,
    emails: Mapping[EmailId, Email],
    out: Outcome,
) -> None:
    """The plan's patches and destroys, in Email/set calls guarded by ifInState."""
    assert client.session is not None  # noqa: S101
    report = ctx.report
    size = client.session.limits.max_objects_in_set
    work: list[twoway.Update | str] = [*plan.updates, *plan.destroy]
    for start in range(0, len(work), size):
        chunk = work[start : start + size]
        updates = {u.email_id: dict(u.as_jmap()) for u in chunk if isinstance(u, twoway.Update)}
        destroy = [u for u in chunk if isinstance(u, str)]
        intent = {"update": sorted(updates), "destroy": destroy, "state": out.email_state}
        ctx.db.journal_add(JOURNAL_WRITE, intent)
        result = await mail.set_emails(client, out.email_state, updates, destroy)
        out.email_state = result.new_state
        for u in chunk:
            eid = EmailId(u if isinstance(u, str) else u.email_id)
            current = out.current(emails, eid)
            if isinstance(u, str) and u in result.destroyed:
                out.destroyed.add(eid)
                out.changed.pop(eid, None)
                report.destroyed += 1
            elif isinstance(u, twoway.Update) and u.email_id in result.updated and current:
                out.changed[eid] = u.apply(current)
                report.pushed += 1
            else:
                why = result.why(str(eid))
                msg = f"local change of {eid} refused: {why}"
                ctx.warn("change-not-sent", msg, email=str(eid), reason=why)
    if work:
        ctx.log.info(
            "local-changes-sent",
            updated=report.pushed,
            destroyed=report.destroyed,
            kept=len(plan.kept),
        )


async def import_files(
    ctx: PassContext,
    client: JmapClient,
    items: list[Import],
    emails: Mapping[EmailId, Email],
    mailbox_of: Mapping[str, MailboxId],
    out: Outcome,
) -> None:
    """Upload and Email/import new local messages (and re-imports), journaled:
    intent before the upload, the new Email id right after the answer."""
    assert client.session is not None  # noqa: S101
    db, report, store = ctx.db, ctx.report, ctx.store
    limits = client.session.limits
    batch = max(1, min(limits.max_objects_in_set, 50))
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        pending: dict[str, tuple[LocalFile, bytes, int, dict[str, object]]] = {}
        boxes: dict[str, frozenset[str]] = {}
        for i, (f, raw, mailbox_ids) in enumerate(chunk):
            data = message.upload_form(raw)
            if len(data) > limits.max_size_upload:
                why = f"{len(data)} bytes, over the server's maxSizeUpload"
                ctx.warn(
                    "import-skipped", f"{f.relpath} not imported: {why}", path=f.relpath, reason=why
                )
                continue
            intent: dict[str, object] = {
                "path": f.relpath,
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "mailbox": mailbox_of[f.folder],
            }
            seq = db.journal_add(JOURNAL_IMPORT, intent)
            intent["blob_id"] = await client.upload(data)
            pending[f"i{i}"] = (f, data, seq, intent)
            boxes[f"i{i}"] = mailbox_ids or frozenset({mailbox_of[f.folder]})
        if not pending:
            continue
        items_jmap = {
            cid: mail.ImportItem(
                blob_id=str(intent["blob_id"]),
                mailbox_ids=boxes[cid],
                keywords=ctx.letters.get(f.folder, NO_LETTERS).keywords_in(f.flags),
                received_at=received_at(store.path(f.relpath)),
            )
            for cid, (f, _data, _seq, intent) in pending.items()
        }
        result = await mail.import_emails(client, out.email_state, items_jmap)
        out.email_state = result.new_state
        for cid, (f, data, seq, intent) in pending.items():
            email = result.created.get(cid)
            if email is not None:
                db.journal_update(seq, intent | {"email_id": email.id})
                await asyncio.to_thread(adopt, ctx, f, data, email)
                out.changed[email.id] = email
                out.destroyed.discard(email.id)
                report.imported += 1
                out.rescan = True
                continue
            err = result.failed.get(cid, {})
            existing = err.get("existingId")
            if err.get("type") == "alreadyExists" and isinstance(existing, str):
                await _join_existing(ctx, client, f, EmailId(existing), emails, mailbox_of, out)
            else:
                why = result.why(cid)
                msg = f"{f.relpath} not imported: {why}"
                ctx.warn("import-refused", msg, path=f.relpath, reason=why)
    if report.imported:
        ctx.log.info("local-messages-imported", count=report.imported)


async def _join_existing(
    ctx: PassContext,
    client: JmapClient,
    f: LocalFile,
    eid: EmailId,
    emails: Mapping[EmailId, Email],
    mailbox_of: Mapping[str, MailboxId],
    out: Outcome,
) -> None:
    """The server already holds these bytes (Cyrus: same content, same
    id): the Email joins this folder's mailbox, and its bytes replace
    the file once they are in place."""
    mid = mailbox_of[f.folder]
    e = out.current(emails, eid)
    if e is None:
        raise ProtocolError(f"Email/import: alreadyExists names {eid}, which is not there")
    if mid not in e.mailbox_ids:
        update = twoway.Update(eid, join=frozenset({mid}), reason="move")
        # Unguarded: after an import our state is behind (see import_emails),
        # and a patch of one mailbox key cannot overwrite anyone's change.
        result = await mail.set_emails(client, None, {eid: dict(update.as_jmap())}, [])
        if eid not in result.updated:
            why = result.why(eid)
            ctx.log.warning("import-refused", path=f.relpath, reason=why)
            return
        out.changed[eid] = update.apply(e)
    out.superseded.append((f.relpath, eid))
