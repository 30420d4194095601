"""RFC 8621 6-7 calls for `jmapsync send`: Identity, Email lookup, EmailSubmission.

Only these requests name the submission capability in `using`
(USING_SUBMISSION); the rest of jmapsync never asks for it, so a token
without the "Email submission" scope still syncs.

Measured on Cyrus 3.6 (tools/cyrus.py):
- `Identity/get` needs the submission capability and returns ONE identity,
  id = the user name, `email` empty; `Identity/set` is unknownMethod.
- `EmailSubmission/set` with `onSuccessUpdateEmail` works; its implicit
  `Email/set` answer follows under the same call id (a failed patch shows as
  `notUpdated` there, the submission still counts as done).
- `EmailSubmission/query` with `filter.emailIds` works -- but Cyrus's default
  `jmapsubmission_deleteonsend: yes` destroys each EmailSubmission right
  after sending it, so an empty answer does not prove "never sent".
- An unknown emailId answers the non-standard SetError `emailNotFound`;
  recipients are not validated ("not an address" is handed to sendmail).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jmapsync import log
from jmapsync.errors import ProtocolError, SubmissionRefused, method_error
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import (
    SUBMISSION,
    USING_SUBMISSION,
    Email,
    EmailId,
    Identity,
    MailboxId,
    parse_id,
)

_FOUND_PROPERTIES = ["id", "blobId", "mailboxIds", "keywords", "size", "messageId"]


@dataclass(frozen=True, slots=True)
class SendSetup:
    """What a send needs to know about the account, read in one request."""

    identities: list[Identity]
    drafts: MailboxId | None  # the Drafts-role mailbox
    sent: MailboxId | None  # the Sent-role mailbox
    extensions: dict[str, Any] = field(default_factory=dict)  # submissionExtensions
    submission_state: str | None = None  # the EmailSubmission state, for ifInState


@dataclass(frozen=True, slots=True)
class Envelope:
    """SMTP envelope (RFC 8621 7, Envelope); parameters only where asked for."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    mail_parameters: dict[str, str | None] | None = None
    rcpt_parameters: dict[str, str | None] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "mailFrom": {"email": self.mail_from, "parameters": self.mail_parameters},
            "rcptTo": [{"email": r, "parameters": self.rcpt_parameters} for r in self.rcpt_to],
        }


@dataclass(frozen=True, slots=True)
class Submitted:
    """An EmailSubmission the server created."""

    id: str
    email_updated: bool  # onSuccessUpdateEmail was applied (the implicit Email/set)
    new_state: str | None = None  # the EmailSubmission state after it


def _aid(client: JmapClient) -> str:
    if client.session is None:
        raise RuntimeError("connect first")
    return client.session.account_id


def check_capability(client: JmapClient) -> None:
    """SubmissionRefused when the session offers no EmailSubmission for the
    mail account (a server without it, or a token without the scope)."""
    session = client.session
    if session is None:
        raise RuntimeError("connect first")
    if SUBMISSION not in session.capabilities or SUBMISSION not in session.account_capabilities:
        raise SubmissionRefused(
            f"the server offers no {SUBMISSION} for account {session.account_id}"
            " (an API token needs the scope for sending, e.g. Fastmail's"
            ' "Email submission")',
            kind="noSubmission",
        )


async def read_setup(client: JmapClient) -> SendSetup:
    """Identities, the Drafts / Sent mailboxes and the EmailSubmission state,
    in one request."""
    check_capability(client)
    assert client.session is not None  # noqa: S101 - check_capability checked it
    aid = _aid(client)
    r = await client.call(
        [
            ("Identity/get", {"accountId": aid, "ids": None}, "i"),
            ("Mailbox/get", {"accountId": aid, "ids": None, "properties": ["id", "role"]}, "m"),
            ("EmailSubmission/get", {"accountId": aid, "ids": []}, "s"),
        ],
        USING_SUBMISSION,
    )
    state = r.result("s").get("state")
    items = r.result("i").get("list")
    boxes = r.result("m").get("list")
    if not isinstance(items, list) or not isinstance(boxes, list):
        raise ProtocolError("Identity/get or Mailbox/get: list is not an array")
    roles: dict[str, MailboxId] = {}
    for box in boxes:
        if isinstance(box, dict) and isinstance(box.get("role"), str):
            roles.setdefault(box["role"].lower(), MailboxId(parse_id(box.get("id"), "mailbox")))
    caps = client.session.account_capabilities.get(SUBMISSION)
    extensions = caps.get("submissionExtensions") if isinstance(caps, dict) else None
    return SendSetup(
        identities=[Identity.parse(i) for i in items],
        drafts=roles.get("drafts"),
        sent=roles.get("sent"),
        extensions=extensions if isinstance(extensions, dict) else {},
        submission_state=state if isinstance(state, str) and state else None,
    )


async def submission_state(client: JmapClient) -> str | None:
    """The EmailSubmission state now (after a stateMismatch)."""
    aid = _aid(client)
    r = await client.call(
        [("EmailSubmission/get", {"accountId": aid, "ids": []}, "s")], USING_SUBMISSION
    )
    state = r.result("s").get("state")
    return state if isinstance(state, str) and state else None


