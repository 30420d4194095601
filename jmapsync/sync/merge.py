"""PURE: the three-way merge of Maildir flags, local against remote, per keyword.

For each Email present on both sides, with

    base   = its keywords as last synced (what the local files were written with),
    local  = the flags of its files now: D F P R S, and the Dovecot letters
             jmapsync maps in each file's folder (maildir/keywords.py),
    remote = its keywords on the server now,

each keyword is decided on its own:

    local changed, remote did not  -> the local value goes to the server
    remote changed, local did not  -> the remote value comes to the files
    both changed                   -> both changed it to the same value
                                      (a keyword is a yes/no): nothing to do

An Email in several folders has a file in each; when they disagree, a file
that differs from base carries the user's change.  A Dovecot letter speaks
only in a folder the Email was in at the last sync (a file moved or copied
from another folder carries letters of that folder's numbering), and its
absence only if the files there were written with that letter meaning that
keyword (`Letters.told`: a letter Dovecot just added was never on the other
files).  Keywords without a letter ($hasattachment, the 27th label of a
folder) are never sent: the merge only ever patches single keys, so what the
server set on its own survives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jmapsync.jmap.types import Email, EmailId, MailboxId, intern_set
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.flags import KEYWORD_OF_FLAG, STANDARD_FLAGS
from jmapsync.maildir.keywords import Letters

_ORDER = {KEYWORD_OF_FLAG[c]: i for i, c in enumerate(STANDARD_FLAGS)}


@dataclass(frozen=True, slots=True)
class KeywordPatch:
    """Keyword changes for one Email: keyword -> set (True) or cleared (False)."""

    email_id: str
    changes: tuple[tuple[str, bool], ...]

    def as_jmap(self) -> dict[str, bool | None]:
        """The Email/set patch: one key per keyword, never the whole map."""
        return {f"keywords/{k}": (True if v else None) for k, v in self.changes}


def local_keyword_changes(
    base_keywords: frozenset[str],
    files: Iterable[LocalFile],
    letters: Mapping[str, Letters] | None = None,
    base_folders: frozenset[str] = frozenset(),
) -> dict[str, bool]:
    """Keywords whose value on disk differs from base: keyword -> value.
    Standard flags from every file; mapped Dovecot letters only from files in
    `base_folders` (see the module docstring)."""
    out: dict[str, bool] = {}
    for f in files:
        for letter in STANDARD_FLAGS:
            kw = KEYWORD_OF_FLAG[letter]
            on = letter in f.flags
            if on != (kw in base_keywords) and kw not in out:
                out[kw] = on
        lt = letters.get(f.folder) if letters and f.folder in base_folders else None
        if lt is None:
            continue
        for letter, kw in lt.current.items():
            on = letter in f.flags
            if on != (kw in base_keywords) and kw not in out and lt.told(letter, on):
                out[kw] = on
    return out


def merge_keywords(
    base: Mapping[EmailId, Email],
    remote: Mapping[EmailId, Email],
    files_by_email: Mapping[str, list[LocalFile]],
    letters: Mapping[str, Letters] | None = None,
    folder_of: Mapping[MailboxId, str] | None = None,
) -> list[KeywordPatch]:
    """The keyword patches that carry local flag changes to the server.
    `letters` (folder -> mapped Dovecot letters) and `folder_of` (mailbox ->
    folder) let the Dovecot letters speak too; without them only D F P R S."""
    patches = []
    for eid in sorted(files_by_email):
        b, r = base.get(EmailId(eid)), remote.get(EmailId(eid))
        if b is None or r is None:
            continue  # new locally, or gone remotely: not a flag change
        changed = local_keyword_changes(
            b.keywords, files_by_email[eid], letters, base_folders(b, folder_of)
        )
        changes = []
        for keyword, value in sorted(changed.items(), key=_key):
            remote_moved = (keyword in r.keywords) != (keyword in b.keywords)
            if not remote_moved and (keyword in r.keywords) != value:
                changes.append((keyword, value))
        if changes:
            patches.append(KeywordPatch(eid, tuple(changes)))
    return patches


def base_folders(b: Email, folder_of: Mapping[MailboxId, str] | None) -> frozenset[str]:
    """The folders the Email's files were in after the last sync."""
    if folder_of is None:
        return frozenset()
    return frozenset(folder_of[m] for m in b.mailbox_ids if m in folder_of)


def _key(item: tuple[str, bool]) -> tuple[int, str]:
    """Standard keywords in flag-letter order, then the others by name."""
    return _ORDER.get(item[0], len(_ORDER)), item[0]


def apply_patch(email: Email, patch: KeywordPatch) -> Email:
    """The Email as the server holds it after the patch."""
    keywords = set(email.keywords)
    for k, v in patch.changes:
        if v:
            keywords.add(k)
        else:
            keywords.discard(k)
    return Email(
        email.id,
        email.blob_id,
        email.mailbox_ids,
        intern_set(frozenset(keywords)),
        email.size,
        email.received_at,
    )
