"""RFC 8621 reads of the whole account (full reconcile) and the writes.

What changed since a state is read by jmap/changes.py (re-exported here).
Reads pack as many calls into one request as back-references allow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jmapsync import log
from jmapsync.errors import MethodError, ProtocolError
from jmapsync.jmap.client import Invocation, JmapClient
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

_MAX_PAGES = 100_000


@dataclass
class Snapshot:
    """The whole account, read by a full reconcile."""

    mailbox_state: State
    email_state: State
    mailboxes: dict[MailboxId, Mailbox]
    emails: dict[EmailId, Email]


def result_ref(call_id: str, name: str, path: str) -> dict[str, str]:
    return {"resultOf": call_id, "name": name, "path": path}


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
    seen = 0
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
            "calculateTotal": total is None,
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
                    "#ids": result_ref("q", "Email/query", "/ids"),
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
        if total is None and isinstance(qres.get("total"), int):
            total = qres["total"]
        got = emails_in(r.result("g"))
        seen += len(got)
        if sink is not None:
            sink(got)
        else:
            for e in got:
                emails[e.id] = e
        if progress:
            progress(len(emails) if sink is None else seen, total)
        if len(ids) < page:
            break
        anchor = parse_id(ids[-1], "email")
    else:  # pragma: no cover - needs a server that never ends a query
        raise ProtocolError("Email/query paging did not end")
    return Snapshot(mailbox_state, email_state, mailboxes, emails)


def _set_errors(result: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    raw = result.get(key) or {}
    if not isinstance(raw, dict):
        raise ProtocolError(f"{key} is not an object")
    return {str(k): v if isinstance(v, dict) else {"type": "?"} for k, v in raw.items()}


@dataclass
class WriteResult:
    """Email/set or Email/import: what the server did, per id / creation id."""

    new_state: State
    updated: set[str] = field(default_factory=set)
    destroyed: set[str] = field(default_factory=set)
    created: dict[str, Email] = field(default_factory=dict)  # creation id -> Email
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> SetError

    def why(self, key: str) -> str:
        err = self.failed.get(key)
        if err is None:
            return "no answer from the server"
        desc = err.get("description")
        return f"{err.get('type', '?')}" + (f": {desc}" if isinstance(desc, str) else "")


async def set_emails(
    client: JmapClient,
    if_in_state: State | None,
    updates: dict[str, dict[str, Any]],
    destroy: list[str],
) -> WriteResult:
    """Email/set with patches and destroys, guarded by ifInState (unless None).

    Raises MethodError("stateMismatch") when the server moved on since our read."""
    aid = account_id(client)
    args: dict[str, Any] = {"accountId": aid}
    if if_in_state is not None:
        args["ifInState"] = if_in_state
    if updates:
        args["update"] = updates
    if destroy:
        args["destroy"] = destroy
    result = (await client.call([("Email/set", args, "s")])).result("s")
    updated = result.get("updated") or {}
    destroyed = result.get("destroyed") or []
    if not isinstance(updated, dict) or not isinstance(destroyed, list):
        raise ProtocolError("Email/set: updated / destroyed are malformed")
    return WriteResult(
        new_state=parse_state(result.get("newState"), "Email"),
        updated=set(updated),
        destroyed={str(d) for d in destroyed},
        failed=_set_errors(result, "notUpdated") | _set_errors(result, "notDestroyed"),
    )


@dataclass(frozen=True, slots=True)
class ImportItem:
    blob_id: str
    mailbox_ids: frozenset[str]
    keywords: frozenset[str]
    received_at: str  # RFC 3339 UTC


async def import_emails(
    client: JmapClient, since: State, items: dict[str, ImportItem]
) -> WriteResult:
    """Email/import of uploaded blobs (creation id -> item).

    Without ifInState: Cyrus 3.6 answers it with invalidArguments.  An import
    only adds, so it needs no guard; but its newState is ours only when the
    answer's oldState is `since` (nothing else happened between): then
    `new_state` is that newState, otherwise it stays `since` and the next pass
    reads the import back as a change (Cyrus 3.6 sends neither state).

    `alreadyExists` (Cyrus: the same bytes are already in the account) comes
    back in `failed` with its `existingId`."""
    aid = account_id(client)
    emails = {
        cid: {
            "blobId": it.blob_id,
            "mailboxIds": dict.fromkeys(sorted(it.mailbox_ids), True),
            "keywords": dict.fromkeys(sorted(it.keywords), True),
            "receivedAt": it.received_at,
        }
        for cid, it in items.items()
    }
    result = (
        await client.call([("Email/import", {"accountId": aid, "emails": emails}, "i")])
    ).result("i")
    created_raw = result.get("created") or {}
    if not isinstance(created_raw, dict):
        raise ProtocolError("Email/import: created is not an object")
    created: dict[str, Email] = {}
    for cid, value in created_raw.items():
        if cid not in items or not isinstance(value, dict):
            raise ProtocolError(f"Email/import: unexpected created entry {cid!r:.40}")
        it = items[cid]
        created[cid] = Email.parse(
            {
                "id": value.get("id"),
                "blobId": value.get("blobId", it.blob_id),
                "mailboxIds": dict.fromkeys(it.mailbox_ids, True),
                "keywords": dict.fromkeys(it.keywords, True),
                "size": value.get("size"),
                "receivedAt": it.received_at,
            }
        )
    new_state = since
    if result.get("oldState") == since and isinstance(result.get("newState"), str):
        new_state = parse_state(result["newState"], "Email")
    return WriteResult(
        new_state=new_state,
        created=created,
        failed=_set_errors(result, "notCreated"),
    )


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


async def create_mailboxes(
    client: JmapClient, creates: dict[str, tuple[str, str | None]]
) -> tuple[dict[str, str], dict[str, str]]:
    """Mailbox/set create: creation id -> (name, parent id or "#creation id").

    Returns (creation id -> new mailbox id, creation id -> why it failed)."""
    aid = account_id(client)
    create = {
        cid: {"name": name, "parentId": parent, "isSubscribed": True}
        for cid, (name, parent) in creates.items()
    }
    result = (
        await client.call([("Mailbox/set", {"accountId": aid, "create": create}, "c")])
    ).result("c")
    created = result.get("created") or {}
    if not isinstance(created, dict):
        raise ProtocolError("Mailbox/set: created is not an object")
    ids = {
        str(cid): parse_id(v.get("id") if isinstance(v, dict) else None, "mailbox")
        for cid, v in created.items()
    }
    failed = {
        cid: str(err.get("type", "?")) for cid, err in _set_errors(result, "notCreated").items()
    }
    return ids, failed


async def destroy_mailbox(client: JmapClient, mailbox_id: str) -> str | None:
    """Mailbox/set destroy, never taking Emails with it; None or why it failed."""
    aid = account_id(client)
    result = (
        await client.call(
            [
                (
                    "Mailbox/set",
                    {"accountId": aid, "destroy": [mailbox_id], "onDestroyRemoveEmails": False},
                    "d",
                )
            ]
        )
    ).result("d")
    failed = _set_errors(result, "notDestroyed")
    if mailbox_id in failed:
        return str(failed[mailbox_id].get("type", "?"))
    return None