def _found(item: object) -> tuple[Email, list[str]]:
    email = Email.parse(item)
    assert isinstance(item, dict)  # noqa: S101 - Email.parse checked it
    mids = item.get("messageId") or []
    return email, [m for m in mids if isinstance(m, str)] if isinstance(mids, list) else []


async def find_by_message_id(client: JmapClient, message_id: str) -> list[Email]:
    """Emails whose Message-ID is exactly `message_id` (for finding our own
    import again after a crash).  The header filter is a substring match on
    Cyrus, so the answer is checked against `messageId`."""
    aid = _aid(client)
    r = await client.call(
        [
            (
                "Email/query",
                {"accountId": aid, "filter": {"header": ["Message-ID", message_id]}, "limit": 50},
                "q",
            ),
            (
                "Email/get",
                {
                    "accountId": aid,
                    "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                    "properties": _FOUND_PROPERTIES,
                },
                "g",
            ),
        ]
    )
    items = r.result("g").get("list") or []
    out = []
    for item in items:
        email, mids = _found(item)
        if message_id in mids:
            out.append(email)
    return out


async def email_of(client: JmapClient, email_id: str) -> Email | None:
    """The Email's mailboxes and keywords now; None if the server has no such Email."""
    aid = _aid(client)
    r = await client.call(
        [("Email/get", {"accountId": aid, "ids": [email_id], "properties": _FOUND_PROPERTIES}, "g")]
    )
    for item in r.result("g").get("list") or []:
        email, _ = _found(item)
        if email.id == email_id:
            return email
    return None


async def submissions_of(client: JmapClient, email_id: str) -> set[str]:
    """Ids of the EmailSubmissions the server still lists for this Email."""
    aid = _aid(client)
    r = await client.call(
        [("EmailSubmission/query", {"accountId": aid, "filter": {"emailIds": [email_id]}}, "q")],
        USING_SUBMISSION,
    )
    ids = r.result("q").get("ids")
    if not isinstance(ids, list):
        raise ProtocolError("EmailSubmission/query: ids is not an array")
    return {parse_id(i, "EmailSubmission") for i in ids}


async def submit(
    client: JmapClient,
    identity_id: str,
    email_id: EmailId,
    envelope: Envelope,
    on_success: dict[str, Any] | None,
    if_in_state: str | None = None,
) -> Submitted:
    """EmailSubmission/set create; with `on_success`, the Email is patched by
    the server right after (onSuccessUpdateEmail).

    `if_in_state` makes the request safe to repeat: the HTTP layer
    (jmap/http.py) sends a `*/set` with ifInState again after a broken
    connection, and a submission the server did receive would otherwise go
    out twice; with the state in the request, the repeat is a stateMismatch
    (tested on Cyrus).

    Raises SubmissionRefused for a SetError (the server will not send this
    message), MethodError for a method-level error (nothing was done)."""
    aid = _aid(client)
    args: dict[str, Any] = {
        "accountId": aid,
        "create": {
            "send": {"identityId": identity_id, "emailId": email_id, "envelope": envelope.as_json()}
        },
    }
    if on_success is not None:
        args["onSuccessUpdateEmail"] = {"#send": on_success}
    if if_in_state is not None:
        args["ifInState"] = if_in_state
    r = await client.call([("EmailSubmission/set", args, "s")], USING_SUBMISSION)
    created: object = None
    refused: object = None
    new_state: object = None
    email_updated = False
    for name, result, cid in r.items:
        if cid != "s":
            continue
        if name == "error":
            if created is None and refused is None:
                raise method_error("EmailSubmission/set", result)
            continue  # the implicit Email/set failed: the submission stands
        if name == "EmailSubmission/set":
            created = (result.get("created") or {}).get("send")
            refused = (result.get("notCreated") or {}).get("send")
            new_state = result.get("newState")
        elif name == "Email/set" and email_id in (result.get("updated") or {}):
            email_updated = True
    if isinstance(refused, dict):
        kind = str(refused.get("type", "?"))
        desc = refused.get("description")
        detail = refused.get("properties") or refused.get("invalidRecipients")
        text = kind + (f": {desc}" if isinstance(desc, str) else "")
        if detail:
            text += f" ({detail})"
        raise SubmissionRefused(f"EmailSubmission/set refused: {text}", kind=kind)
    if not isinstance(created, dict):
        raise ProtocolError("EmailSubmission/set: neither created nor notCreated for the message")
    sid = parse_id(created.get("id"), "EmailSubmission")
    log.get().debug("submitted", submission=sid, email=email_id, email_updated=email_updated)
    return Submitted(sid, email_updated, new_state if isinstance(new_state, str) else None)


async def update_email(client: JmapClient, email_id: str, patch: dict[str, Any]) -> bool:
    """Email/set update (the fallback for onSuccessUpdateEmail); True if applied."""
    aid = _aid(client)
    r = await client.call([("Email/set", {"accountId": aid, "update": {email_id: patch}}, "u")])
    result = r.result("u")
    return email_id in (result.get("updated") or {})
