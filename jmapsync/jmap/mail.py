"""RFC 8621 reads of the whole account (full reconcile); the writes (jmap/writes.py).

What changed since a state is read by jmap/changes.py (re-exported here).
The whole account is read by `every_email`: large Email/query pages, their
properties in Email/get pages (why: there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from jmapsync import log
from jmapsync.errors import MethodError, ProtocolError
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import (
    EMAIL_PROPERTIES,
    MAILBOX_PROPERTIES,
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

# The writes live in jmap/writes.py (with their rateLimit retries); callers
# know them as mail.set_emails and so on.
__all__ = [
    "ImportItem",
    "Snapshot",
    "WriteResult",
    "account_id",
    "create_mailboxes",
    "destroy_mailbox",
    "emails_in",
    "every_email",
    "fetch_all",
    "fetch_mailboxes",
    "import_emails",
    "message_ids",
    "query_ended",
    "set_emails",
]

_MAX_PAGES = 100_000
QUERY_IDS = 32_768  # ids asked per Email/query in a full read (every_email)


@dataclass
class Snapshot:
    """The whole account, read by a full reconcile."""

    mailbox_state: State
    email_state: State
    mailboxes: dict[MailboxId, Mailbox]
    emails: dict[EmailId, Email]


_warned_keywords: set[str] = set()


def emails_in(result: dict[str, Any]) -> list[Email]:
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
    aid = account_id(client)
    r = await client.call(
        [("Mailbox/get", {"accountId": aid, "ids": None, "properties": MAILBOX_PROPERTIES}, "m")]
    )
    result = r.result("m")
    return parse_state(result.get("state"), "Mailbox"), _mailboxes(result)


def account_id(client: JmapClient) -> str:
    if client.session is None:
        raise RuntimeError("connect first")
    return client.session.account_id


async def fetch_all(
    client: JmapClient,
    progress: Callable[[int, int | None], None] | None = None,
    sink: Callable[[list[Email]], None] | None = None,
) -> Snapshot:
    """Read every mailbox and every Email's sync properties.

    Order matters: capture the Email state BEFORE querying ids.  An Email
    delivered between the query and the next Email/changes would otherwise
    slip through; with the state taken first it shows up as a change.

    `sink`: each page of Emails goes there instead of into the Snapshot
    (whose `emails` stays empty): a million Emails are not held at once
    (sync/stream.py).  A page may repeat Emails of an earlier one (a query
    started over): the sink keeps the last of each id.
    """
    aid = account_id(client)
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

    emails: dict[EmailId, Email] = {}
    seen = 0
    async for result, total in every_email(client, EMAIL_PROPERTIES):
        got = emails_in(result)
        seen += len(got)
        if sink is not None:
            sink(got)
        else:
            for e in got:
                emails[e.id] = e
        if progress:
            progress(len(emails) if sink is None else seen, total)
    return Snapshot(mailbox_state, email_state, mailboxes, emails)


async def every_email(
    client: JmapClient, properties: list[str]
) -> AsyncIterator[tuple[dict[str, Any], int | None]]:
    """Every Email of the account, a page at a time: each page's Email/get
    result (its `list` holds `properties`) and the total the server counted.

    The one paging loop of the full read (fetch_all) and of restore's
    inventory (jmap/inventory.py).  Queries go by anchor, not position: a
    deletion between two queries would shift positions and skip an Email.
    An anchor that vanished meanwhile starts the query over, so a page may
    repeat Emails of an earlier one: the caller keeps the last of each id.

    Each Email/query asks for QUERY_IDS ids, then their properties come in
    Email/get pages of at most maxObjectsInGet: Cyrus sorts the whole
    account for every query (2.7 s per query at a million messages, however
    few ids it returns), so 4 096 ids per query spent 11 of a first sync's
    minutes sorting.  An Email destroyed between the query and its get is
    simply not returned (the state was taken first: the next pass sees it
    destroyed).
    """
    aid = account_id(client)
    assert client.session is not None  # noqa: S101 - account_id checked it
    page = min(client.session.limits.max_objects_in_get, 4096)
    asked = max(QUERY_IDS, page)
    anchor: str | None = None
    total: int | None = None
    for _ in range(_MAX_PAGES):
        query: dict[str, Any] = {
            "accountId": aid,
            "sort": [{"property": "receivedAt", "isAscending": True}],
            "collapseThreads": False,
            "limit": asked,
            # Every query: the total is how the end of the list is recognised
            # on a server that clamps `limit` without saying so.
            "calculateTotal": True,
        }
        if anchor is not None:
            query["anchor"] = anchor
            query["anchorOffset"] = 1
        r = await client.call([("Email/query", query, "q")])
        try:
            qres = r.result("q")
        except MethodError as exc:
            if exc.type != "anchorNotFound":
                raise
            log.get().info("query-anchor-vanished", anchor=anchor)
            anchor = None
            continue
        ids = qres.get("ids")
        if not isinstance(ids, list):
            raise ProtocolError("Email/query: ids is not an array")
        if isinstance(qres.get("total"), int):
            total = qres["total"]
        for start in range(0, len(ids), page):
            chunk = [parse_id(i, "email") for i in ids[start : start + page]]
            got = await client.call(
                [("Email/get", {"accountId": aid, "ids": chunk, "properties": properties}, "g")]
            )
            yield got.result("g"), total
        if query_ended(qres, ids, asked, total):
            return
        anchor = parse_id(ids[-1], "email")
    raise ProtocolError("Email/query paging did not end")  # pragma: no cover


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


async def message_ids(client: JmapClient, ids: list[str]) -> dict[str, list[str]]:
    """Email id -> its Message-IDs (for matching a local copy to its Email)."""
    aid = account_id(client)
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
