"""PURE: IMAP's modified UTF-7 (RFC 3501 5.1.3), decoding only.

mbsync (isync 1.4), OfflineIMAP (without ``utf8foldernames``) and Dovecot's
Maildir++ layout keep folder names as the IMAP server spells them on the
wire: ``Reisen &Jwg- &ANw-bersicht`` for "Reisen ✈ Übersicht".  A restore
must create the mailbox under its real name, and a sync that takes over
such a Maildir must recognise the folder of an existing mailbox
(sync/folders.py), so such folder names are decoded here.

The decoder is strict on purpose: only a name that a conforming IMAP server
could have sent (printable ASCII, every shift sequence minimal, no printable
ASCII inside a shift) is decoded; anything else raises ValueError and the
caller keeps the name as it is.  That keeps an ordinary folder name with an
ampersand ("R&D": "&D" has no terminating "-") from being garbled.
"""

from __future__ import annotations

import base64
import binascii

_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


def _encode_run(text: str) -> str:
    """The canonical shifted form of `text` (without "&" and "-")."""
    raw = base64.b64encode(text.encode("utf-16-be")).decode("ascii")
    return raw.rstrip("=").replace("/", ",")


def decode(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; ValueError if it is not one."""
    out: list[str] = []
    i = 0
    while i < len(name):
        c = name[i]
        if not 0x20 <= ord(c) <= 0x7E:
            raise ValueError(f"not 7-bit printable: {name!r:.80}")
        if c != "&":
            out.append(c)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError(f"unterminated shift sequence in {name!r:.80}")
        run = name[i + 1 : end]
        i = end + 1
        if not run:
            out.append("&")  # "&-" is the ampersand itself
            continue
        if any(ch not in _B64 for ch in run):
            raise ValueError(f"bad character in shift sequence of {name!r:.80}")
        b64 = run.replace(",", "/")
        try:
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            text = raw.decode("utf-16-be")  # strict: a lone surrogate raises
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"shift sequence of {name!r:.80} is not UTF-16") from exc
        if any(0x20 <= ord(ch) <= 0x7E for ch in text) or _encode_run(text) != run:
            # A server never encodes printable ASCII, and its base64 is
            # minimal with zero fill bits: this is not its spelling.
            raise ValueError(f"{name!r:.80} is not canonical modified UTF-7")
        out.append(text)
    decoded = "".join(out)
    if encode(decoded) != name:
        # e.g. two shifts in a row ("&Jwg-&ANw-"): a server writes one.
        raise ValueError(f"{name!r:.80} is not canonical modified UTF-7")
    return decoded


def encode(text: str) -> str:
    """How an IMAP server writes `text`: printable ASCII as is ("&" as
    "&-"), every run of other characters as one shift sequence."""
    out: list[str] = []
    run: list[str] = []
    for c in text:
        if 0x20 <= ord(c) <= 0x7E:
            if run:
                out.append("&" + _encode_run("".join(run)) + "-")
                run.clear()
            out.append("&-" if c == "&" else c)
        else:
            run.append(c)
    if run:
        out.append("&" + _encode_run("".join(run)) + "-")
    return "".join(out)


def decode_if_encoded(name: str) -> str:
    """`name` decoded when it is modified UTF-7 with at least one shift, else
    unchanged (plain ASCII names read the same either way)."""
    if "&" not in name:
        return name
    try:
        return decode(name)
    except ValueError:
        return name


def decode_or_none(name: str) -> str | None:
    """The name an encoded folder name stands for; None when `name` is not
    modified UTF-7 or encodes nothing (a plain name, e.g. ``R&D``): a name is
    never "decoded" by a guess."""
    if "&" not in name:
        return None
    try:
        decoded = decode(name)
    except ValueError:
        return None
    return decoded if decoded != name else None
