"""RFC 8621 writes: Email/set (patches, destroys), Email/import, Mailbox/set.

A record refused with the `rateLimit` SetError (RFC 8620 5.3: "may work if
tried again later"; reported from Fastmail) was not applied: it is sent again
after a pause (jmap/ratelimit.py), a few times, the rest of the call's result
kept.  If it still does not get through, `RateLimited` is raised rather than
handing back a refusal: the caller would otherwise carry on as if the user's
change were unwanted -- the pull then turns a flag or a move back, or removes
the file of a message whose re-import was refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from jmapsync import log
from jmapsync.errors import ProtocolError, RateLimited
from jmapsync.jmap import ratelimit
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, State, parse_id, parse_state

RATE_LIMIT = "rateLimit"


def _aid(client: JmapClient) -> str:
    if client.session is None:
        raise RuntimeError("connect first")
    return client.session.account_id


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

    def rate_limited(self) -> set[str]:
        return {k for k, err in self.failed.items() if err.get("type") == RATE_LIMIT}

    def then(self, later: WriteResult) -> WriteResult:
        """This result followed by a repeat of its rate-limited records."""
        done = later.updated | later.destroyed | set(later.created)
        return WriteResult(
            later.new_state,
            self.updated | later.updated,
            self.destroyed | later.destroyed,
            self.created | later.created,
            {k: v for k, v in self.failed.items() if k not in done} | later.failed,
        )


async def _pause(what: str, attempt: int, refused: set[str]) -> None:
    """Wait before sending rate-limited records again; RateLimited after the last try."""
    if attempt >= len(ratelimit.DELAYS_S):
        raise RateLimited(
            f"{what}: {len(refused)} record(s) refused with rateLimit {attempt + 1} times;"
            " nothing of them was applied"
        )
    pause = ratelimit.delay(attempt, None)
    log.get().info("rate-limited", what=what, records=len(refused), retry_in=pause)
    await asyncio.sleep(pause)


async def set_emails(
    client: JmapClient,
    if_in_state: State | None,
    updates: dict[str, dict[str, Any]],
    destroy: list[str],
) -> WriteResult:
    """Email/set with patches and destroys, guarded by ifInState (unless None).

    Raises MethodError("stateMismatch") when the server moved on since our
    read.  Rate-limited records go again, guarded by the state our own write
    left (anyone else's change in between is a stateMismatch, as always)."""
    total: WriteResult | None = None
    for attempt in range(len(ratelimit.DELAYS_S) + 1):
        result = await _set_once(client, if_in_state, updates, destroy)
        total = result if total is None else total.then(result)
        refused = result.rate_limited()
        if not refused:
            break
        await _pause("Email/set", attempt, refused)
        updates = {k: v for k, v in updates.items() if k in refused}
        destroy = [d for d in destroy if d in refused]
        if if_in_state is not None:
            if_in_state = result.new_state
    assert total is not None  # noqa: S101 - the loop ran at least once
    return total


async def _set_once(
    client: JmapClient,
    if_in_state: State | None,
    updates: dict[str, dict[str, Any]],
    destroy: list[str],
) -> WriteResult:
    args: dict[str, Any] = {"accountId": _aid(client)}
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


class ImportItem(NamedTuple):
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
    reads the import back as a change (Cyrus 3.6 sends neither state).  With
    rate-limited records sent again, every answer must continue the last.

    `alreadyExists` (Cyrus: the same bytes are already in the account) comes
    back in `failed` with its `existingId`."""
    total: WriteResult | None = None
    ours: State | None = since  # None once someone else's change came between
    for attempt in range(len(ratelimit.DELAYS_S) + 1):
        result, old, new = await _import_once(client, items)
        ours = new if ours is not None and old == ours and new is not None else None
        total = result if total is None else total.then(result)
        refused = result.rate_limited()
        if not refused:
            break
        await _pause("Email/import", attempt, refused)
        items = {k: v for k, v in items.items() if k in refused}
    assert total is not None  # noqa: S101 - the loop ran at least once
    total.new_state = ours if ours is not None else since
    return total


async def _import_once(
    client: JmapClient, items: dict[str, ImportItem]
) -> tuple[WriteResult, object, State | None]:
    """One Email/import call: (result without its state, oldState, newState)."""
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
        await client.call([("Email/import", {"accountId": _aid(client), "emails": emails}, "i")])
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
    new = result.get("newState")
    new_state = parse_state(new, "Email") if isinstance(new, str) else None
    out = WriteResult(State(""), created=created, failed=_set_errors(result, "notCreated"))
    return out, result.get("oldState"), new_state


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
