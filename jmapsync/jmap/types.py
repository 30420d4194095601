"""Pure JMAP types: ids, states, the session and its limits, parsed records.

Everything the server sends passes through a parser here before the rest of
jmapsync sees it, so that a malformed id or an absurd number is rejected at
the border with a ProtocolError instead of reaching a file name.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NewType
from urllib.parse import urljoin

from jmapsync.errors import ProtocolError

EmailId = NewType("EmailId", str)
BlobId = NewType("BlobId", str)
MailboxId = NewType("MailboxId", str)
AccountId = NewType("AccountId", str)
State = NewType("State", str)

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
WEBSOCKET = "urn:ietf:params:jmap:websocket"
SUBMISSION = "urn:ietf:params:jmap:submission"
USING = (CORE, MAIL)
# Only calls that need it name the submission capability: a server (or a
# token without the "Email submission" scope) that lacks it must still sync.
USING_SUBMISSION = (CORE, MAIL, SUBMISSION)

# RFC 8620 1.2: an Id is 1-255 octets of the URL-safe base64 alphabet.  We rely
# on this: Email ids become part of file names.
_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
# Absurd-size guard: no single message above this is written to disk.
MAX_MESSAGE_BYTES = 2 * 1024**3
# Keywords: RFC 8621 4.1.1 (IMAP atom characters, 1-255 bytes).
_KEYWORD = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEYWORD_FORBIDDEN = set('()[]{}%*"\\')


def parse_id(value: object, what: str) -> str:
    """Check an Id from the server; raise ProtocolError when it is unsafe."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ProtocolError(f"server sent an invalid {what} id: {value!r:.80}")
    return value


def parse_state(value: object, what: str) -> State:
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise ProtocolError(f"server sent an invalid {what} state: {value!r:.80}")
    return State(value)


def parse_keyword(value: object) -> str:
    """Keywords are case-insensitive; we store them lower-cased as servers do."""
    if (
        not isinstance(value, str)
        or not _KEYWORD.match(value)
        or any(c in _KEYWORD_FORBIDDEN for c in value)
    ):
        raise ProtocolError(f"server sent an invalid keyword: {value!r:.80}")
    return value.lower()


def _int(value: object, what: str, *, minimum: int = 0, maximum: int = 2**53 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProtocolError(f"server sent an invalid {what}: {value!r:.80}")
    return value


class Limits(NamedTuple):
    """The core capability's limits that shape our requests."""

    max_concurrent_requests: int = 4
    max_calls_in_request: int = 16
    max_objects_in_get: int = 500
    max_objects_in_set: int = 500
    max_size_request: int = 10_000_000
    max_size_upload: int = 50_000_000
    max_concurrent_upload: int = 4

    @classmethod
    def parse(cls, core: object) -> Limits:
        if not isinstance(core, dict):
            raise ProtocolError("session: core capability is not an object")

        def get(key: str, default: int) -> int:
            if key not in core:
                return default
            # Bounded so that a hostile server cannot make us open 10**9 sockets.
            return min(_int(core[key], f"core capability {key}", minimum=1), 1 << 30)

        return cls(
            max_concurrent_requests=min(get("maxConcurrentRequests", 4), 64),
            max_calls_in_request=get("maxCallsInRequest", 16),
            max_objects_in_get=get("maxObjectsInGet", 500),
            max_objects_in_set=get("maxObjectsInSet", 500),
            max_size_request=get("maxSizeRequest", 10_000_000),
            max_size_upload=get("maxSizeUpload", 50_000_000),
            max_concurrent_upload=min(get("maxConcurrentUpload", 4), 64),
        )


@dataclass(frozen=True, slots=True)
class Session:
    """The parts of the JMAP session resource (RFC 8620 2) that we use."""

    url: str  # where the session was finally fetched (after redirects)
    username: str
    account_id: AccountId
    api_url: str
    download_url: str
    upload_url: str
    event_source_url: str | None
    websocket_url: str | None
    state: str
    limits: Limits
    capabilities: dict[str, Any] = field(default_factory=dict)
    account_capabilities: dict[str, Any] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)  # id -> name
    # The mail account is read-only for these credentials (RFC 8620 2,
    # isReadOnly; a read-only API token): pull works, no write will.
    read_only: bool = False

    @classmethod
    def parse(cls, data: object, url: str) -> Session:
        """Validate the session JSON; URLs that are paths resolve against `url`."""
        if not isinstance(data, dict):
            raise ProtocolError("session resource is not a JSON object")
        caps = data.get("capabilities")
        if not isinstance(caps, dict):
            raise ProtocolError("session has no capabilities object")
        for needed in USING:
            if needed not in caps:
                raise ProtocolError(f"server does not offer the capability {needed}")
        accounts = data.get("accounts")
        primary = data.get("primaryAccounts")
        if not isinstance(accounts, dict) or not isinstance(primary, dict):
            raise ProtocolError("session has no accounts / primaryAccounts")
        account_id = parse_id(primary.get(MAIL), "mail account")
        account = accounts.get(account_id)
        if not isinstance(account, dict):
            raise ProtocolError(f"primary mail account {account_id} is not in accounts")

        def resolve(key: str, required: bool = True) -> str | None:
            value = data.get(key)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                raise ProtocolError(f"session: {key} missing or not a string")
            # Cyrus sends absolute paths ("/jmap/"), not URLs: RFC 3986 resolution.
            return urljoin(url, value)

        api_url = resolve("apiUrl")
        download_url = resolve("downloadUrl")
        upload_url = resolve("uploadUrl")
        assert api_url and download_url and upload_url  # noqa: S101 - required=True
        for var in ("{accountId}", "{blobId}"):
            if var not in download_url:
                raise ProtocolError(f"session: downloadUrl lacks {var}")
        ws_url: str | None = None
        ws = caps.get(WEBSOCKET)
        if isinstance(ws, dict) and isinstance(ws.get("url"), str):
            ws_url = websocket_url(ws["url"], url)
        names = {
            str(k): str(v.get("name", k)) if isinstance(v, dict) else str(k)
            for k, v in accounts.items()
        }
        acaps = account.get("accountCapabilities")
        return cls(
            url=url,
            username=str(data.get("username", "")),
            account_id=AccountId(account_id),
            api_url=api_url,
            download_url=download_url,
            upload_url=upload_url,
            event_source_url=resolve("eventSourceUrl", required=False),
            websocket_url=ws_url,
            state=str(data.get("state", "")),
            limits=Limits.parse(caps[CORE]),
            capabilities=dict(caps),
            account_capabilities=dict(acaps) if isinstance(acaps, dict) else {},
            accounts=names,
            read_only=account.get("isReadOnly") is True,
        )


