"""PURE: the guards against mass deletion, on both sides.

A Maildir root that vanished, a folder directory that vanished with its
messages, a folder emptied wholesale, or more deletions than `max_deletes`
are far more often an unmounted disk, a bad `rm` or a confused script than a
user's wish.  On the remote side, a mailbox that held many of our messages
and is suddenly empty in an incremental read is checked with a full read
before any local file goes.  The engine refuses (DeletionRefused) unless
`--force-deletes`; this module only says why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import TYPE_CHECKING

from jmapsync.jmap.types import Email, EmailId, MailboxId

if TYPE_CHECKING:  # a pull pass does not load the two-way planner
    from jmapsync.sync.twoway import PushPlan

# A folder (or mailbox) that held at least this many messages and lost them
# all in one pass looks like an accident.
EMPTIED_MIN = 10


def _listed(folders: list[str]) -> str:
    return ", ".join(repr(f) for f in folders[:5]) + (" ..." if len(folders) > 5 else "")


def missing_locally(
    held: Mapping[str, int], vanished: Iterable[str], root_missing: bool, root: Path
) -> str | None:
    """What vanished from the Maildir with messages in it, or None.

    Checked before anything is created on disk, so that the next run sees
    the same: in two-way mode syncing on would delete that mail on the server."""
    if root_missing:
        return f"the Maildir root {root} is missing"
    lost = sorted(f for f in vanished if held.get(f))
    if lost:
        return f"folder(s) {_listed(lost)} vanished with {sum(held[f] for f in lost)} messages"
    return None


def deletion_guard(plan: PushPlan, held: Mapping[str, int], *, max_deletes: int) -> list[str]:
    """Why the local deletions of this plan look like an accident; empty: they don't."""
    reasons = []
    n = plan.deletions
    emptied = sorted(
        f for f, k in plan.deleted_in.items() if k >= EMPTIED_MIN and k >= held.get(f, 0)
    )
    if emptied:
        listed = ", ".join(f"{f!r} ({plan.deleted_in[f]})" for f in emptied[:5])
        reasons.append(f"folder(s) emptied: {listed}")
    if n > max_deletes:
        reasons.append(f"{n} deletions in one pass, more than max_deletes = {max_deletes}")
    return reasons


def left_by_mailbox(
    records: Mapping[EmailId, Email],
    changed: Mapping[EmailId, Email],
    destroyed: Iterable[EmailId],
    only: Set[MailboxId] | None = None,
) -> Counter[MailboxId]:
    """How many of the Emails we hold (`records`) left each mailbox in these
    changes -- of the mailboxes in `only` (those mirrored), if given: an
    excluded mailbox emptied (Fastmail's Snoozed, when the messages wake up)
    deletes no file and needs no second look."""
    left: Counter[MailboxId] = Counter()
    for eid in set(destroyed) | set(changed):
        old, new = records.get(eid), changed.get(eid)
        if old is not None:
            gone = old.mailbox_ids - (new.mailbox_ids if new else frozenset())
            left.update(gone if only is None else gone & only)
    return left


def deselected(held: Mapping[str, int], folders: Iterable[str], max_deletes: int) -> str | None:
    """Why removing the local copies in folders `folders =` no longer selects
    looks like an accident (a typo in a pattern), or None.  The same bounds
    as a local delete: a folder of EMPTIED_MIN messages or more, or more
    than `max_deletes` files in all."""
    counts = {f: held[f] for f in sorted(folders) if held.get(f)}
    big = [f for f, n in counts.items() if n >= EMPTIED_MIN]
    total = sum(counts.values())
    if not big and total <= max_deletes:
        return None
    listed = ", ".join(f"{f!r} ({counts[f]})" for f in (big or list(counts))[:5])
    return f"folder(s) {listed} are no longer selected by `folders =` ({total} messages)"


def many_left(left: Counter[MailboxId]) -> set[MailboxId]:
    """Mailboxes that lost so many of our Emails that they may have been emptied."""
    return {m for m, k in left.items() if k >= EMPTIED_MIN}


def emptied_remotely(emails: Iterable[Email], left: Counter[MailboxId]) -> set[MailboxId]:
    """Mailboxes that lost many of our Emails and hold none of `emails` now."""
    many = many_left(left)
    for e in emails:
        if not many:
            break
        many -= e.mailbox_ids
    return many
