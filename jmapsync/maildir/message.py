"""PURE: the little of RFC 5322 that two-way sync needs from a local file.

A file that appears in a Maildir without our name is either a message an
MUA wrote (a draft, an Fcc copy: to be imported) or a copy of a message we
already have under the MUA's own name (mutt saves a moved message as a new
file and adds a ``Content-Length:`` header on the way, so the bytes differ:
it is recognised by its Message-ID and its body, not by a hash of the file).
"""

from __future__ import annotations

import re

_HEADER = re.compile(rb"^[!-9;-~]+[ \t]*:")  # field name: printable ASCII but ":"
_MSGID = re.compile(rb"<([^<>\s]+)>")


def split(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body) at the first empty line, CRLF or LF."""
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        return raw, b""
    return raw[: m.start()], raw[m.end() :]


def looks_like_message(raw: bytes) -> bool:
    """True when the file starts with at least one header field and every
    line of its header block is a field or a continuation line."""
    head, _ = split(raw)
    lines = head.replace(b"\r\n", b"\n").removesuffix(b"\n").split(b"\n")
    if not lines or not _HEADER.match(lines[0]):
        return False
    return all(_HEADER.match(line) or line[:1] in (b" ", b"\t") for line in lines)


def header(raw: bytes, name: str) -> bytes | None:
    """The unfolded value of the first header field `name` (case-insensitive)."""
    head, _ = split(raw)
    want = name.lower().encode("ascii")
    value: bytearray | None = None
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if value is not None:
                value.extend(b" " + line.strip())
            continue
        if value is not None:
            break
        field, sep, rest = line.partition(b":")
        if sep and field.strip().lower() == want:
            value = bytearray(rest.strip())
    return bytes(value) if value is not None else None


def message_id(raw: bytes) -> str | None:
    """The Message-ID without angle brackets, as JMAP's `messageId` gives it."""
    value = header(raw, "Message-ID")
    if value is None:
        return None
    m = _MSGID.search(value)
    return m.group(1).decode("utf-8", "replace") if m else None


def same_body(a: bytes, b: bytes) -> bool:
    """The bodies are equal, ignoring CRLF vs LF (headers may differ)."""
    return split(a)[1].replace(b"\r\n", b"\n") == split(b)[1].replace(b"\r\n", b"\n")


def upload_form(raw: bytes) -> bytes:
    """The bytes to send to a JMAP server: every line ending CRLF.

    Servers hold CRLF (Cyrus refuses a bare LF).  A file in LF form is the
    common case: LF -> CRLF is the exact inverse of how we stored it.  A file
    that mixes both has its bare LFs turned into CRLF; lone CRs stay."""
    if b"\n" not in raw.replace(b"\r\n", b""):
        return raw
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
