"""Adopting another tool's Maildir: folders that are leftovers, not new mailboxes.

Pointed at a Maildir that mbsync or OfflineIMAP wrote, the first two-way
pass finds folders no mailbox maps to: IMAP modified UTF-7 names
(sync/folders.py moves those to their mailbox's folder), OfflineIMAP's
default `sep = .` folders (`Work.Projects` for `Work/Projects`), a folder of
a mailbox deleted meanwhile.  Creating a mailbox for each would copy the
other tool's naming onto the server.

A new folder is an *adoption leftover* when it holds at least one message,
none written by jmapsync, and every one of them is a message the server
already has (the same bytes as a file we hold, or the same Message-ID and
body as an Email there) -- AND it was found on the account's first two-way
pass (the moment of adoption), or was a leftover before with the same files
since.  Later, a new folder full of copies is the user's (mutt's "copy to a
new folder") and becomes a mailbox as always.  A leftover is logged (once)
and left alone: no mailbox, its files untouched (they are in no mailbox's
folder, so no pass changes them).  A leftover that gains another file is
looked at again: a message the server lacks makes it a new folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping

from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId
from jmapsync.maildir import message
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.lineendings import server_bytes
from jmapsync.sync.context import PassContext
from jmapsync.sync.local_to_remote.mua_files import by_message_id
from jmapsync.sync.record import LEFTOVERS

META = LEFTOVERS  # folder -> [file count, hash of names]; absent: no two-way pass yet


def _fingerprint(files: list[LocalFile]) -> list[int]:
    names = "\n".join(sorted(f.relpath for f in files)).encode()
    return [len(files), int.from_bytes(hashlib.sha256(names).digest()[:6], "big")]


async def leftovers(
    ctx: PassContext, client: JmapClient, new: list[str], emails: Mapping[EmailId, Email]
) -> set[str]:
    """The folders of `new` that are adoption leftovers (module docstring)."""
    db = ctx.db
    raw = db.get_meta(META)
    first = raw is None
    recorded: dict[str, list[int]] = json.loads(raw) if raw else {}
    found: dict[str, list[int]] = {}
    for folder in new:
        if not first and folder not in recorded:
            continue
        files = list(ctx.store.scan([folder]))
        fp = _fingerprint(files)
        if recorded.get(folder) == fp:
            found[folder] = fp  # said so before; nothing changed there
            continue
        ours = any(f.email_id is not None for f in files)
        if files and not ours and await _all_known(ctx, client, files, emails):
            found[folder] = fp
            msg = (
                f"folder {folder!r} holds only messages the server has in other mailboxes"
                " (left by the tool that wrote this Maildir?): no mailbox created for it;"
                " delete it when you no longer need it"
            )
            ctx.warn("folder-left-over", msg, folder=folder, files=len(files))
    if first or found != recorded:
        with db.transaction() as conn:
            db.set_meta(conn, META, json.dumps(found, sort_keys=True))
    return set(found)


async def _all_known(
    ctx: PassContext, client: JmapClient, files: list[LocalFile], emails: Mapping[EmailId, Email]
) -> bool:
    """Every file is a message the server has: same bytes as a file we hold,
    or the same Message-ID and body as an Email there."""
    contents = ctx.db.contents() | ctx.new_contents
    by_sha = {(c.sha256, c.form) for eid, c in contents.items() if EmailId(eid) in emails}
    rest: list[tuple[bytes, str]] = []
    for f in files:
        try:
            raw = await asyncio.to_thread(ctx.store.read, f.relpath)
        except FileNotFoundError:
            return False
        if (hashlib.sha256(raw).hexdigest(), "exact") in by_sha:
            continue
        if b"\r" not in raw:
            lf_sha = hashlib.sha256(server_bytes(raw, "lf")).hexdigest()
            if (lf_sha, "lf") in by_sha:
                continue
        mid = message.message_id(raw)
        if mid is None:
            return False
        rest.append((raw, mid))
    candidates = await by_message_id(client, {mid for _, mid in rest})
    for raw, mid in rest:
        for cand in candidates.get(mid, []):
            e = emails.get(EmailId(cand))
            blob = await ctx.fetch_blob(client, e.blob_id, e.size) if e is not None else None
            if blob is not None and message.same_body(raw, blob):
                break
        else:
            return False
    return True
