"""PURE: keywords beyond the five flags, as Dovecot stores them (no I/O).

Maildir has letters for five keywords only (maildir/flags.py).  Dovecot
stores every other IMAP keyword as a lowercase letter ``a``..``z`` in the
file name's info part, and names the letters per folder in a file
``dovecot-keywords`` in the folder's directory.  Its format, as Dovecot
reads and writes it (dovecot/core,
src/lib-storage/index/maildir/maildir-keywords.c, ``maildir_keywords_sync``
and ``maildir_keywords_write_fd``)::

    0 $junk
    1 project-x

one line per slot, ``<index> <name>\\n``, index 0..25 standing for ``a``..``z``;
a line without a space, an index outside 0..25 (read as C's ``atoi``) or an
empty name is skipped; names compare case-insensitively.  Dovecot reads
``P`` as nothing (it has no \\Passed flag) and keeps unknown letters on its
renames (maildir-filename-flags.c).  A letter on a file whose slot is empty
makes Dovecot invent the name ``unknown-<index>`` (``maildir_keywords_char_idx``),
which we never map: it names no keyword anyone set.

Which letters jmapsync maps (decides from the server, and reads back as a
local change): a slot whose name is a valid JMAP keyword (RFC 8621 4.1.1),
not one of the five flag keywords (those have their letters), not
server-only (``server_only``: by default ``$hasattachment`` and
``$hasnoattachment``, which the server sets itself on delivery -- RFC 9979
4.1-4.2; Cyrus adds ``$hasattachment`` on every Email/import and Email/set --
and which no mail program user wants to see or spend a letter on), and not a
Dovecot placeholder.  Every other letter on a file belongs to someone else
and is kept, as today.

Numbering: a slot is never renumbered; new keywords take the lowest free
slots, as Dovecot does (``maildir_keywords_lookup_or_create``).  A folder
needing more than 26 keywords keeps the rest server-only.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from jmapsync.maildir.flags import (
    FLAG_OF_KEYWORD,
    KEYWORD_OF_FLAG,
    STANDARD_FLAGS,
    flags_from_keywords,
)

FILE_NAME = "dovecot-keywords"
LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_SLOTS = len(LETTERS)
DEFAULT_SERVER_ONLY = frozenset({"$hasattachment", "$hasnoattachment"})

# RFC 8621 4.1.1: a keyword is 1-255 IMAP atom characters.
_KEYWORD = re.compile(r"^[\x21-\x7e]{1,255}$")
_FORBIDDEN = set('()[]{}%*"\\')
# What Dovecot writes for a letter whose name it lost (maildir-keywords.c).
_PLACEHOLDER = re.compile(r"^unknown-[0-9]+\?*$", re.IGNORECASE)
_ATOI = re.compile(r"^[ \t\n\v\f\r]*([+-]?)([0-9]*)")

Slots = dict[int, str]  # Dovecot's index (0 = "a") -> name as written (case kept)


def parse_file(text: str) -> Slots:
    """The slots of a ``dovecot-keywords`` file, read as Dovecot reads it."""
    slots: Slots = {}
    for line in text.split("\n"):
        number, sep, name = line.partition(" ")
        if not sep:
            continue  # Dovecot: "note that when converting .customflags file this case happens"
        m = _ATOI.match(number)
        digits = m.group(2) if m else ""
        index = int(digits) if digits else 0
        if m and m.group(1) == "-":
            index = -index
        if not 0 <= index < MAX_SLOTS or not name:
            continue
        slots[index] = name  # a later line wins, as in Dovecot's array
    return slots


def format_file(slots: Mapping[int, str]) -> str:
    """The file as Dovecot writes it: ``<index> <name>\\n``, in index order."""
    for i, name in slots.items():
        if not 0 <= i < MAX_SLOTS or not name or "\n" in name or "\r" in name:
            raise ValueError(f"not a dovecot-keywords slot: {i} {name!r:.80}")
    return "".join(f"{i} {slots[i]}\n" for i in sorted(slots))


def is_keyword(name: str) -> bool:
    """A valid JMAP keyword (RFC 8621 4.1.1), in any case."""
    return bool(_KEYWORD.match(name)) and not any(c in _FORBIDDEN for c in name)


def is_mappable(name: str, server_only: frozenset[str] = DEFAULT_SERVER_ONLY) -> bool:
    """Whether a keyword (any case) gets a letter from jmapsync."""
    kw = name.lower()
    return (
        is_keyword(name)
        and kw not in FLAG_OF_KEYWORD
        and kw not in server_only
        and not _PLACEHOLDER.match(name)
    )


def mapped(slots: Mapping[int, str], server_only: frozenset[str] = DEFAULT_SERVER_ONLY) -> Slots:
    """The slots jmapsync maps: index -> keyword (lowercase).  Of two slots
    naming one keyword (a hand-edited file), the lower one counts."""
    out: Slots = {}
    seen: set[str] = set()
    for i in sorted(slots):
        kw = slots[i].lower()
        if kw in seen or not is_mappable(slots[i], server_only):
            continue
        seen.add(kw)
        out[i] = kw
    return out


def allocate(
    slots: Mapping[int, str],
    needed: Iterable[str],
    server_only: frozenset[str] = DEFAULT_SERVER_ONLY,
) -> tuple[Slots, list[str]]:
    """Slots for the keywords in `needed` that have none: the lowest free
    indexes, keywords in sorted order (so every run decides alike).  Returns
    the new slots (existing ones untouched) and the keywords left without
    a slot (more than 26 in the folder)."""
    have = {name.lower() for name in slots.values()}
    new: Slots = dict(slots)
    overflow: list[str] = []
    free = (i for i in range(MAX_SLOTS) if i not in slots)
    for kw in sorted({k.lower() for k in needed} - have):
        if not is_mappable(kw, server_only):
            continue
        i = next(free, None)
        if i is None:
            overflow.append(kw)
        else:
            new[i] = kw
    return new, overflow


@dataclass(frozen=True)
class Letters:
    """The letters jmapsync maps in one folder.

    ``current``: letter -> keyword as the folder's file names them now;
    ``synced``: the same as the last completed pass applied them to every
    file of the folder.  A letter in ``current`` but not in ``synced`` (new
    since, e.g. Dovecot just added it) was not written on the files that
    lack it: only its presence says something.
    """

    current: Mapping[str, str] = field(default_factory=dict)
    synced: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def of(slots: Mapping[int, str], synced: Mapping[str, str] | None = None) -> Letters:
        """From mapped slots (see :func:`mapped`)."""
        return Letters({LETTERS[i]: kw for i, kw in slots.items()}, dict(synced or {}))

    @cached_property
    def letter_of(self) -> dict[str, str]:
        """keyword -> its letter here."""
        return {kw: letter for letter, kw in self.current.items()}

    @cached_property
    def owned(self) -> str:
        """Every letter whose value the server decides in this folder."""
        return STANDARD_FLAGS + "".join(sorted(self.current))

    @cached_property
    def _owned_set(self) -> frozenset[str]:
        return frozenset(self.owned)

    def wanted(self, keywords: Collection[str]) -> str:
        """The owned letters a file of an Email with these keywords carries."""
        if not self.current:
            return flags_from_keywords(keywords)
        letter_of = self.letter_of
        extra = "".join(letter_of[k] for k in keywords if k in letter_of)
        return "".join(sorted(flags_from_keywords(keywords) + extra))

    def owned_part(self, flags: str) -> str:
        """The owned letters of a flags field, sorted and without duplicates."""
        return "".join(sorted(set(flags) & self._owned_set))

    def keywords_in(self, flags: str) -> frozenset[str]:
        """The keywords a flags field says are set: standard letters and mapped ones."""
        out = {KEYWORD_OF_FLAG[c] for c in flags if c in KEYWORD_OF_FLAG}
        out.update(self.current[c] for c in flags if c in self.current)
        return frozenset(out)

    def told(self, letter: str, on: bool) -> bool:
        """Whether a mapped letter's presence (`on`) or absence on a file of
        an Email that was in this folder is a statement about its keyword.

        Present: yes, unless the letter named another keyword when the
        files were written.  Absent: only if the files were written with
        this letter meaning this keyword (else they never carried it)."""
        was = self.synced.get(letter)
        if was is not None and was != self.current.get(letter):
            return False
        return on or was is not None


NO_LETTERS = Letters()