def websocket_url(value: str, session_url: str) -> str:
    """Resolve the WebSocket URL; Cyrus sends the odd "wss:/jmap/ws/" (no host)."""
    base = urljoin(session_url, "/")
    secure = session_url.startswith("https:")
    if value.startswith(("wss:/", "ws:/")) and not value.startswith(("wss://", "ws://")):
        value = value.split(":", 1)[1]
    resolved = urljoin(base, value)
    if resolved.startswith("https:"):
        return "wss:" + resolved[len("https:") :]
    if resolved.startswith("http:"):
        return ("wss:" if secure else "ws:") + resolved[len("http:") :]
    return resolved


class Mailbox(NamedTuple):
    """A Mailbox as far as the mirror cares."""

    id: MailboxId
    name: str
    parent_id: MailboxId | None
    role: str | None
    total_emails: int = 0

    @classmethod
    def parse(cls, data: object) -> Mailbox:
        if not isinstance(data, dict):
            raise ProtocolError("Mailbox/get: a mailbox is not an object")
        mid = MailboxId(parse_id(data.get("id"), "mailbox"))
        name = data.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"Mailbox {mid}: name is not a string")
        parent = data.get("parentId")
        role = data.get("role")
        if role is not None and not isinstance(role, str):
            raise ProtocolError(f"Mailbox {mid}: role is not a string")
        total = data.get("totalEmails", 0)
        return cls(
            id=mid,
            name=name,
            parent_id=MailboxId(parse_id(parent, "mailbox")) if parent is not None else None,
            role=role.lower() if role else None,
            total_emails=_int(total, "totalEmails") if total is not None else 0,
        )


class Identity(NamedTuple):
    """An Identity (RFC 8621 6): who the user may send as.

    `email` may be `*@domain` (any address of that domain) or, as Cyrus 3.6
    sends it, empty: the server names no address at all."""

    id: str
    name: str
    email: str

    @classmethod
    def parse(cls, data: object) -> Identity:
        if not isinstance(data, dict):
            raise ProtocolError("Identity/get: an identity is not an object")
        iid = parse_id(data.get("id"), "identity")
        name = data.get("name") or ""
        email = data.get("email") or ""
        if not isinstance(name, str) or not isinstance(email, str) or len(email) > 998:
            raise ProtocolError(f"Identity {iid}: name / email are not strings")
        return cls(id=iid, name=name, email=email.strip())


