"""Sending the outbox: each message from where its journal row says it stands.

One message, step by step (every step is recorded before the next side
effect, so a crash or a lost answer at any point is resumed, not repeated):

1. `queued`: upload the bytes; record `importing`; `Email/import` into the
   Drafts-role mailbox with `$draft $seen`; record `imported` + the Email id
   (and whether the import created it: Cyrus answers `alreadyExists` for
   bytes it already holds).
2. `importing` (a crash or lost answer around the import): look for our
   Email first -- same Message-ID, same size, same SHA-256 of the server's
   bytes -- and import only if there is none.  This does not lean on Cyrus
   deduplicating imports: a server that makes a second Email from the same
   bytes is tested too (tests/unit/test_send_flush.py).
3. Before submitting: an Email we did not create may have been submitted
   before (the same bytes sent twice on purpose): its EmailSubmissions are
   listed first (`before`).  Record `submitting`, with `before` and whether
   the Email sat in Drafts with `$draft`.
4. `EmailSubmission/set` with the envelope and `onSuccessUpdateEmail`
   (leave Drafts, join Sent, `$seen`, no `$draft`); a server that refuses that
   argument gets the submission alone and a separate `Email/set`.  Record
   `sent`, then make sure the Email is in Sent, then delete file and row.
5. `submitting` found on a later run (crash or lost answer around step 4):
   was it sent?  YES if the server lists an EmailSubmission for the Email
   that was not in `before`, or if the Email left Drafts / lost `$draft`
   (only onSuccessUpdateEmail does that, and only after a successful
   submission -- this is what still works on servers that destroy
   EmailSubmissions once sent: Cyrus's default `jmapsubmission_deleteonsend`).
   Then it goes on at `sent`; otherwise it is submitted (step 3).  An Email
   that vanished meanwhile cannot be judged: the message is held, never
   sent again on a guess.

A SetError (forbiddenFrom, tooManyRecipients, invalidEmail, ...), no
matching Identity, or a server without EmailSubmission: the message is held
(`cur/`, with the reason) and not retried by `sync` or the daemon; `send
--flush` tries held messages again.  A network or server failure stops the
flush for this account; the message stays where it was and the next flush
resumes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jmapsync import log
from jmapsync.config import AccountConfig, Config
from jmapsync.errors import (
    JmapsyncError,
    LocalError,
    MethodError,
    SubmissionRefused,
)
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.mail import ImportItem, import_emails
from jmapsync.jmap.submission import (
    Envelope,
    SendSetup,
    Submitted,
    email_of,
    find_by_message_id,
    read_setup,
    submissions_of,
    submit,
    update_email,
)
from jmapsync.jmap.types import Email, EmailId, Identity, State
from jmapsync.send import identity as idmod
from jmapsync.send.outbox import Entry, Outbox

# Method-level errors that retrying cannot cure: the message is held.
_FATAL_METHOD_ERRORS = frozenset(
    {"invalidArguments", "forbidden", "accountReadOnly", "accountNotSupportedByMethod",
     "unknownMethod", "requestTooLarge", "unknownCapability"}
)  # fmt: skip

ClientFactory = Callable[[AccountConfig], JmapClient]


@dataclass
class FlushReport:
    """What one flush of one account did."""

    account: str
    sent: list[Entry] = field(default_factory=list)
    held: list[Entry] = field(default_factory=list)  # refused now (not the ones held before)
    waiting: list[Entry] = field(default_factory=list)  # still queued: `error` says why
    error: str | None = None  # why the flush stopped early (server unreachable, ...)
    busy: bool = False  # another process held the outbox lock

    def outcome(self, entry_id: str) -> tuple[str, str]:
        """("sent" | "held" | "queued", detail) for one message."""
        for e in self.sent:
            if e.id == entry_id:
                return "sent", e.submission_id or ""
        for e in self.held:
            if e.id == entry_id:
                return "held", e.reason or ""
        if self.busy:
            return "queued", "another jmapsync process is sending this outbox"
        return "queued", self.error or "not sent yet"


def cached_identities(outbox: Outbox) -> list[Identity] | None:
    cached = outbox.get_meta("identities")
    if not isinstance(cached, list):
        return None
    return [Identity(str(i["id"]), str(i["name"]), str(i["email"])) for i in cached]


class _Flush:
    def __init__(self, account: AccountConfig, outbox: Outbox, client: JmapClient) -> None:
        self.account = account
        self.outbox = outbox
        self.client = client
        self.setup: SendSetup | None = None
        self.own: list[str] = []
        self.log = log.get().bind(account=account.name)

    # -- the setup -----------------------------------------------------------------

    async def start(self) -> None:
        await self.client.connect()
        assert self.client.session is not None  # noqa: S101
        self.setup = await read_setup(self.client)
        self.own = idmod.own_addresses(self.account.addresses, self.client.session.username)
        self.outbox.set_meta(
            "identities",
            [{"id": i.id, "name": i.name, "email": i.email} for i in self.setup.identities],
        )
        self.outbox.set_meta("own_addresses", self.own)

    @property
    def drafts(self) -> str:
        assert self.setup is not None  # noqa: S101
        box = self.setup.drafts or self.setup.sent
        if box is None:
            raise SubmissionRefused(
                "the account has neither a Drafts-role nor a Sent-role mailbox", kind="noMailbox"
            )
        return box

    def patch(self) -> dict[str, Any]:
        """onSuccessUpdateEmail: out of Drafts, into Sent, read, no longer a draft."""
        assert self.setup is not None  # noqa: S101
        out: dict[str, Any] = {"keywords/$draft": None, "keywords/$seen": True}
        if self.setup.sent is not None and self.setup.sent != self.drafts:
            out[f"mailboxIds/{self.drafts}"] = None
        if self.setup.sent is not None:
            out[f"mailboxIds/{self.setup.sent}"] = True
        return out

    def identity(self, entry: Entry) -> Identity:
        assert self.setup is not None  # noqa: S101
        chosen = idmod.choose(self.setup.identities, entry.from_address, entry.from_name, self.own)
        if chosen is None:
            known = idmod.describe(self.setup.identities, self.own)
            raise SubmissionRefused(
                f"no Identity of the account matches From {entry.from_address} (it has: {known})",
                kind="noIdentity",
            )
        return chosen

    # -- one message -----------------------------------------------------------------

    async def send(self, entry: Entry) -> Entry:
        """Take one message from its recorded state to sent; returns its last row."""
        if entry.state == "sent":
            await self.finish(entry, email_updated=False)
            return entry
        if entry.state == "submitting":
            # First of all: did the last try go through?  (No Identity check
            # before this: identities may have changed since it was sent.)
            sent = await self.was_sent(entry)
            if sent is not None:
                self.log.info("send-already-submitted", entry=entry.id, submission=sent or "?")
                entry = self.outbox.update(entry, state="sent", submission_id=sent or None)
                await self.finish(entry, email_updated=False)
                return entry
        data = self.outbox.read(entry)
        identity = self.identity(entry)
        if entry.state == "queued":
            entry = await self.import_(entry, data)
        elif entry.state == "importing":
            found = await self.find_own(entry)
            if found is None:
                entry = await self.import_(entry, data)
            else:
                self.log.info("send-found-import", entry=entry.id, email=found)
                entry = self.outbox.update(entry, state="imported", email_id=found, fresh=False)
        return await self.submit(entry, identity)

    async def import_(self, entry: Entry, data: bytes) -> Entry:
        try:
            blob = await self.client.upload(data)
        except ValueError as exc:  # larger than maxSizeUpload
            raise SubmissionRefused(str(exc), kind="tooLarge") from None
        entry = self.outbox.update(entry, state="importing")
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        item = ImportItem(blob, frozenset({self.drafts}), frozenset({"$draft", "$seen"}), now)
        result = await import_emails(self.client, State("-"), {"m": item})
        if "m" in result.created:
            email_id, fresh = result.created["m"].id, True
        else:
            err = result.failed.get("m", {})
            existing = err.get("existingId")
            if err.get("type") != "alreadyExists" or not isinstance(existing, str):
                kind = str(err.get("type", "?"))
                raise SubmissionRefused(f"Email/import refused: {result.why('m')}", kind=kind)
            email_id, fresh = EmailId(existing), False
        return self.outbox.update(entry, state="imported", email_id=email_id, fresh=fresh)

    async def find_own(self, entry: Entry) -> str | None:
        """Our Email, if an earlier try imported it: same Message-ID, size and bytes."""
        for email in await find_by_message_id(self.client, entry.message_id):
            if email.size != entry.size:
                continue
            blob = await self.client.fetch_blob(email.blob_id, email.size)
            if hashlib.sha256(blob).hexdigest() == entry.sha256:
                return email.id
        return None

    async def was_sent(self, entry: Entry) -> str | None:
        """After a crash in `submitting`: the submission id ("" if unknown) when
        the server shows the message was sent, None when it was not."""
        assert entry.email_id is not None  # noqa: S101 - recorded with `submitting`
        listed = await self.listed_submissions(entry.email_id)
        new = sorted(listed - set(entry.before))
        if new:
            return new[0]
        if not entry.was_draft:
            return None
        email = await email_of(self.client, entry.email_id)
        if email is None:
            raise SubmissionRefused(
                "its Email vanished from the server before the submission was confirmed:"
                " it may have been sent; not sent again unless you say so (send --flush)",
                kind="uncertain",
            )
        if "$draft" not in email.keywords or self.drafts not in email.mailbox_ids:
            return ""  # onSuccessUpdateEmail ran: only a successful submission does that
        return None

    async def listed_submissions(self, email_id: str) -> set[str]:
        try:
            return await submissions_of(self.client, email_id)
        except MethodError as exc:  # a server without EmailSubmission/query
            self.log.info("send-no-submission-query", error=str(exc))
            return set()

    async def submit(self, entry: Entry, identity: Identity) -> Entry:
        assert entry.email_id is not None  # noqa: S101 - imported before
        before: tuple[str, ...] = ()
        was_draft = True
        if not entry.fresh:
            before = tuple(sorted(await self.listed_submissions(entry.email_id)))
            email = await email_of(self.client, entry.email_id)
            if email is None:  # destroyed since we imported it: import again
                entry = self.outbox.update(entry, state="queued", email_id=None)
                return await self.send(entry)
            was_draft = "$draft" in email.keywords and self.drafts in email.mailbox_ids
        entry = self.outbox.update(
            entry,
            state="submitting",
            before=before,
            was_draft=was_draft,
            attempts=entry.attempts + 1,
            last_try=time.time(),
        )
        started = time.monotonic()
        done = await self.submit_call(entry, identity)
        entry = self.outbox.update(entry, state="sent", submission_id=done.id)
        self.log.info(
            "send-sent",
            entry=entry.id,
            message_id=entry.message_id,
            submission=done.id,
            recipients=len(entry.rcpt_to),
            seconds=round(time.monotonic() - started, 3),
        )
        await self.finish(entry, email_updated=done.email_updated)
        return entry

    def envelope(self, entry: Entry, identity: Identity) -> Envelope:
        assert self.setup is not None  # noqa: S101
        mail_from = idmod.envelope_from(identity, entry.from_address, entry.mail_from)
        mail_params: dict[str, str | None] = {}
        rcpt_params: dict[str, str | None] = {}
        if "dsn" in self.setup.extensions:  # RFC 3461 via sendmail's -N / -R / -V
            if "notify" in entry.dsn:
                rcpt_params["NOTIFY"] = entry.dsn["notify"].upper()
            if "ret" in entry.dsn:
                mail_params["RET"] = entry.dsn["ret"].upper()
            if "envid" in entry.dsn:
                mail_params["ENVID"] = entry.dsn["envid"]
        return Envelope(mail_from, entry.rcpt_to, mail_params or None, rcpt_params or None)

    async def submit_call(self, entry: Entry, identity: Identity) -> Submitted:
        assert entry.email_id is not None  # noqa: S101
        envelope = self.envelope(entry, identity)
        email_id = EmailId(entry.email_id)
        try:
            try:
                return await submit(self.client, identity.id, email_id, envelope, self.patch())
            except MethodError as exc:
                if exc.type != "invalidArguments":
                    raise
                # A method error did nothing (RFC 8620 3.6.1): try without the argument.
                self.log.info("send-no-onsuccessupdate", error=str(exc))
                return await submit(self.client, identity.id, email_id, envelope, None)
        except MethodError as exc:
            if exc.type in _FATAL_METHOD_ERRORS:
                raise SubmissionRefused(str(exc), kind=exc.type) from None
            raise

    def misplaced(self, email: Email) -> bool:
        """Still a draft, not in Sent, or still in Drafts (beside Sent)."""
        assert self.setup is not None  # noqa: S101
        sent = self.setup.sent
        if "$draft" in email.keywords:
            return True
        if sent is None:
            return False
        return sent not in email.mailbox_ids or (
            sent != self.drafts and self.drafts in email.mailbox_ids
        )

    async def finish(self, entry: Entry, *, email_updated: bool) -> None:
        """The Sent copy where it belongs, then the outbox forgets the message."""
        if not email_updated and entry.email_id is not None:
            email = await email_of(self.client, entry.email_id)
            if (
                email is not None
                and self.misplaced(email)
                and not await update_email(self.client, entry.email_id, self.patch())
            ):
                self.log.warning("send-sent-copy-not-moved", email=entry.email_id)
        self.outbox.done(entry)


async def flush_account(
    config: Config,
    account: AccountConfig,
    *,
    client_factory: ClientFactory = JmapClient,
    retry_held: bool = False,
    wait: float = 0.0,
    outbox: Outbox | None = None,
) -> FlushReport:
    """Send what waits in the account's outbox.  Never raises a JmapsyncError:
    the report says what happened (the daemon and `sync` call this before
    their pass; a failure here must not stop the pass)."""
    report = FlushReport(account.name)
    outbox = outbox or Outbox.for_account(config.state_dir, account.name)
    if not retry_held and not outbox.has_waiting():
        return report  # nothing queued: no database, no network
    try:
        with outbox.lock(wait) as got:
            if not got:
                report.busy = True
                return report
            await _flush_locked(account, outbox, client_factory, retry_held, report)
    except JmapsyncError as exc:
        report.error = str(exc)
    except (OSError, sqlite3.Error) as exc:  # the outbox's own disk: full, read-only, gone
        report.error = f"outbox {outbox.root}: {exc}"
        log.get().warning("send-outbox-failed", account=account.name, error=str(exc))
    finally:
        outbox.close()
    return report


def _ready(outbox: Outbox, retry_held: bool, log_: Any) -> list[Entry]:
    """The rows to work on, oldest first; rows whose file is gone are dropped."""
    todo = []
    for entry in outbox.entries():
        if outbox.path_of(entry.id) is None:
            if entry.state != "sent":
                log_.warning("send-dropped", entry=entry.id, reason="its file was removed")
            outbox.drop_row(entry)
            continue
        if entry.state == "held":
            if not retry_held:
                outbox.park(entry)
                continue
            todo.append(outbox.release(entry))
            continue
        todo.append(entry)
    return todo


async def _flush_locked(
    account: AccountConfig,
    outbox: Outbox,
    client_factory: ClientFactory,
    retry_held: bool,
    report: FlushReport,
) -> None:
    log_ = log.get().bind(account=account.name)
    todo = _ready(outbox, retry_held, log_)
    if not todo:
        return
    async with client_factory(account) as client:
        flush = _Flush(account, outbox, client)
        try:
            await flush.start()
        except SubmissionRefused as exc:  # no submission capability: nothing can go
            for entry in todo:
                report.held.append(outbox.hold(entry, str(exc), exc.kind))
            log_.warning("send-refused", entries=len(todo), reason=str(exc))
            return
        except JmapsyncError as exc:
            _deferred(outbox, todo, exc, report, log_)
            return
        done: set[str] = set()
        while todo:
            for i, entry in enumerate(todo):
                done.add(entry.id)
                try:
                    report.sent.append(await flush.send(entry))
                except SubmissionRefused as exc:
                    row = outbox.get(entry.id) or entry
                    report.held.append(outbox.hold(row, str(exc), exc.kind))
                    log_.warning("send-refused", entry=entry.id, kind=exc.kind, reason=str(exc))
                except LocalError as exc:
                    log_.warning("send-local-problem", entry=entry.id, error=str(exc))
                    row = outbox.get(entry.id) or entry
                    report.held.append(outbox.hold(row, str(exc), "local"))
                except JmapsyncError as exc:
                    _deferred(outbox, todo[i:], exc, report, log_)
                    return
            # Messages queued while we were sending (mutt, a second `send`).
            todo = [e for e in _ready(outbox, False, log_) if e.id not in done]


def _deferred(
    outbox: Outbox, rest: list[Entry], exc: JmapsyncError, report: FlushReport, log_: Any
) -> None:
    report.error = str(exc)
    for entry in rest:
        row = outbox.get(entry.id) or entry
        report.waiting.append(outbox.update(row, reason=str(exc), last_try=time.time()))
    log_.warning("send-deferred", entries=len(rest), error=str(exc), retry=exc.retry.value)
