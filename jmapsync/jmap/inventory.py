"""What an account holds, in the few properties a restore compares by.

`jmapsync restore` must know, before it uploads anything, which of its
messages the account already has.  One listing of the whole account
(``Email/query`` paged by anchor, each page with an ``Email/get`` of
messageId, size and blobId in the same request) answers that for every
message at once; only messages whose size and Message-ID match an Email
there need their blob downloaded and hashed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jmapsync import log
from jmapsync.errors import MethodError, ProtocolError
from jmapsync.jmap.client import Invocation, JmapClient
from jmapsync.jmap.mail import query_ended
from jmapsync.jmap.types import MAX_MESSAGE_BYTES, State, parse_id, parse_state

_MAX_PAGES = 100_000
_PROPERTIES = ["id", "blobId", "messageId", "size", "mailboxIds"]


@dataclass(frozen=True, slots=True)
class RemoteMessage:
    """An Email of the account, as far as "is this message already there" goes."""

    id: str
    blob_id: str
    message_ids: tuple[str, ...]  # JMAP messageId: () when the server found none
    size: int
    mailbox_ids: frozenset[str]

    @classmethod
    def parse(cls, data: object) -> RemoteMessage:
        if not isinstance(data, dict):
            raise ProtocolError("Email/get: an email is not an object")
        eid = parse_id(data.get("id"), "email")
        size = data.get("size")
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 0 <= size <= MAX_MESSAGE_BYTES
        ):
            raise ProtocolError(f"Email {eid}: invalid size {size!r:.40}")
        mids = data.get("messageId") or []
        boxes = data.get("mailboxIds") or {}
        if not isinstance(mids, list) or not isinstance(boxes, dict):
            raise ProtocolError(f"Email {eid}: messageId / mailboxIds malformed")
        return cls(
            id=eid,
            blob_id=parse_id(data.get("blobId"), "blob"),
            message_ids=tuple(m for m in mids if isinstance(m, str)),
            size=size,
            mailbox_ids=frozenset(str(k) for k, v in boxes.items() if v is True),
        )


async def email_state(client: JmapClient) -> State:
    """The account's Email state now (Email/get of no ids)."""
    if client.session is None:
        raise RuntimeError("connect first")
    aid = client.session.account_id
    r = await client.call([("Email/get", {"accountId": aid, "ids": [], "properties": ["id"]}, "s")])
    return parse_state(r.result("s").get("state"), "Email")


async def list_messages(
    client: JmapClient, progress: Callable[[int], None] | None = None
) -> list[RemoteMessage]:
    """Every Email of the account (RemoteMessage properties only)."""
    if client.session is None:
        raise RuntimeError("connect first")
    aid = client.session.account_id
    page = min(client.session.limits.max_objects_in_get, 4096)
    found: dict[str, RemoteMessage] = {}
    anchor: str | None = None
    total: int | None = None
    for _ in range(_MAX_PAGES):
        query: dict[str, Any] = {
            "accountId": aid,
            # Page by anchor, not position: an Email deleted between two
            # pages would shift positions and hide another.
            "sort": [{"property": "receivedAt", "isAscending": True}],
            "collapseThreads": False,
            "limit": page,
            "calculateTotal": True,  # the end of a list a server clamped (mail.py)
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
                    "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": _PROPERTIES,
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
            log.get().info("query-anchor-vanished", anchor=anchor)
            anchor = None  # start over; what was seen merges
            continue
        ids = qres.get("ids")
        if not isinstance(ids, list):
            raise ProtocolError("Email/query: ids is not an array")
        if isinstance(qres.get("total"), int):
            total = qres["total"]
        items = r.result("g").get("list")
        if not isinstance(items, list):
            raise ProtocolError("Email/get: list is not an array")
        for item in items:
            m = RemoteMessage.parse(item)
            found[m.id] = m
        if progress is not None:
            progress(len(items))
        if query_ended(qres, ids, page, total):  # a page shorter than asked may not be the end
            break
        anchor = parse_id(ids[-1], "email")
    else:  # pragma: no cover - needs a server that never ends a query
        raise ProtocolError("Email/query paging did not end")
    return list(found.values())
