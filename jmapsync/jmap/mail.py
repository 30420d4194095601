"""RFC 8621 reads: the whole account (full reconcile) or what changed since a state.

Both functions pack as many calls into one request as back-references allow,
so a sync with nothing new is ONE round trip (Mailbox/changes + Email/changes
+ the gets that would fetch their results).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jmapsync import log
from jmapsync.errors import CannotCalculateChanges, MethodError, ProtocolError
from jmapsync.jmap.calls import Invocation, Responses
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import (
    EMAIL_PROPERTIES,
    MAILBOX_PROPERTIES,
    Changes,
    Email,
    EmailId,
    Mailbox,
    MailboxId,
    State,
    parse_id,
    parse_state,
)
from jmapsync.jmap.writes import (
    ImportItem,
    WriteResult,
    create_mailboxes,
    destroy_mailbox,
    import_emails,
    set_emails,
)

# The writes live in jmap/writes.py; callers know them as mail.set_emails etc.
__all__ = [
    "Delta",
    "ImportItem",
    "Snapshot",
    "WriteResult",
    "create_mailboxes",
    "destroy_mailbox",
    "fetch_all",
    "fetch_changes",
    "fetch_mailboxes",
    "import_emails",
    "message_ids",
    "query_ended",
    "set_emails",
]

# Errors from */changes that mean "your state is no good here": full reconcile.
# Cyrus answers a bogus state with invalidArguments, not cannotCalculateChanges.
RESYNC_ERRORS = {"cannotCalculateChanges", "invalidArguments"}
_MAX_PAGES = 100_000


@dataclass
class Snapshot:
    """The whole account, read by a full reconcile."""

    mailbox_state: State
    email_state: State
    mailboxes: dict[MailboxId, Mailbox]
    emails: dict[EmailId, Email]


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


def _ref(call_id: str, name: str, path: str) -> dict[str, str]:
    return {"resultOf": call_id, "name": name, "path": path}


_warned_keywords: set[str] = set()


def _emails(result: dict[str, Any]) -> list[Email]:
    items = result.get("list")
    if not isinstance(items, list):
        raise ProtocolError("Email/get: list is not an array")
    out = []
    for item in items:
        skipped: list[str] = []
        out.append(Email.parse(item, skipped))
        new = sorted(set(skipped) - _warned_keywords)
        if new:  # once per keyword and process: 100 000 Emails may carry it
            _warned_keywords.update(new)
            log.get().warning(
                "keyword-skipped",
                email=out[-1].id,
                keywords=[repr(k)[:80] for k in new],
                reason="not a valid JMAP keyword: left on the server, not mirrored",
            )
    return out


def _mailboxes(result: dict[str, Any]) -> dict[MailboxId, Mailbox]:
    items = result.get("list")
    if not isinstance(items, list):
        raise ProtocolError("Mailbox/get: list is not an array")
    boxes = [Mailbox.parse(m) for m in items]
    return {m.id: m for m in boxes}


async def fetch_mailboxes(client: JmapClient) -> tuple[State, dict[MailboxId, Mailbox]]:
    aid = _aid(client)
    r = await client.call(
        [("Mailbox/get", {"accountId": aid, "ids": None, "properties": MAILBOX_PROPERTIES}, "m")]
    )
    result = r.result("m")
    return parse_state(result.get("state"), "Mailbox"), _mailboxes(result)


def _aid(client: JmapClient) -> str:
    if client.session is None:
        raise RuntimeError("connect first")
    return client.session.account_id


async def fetch_all(
    client: JmapClient, progress: Callable[[int, int | None], None] | None = None
) -> Snapshot:
    """Read every mailbox and every Email's sync properties.

    Order matters: capture the Email state BEFORE querying ids.  An Email
    delivered between the query and the next Email/changes would otherwise
    slip through; with the state taken first it shows up as a change.
    """
    aid = _aid(client)
    assert client.session is not None  # noqa: S101 - _aid checked it
    r = await client.call(
        [
            ("Email/get", {"accountId": aid, "ids": [], "properties": ["id"]}, "s"),
            ("Mailbox/get", {"accountId": aid, "ids": None, "properties": MAILBOX_PROPERTIES}, "m"),
        ]
    )
    email_state = parse_state(r.result("s").get("state"), "Email")
    mailbox_result = r.result("m")
    mailbox_state = parse_state(mailbox_result.get("state"), "Mailbox")
    mailboxes = _mailboxes(mailbox_result)

    page = min(client.session.limits.max_objects_in_get, 4096)
    emails: dict[EmailId, Email] = {}
    anchor: str | None = None
    total: int | None = None
    for _ in range(_MAX_PAGES):
        query: dict[str, Any] = {
            "accountId": aid,
            # Page by anchor, not position: a deletion between pages would
            # shift positions and skip an Email.
            "sort": [{"property": "receivedAt", "isAscending": True}],
            "collapseThreads": False,
            "limit": page,
            # Every page: the total is how the end of the list is recognised
            # on a server that clamps `limit` without saying so.
            "calculateTotal": True,
        }
        if anchor is not None:
            query["anchor"] = anchor
            query["anchorOffset"] = 1
        calls: list[Invocation] = [
            ("Email/query", query, "q"),
            (
                "Email/get",
                {
                    "accountId": aid,
                    "#ids": _ref("q", "Email/query", "/ids"),
                    "properties": EMAIL_PROPERTIES,
                },
                "g",
            ),
        ]
        r = await client.call(calls)
        try:
            qres = r.result("q")
        except MethodError as exc:
            if exc.type != "anchorNotFound":
                raise
            # The anchor Email vanished meanwhile: start over; ids already
            # seen are merged, nothing is lost.
            log.get().info("query-anchor-vanished", anchor=anchor)
            anchor = None
            continue
        ids = qres.get("ids")
        if not isinstance(ids, list):
            raise ProtocolError("Email/query: ids is not an array")
        if isinstance(qres.get("total"), int):
            total = qres["total"]
        got = _emails(r.result("g"))
        for e in got:
            emails[e.id] = e
        if progress:
            progress(len(emails), total)
        if query_ended(qres, ids, page, total):
            break
        anchor = parse_id(ids[-1], "email")
    else:  # pragma: no cover - needs a server that never ends a query
        raise ProtocolError("Email/query paging did not end")
    return Snapshot(mailbox_state, email_state, mailboxes, emails)


def query_ended(result: dict[str, Any], ids: list[Any], asked: int, total: int | None) -> bool:
    """Whether an Email/query page was the last one.

    RFC 8620 5.5: a server may clamp `limit` (Stalwart: to
    `jmap.protocol.query.max-results`) and then returns the limit it used; a
    page as long as THAT limit is not the end, however short of what we
    asked.  A shorter page is the end -- unless `total` says more follow (a
    server that clamps without saying so).  Both must agree: a wrong `total`
    alone never ends the read early (the Emails it missed would look
    destroyed).  An empty page always ends: an anchor past the last Email
    gives one."""
    if not ids:
        return True
    used = result.get("limit")
    limit = used if isinstance(used, int) and 0 < used < asked else asked
    position = result.get("position")
    if total is not None and isinstance(position, int) and position + len(ids) < total:
        return False
    return len(ids) < limit


async def fetch_changes(client: JmapClient, mailbox_state: State, email_state: State) -> Delta:
    """Everything changed since the two states; raises CannotCalculateChanges
    (also for invalidArguments) when a full reconcile is needed."""
    aid = _aid(client)
    assert client.session is not None  # noqa: S101
    max_changes = min(client.session.limits.max_objects_in_get, 4096)
    delta = Delta(mailbox_state=mailbox_state, email_state=email_state, mailboxes=None)
    first = True
    mailbox_more = True
    email_more = True
    for _ in range(_MAX_PAGES):
        calls: list[Invocation] = []
        if mailbox_more:
            calls += [
                (
                    "Mailbox/changes",
                    {"accountId": aid, "sinceState": delta.mailbox_state},
                    "mc",
                ),
            ]
        if email_more:
            calls += [
                (
                    "Email/changes",
                    {"accountId": aid, "sinceState": delta.email_state, "maxChanges": max_changes},
                    "ec",
                ),
                _get_ref("ec", "/created", "e1", aid),
                _get_ref("ec", "/updated", "e2", aid),
            ]
        r = await client.call(calls)
        if mailbox_more:
            mchanges = _changes(r, "mc", "Mailbox")
            if not first and mchanges.old_state != delta.mailbox_state:
                raise ProtocolError("Mailbox/changes: oldState does not match sinceState")
            if mchanges.created or mchanges.updated or mchanges.destroyed:
                delta.mailboxes = {}  # marks "changed"; filled below with the full set
            delta.mailbox_state = mchanges.new_state
            mailbox_more = mchanges.has_more
        if email_more:
            echanges = _changes(r, "ec", "Email")
            for e in _emails(r.result("e1")) + _emails(r.result("e2")):
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
    else:  # pragma: no cover
        raise ProtocolError("*/changes paging did not end")
    if delta.mailboxes is not None:
        # Mailboxes are few: take the whole tree rather than patching it.
        state, boxes = await fetch_mailboxes(client)
        delta.mailboxes = boxes
        delta.mailbox_state = state
    return delta


def _get_ref(source: str, path: str, call_id: str, aid: str) -> Invocation:
    return (
        "Email/get",
        {
            "accountId": aid,
            "#ids": _ref(source, "Email/changes", path),
            "properties": EMAIL_PROPERTIES,
        },
        call_id,
    )


def _changes(r: Responses, call_id: str, what: str) -> Changes:
    try:
        result = r.result(call_id)
    except MethodError as exc:
        if exc.type in RESYNC_ERRORS:
            raise CannotCalculateChanges(exc.method, exc.type, exc.description) from None
        raise
    return Changes.parse(result, what)


async def message_ids(client: JmapClient, ids: list[str]) -> dict[str, list[str]]:
    """Email id -> its Message-IDs (for matching a local copy to its Email)."""
    aid = _aid(client)
    assert client.session is not None  # noqa: S101
    out: dict[str, list[str]] = {}
    page = client.session.limits.max_objects_in_get
    for start in range(0, len(ids), page):
        chunk = ids[start : start + page]
        r = await client.call(
            [("Email/get", {"accountId": aid, "ids": chunk, "properties": ["messageId"]}, "g")]
        )
        for item in r.result("g").get("list") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                mids = item.get("messageId") or []
                out[item["id"]] = [m for m in mids if isinstance(m, str)]
    return out
