"""PURE: the lossless CRLF <-> LF rule for Maildir files.

JMAP servers hold messages with CRLF line endings; Unix mail readers expect
LF (mutt shows `^M` otherwise).  A blob is converted to LF only when the
conversion is exactly reversible:

- every LF is preceded by CR (no lone LF),
- every CR is followed by LF (no lone CR),
- and the blob ends with CRLF (a last line without newline stays as it is,
  byte-exact, with the rest of the message).

Then the LF form has no CR at all, and replacing every LF by CRLF gives back
the server's bytes exactly.  Any other blob is stored byte-exact.  The state
database keeps the SHA-256 of the server's bytes, so `jmapsync verify` can
check a file in either form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Form = Literal["lf", "exact"]


class Inspection(NamedTuple):
    """What we know of a server blob after reading it once."""

    sha256: str
    size: int
    crlf_only: bool  # True: the LF form is exactly reversible


@dataclass
class Inspector:
    """Streams over a blob's bytes: SHA-256, size, and whether it is CRLF-only."""

    _hash: hashlib._Hash = field(default_factory=hashlib.sha256)
    _size: int = 0
    _ok: bool = True
    _carry_cr: bool = False  # the previous chunk ended in CR
    _last2: bytes = b""

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._hash.update(chunk)
        self._size += len(chunk)
        self._last2 = (self._last2 + chunk)[-2:]
        if not self._ok:
            return
        data = chunk
        if self._carry_cr:
            if data[:1] != b"\n":
                self._ok = False  # CR at the end of the last chunk was a lone CR
                return
            data = data[1:]
        self._carry_cr = data.endswith(b"\r")
        if self._carry_cr:
            data = data[:-1]
        pairs = data.count(b"\r\n")
        if data.count(b"\r") != pairs or data.count(b"\n") != pairs:
            self._ok = False

    def finish(self) -> Inspection:
        ok = self._ok and not self._carry_cr and self._last2 == b"\r\n"
        return Inspection(self._hash.hexdigest(), self._size, ok)


def inspect(data: bytes) -> Inspection:
    i = Inspector()
    i.feed(data)
    return i.finish()


def to_lf(data: bytes) -> bytes:
    """CRLF -> LF; only call for data whose inspection says crlf_only."""
    return data.replace(b"\r\n", b"\n")


def to_crlf(data: bytes) -> bytes:
    """LF -> CRLF: the exact inverse of to_lf on crlf_only data."""
    return data.replace(b"\n", b"\r\n")


def local_form(mode: Form, inspection: Inspection) -> Form:
    """The form a file takes on disk under the account's `line_endings` mode."""
    return "lf" if mode == "lf" and inspection.crlf_only else "exact"


def server_bytes(local: bytes, form: Form) -> bytes:
    """Undo the local form: the bytes the server holds."""
    return to_crlf(local) if form == "lf" else local


def local_bytes(server: bytes, form: Form) -> bytes:
    return to_lf(server) if form == "lf" else server
