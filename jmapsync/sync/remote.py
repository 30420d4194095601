"""Stage 1, remote read: the session, what changed on the server, the remote model.

With stored Email and Mailbox states, one request asks what changed since
them (`jmap/changes.py fetch_changes`); a state the server cannot compute from
means a full reconcile.  The remote model is then the Emails recorded in the
database plus the changed ones minus the destroyed ones -- or, after a full
read, the whole account.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from jmapsync.errors import CannotCalculateChanges, HTTPStatusError, ProtocolError, TransportError
from jmapsync.jmap import changes, mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId, Mailbox, MailboxId, State
from jmapsync.sync import guards
from jmapsync.sync.context import PassContext
from jmapsync.sync.scope import Scope
from jmapsync.sync.stamp import retry_downloads


@dataclass
class RemoteModel:
    """The server as this pass sees it: Emails, mailboxes, and their states."""

    emails: dict[EmailId, Email]
    mailboxes: dict[MailboxId, Mailbox]
    mailbox_state: State
    email_state: State
    # Emails that changed (remotely, or by our own writes); None after a
    # full read, where every record is written anew.
    touched: set[EmailId] | None

    def apply_writes(
        self, state: State, changed: dict[EmailId, Email], destroyed: set[EmailId]
    ) -> None:
        """Take in what our own writes did on the server (local->remote): the
        pull plan then sees a server that already holds the local changes."""
        self.email_state = state
        for eid in destroyed:
            self.emails.pop(eid, None)
        self.emails.update(changed)
        if self.touched is not None:
            self.touched |= destroyed | set(changed)


async def read_changes(
    ctx: PassContext, client: JmapClient, *, full: bool, cache_failed: str | None = None
) -> changes.Delta | None:
    """The session (cached from the last run when we have it, so that a pass
    with nothing new is ONE request) and the remote changes; None when a full
    reconcile is due.  `cache_failed`: why a request with the cached session
    failed already this run (sync/quick.py): ask afresh at once."""
    db, account = ctx.db, ctx.account
    # The session is per URL AND user: another user on the same URL has
    # another accountId, and often other URLs and capabilities.
    key = {"for": account.session_url, "user": account.credentials.username}
    cached = db.get_meta("session")
    if cache_failed is not None:
        ctx.log.info("session-refetch", reason=cache_failed)
    elif cached is not None:
        entry = json.loads(cached)
        if all(entry.get(k) == v for k, v in key.items()):
            try:
                client.use_cached(entry["url"], entry["data"])
                delta = await _changes(ctx, client, full=full)
            except (HTTPStatusError, TransportError, ProtocolError) as exc:
                # The server moved its API, or the cache is bad: ask afresh.
                ctx.log.info("session-refetch", reason=str(exc))
            else:
                if not client.session_stale:
                    return delta
    await client.connect()
    store_session(ctx, client)
    return await _changes(ctx, client, full=full)


def store_session(ctx: PassContext, client: JmapClient) -> None:
    """Cache a session the client fetched (at the start, or mid-pass when a
    cached session's URL answered 401/403/404), for the next runs."""
    if client.session_json is None:
        return
    url, data = client.session_json
    client.session_json = None  # stored: not again
    account = ctx.account
    entry = {"for": account.session_url, "user": account.credentials.username}
    with ctx.db.transaction() as conn:
        ctx.db.set_meta(conn, "session", json.dumps(entry | {"url": url, "data": data}))


async def _changes(ctx: PassContext, client: JmapClient, *, full: bool) -> changes.Delta | None:
    """Remote changes since the stored states; None when a full reconcile is due."""
    es, ms = ctx.db.email_state, ctx.db.mailbox_state
    assert client.session is not None  # noqa: S101 - connected by the caller
    # States are per account: after the config points at another account,
    # the stored ones mean nothing there.
    same_account = ctx.db.get_meta("account_id") in (None, client.session.account_id)
    if not (es and ms and same_account) or full:
        return None
    try:
        return await changes.fetch_changes(client, ms, es)
    except CannotCalculateChanges as exc:
        ctx.log.info("full-reconcile", reason=str(exc))
        return None


async def read_model(
    ctx: PassContext, client: JmapClient, delta: changes.Delta | None, scope: Scope | None
) -> RemoteModel:
    """The remote model (only the Emails in `scope`, if given).  Sets
    `ctx.base` (two-way: the Emails as last synced) on the way."""
    model = await _model(ctx, client, delta, scope)
    if any(m not in model.mailboxes for e in model.emails.values() for m in e.mailbox_ids):
        # An Email names a mailbox created after our Mailbox read.
        model.mailbox_state, model.mailboxes = await mail.fetch_mailboxes(client)
    return model


async def _model(
    ctx: PassContext, client: JmapClient, delta: changes.Delta | None, scope: Scope | None
) -> RemoteModel:
    db, report = ctx.db, ctx.report
    if delta is not None:
        if scope is not None:
            report.partial = True
            emails = dict(scope.records)
        else:
            emails = db.emails()
        # The base of the three-way merge: Emails as last synced.  A second
        # dict over the same Email objects; pull mode does not need it.
        ctx.base = _base(ctx, emails) if ctx.two_way else {}
        left = guards.left_by_mailbox(emails, delta.changed, delta.destroyed, ctx.selected)
        for eid in delta.destroyed:
            emails.pop(eid, None)
        emails.update(delta.changed)
        emptied = guards.emptied_remotely(emails.values(), left)
        if scope is not None:
            emptied -= scope.holding  # it saw the rest of each one (scope.py)
        if emptied:
            # A mailbox we held many messages of is suddenly empty: check
            # with a full read before any local file is removed.
            ctx.log.warning(
                "mailbox-emptied-remotely", mailboxes=sorted(emptied), action="full reconcile first"
            )
            report.mode = "full"
            return await _full(client)
        if delta.mailboxes is None:
            mailboxes = {m: box for m, (box, _) in db.mailboxes().items()}
        else:
            mailboxes = delta.mailboxes
        ctx.log.debug(
            "remote-changes",
            changed=len(delta.changed),
            destroyed=len(delta.destroyed),
            mailboxes_changed=delta.mailboxes is not None,
        )
        touched = set(delta.changed) | delta.destroyed
        return RemoteModel(emails, mailboxes, delta.mailbox_state, delta.email_state, touched)
    report.mode = "full"
    ctx.base = _base(ctx, db.emails()) if ctx.two_way else {}
    model = await _full(client)
    ctx.log.info("remote-read", emails=len(model.emails), mailboxes=len(model.mailboxes))
    return model


async def _full(client: JmapClient) -> RemoteModel:
    snap = await mail.fetch_all(client)
    return RemoteModel(snap.emails, snap.mailboxes, snap.mailbox_state, snap.email_state, None)


def _base(ctx: PassContext, records: dict[EmailId, Email]) -> dict[EmailId, Email]:
    """The base of the three-way merge: Emails as last synced -- except those
    whose download failed: they have no file here, which is no local delete."""
    waiting = retry_downloads(ctx.db)
    return {e: r for e, r in records.items() if e not in waiting} if waiting else dict(records)
