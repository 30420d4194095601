"""PURE: the three-way merge of Maildir flags, local against remote, per keyword.

For each Email present on both sides, with

    base   = its keywords as last synced (what the local files were written with),
    local  = the flags of its files now (D F P R S),
    remote = its keywords on the server now,

each of the five standard keywords is decided on its own:

    local changed, remote did not  -> the local value goes to the server
    remote changed, local did not  -> the remote value comes to the files
    both changed                   -> both changed it to the same value
                                      (a keyword is a yes/no): nothing to do

An Email in several folders has a file in each; when they disagree, a file
that differs from base carries the user's change.  Keywords that have no Maildir flag
(`$hasattachment`, `project-x`) are never sent: the merge only ever patches
single keys, so what the server set on its own survives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jmapsync.jmap.types import Email, EmailId, intern_set
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.flags import KEYWORD_OF_FLAG, STANDARD_FLAGS, flags_from_keywords


@dataclass(frozen=True, slots=True)
class KeywordPatch:
    """Keyword changes for one Email: keyword -> set (True) or cleared (False)."""

    email_id: str
    changes: tuple[tuple[str, bool], ...]

    def as_jmap(self) -> dict[str, bool | None]:
        """The Email/set patch: one key per keyword, never the whole map."""
        return {f"keywords/{k}": (True if v else None) for k, v in self.changes}


def local_flag_changes(base_flags: str, files: Iterable[LocalFile]) -> dict[str, bool]:
    """Standard flags whose value on disk differs from base: letter -> value."""
    out: dict[str, bool] = {}
    for f in files:
        for letter in STANDARD_FLAGS:
            on_disk = letter in f.flags
            if on_disk != (letter in base_flags) and letter not in out:
                out[letter] = on_disk
    return out


def merge_keywords(
    base: Mapping[EmailId, Email],
    remote: Mapping[EmailId, Email],
    files_by_email: Mapping[str, list[LocalFile]],
) -> list[KeywordPatch]:
    """The keyword patches that carry local flag changes to the server."""
    patches = []
    for eid in sorted(files_by_email):
        b, r = base.get(EmailId(eid)), remote.get(EmailId(eid))
        if b is None or r is None:
            continue  # new locally, or gone remotely: not a flag change
        changed = local_flag_changes(flags_from_keywords(b.keywords), files_by_email[eid])
        changes = []
        for letter, value in sorted(changed.items()):
            keyword = KEYWORD_OF_FLAG[letter]
            remote_moved = (keyword in r.keywords) != (keyword in b.keywords)
            if not remote_moved and (keyword in r.keywords) != value:
                changes.append((keyword, value))
        if changes:
            patches.append(KeywordPatch(eid, tuple(changes)))
    return patches


def apply_patch(email: Email, patch: KeywordPatch) -> Email:
    """The Email as the server holds it after the patch."""
    keywords = set(email.keywords)
    for k, v in patch.changes:
        if v:
            keywords.add(k)
        else:
            keywords.discard(k)
    return Email(
        email.id, email.blob_id, email.mailbox_ids, intern_set(frozenset(keywords)), email.size
    )
