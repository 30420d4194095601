"""Server personalities: where a real server departs from the plain RFC, and why we think so.

Each field is a habit of one server, with the source of the fact.  Anything
not listed here follows RFC 8620/8621 (see README.md in this package).

Sources (read, never copied):

* [STALWART] github.com/stalwartlabs/mail-server (snapshot 55e62a68):
  - crates/jmap/src/lib.rs `build_query_response`: `limit` is clamped to
    `jmap.protocol.query.max-results` and returned when the result set is
    larger than the clamped limit;
  - crates/common/src/config/jmap/settings.rs: defaults max-results 5000,
    get/set max-objects 500, request max-calls 16, max-concurrent 4,
    upload max-size 50 MB;
  - crates/jmap/src/email/import.rs + crates/email/src/message/ingest.rs:
    Email/import ingests with `IngestSource::Jmap`; duplicates are skipped
    only for SMTP deliveries (`skip_duplicate` when `source.is_smtp()`), so the
    same bytes imported twice are two Emails, and no `alreadyExists`;
  - crates/jmap-proto/src/types/id.rs + crates/utils/src/codec/base32_custom.rs:
    ids are numbers in a base32 alphabet "abcdefghijklmnopqrstuvwxyz792013"
    (opaque, not content hashes);
  - crates/jmap-proto/src/response/status.rs + crates/jmap/src/api/event_source.rs:
    `event: state` carries `{"@type": "StateChange", "changed": ...}`, no
    event on connect; `event: ping` data `{"interval": N}` with N in
    MILLISECONDS (RFC 8620 7.3 says seconds);
  - crates/jmap-proto/src/request/capability.rs: apiUrl `/jmap/`,
    downloadUrl `/jmap/download/{accountId}/{blobId}/{name}?accept={type}`,
    uploadUrl `/jmap/upload/{accountId}/`, eventSourceUrl
    `/jmap/eventsource/?types=..&closeafter=..&ping=..`; session at
    `/.well-known/jmap` (crates/http/src/request.rs).
* [FASTMAIL-DEV] https://www.fastmail.com/dev/ : Bearer tokens ("add an
  Authorization header set to Bearer {value}"), session
  https://api.fastmail.com/jmap/session, scopes urn:ietf:params:jmap:core /
  mail / submission; https://www.fastmail.com/developer/integrating-with-fastmail
  "If you do not need to modify data, you can create a read-only token";
  `rateLimit` SetErrors are returned when a rate limit is hit (MaskedEmail).
* [FASTMAIL-SESSION] github.com/joelparkerhenderson/demo-fastmail-api-jmap
  README.md (a captured session): downloadUrl on
  https://www.fastmailusercontent.com/... while apiUrl is
  https://api.fastmail.com/jmap/api/; limits maxConcurrentRequests 10,
  maxCallsInRequest 50, maxObjectsInGet/Set 4096, maxSizeRequest 10000000,
  maxSizeUpload 250000000, maxConcurrentUpload 10; session state
  "cyrus-0;p-..." (Cyrus underneath: content-hash ids, so imports of the
  same bytes answer `alreadyExists`, as our Cyrus 3.6 does).
* [FASTMAIL-PUSH] two independent clients type Fastmail's EventSource payload
  as `{"changed": {...}, "type": ...}` without "@type":
  github.com/mattwynne/email-tools src/infrastructure/emails/PushNotification.ts
  (its live test PushNotification.spec.ts expects `type` "connect" on the
  first event, then "delivery" after a new mail) and github.com/smkent/jmapc
  jmapc/models/event.py (`StateChange(changed, type=None)`).
* [FASTMAIL-429] Fastmail publishes no rate limits; clients retry its HTTP
  429 with Retry-After (github.com/elie222/inbox-zero pull request 1110,
  apps/web/utils/fastmail/client.ts), and a login throttle exists
  (github.com/cyrusimap/cyrus-imapd issue 3141).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"

_B32 = "abcdefghijklmnopqrstuvwxyz792013"  # [STALWART] base32_custom.rs


def _b32(n: int) -> str:
    out = ""
    while True:
        out = _B32[n & 31] + out
        n >>= 5
        if not n:
            return out


@dataclass(frozen=True)
class Personality:
    """The habits of one server (RFC behaviour where a field says nothing)."""

    name: str
    dedup_imports: bool  # same bytes -> alreadyExists with existingId (Cyrus)
    hash_ids: bool  # Email/blob ids derived from the bytes (Cyrus) or opaque
    query_max: int | None  # Email/query limit clamp (returned as `limit`)
    typeless_push: bool  # EventSource state data {"changed", "type"} without @type
    connect_event: bool  # a state event at once when the event source opens
    ping_in_ms: bool  # ping data "interval" in milliseconds
    second_download_host: bool  # downloadUrl on another listener than the API
    bearer_only: bool  # Basic auth refused
    session_path: str
    api_path: str
    download_path: str
    upload_path: str
    event_path: str
    limits: dict[str, Any] = field(default_factory=dict)


STALWART = Personality(
    name="stalwart",
    dedup_imports=False,  # [STALWART] import.rs / ingest.rs
    hash_ids=False,  # [STALWART] id.rs
    query_max=5000,  # [STALWART] settings.rs default; tests lower it
    typeless_push=False,
    connect_event=False,  # [STALWART] event_source.rs sends nothing until a change
    ping_in_ms=True,  # [STALWART] event_source.rs
    second_download_host=False,
    bearer_only=False,
    session_path="/.well-known/jmap",
    api_path="/jmap/",
    download_path="/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
    upload_path="/jmap/upload/{accountId}/",
    event_path="/jmap/eventsource/?types={types}&closeafter={closeafter}&ping={ping}",
    limits={  # [STALWART] settings.rs defaults
        "maxSizeUpload": 50_000_000,
        "maxConcurrentUpload": 4,
        "maxSizeRequest": 10_000_000,
        "maxConcurrentRequests": 4,
        "maxCallsInRequest": 16,
        "maxObjectsInGet": 500,
        "maxObjectsInSet": 500,
        "collationAlgorithms": ["i;ascii-numeric", "i;ascii-casemap", "i;unicode-casemap"],
    },
)

FASTMAIL = Personality(
    name="fastmail",
    dedup_imports=True,  # [FASTMAIL-SESSION] Cyrus underneath
    hash_ids=True,
    query_max=None,  # nothing published
    typeless_push=True,  # [FASTMAIL-PUSH]
    connect_event=True,  # [FASTMAIL-PUSH] first event has type "connect"
    ping_in_ms=False,
    second_download_host=True,  # [FASTMAIL-SESSION]
    bearer_only=True,  # [FASTMAIL-DEV]
    session_path="/jmap/session",
    api_path="/jmap/api/",
    download_path="/jmap/download/{accountId}/{blobId}/{name}?type={type}",
    upload_path="/jmap/upload/{accountId}/",
    event_path="/jmap/event/?types={types}&closeafter={closeafter}&ping={ping}",
    limits={  # [FASTMAIL-SESSION]
        "maxSizeUpload": 250_000_000,
        "maxConcurrentUpload": 10,
        "maxSizeRequest": 10_000_000,
        "maxConcurrentRequests": 10,
        "maxCallsInRequest": 50,
        "maxObjectsInGet": 4096,
        "maxObjectsInSet": 4096,
        "collationAlgorithms": ["i;ascii-numeric", "i;ascii-casemap", "i;octet"],
    },
)

PERSONALITIES = {p.name: p for p in (STALWART, FASTMAIL)}


class IdMaker:
    """Ids and state strings the way the personality makes them."""

    def __init__(self, personality: Personality, seed: int = 0) -> None:
        self.p = personality
        self.rng = random.Random(seed)
        self.mailboxes = 0

    def email(self, raw: bytes) -> str:
        if self.p.hash_ids:  # Cyrus: "M" + 24 hex digits of the message's GUID
            return "M" + hashlib.sha1(raw).hexdigest()[:24]  # noqa: S324 - an id, not security
        return _b32(self.rng.getrandbits(40))

    def blob(self, raw: bytes) -> str:
        if self.p.hash_ids:  # Cyrus: "G" + the SHA-1 of the bytes
            return "G" + hashlib.sha1(raw).hexdigest()  # noqa: S324
        return "b" + _b32(self.rng.getrandbits(60))

    def mailbox(self) -> str:
        self.mailboxes += 1
        if self.p.hash_ids:
            return f"P{self.mailboxes:x}-{self.rng.getrandbits(32):08x}"
        return _b32(self.mailboxes - 1)

    def state(self, n: int) -> str:
        # Opaque to clients; Cyrus states are decimal numbers, Stalwart's base32.
        return str(n) if self.p.hash_ids else "s" + _b32(n)

    def parse_state(self, value: object) -> int | None:
        if not isinstance(value, str) or not value:
            return None
        if self.p.hash_ids:
            return int(value) if value.isdigit() else None
        if not value.startswith("s") or not set(value[1:]) <= set(_B32) or len(value) < 2:
            return None
        n = 0
        for c in value[1:]:
            n = n * 32 + _B32.index(c)
        return n
