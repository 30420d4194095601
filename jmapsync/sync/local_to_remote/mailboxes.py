"""Local folders -> mailboxes: new folders are created on the server, folders
removed while empty destroy their mailbox -- only when it is empty there too.

Runs before any folder is created locally, so that a new local folder is not
mistaken for a mailbox's missing folder.
"""

from __future__ import annotations

from collections.abc import Mapping

from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId, Mailbox, MailboxId
from jmapsync.maildir.names import mailbox_path_components
from jmapsync.state.db import JOURNAL_WRITE
from jmapsync.sync.context import PassContext
from jmapsync.sync.folders import imap_names
from jmapsync.sync.local_to_remote.adoption import leftovers

INBOX = "INBOX"


async def sync_folders(
    ctx: PassContext,
    client: JmapClient,
    old: Mapping[MailboxId, str],
    mailboxes: Mapping[MailboxId, Mailbox],
    folder_of: Mapping[MailboxId, str],
    held: Mapping[str, int],
    vanished: list[str],
    emails: Mapping[EmailId, Email],
) -> bool:
    """Create mailboxes for new local folders, destroy the mailboxes of
    folders removed while empty.  True if the server's mailboxes changed."""
    changed = await _create_mailboxes(ctx, client, old, mailboxes, folder_of, emails)
    for path in vanished:
        if held.get(path):
            continue  # removed with messages in it: the deletion guard decides
        [mid] = [m for m, p in folder_of.items() if p == path]
        box = mailboxes[mid]
        children = any(b.parent_id == mid for b in mailboxes.values())
        why = None
        if box.role:
            why = f"it is the {box.role} mailbox"
        elif children:
            why = "the mailbox has child mailboxes"
        elif box.total_emails:
            why = f"the mailbox holds {box.total_emails} messages on the server"
        else:
            ctx.db.journal_add(JOURNAL_WRITE, {"mailbox_destroy": mid, "folder": path})
            why = await mail.destroy_mailbox(client, mid)
        if why is None:
            ctx.report.mailboxes_destroyed += 1
            ctx.log.info("mailbox-destroyed", folder=path, reason="folder removed locally")
            changed = True
        else:
            msg = f"folder {path!r} was removed locally but is kept: {why}"
            ctx.warn("folder-recreated", msg, folder=path, reason=why)
    return changed


async def _create_mailboxes(
    ctx: PassContext,
    client: JmapClient,
    old: Mapping[MailboxId, str],
    mailboxes: Mapping[MailboxId, Mailbox],
    folder_of: Mapping[MailboxId, str],
    emails: Mapping[EmailId, Email],
) -> bool:
    layout = ctx.account.layout
    known = set(folder_of.values()) | set(old.values())
    new = [f for f in ctx.store.folders(layout) if f not in known]
    # Another sync tool's folders, not the user's new ones (adoption.py).
    new = [f for f in new if f not in await leftovers(ctx, client, new, emails)]
    if not new:
        return False
    by_names: dict[tuple[str, ...], str] = {}
    for m, path in folder_of.items():
        try:
            by_names[tuple(mailbox_path_components(path, layout))] = m
        except ValueError:
            continue
    inbox = next((m for m, b in mailboxes.items() if b.role == "inbox"), None)
    if inbox is not None:
        by_names.setdefault((INBOX,), inbox)
    wanted: set[tuple[str, ...]] = set()
    for folder in new:
        try:
            names = tuple(mailbox_path_components(folder, layout))
        except ValueError as exc:
            msg = f"folder {folder!r} not created on the server: {exc}"
            ctx.warn("folder-not-created", msg, folder=folder, reason=str(exc))
            continue
        if imap_names(list(names)) is not None:
            # An IMAP modified UTF-7 name of no mailbox here (folders.py moved
            # those of existing ones): most likely another tool's folder of a
            # mailbox since deleted -- never a name to create on the server.
            why = "an IMAP modified UTF-7 name (mbsync, OfflineIMAP) of no mailbox"
            msg = f"folder {folder!r} not created on the server: {why}"
            ctx.warn("folder-not-created", msg, folder=folder, reason=why)
            continue
        # Every missing ancestor too (a verbatim "a/b" whose "a" has no cur/).
        wanted.update(names[:i] for i in range(1, len(names) + 1))
    wanted -= set(by_names)
    if not wanted:
        return False
    # One Mailbox/set per depth: a parent exists before its children.
    for depth in sorted({len(n) for n in wanted}):
        level = sorted(n for n in wanted if len(n) == depth)
        creates: dict[str, tuple[str, str | None]] = {}
        for i, names in enumerate(level):
            parent = by_names.get(names[:-1]) if depth > 1 else None
            if depth > 1 and parent is None:
                continue  # its parent could not be created: reported below
            creates[f"c{i}"] = (names[-1], parent)
        if not creates:
            continue
        paths = sorted("/".join(level[int(cid[1:])]) for cid in creates)
        ctx.db.journal_add(JOURNAL_WRITE, {"mailbox_create": paths})
        ids, failed = await mail.create_mailboxes(client, creates)
        for cid, (name, _parent) in creates.items():
            names = level[int(cid[1:])]
            if cid in ids:
                by_names[names] = ids[cid]
                ctx.report.mailboxes_created += 1
                ctx.log.info("mailbox-created", name="/".join(names))
            else:
                why = failed.get(cid, "no answer")
                msg = f"mailbox {name!r} not created: {why}"
                ctx.warn("mailbox-not-created", msg, name="/".join(names), reason=why)
    return True
