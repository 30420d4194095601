"""PURE: the names of message files -- ours and everyone's (no I/O).

Our file names are ``<Email id>.jmapsync[:2,FLAGS]``.  The id in the name
lets a scan after a crash recognise what already arrived, so nothing is
downloaded twice; every other name belongs to a mail program (``LocalFile``
with ``email_id = None``).

Paths handed between the sync stages are relative to the Maildir root and
written with "/" (``"Work/Projects/cur/<name>"``; ``""`` is the root folder
of the Maildir++ layout).  Only ``maildir/paths.py`` turns them into real
paths, checking that they stay inside the root.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from jmapsync.maildir.flags import STANDARD_FLAGS, format_name

Subdir = Literal["cur", "new"]
SUBDIRS = ("cur", "new", "tmp")

SUFFIX = ".jmapsync"
_OUR_BASE = re.compile(r"^([A-Za-z0-9_-]{1,255})\.jmapsync$")
# Our unfinished downloads and rewrites in tmp/; removed at the next start.
PART_SUFFIX = ".jmapsync-part"

# An MUA's "deleted" mark (mutt's maildir_trash).  Never part of the mirror:
# in two-way mode it is sent as a delete (sync/twoway.py), and the pull plan
# drops it on any rename.
TRASHED = "T"
_STANDARD = frozenset(STANDARD_FLAGS)


def base_name(email_id: str) -> str:
    return email_id + SUFFIX


def email_id_of(base: str) -> str | None:
    """The Email id in one of our base names; None for anyone else's."""
    m = _OUR_BASE.match(base)
    return m.group(1) if m else None


def join(*parts: str) -> str:
    """Join relative path parts with "/", skipping empty ones (the root folder)."""
    return "/".join(p for p in parts if p)


def split_rel(rel: str) -> tuple[str, str, str]:
    """ "a/b/cur/name" -> ("a/b", "cur", "name")."""
    head, name = rel.rsplit("/", 1)
    if "/" in head:
        folder, sub = head.rsplit("/", 1)
    else:
        folder, sub = "", head
    return folder, sub, name


def standard(flags: str) -> str:
    """The standard letters (D F P R S) of a flags field, ASCII-sorted."""
    return "".join(sorted(set(flags) & _STANDARD))


def wanted_name(email_id: str, flags: str, subdir: str | None = None) -> tuple[str, str]:
    """(subdir, file name) for an Email with these flags.

    Seen mail goes to cur/, unseen mail to new/ (with its flags in the name
    when it has any: mutt honours flags in new/ too).
    """
    base = base_name(email_id)
    if subdir is None:
        subdir = "cur" if "S" in flags else "new"
    if subdir == "new" and not flags:
        return "new", base
    return subdir, format_name(base, flags)


class LocalFile(NamedTuple):
    """One message file found by a scan."""

    folder: str  # relative folder path ("" is the root in maildir++)
    subdir: Subdir
    name: str  # file name within cur/ or new/
    email_id: str | None  # None: not written by jmapsync (an MUA's file)
    flags: str  # the ":2," flags field ("" if none)
    inode: int = 0

    @property
    def relpath(self) -> str:
        return join(self.folder, self.subdir, self.name)
