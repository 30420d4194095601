"""One message of the outbox, from where its journal row says it stands, to sent.

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
4. `EmailSubmission/set` with the envelope, `onSuccessUpdateEmail`
   (leave Drafts, join Sent, `$seen`, no `$draft`) and `ifInState`; a server
   that refuses onSuccessUpdateEmail gets the submission alone and a
   separate `Email/set`.  Record `sent`, then make sure the Email is in
   Sent, then delete file and row.  `ifInState` because the HTTP layer
   repeats a request whose kept-alive connection turned out closed: a
   submission the server had received would go twice; with the state in it,
   the repeat is a `stateMismatch`, answered as in step 5.
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
import time
from typing import Any

from jmapsync import log
from jmapsync.config import AccountConfig
from jmapsync.errors import MethodError, SubmissionRefused
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.mail import ImportItem, import_emails
from jmapsync.jmap.submission import (
    Envelope,
    SendSetup,
    Submitted,
    email_of,
    find_by_message_id,
    read_setup,
    submission_state,
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


class MessageSender:
    """Sends the messages of one outbox over one connection (see the module
    docstring); `start()` first, then `send()` per message, oldest first."""

    def __init__(self, account: AccountConfig, outbox: Outbox, client: JmapClient) -> None:
        self.account = account
        self.outbox = outbox
        self.client = client
        self.setup: SendSetup | None = None
        self.own: list[str] = []
        self.state: str | None = None  # EmailSubmission state: every submit carries it
        self.on_success = True  # until the server refuses onSuccessUpdateEmail
        self.log = log.get().bind(account=account.name)

    # -- the setup -----------------------------------------------------------------

    async def start(self) -> None:
        await self.client.connect()
        assert self.client.session is not None  # noqa: S101
        self.setup = await read_setup(self.client)
        self.state = self.setup.submission_state
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
        for _ in range(3):
            patch = self.patch() if self.on_success else None
            try:
                done = await submit(self.client, identity.id, email_id, envelope, patch, self.state)
            except MethodError as exc:
                if exc.type == "invalidArguments" and self.on_success:
                    # A method error did nothing (RFC 8620 3.6.1): try without the argument.
                    self.log.info("send-no-onsuccessupdate", error=str(exc))
                    self.on_success = False
                    continue
                if exc.type == "stateMismatch":
                    # Another client submitted meanwhile -- or this very request
                    # reached the server twice (an HTTP repeat): ask before retrying.
                    self.state = await submission_state(self.client)
                    sent = await self.was_sent(entry)
                    if sent is not None:
                        return Submitted(sent, email_updated=False, new_state=self.state)
                    continue
                if exc.type in _FATAL_METHOD_ERRORS:
                    raise SubmissionRefused(str(exc), kind=exc.type) from None
                raise
            self.state = done.new_state
            return done
        raise MethodError("EmailSubmission/set", "stateMismatch", "the state kept changing")

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
