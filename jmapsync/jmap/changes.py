"""RFC 8621 */changes: what changed since the stored states.

One request carries Mailbox/changes, Email/changes and the two Email/get
calls that back-reference its `/created` and `/updated`, so a sync with
nothing new is ONE round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jmapsync import log
from jmapsync.errors import CannotCalculateChanges, MethodError, ProtocolError
from jmapsync.jmap.api import Invocation, Responses
from jmapsync.jmap.types import EMAIL_PROPERTIES, Changes, Email, EmailId, Mailbox, MailboxId, State

if TYPE_CHECKING:  # sync/quick.py builds and reads the first round without a client
    from jmapsync.jmap.client import JmapClient

# Errors from */changes that mean "your state is no good here": full reconcile.
# Cyrus answers a bogus state with invalidArguments, not cannotCalculateChanges.
RESYNC_ERRORS = {"cannotCalculateChanges", "invalidArguments"}
# Mailbox properties a pass does not keep (the counts): a Mailbox/changes
# naming only these (`updatedProperties`, RFC 8621 2.2) leaves the tree as it
# was.  Cyrus answers so for every message added, removed or flagged in a
# mailbox: without this, every pass after a change would read the whole
# tree again, and a no-change pass after our own writes would not be one.
COUNTS = frozenset({"totalEmails", "unreadEmails", "totalThreads", "unreadThreads"})
# */changes rounds in one read.  At maxChanges 4096 that is a million
# changes; past it a full reconcile is cheaper, and a server that says
# hasMoreChanges forever cannot keep a pass going.
MAX_CHANGE_ROUNDS = 256


@dataclass
class Delta:
    """What changed since the stored states."""

    mailbox_state: State
    email_state: State
    mailboxes: dict[MailboxId, Mailbox] | None  # None: unchanged; else the FULL new set
    changed: dict[EmailId, Email] = field(default_factory=dict)
    destroyed: set[EmailId] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return self.mailboxes is None and not self.changed and not self.destroyed


async def fetch_changes(client: JmapClient, mailbox_state: State, email_state: State) -> Delta:
    """Everything changed since the two states; raises CannotCalculateChanges
    (also for invalidArguments) when a full reconcile is needed.

    `hasMoreChanges` is followed for at most MAX_CHANGE_ROUNDS requests, and
    only while it makes progress: a round that says "more" but answers with
    the state it was asked from (a broken server, or one looping) would
    never end.  Either way the pass falls back to a full reconcile, which
    needs no */changes at all."""
    from jmapsync.jmap.mail import emails_in, fetch_mailboxes

    assert client.session is not None  # noqa: S101
    aid = client.session.account_id
    max_changes = max_changes_of(client.session.limits.max_objects_in_get)
    delta = Delta(mailbox_state=mailbox_state, email_state=email_state, mailboxes=None)
    first = True
    mailbox_more = True
    email_more = True
    for _ in range(MAX_CHANGE_ROUNDS):
        calls = round_calls(
            aid,
            delta.mailbox_state if mailbox_more else None,
            delta.email_state if email_more else None,
            max_changes,
        )
        r = await client.call(calls)
        if mailbox_more:
            mchanges = parse_changes(r, "mc", "Mailbox")
            if not first and mchanges.old_state != delta.mailbox_state:
                raise ProtocolError("Mailbox/changes: oldState does not match sinceState")
            if tree_changed(mchanges):
                delta.mailboxes = {}  # marks "changed"; filled below with the full set
            _check_progress("Mailbox/changes", mchanges, delta.mailbox_state)
            delta.mailbox_state = mchanges.new_state
            mailbox_more = mchanges.has_more
        if email_more:
            echanges = parse_changes(r, "ec", "Email")
            _check_progress("Email/changes", echanges, delta.email_state)
            for e in emails_in(r.result("e1")) + emails_in(r.result("e2")):
                delta.changed[e.id] = e
                delta.destroyed.discard(e.id)
            for eid in echanges.destroyed:
                delta.changed.pop(EmailId(eid), None)
                delta.destroyed.add(EmailId(eid))
            # An id in created/updated that Email/get did not return was
            # destroyed in between; the next changes call reports it.
            delta.email_state = echanges.new_state
            email_more = echanges.has_more
        first = False
        if not mailbox_more and not email_more:
            break
    else:
        log.get().warning("changes-rounds-exhausted", rounds=MAX_CHANGE_ROUNDS)
        raise CannotCalculateChanges(
            "Email/changes", "tooManyRounds", f"hasMoreChanges after {MAX_CHANGE_ROUNDS} rounds"
        )
    if delta.mailboxes is not None:
        # Mailboxes are few: take the whole tree rather than patching it.
        state, boxes = await fetch_mailboxes(client)
        delta.mailboxes = boxes
        delta.mailbox_state = state
    return delta


def tree_changed(c: Changes) -> bool:
    """Did a Mailbox/changes answer change more than the counts?"""
    counts_only = c.updated_properties is not None and c.updated_properties <= COUNTS
    return bool(c.created or c.destroyed or (c.updated and not counts_only))


def round_calls(
    aid: str, mailbox_state: State | None, email_state: State | None, max_changes: int
) -> list[Invocation]:
    """One round's calls: Mailbox/changes since `mailbox_state` (None: not
    asked), Email/changes since `email_state` (None: not asked) and the two
    Email/get of its created and updated ids."""
    calls: list[Invocation] = []
    if mailbox_state is not None:
        calls.append(("Mailbox/changes", {"accountId": aid, "sinceState": mailbox_state}, "mc"))
    if email_state is not None:
        calls += [
            (
                "Email/changes",
                {"accountId": aid, "sinceState": email_state, "maxChanges": max_changes},
                "ec",
            ),
            _get_ref("ec", "/created", "e1", aid),
            _get_ref("ec", "/updated", "e2", aid),
        ]
    return calls


def max_changes_of(max_objects_in_get: int) -> int:
    """maxChanges of Email/changes: what one Email/get may fetch, at most 4096."""
    return min(max_objects_in_get, 4096)


def _check_progress(method: str, changes: Changes, since: State) -> None:
    """More to come, yet no step forward: a loop.  Full reconcile instead."""
    if changes.has_more and changes.new_state == since:
        log.get().warning("changes-no-progress", method=method, state=since)
        raise CannotCalculateChanges(method, "noProgress", "hasMoreChanges without a new state")


def _get_ref(source: str, path: str, call_id: str, aid: str) -> Invocation:
    return (
        "Email/get",
        {
            "accountId": aid,
            "#ids": {"resultOf": source, "name": "Email/changes", "path": path},
            "properties": EMAIL_PROPERTIES,
        },
        call_id,
    )


def parse_changes(r: Responses, call_id: str, what: str) -> Changes:
    """A */changes answer; CannotCalculateChanges when a full reconcile is due."""
    try:
        result = r.result(call_id)
    except MethodError as exc:
        if exc.type in RESYNC_ERRORS:
            raise CannotCalculateChanges(exc.method, exc.type, exc.description) from None
        raise
    return Changes.parse(result, what)
