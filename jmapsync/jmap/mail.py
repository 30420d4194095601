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
from jmapsync.jmap.client import Invocation, JmapClient, Responses
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

# Errors from */changes that mean "your state is no good here": full reconcile.
# Cyrus answers a bogus state with invalidArguments, not cannotCalculateChanges.
RESYNC_ERRORS = {"cannotCalculateChanges", "invalidArguments"}
_MAX_PAGES = 100_000
# */changes rounds in one read.  At maxChanges 4096 that is a million
# changes; past it a full reconcile is cheaper, and a server that says
# hasMoreChanges forever cannot keep a pass going.
MAX_CHANGE_ROUNDS = 256


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


def _emails(result: dict[str, Any]) -> list[Email]:
    items = result.get("list")
    if not isinstance(items, list):
        raise ProtocolError("Email/get: list is not an array")
    return [Email.parse(e) for e in items]


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
        if total is None and isinstance(qres.get("total"), int):
            total = qres["total"]
        got = _emails(r.result("g"))
        for e in got:
            emails[e.id] = e
        if progress:
            progress(len(emails), total)
        if len(ids) < page:
            break
        anchor = parse_id(ids[-1], "email")
    else:  # pragma: no cover - needs a server that never ends a query
        raise ProtocolError("Email/query paging did not end")
    return Snapshot(mailbox_state, email_state, mailboxes, emails)


async def fetch_changes(client: JmapClient, mailbox_state: State, email_state: State) -> Delta:
    """Everything changed since the two states; raises CannotCalculateChanges
    (also for invalidArguments) when a full reconcile is needed.

    `hasMoreChanges` is followed for at most MAX_CHANGE_ROUNDS requests, and
    only while it makes progress: a round that says "more" but answers with
    the state it was asked from (a broken server, or one looping) would
    never end.  Either way the pass falls back to a full reconcile, which
    needs no */changes at all."""
    aid = _aid(client)
    assert client.session is not None  # noqa: S101
    max_changes = min(client.session.limits.max_objects_in_get, 4096)
    delta = Delta(mailbox_state=mailbox_state, email_state=email_state, mailboxes=None)
    first = True
    mailbox_more = True
    email_more = True
    for _ in range(MAX_CHANGE_ROUNDS):
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
            _check_progress("Mailbox/changes", mchanges, delta.mailbox_state)
            delta.mailbox_state = mchanges.new_state
            mailbox_more = mchanges.has_more
        if email_more:
            echanges = _changes(r, "ec", "Email")
            _check_progress("Email/changes", echanges, delta.email_state)
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
    aid = _aid(client)
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
    aid = _aid(client)
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


async def create_mailboxes(
    client: JmapClient, creates: dict[str, tuple[str, str | None]]
) -> tuple[dict[str, str], dict[str, str]]:
    """Mailbox/set create: creation id -> (name, parent id or "#creation id").

    Returns (creation id -> new mailbox id, creation id -> why it failed)."""
    aid = _aid(client)
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
    aid = _aid(client)
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
