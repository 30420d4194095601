"""`direction = archive`: a pull that never lets a message leave the Maildir.

Like pull, the server is the truth and nothing is sent.  Unlike pull:

* an Email the server destroys (or expunges) keeps its files;
* an Email that leaves a mailbox keeps its file in that mailbox's folder; a
  move on the server adds the file to the new folder (a hard link): every
  folder keeps what it ever held;
* keyword changes still rename the files (all of them, kept copies too);
* the folder of a mailbox the server removed stays with its files.

The plan does the keeping (``plan_files(keep=True)``); this module keeps the
books: the ``archived`` table holds one row per (Email, folder) whose file
the server no longer backs -- the Email is gone entirely ("gone"), or only
no longer in that mailbox ("moved") -- with the time this was first seen.
``jmapsync status`` counts them, ``jmapsync verify`` accepts them.

Switching: pull or two-way -> archive is always safe (from then on nothing
is removed).  Archive -> pull would remove every kept file at the next pass:
refused while any is recorded, unless ``sync --force-deletes``.  Archive ->
two-way is refused while any is recorded, even with --force-deletes: a kept
copy in a folder its Email left would read as "the user put it back there"
and be sent to the server.  Switch to pull with --force-deletes first (or
move the kept files out of the Maildir).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping

from jmapsync.errors import DeletionRefused
from jmapsync.jmap.types import Email, EmailId, MailboxId
from jmapsync.maildir.files import split_rel
from jmapsync.state import archived
from jmapsync.state.archived import Archived
from jmapsync.sync.context import PassContext


def refuse_switch(ctx: PassContext) -> None:
    """Before a pass in pull or two-way mode: refuse to drop what archive kept."""
    if ctx.archive:
        return
    count = archived.count(ctx.db.conn)
    if not count:
        return
    if ctx.two_way:
        raise DeletionRefused(
            f"refusing to sync: {count} files were kept by direction = archive (the server no"
            " longer has them there), and two-way sync would send them back to the server."
            " Nothing was changed. Set direction = archive again, or switch to pull and run"
            " `jmapsync sync --force-deletes` once to delete them, then to two-way"
        )
    if not ctx.force_deletes:
        raise DeletionRefused(
            f"refusing to sync: {count} files were kept by direction = archive (the server no"
            " longer has them there); direction = pull would delete them. Nothing was changed."
            " Set direction = archive again, move them out of the Maildir, or run"
            " `jmapsync sync --force-deletes` to delete them"
        )
    # Let them go, all of them: a partial pass would only see some folders.
    ctx.log.warning("archive-released", files=count, reason="--force-deletes in pull mode")
    ctx.rewrite_files = True


def kept_pairs(
    emails: Mapping[EmailId, Email],
    folder_of: Mapping[MailboxId, str],
    owned: Iterable[tuple[str, str]],
) -> dict[tuple[str, str], bool]:
    """(Email id, folder) -> gone, for each file after the plan that the
    server does not back: its Email is gone (True) or not in the mailbox of
    that folder (False).  An Email in a mailbox we cannot map is left out:
    its files are left as they are, not archived."""
    out: dict[tuple[str, str], bool] = {}
    for rel, eid in owned:
        folder = split_rel(rel)[0]
        email = emails.get(EmailId(eid))
        if email is None:
            out[(eid, folder)] = True
            continue
        if not email.mailbox_ids or any(m not in folder_of for m in email.mailbox_ids):
            continue
        if folder not in {folder_of[m] for m in email.mailbox_ids}:
            out[(eid, folder)] = False
    return out


def record(
    conn: sqlite3.Connection,
    pairs: Mapping[tuple[str, str], bool],
    planned: set[str] | None,
) -> None:
    """Bring the archived table in line with this pass (inside record's
    transaction): rows of the Emails planned (None: all) are replaced by
    `pairs`, keeping the time a pair was first seen."""
    old = archived.load(conn)
    now = time.time()
    rows: list[Archived] = []
    drop: list[tuple[str, str]] = []
    for key, row in old.items():
        if planned is None or key[0] in planned:
            if key not in pairs:
                drop.append(key)
            elif pairs[key] != row.gone:
                rows.append(Archived(key[0], key[1], row.since, pairs[key]))
    rows += [Archived(k[0], k[1], now, gone) for k, gone in pairs.items() if k not in old]
    archived.update(conn, drop, rows)


def clear(conn: sqlite3.Connection) -> None:
    """Not in archive mode: nothing is kept (a forced pull removed it)."""
    archived.update(conn, None, [])
