"""Arrival times on disk: every message file's mtime is its Email's receivedAt.

As with mbsync's ``CopyArrivalDate``, so that mutt's "sort by date-received",
``ls -t`` and a later ``jmapsync restore`` (which reads receivedAt back from
the mtime) agree with the server.  Files get it when they are written
(downloads, imports adopted under our name; a rewrite or a copy keeps the
old file's); a rename keeps it, a hard link shares it.

Mirrors written before this rule are fixed by a full reconcile, from the
receivedAt the full read brings, without downloading anything: one stat per
file, a utime where it differs.  A state database that never had a full
reconcile stamp its files (meta ``arrival_times``) makes the next pass one.
Every later full reconcile (the daemon's daily one) checks again, so a file
touched by another program gets its time back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from jmapsync.jmap.types import Email, EmailId

if TYPE_CHECKING:  # sync/quick.py asks needs_full() without loading the engine
    from jmapsync.state.db import StateDB
    from jmapsync.sync.context import PassContext
    from jmapsync.sync.plan import FilePlan

META = "arrival_times"


def needs_full(db: StateDB) -> bool:
    """True until a full reconcile has stamped this mirror's files."""
    return db.get_meta(META) != "1"


def stamp(ctx: PassContext, plan: FilePlan, emails: Mapping[EmailId, Email]) -> int:
    """After a full reconcile's file actions: every kept file gets its Email's
    receivedAt as mtime (downloads have it already); the number changed."""
    changed = set_times(ctx, plan, emails)
    mark_stamped(ctx)
    return changed


def set_times(ctx: PassContext, plan: FilePlan, emails: Mapping[EmailId, Email]) -> int:
    """stamp() without the mark (a streamed pass: chunk by chunk, then once
    mark_stamped())."""
    changed = 0
    for rel, eid in plan.final.items():
        email = emails.get(EmailId(eid))
        if email is not None and ctx.store.set_arrival(rel, email.received_at):
            changed += 1
    if changed:
        ctx.log.info("arrival-times-set", files=changed)
    return changed


def mark_stamped(ctx: PassContext) -> None:
    with ctx.db.transaction() as conn:
        ctx.db.set_meta(conn, META, "1")
