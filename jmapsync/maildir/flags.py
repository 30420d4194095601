"""Pure mapping between JMAP keywords and Maildir flag letters (no I/O).

A Maildir file name is ``<base>:2,<flags>``; the flags field is a run of
letters that readers treat as a set.  Five uppercase letters have a meaning
every Maildir reader shares, and those are the only ones jmapsync maps to
JMAP keywords::

    D  $draft      F  $flagged     P  $forwarded
    R  $answered   S  $seen

Other keywords are lowercase letters ``a``-``z`` named per folder by
Dovecot's ``dovecot-keywords`` file (maildir/keywords.py).  Every letter
jmapsync does not map belongs to someone else and must survive our renames:
``T`` (trashed) is a local "delete me on expunge" mark, not a JMAP keyword.
:func:`merge_flags` is the one place that decides what a rename keeps.

We always write the flags field ASCII-sorted and without duplicates (the
order the Maildir spec asks for), so that equal flag sets give equal names
and a rename is needed exactly when the set changed.

Not supported: writers that use ``!`` or ``;`` instead of ``:`` as the info
separator (mbsync's ``InfoDelimiter`` on filesystems without ``:``); such
names parse as having no info.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

# RFC 8621 4.1.1: keywords are case-insensitive and servers return them
# lowercased, so the keys here are lowercase and lookups lowercase first.
FLAG_OF_KEYWORD: dict[str, str] = {
    "$draft": "D",
    "$flagged": "F",
    "$forwarded": "P",
    "$answered": "R",
    "$seen": "S",
}
KEYWORD_OF_FLAG: dict[str, str] = {flag: kw for kw, flag in FLAG_OF_KEYWORD.items()}

STANDARD_FLAGS = "DFPRS"

# Maildir info with experimental semantics "2": the flags follow.
_INFO_SEPARATOR = ":2,"


def flags_from_keywords(keywords: Iterable[str]) -> str:
    """The standard letters for the keywords present, ASCII-sorted.

    Keywords without a standard letter ($junk, user labels) are ignored here:
    their letters are Dovecot's, per folder (maildir/keywords.py).
    """
    letters = {FLAG_OF_KEYWORD.get(kw.lower()) for kw in keywords}
    return "".join(sorted(letter for letter in letters if letter is not None))


def keywords_from_flags(flags: str) -> frozenset[str]:
    """The JMAP keywords (lowercase) for the standard letters in ``flags``.

    Other letters are ignored on purpose.  ``T`` is not ``$deleted``: JMAP has
    no "marked for expunge" state, and mapping it would make a local trash
    mark delete mail on the server.  Lowercase letters are Dovecot keyword
    slots whose names only Dovecot's own file knows.
    """
    return frozenset(KEYWORD_OF_FLAG[c] for c in flags if c in KEYWORD_OF_FLAG)


class MaildirName(NamedTuple):
    """A Maildir file name split into the unique part and the info field.

    ``info`` is the text after the last ``:2,`` (possibly empty), or None when
    the name has no ``:2,`` at all.  Names with other info (``:1,...`` from
    the never-used experimental semantics, or anything unknown) keep
    ``info=None`` and the whole name as ``base``: we cannot tell their flags,
    so we treat them as unflagged and do not rewrite what we do not
    understand.  Extras some writers put in the unique part (Dovecot's
    ``,S=1234,W=1260``) sit before the colon and so stay in ``base``.
    """

    base: str
    info: str | None

    @property
    def flags(self) -> str:
        """The flags field as found on disk (not re-sorted); "" without info."""
        return self.info or ""


def parse_name(filename: str) -> MaildirName:
    """Split a Maildir file name on its LAST ``:2,``.

    The last one, because the unique part is chosen by whoever delivered the
    file and may itself contain ``:2,``, whereas a flags field we wrote never
    does (sorted, ``:`` would follow ``2``).
    """
    base, sep, info = filename.rpartition(_INFO_SEPARATOR)
    if not sep:
        return MaildirName(base=filename, info=None)
    return MaildirName(base=base, info=info)


def format_name(base: str, flags: str) -> str:
    """``base:2,FLAGS`` with the flags deduplicated and ASCII-sorted.

    Raises ValueError for an empty base or a "/" or NUL in either part: the
    result is used as a single file name, and a "/" would turn a rename into
    a move to another directory.
    """
    if not base:
        raise ValueError("a Maildir file name needs a non-empty unique part")
    for part in (base, flags):
        if "/" in part or "\x00" in part:
            raise ValueError(f"'/' or NUL in a Maildir file name: {part!r:.80}")
    return f"{base}{_INFO_SEPARATOR}{_normalize(flags)}"


def merge_flags(on_disk: str, wanted: str, owned: str = STANDARD_FLAGS) -> str:
    """The flags field for a rename: the `owned` letters as `wanted`, all others kept.

    ``owned`` are the letters jmapsync decides from the server: D, F, P, R and
    S, plus the Dovecot keyword letters it maps in this folder
    (maildir/keywords.py).  An owned letter on disk but not wanted is
    dropped; every other character already on disk (``T``, letters of
    keywords we do not map) is kept as is, because another program put it
    there and we cannot know what removing it would mean.

    Raises ValueError when ``wanted`` holds a letter outside ``owned``: the
    caller wanted to set something this function would silently ignore (for
    example ``T``, which we never set from JMAP).
    """
    stray = set(wanted) - set(owned)
    if stray:
        raise ValueError(f"not standard or mapped letters: {''.join(sorted(stray))!r}")
    kept = {c for c in on_disk if c not in owned}
    return _normalize("".join(kept) + wanted)


def _normalize(flags: str) -> str:
    return "".join(sorted(set(flags)))
