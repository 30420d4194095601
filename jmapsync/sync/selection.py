"""PURE: which mailboxes an account mirrors (`folders =`), mbsync-style patterns.

A pattern is matched against a mailbox's path: the names from the top of the
tree joined by ``/``, the inbox always called ``INBOX`` (its children
``INBOX/Receipts``), whatever the server names it (Fastmail: "Inbox").

    *             any characters, ``/`` included (a whole subtree)
    %             any characters up to the next ``/`` (one level)
    !PATTERN      an exclusion
    role:NAME     the mailbox whose JMAP role is NAME (``role:junk``); what
                  follows the role's name is matched below that mailbox's
                  path (``!role:archive/*`` excludes everything under it)

Patterns are applied in order and the LAST one that matches a mailbox decides
(mbsync: "later matches take precedence").  A mailbox no pattern matches is
not selected -- unless the list begins with an exclusion: then it starts from
everything (``folders = !role:junk`` is "all but Junk"; mbsync would select
nothing there).  ``INBOX`` is matched without regard to case, as in IMAP
(RFC 3501 section 5.1); every other name is case-sensitive.

Where this follows isync's mbsync.1 (1.4.4, "Patterns" in the Channels
section: "IMAP4 patterns, i.e., * matches anything and % matches anything up
to the next hierarchy delimiter. Prepending ! to a pattern makes it an
exclusion. [...] later matches take precedence") and where it departs --
``*`` and ``%`` also match INBOX (mbsync: not unless it lives under Path),
roles, and a list that starts with ``!`` -- is tabled in docs/DESIGN.md.

A mailbox name that itself contains ``/`` reads as two levels here (``%``
does not cross it); JMAP allows such names, IMAP servers rarely do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from jmapsync.jmap.types import Mailbox, MailboxId

INBOX = "INBOX"
EVERYTHING = ("*",)
_ROLE = re.compile(r"role:([a-z0-9_-]+)(.*)\Z", re.S | re.I)


def _regex(body: str) -> re.Pattern[str]:
    """`*` -> anything, `%` -> anything but `/`, the rest literal; anchored."""
    out = []
    for ch in body:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.S)


def _inbox_folded(path: str) -> str:
    """The first level, when it spells INBOX in any case, as ``INBOX``."""
    head, sep, rest = path.partition("/")
    return INBOX + sep + rest if head.upper() == INBOX else path


class Pattern(NamedTuple):
    """One entry of `folders =`."""

    text: str
    exclude: bool
    role: str | None  # "role:NAME...": matched below that mailbox's path
    rest: re.Pattern[str]  # the path pattern (after the role's path, if any)

    @classmethod
    def parse(cls, text: str) -> Pattern:
        body = text[1:] if text.startswith("!") else text
        if not body:
            raise ValueError(f"{text!r}: an empty pattern")
        m = _ROLE.match(body)
        if m is not None:
            return cls(text, text.startswith("!"), m.group(1).lower(), _regex(m.group(2)))
        if body.lower().startswith("role:"):
            raise ValueError(f"{text!r}: role: needs a role name (role:junk, role:archive)")
        return cls(text, text.startswith("!"), None, _regex(_inbox_folded(body)))

    def matches(self, path: str, role_paths: Mapping[str, str]) -> bool:
        if self.role is None:
            return self.rest.fullmatch(path) is not None
        base = role_paths.get(self.role)
        if base is None or not path.startswith(base):
            return False
        return self.rest.fullmatch(path[len(base) :]) is not None


class Selection(NamedTuple):
    """The parsed `folders =` of one account."""

    patterns: tuple[Pattern, ...]

    @classmethod
    def parse(cls, items: Sequence[str]) -> Selection:
        """From the config's list; ValueError names what is wrong."""
        if not items:
            raise ValueError("no pattern: it would sync no folder at all")
        return cls(tuple(Pattern.parse(p) for p in items))

    @property
    def text(self) -> str:
        """The patterns as one string (recorded with the state)."""
        return " ".join(p.text for p in self.patterns)

    @property
    def everything(self) -> bool:
        return self.text == "*"

    def selects(self, path: str, role_paths: Mapping[str, str]) -> bool:
        """Is the mailbox at `path` mirrored?  `role_paths`: role -> path."""
        chosen = self.patterns[0].exclude  # a list starting with "!" starts from all
        for p in self.patterns:
            if p.matches(path, role_paths):
                chosen = not p.exclude
        return chosen

    def select(self, mailboxes: Mapping[MailboxId, Mailbox]) -> frozenset[MailboxId]:
        """The ids of the mailboxes this selection mirrors."""
        if self.everything:
            return frozenset(mailboxes)
        paths = mailbox_paths(mailboxes.values())
        roles = role_paths(mailboxes, paths)
        return frozenset(m for m, p in paths.items() if self.selects(p, roles))


def role_paths(
    mailboxes: Mapping[MailboxId, Mailbox], paths: Mapping[MailboxId, str] | None = None
) -> dict[str, str]:
    """role -> the path of the mailbox that has it (for `role:` patterns)."""
    paths = mailbox_paths(mailboxes.values()) if paths is None else paths
    return {b.role.lower(): paths[m] for m, b in mailboxes.items() if b.role and m in paths}


def mailbox_paths(mailboxes: Iterable[Mailbox]) -> dict[MailboxId, str]:
    """Mailbox id -> its path for matching ("INBOX", "Archive/2024",
    "INBOX/Receipts").  A mailbox under an unknown parent or in a parent
    cycle has no path (the folder mapping refuses it too)."""
    by_id = {m.id: m for m in mailboxes}
    out: dict[MailboxId, str] = {}

    def path(mid: MailboxId, depth: int) -> str | None:
        if mid in out:
            return out[mid]
        box = by_id.get(mid)
        if box is None or depth > len(by_id):
            return None
        name = INBOX if box.role == "inbox" else box.name
        if box.parent_id is None:
            found: str | None = name
        else:
            parent = path(box.parent_id, depth + 1)
            found = None if parent is None else f"{parent}/{name}"
        if found is not None:
            out[mid] = found
        return found

    for mid in by_id:
        path(mid, 0)
    return out
