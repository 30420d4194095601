"""PURE: which mailbox a Maildir folder of a restore source stands for.

A folder path (relative to the source root, "" for the root itself) becomes
the list of mailbox names from the top, e.g. ``["Work", "Projects"]``;
``["INBOX", ...]`` means the inbox and what lies below it.

Two kinds of trees are told apart (``source.py`` decides, by the file names):

``jmapsync``
    A mirror jmapsync wrote.  Its names follow maildir/names.py exactly
    (``%XX`` escapes, ``%49NBOX``); :func:`names.mailbox_path_components`
    reverses them and refuses any folder jmapsync would not have written.

``foreign``
    mbsync, OfflineIMAP, Dovecot, a mail client.  Components are split by the
    layout ("/" for verbatim, "." for Maildir++ -- the leading "." optional:
    OfflineIMAP writes none) and each one taken literally,
    except that a component in IMAP modified UTF-7 (mbsync and Dovecot keep
    the server's spelling, ``Reisen &Jwg-``) is decoded.  ``%`` means nothing
    here: "100%" is a folder named "100%".  The first component matches
    ``INBOX`` case-insensitively, as in IMAP.

In both kinds the root folder, when it holds mail, is the inbox (Maildir++
always; in the verbatim layout mbsync can be told ``Inbox <root>``).
"""

from __future__ import annotations

from typing import Literal

from jmapsync.maildir.mutf7 import decode_if_encoded
from jmapsync.maildir.names import INBOX, Layout, mailbox_path_components

Kind = Literal["jmapsync", "foreign"]


def mailbox_names(path: str, layout: Layout, kind: Kind) -> list[str]:
    """The mailbox names from the top for a source folder; ValueError (with
    the reason) for a folder that cannot be a mailbox."""
    if not path:
        return [INBOX]
    if kind == "jmapsync":
        return mailbox_path_components(path, layout)
    # Maildir++: ".Work.Projects" (Dovecot, mbsync) or "Work.Projects" (OfflineIMAP)
    parts = path.split("/") if layout == "verbatim" else path.removeprefix(".").split(".")
    names = [decode_if_encoded(p) for p in parts]
    if any(not n.strip() for n in names):
        raise ValueError(f"empty mailbox name in folder {path!r:.80}")
    if names[0].upper() == INBOX:
        names[0] = INBOX
    return names


def display(names: tuple[str, ...] | list[str]) -> str:
    """How a mailbox is named in messages to the user: "Work/Projects"."""
    return "/".join(names)
