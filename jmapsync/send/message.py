"""PURE: turn what a mail program pipes into `jmapsync send` into the bytes we send.

The rules, and why:

- Line endings become CRLF (a bare LF becomes CRLF, a lone CR stays):
  servers hold CRLF, and Cyrus refuses a bare LF.
- `Bcc:` and `Resent-Bcc:` fields are removed, always.  RFC 8621 7.5 says
  the server MUST remove Bcc when it sends; Cyrus 3.6 does not (measured: the
  Bcc field reaches every recipient), and the stored copy in Sent is the
  very Email that is sent.  So the Bcc recipients are only in the envelope.
- A missing `Message-ID:` or `Date:` is added, as sendmail does; the
  Message-ID is also how the outbox finds its own Email again after a crash.
  A missing `From:` is made from `-f` (and `-F`); without either the message
  cannot be sent (no Identity can be chosen).
- A leading mbox `From ` line (`git format-patch` output piped in) is dropped,
  as Postfix's sendmail does.
- Every other byte, the body above all, is kept as it came.
"""

from __future__ import annotations

import datetime as dt
import email.header
import email.utils
import hashlib
import re
import secrets
from dataclasses import dataclass

from jmapsync.errors import MessageError
from jmapsync.maildir.message import upload_form

_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:")  # field name: printable ASCII but ":"
_MSGID = re.compile(rb"<([^<>\s]+)>")
_ADDRESS_BAD = re.compile(r"[\s\x00-\x1f\x7f<>]")
_STRIPPED = frozenset({b"bcc", b"resent-bcc"})


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready for the outbox."""

    data: bytes  # what is stored and uploaded
    from_address: str  # the From field's address (the Identity is chosen by it)
    from_name: str
    recipients: tuple[str, ...]  # envelope RCPT TO, deduplicated, in order
    message_id: str  # without angle brackets
    subject: str  # decoded, for `jmapsync status`

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class _Field:
    name: bytes  # lower-cased
    lines: list[bytes]  # the raw lines (first + continuations), without CRLF

    def value(self) -> str:
        raw = b" ".join(
            [self.lines[0].partition(b":")[2].strip(), *(x.strip() for x in self.lines[1:])]
        )
        return raw.decode("utf-8", "replace")


def _fields(head: bytes) -> list[_Field]:
    fields: list[_Field] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise MessageError("the message starts with a continuation line, not a header")
            fields[-1].lines.append(line)
            continue
        m = _FIELD.match(line)
        if m is None:
            shown = line[:60].decode("utf-8", "replace")
            raise MessageError(f"not a header line: {shown!r} (the header must come first)")
        fields.append(_Field(m.group(1).lower(), [line]))
    return fields


def addresses(values: list[str], what: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of address-list values; MessageError on junk."""
    out = []
    for name, addr in email.utils.getaddresses(values):
        if not addr and not name:
            continue  # an empty group ("undisclosed-recipients:;")
        if not valid_address(addr):
            raise MessageError(f"{what}: not an email address: {addr or name!r}")
        out.append((name, addr))
    return out


def valid_address(addr: str) -> bool:
    """local@domain, no spaces or control characters: whether the domain
    exists is the server's business."""
    local, at, domain = addr.rpartition("@")
    return bool(at and local and domain) and not _ADDRESS_BAD.search(addr)


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError):
        return value


def prepare(
    raw: bytes,
    recipients: list[str],
    *,
    from_headers: bool,
    envelope_from: str | None = None,
    full_name: str | None = None,
    now: dt.datetime | None = None,
) -> Prepared:
    """The bytes to send and what the envelope needs; MessageError when the
    message cannot be sent as it is (EX_DATAERR)."""
    if not raw.strip():
        raise MessageError("the message is empty")
    if raw.startswith(b"From ") and b"\n" in raw:
        raw = raw.split(b"\n", 1)[1]  # mbox separator line, not a header
    data = upload_form(raw)
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep and head.endswith(b"\r\n"):
        head = head[:-2]  # a header block with no body after it
    fields = _fields(head)
    by_name: dict[bytes, list[_Field]] = {}
    for f in fields:
        by_name.setdefault(f.name, []).append(f)

    def values(name: bytes) -> list[str]:
        return [f.value() for f in by_name.get(name, [])]

    added: list[bytes] = []
    from_pairs = addresses(values(b"from"), "From")
    if not from_pairs:
        if not envelope_from:
            raise MessageError("the message has no From header (and no -f address)")
        from_pairs = [(full_name or "", envelope_from)]
        added.append(b"From: " + email.utils.formataddr(from_pairs[0]).encode("utf-8"))
    from_name, from_address = from_pairs[0]

    rcpts = addresses(recipients, "recipient")
    if from_headers:
        # sendmail -t: Resent-* fields, when present, name this resend's recipients.
        resent = [b"resent-to", b"resent-cc", b"resent-bcc"]
        names = resent if any(n in by_name for n in resent) else [b"to", b"cc", b"bcc"]
        for n in names:
            rcpts += addresses(values(n), n.decode().title())
    seen: set[str] = set()
    unique: list[str] = []
    for _, addr in rcpts:
        if addr.lower() not in seen:
            seen.add(addr.lower())
            unique.append(addr)
    if not unique:
        where = " or in To/Cc/Bcc" if from_headers else " (-t reads To, Cc and Bcc)"
        raise MessageError("no recipients: none on the command line" + where)

    ids = values(b"message-id")
    found = _MSGID.search(ids[0].encode()) if ids else None
    if found:
        message_id = found.group(1).decode()
    else:
        domain = from_address.rpartition("@")[2] or "jmapsync.invalid"
        message_id = f"{secrets.token_hex(12)}.jmapsync@{domain}"
        added.append(f"Message-ID: <{message_id}>".encode())
    if b"date" not in by_name:
        when = now or dt.datetime.now(dt.UTC)
        added.append(b"Date: " + email.utils.format_datetime(when).encode())

    kept = [line for f in fields if f.name not in _STRIPPED for line in f.lines]
    out = b"\r\n".join(kept + added) + b"\r\n"
    if sep:
        out += b"\r\n" + body
    subject = values(b"subject")
    return Prepared(
        data=out,
        from_address=from_address,
        from_name=from_name,
        recipients=tuple(unique),
        message_id=message_id,
        subject=_decoded(subject[0])[:200] if subject else "",
    )