EMAIL_PROPERTIES = ["id", "blobId", "mailboxIds", "keywords", "size", "receivedAt"]
MAILBOX_PROPERTIES = ["id", "name", "parentId", "role", "totalEmails"]


class Email(NamedTuple):
    """An Email's sync-relevant properties (RFC 8621 4.1)."""

    id: EmailId
    blob_id: BlobId
    mailbox_ids: frozenset[MailboxId]
    keywords: frozenset[str]
    size: int
    # receivedAt as a POSIX time (whole seconds); None when unknown (a record
    # from before jmapsync kept it).  Every file of the Email gets it as mtime.
    received_at: float | None = None

    @classmethod
    def parse(cls, data: object, skipped: list[str] | None = None) -> Email:
        """`skipped` collects keywords that are not valid JMAP keywords (RFC
        8621 4.1.1): one such keyword must not block the account, so it is
        left out of the mirror (and, being left out of every patch, left
        alone on the server) instead of failing the pass."""
        if not isinstance(data, dict):
            raise ProtocolError("Email/get: an email is not an object")
        eid = EmailId(parse_id(data.get("id"), "email"))
        blob = BlobId(parse_id(data.get("blobId"), "blob"))
        mids = data.get("mailboxIds")
        kws = data.get("keywords")
        if not isinstance(mids, dict) or not isinstance(kws, dict):
            raise ProtocolError(f"Email {eid}: mailboxIds / keywords are not objects")
        size = _int(data.get("size"), f"size of Email {eid}")
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(
                f"Email {eid} claims a size of {size} bytes, above the limit of"
                f" {MAX_MESSAGE_BYTES}; refusing to download it"
            )
        return cls(
            id=eid,
            blob_id=blob,
            mailbox_ids=intern_set(
                frozenset(MailboxId(parse_id(k, "mailbox")) for k, v in mids.items() if v is True)
            ),
            keywords=intern_set(frozenset(_keywords(kws, skipped))),
            size=size,
            received_at=parse_utc_date(data.get("receivedAt")),
        )


def _keywords(raw: dict[Any, Any], skipped: list[str] | None) -> Iterator[str]:
    for k, v in raw.items():
        if v is not True:
            continue
        try:
            yield parse_keyword(k)
        except ProtocolError:
            if skipped is None:
                raise
            skipped.append(str(k))


def parse_utc_date(value: object) -> float | None:
    """An RFC 3339 date (JMAP UTCDate, "2024-01-01T10:00:00Z") as a POSIX time
    in whole seconds; None when absent or not a date (it only sets mtimes)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return float(int(when.timestamp()))
    except (OverflowError, OSError, ValueError):
        return None


_SETS: dict[frozenset[Any], frozenset[Any]] = {}


def intern_set(value: frozenset[Any]) -> frozenset[Any]:
    """One shared object per distinct set: 100 000 Emails have a few hundred
    distinct mailboxIds / keywords sets, and a frozenset costs ~200 bytes."""
    return _SETS.setdefault(value, value)


class Changes(NamedTuple):
    """One */changes answer (RFC 8620 5.2)."""

    old_state: State
    new_state: State
    has_more: bool
    created: tuple[str, ...]
    updated: tuple[str, ...]
    destroyed: tuple[str, ...]
    # Mailbox/changes (RFC 8621 2.2): when only these properties of the
    # updated ones changed (the counts); None: any may have.
    updated_properties: frozenset[str] | None = None

    @classmethod
    def parse(cls, data: dict[str, Any], what: str) -> Changes:
        def ids(key: str) -> tuple[str, ...]:
            value = data.get(key)
            if not isinstance(value, list):
                raise ProtocolError(f"{what}/changes: {key} is not a list")
            return tuple(parse_id(v, what) for v in value)

        return cls(
            old_state=parse_state(data.get("oldState"), what),
            new_state=parse_state(data.get("newState"), what),
            has_more=bool(data.get("hasMoreChanges", False)),
            created=ids("created"),
            updated=ids("updated"),
            destroyed=ids("destroyed"),
            updated_properties=_names(data.get("updatedProperties")),
        )


def _names(value: object) -> frozenset[str] | None:
    """A list of property names, or None (also for anything that is not one:
    then every property may have changed)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return frozenset(value)
