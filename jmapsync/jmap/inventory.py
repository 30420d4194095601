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

from jmapsync.errors import ProtocolError
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.mail import every_email
from jmapsync.jmap.types import MAX_MESSAGE_BYTES, State, parse_id, parse_state

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
    found: dict[str, RemoteMessage] = {}
    async for result, _total in every_email(client, _PROPERTIES):
        items = result.get("list")
        if not isinstance(items, list):
            raise ProtocolError("Email/get: list is not an array")
        for item in items:
            m = RemoteMessage.parse(item)
            found[m.id] = m  # a query started over repeats Emails: the last one counts
        if progress is not None:
            progress(len(items))
    return list(found.values())
