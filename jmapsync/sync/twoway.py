"""PURE: what the local side changed, and what of it goes to the server.

Two-way sync compares three views of every Email it knows:

    base   = the Email as last synced (its mailboxIds and keywords; after a
             pass, every mapped mailbox of it has a file in its folder),
    local  = the folders its files are in now, and their flags,
    remote = the Email on the server now (absent: destroyed there).

Membership (which mailboxes) is decided per Email, keywords per keyword
(sync/merge.py).  The rules, in the order they apply:

1. An Email in a mailbox we cannot map to a folder, or with a file in a
   folder that maps to no mailbox, is left alone: we cannot tell a move from a
   delete there.
2. Destroyed on the server, changed here (moved, or flags differ from base):
   the change wins -- the local file is imported again.  Unchanged here: the
   pull removes the files.
3. No file left here (unlinked, or marked ``T``): a local delete -- unless the
   server changed the Email meanwhile (mailboxes or keywords): then the change
   wins and the message stays (the pull brings it back).  A delete leaves the
   mailboxes; an Email that would be left in none moves to the Trash-role
   mailbox; one that was only in Trash is destroyed.  No Trash mailbox: the
   delete is refused (logged) and the message comes back.
4. Files in other folders than base: a local move or copy -- unless the
   server moved the Email meanwhile: concurrent moves settle on the remote
   one, and the local files follow it.  Otherwise the folders joined and left
   become single-key ``mailboxIds/<id>`` patches.

Every write is a patch of single keys, so a concurrent change of another
key on the server is never overwritten.

Mailboxes this pass does not mirror (`ignore`: excluded by `folders =`, or
selected only since the last pass) are left out of every comparison: their
memberships are neither read from the files nor written, and a file in their
folder says nothing.  A local delete of an Email still in one of them leaves
our mailboxes only (no Trash).  Two moves are refused rather than guessed
(`Refusal`): a file moved or copied INTO such a folder (the server would not
learn where it went; the pull puts it back), and a file of an Email that is
only in such mailboxes appearing in a mirrored folder (a move out or a copy?
the server keeps it where it is).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field

from jmapsync.jmap.types import Email, EmailId, MailboxId
from jmapsync.maildir.files import TRASHED, LocalFile
from jmapsync.maildir.keywords import Letters
from jmapsync.sync import merge


def present(files: Iterable[LocalFile]) -> list[LocalFile]:
    """Files that still stand for the message here (``T`` means deleted)."""
    return [f for f in files if TRASHED not in f.flags]


@dataclass(frozen=True, slots=True)
class Update:
    """One Email/set update: single-key patches of mailboxIds and keywords."""

    email_id: str
    join: frozenset[str] = frozenset()  # mailbox ids
    leave: frozenset[str] = frozenset()
    keywords: tuple[tuple[str, bool], ...] = ()
    reason: str = "flags"  # "flags" | "move" | "delete" | "trash"

    def as_jmap(self) -> dict[str, bool | None]:
        patch: dict[str, bool | None] = {f"mailboxIds/{m}": True for m in sorted(self.join)}
        patch.update({f"mailboxIds/{m}": None for m in sorted(self.leave)})
        patch.update({f"keywords/{k}": (True if v else None) for k, v in self.keywords})
        return patch

    def apply(self, email: Email) -> Email:
        """The Email as the server holds it after this update."""
        boxes = (set(email.mailbox_ids) - self.leave) | self.join
        patched = merge.apply_patch(email, merge.KeywordPatch(self.email_id, self.keywords))
        return Email(
            email.id,
            email.blob_id,
            frozenset(MailboxId(m) for m in boxes),
            patched.keywords,
            email.size,
            email.received_at,
        )


@dataclass(frozen=True, slots=True)
class Reimport:
    """A file whose Email the server destroyed while it changed here."""

    email_id: str
    file: LocalFile
    mailbox_ids: frozenset[str]
    keywords: frozenset[str]  # merged: every file's flag changes, and base's other keywords


@dataclass(frozen=True, slots=True)
class Refusal:
    """A local move across the edge of what `folders =` mirrors: not sent."""

    email_id: str
    into: bool  # True: into an unmirrored folder; False: out of an unmirrored mailbox
    folders: tuple[str, ...]  # the unmirrored folders it went into / came from


@dataclass
class PushPlan:
    updates: list[Update] = field(default_factory=list)
    destroy: list[str] = field(default_factory=list)  # Email ids (deleted inside Trash)
    reimports: list[Reimport] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (Email id, why) deletes refused
    refused: list[Refusal] = field(default_factory=list)
    # Emails deleted here per folder (left a mailbox without joining another):
    deleted_in: Counter[str] = field(default_factory=Counter)

    @property
    def deletions(self) -> int:
        """Emails that leave a mailbox for no other (Trash moves and destroys included)."""
        return len(self.destroy) + sum(1 for u in self.updates if u.reason in ("delete", "trash"))

    @property
    def empty(self) -> bool:
        return not (self.updates or self.destroy or self.reimports)


def plan_push(
    base: Mapping[EmailId, Email],
    remote: Mapping[EmailId, Email],
    local: Mapping[str, list[LocalFile]],
    folder_of: Mapping[MailboxId, str],
    trash: MailboxId | None,
    ignore: Set[MailboxId] = frozenset(),
    letters: Mapping[str, Letters] | None = None,
) -> PushPlan:
    """The server writes that carry the local changes (see module docstring).

    `local` maps an Email id to its files now, including files matched to it
    by content (a copy under an MUA's own name).  `folder_of` has the folder
    of every mailbox that has one, mirrored or not; `ignore` names the
    mailboxes this pass does not mirror.  `letters`: folder -> the Dovecot
    keyword letters jmapsync maps there (none: D F P R S only).
    """
    mailbox_of = {folder: m for m, folder in folder_of.items()}
    plan = PushPlan()

    def mirrored(f: LocalFile) -> bool:
        return mailbox_of.get(f.folder) not in ignore

    in_mirror: dict[str, list[LocalFile]] = {}
    for e, fs in local.items():
        if kept := present(f for f in fs if mirrored(f)):
            in_mirror[e] = kept
    flag_patches = {
        p.email_id: p for p in merge.merge_keywords(base, remote, in_mirror, letters, folder_of)
    }
    for eid in sorted(base):
        b = base[eid]
        synced = b.mailbox_ids - ignore
        files = local.get(eid, [])
        if any(m not in folder_of for m in synced):
            continue  # rule 1
        if any(f.folder not in mailbox_of for f in files):
            continue  # rule 1
        into = sorted(
            {f.folder for f in present(files) if not mirrored(f)}
            - {folder_of[m] for m in b.mailbox_ids if m in folder_of}
        )
        if into:
            plan.refused.append(Refusal(eid, True, tuple(into)))
            continue
        here = present(f for f in files if mirrored(f))
        if not synced and b.mailbox_ids:
            if here:
                came = sorted(folder_of.get(m, m) for m in b.mailbox_ids)
                plan.refused.append(Refusal(eid, False, tuple(came)))
            continue
        boxes_here = frozenset(mailbox_of[f.folder] for f in here)
        r = remote.get(eid)
        patch = flag_patches.get(eid)
        if r is None:  # rule 2
            in_base = merge.base_folders(b, folder_of)
            changes = merge.local_keyword_changes(b.keywords, here, letters, in_base)
            if here and (boxes_here != synced or changes):
                # Per keyword, as in the merge: a file that differs from base
                # carries the user's change; the bytes come from one that does.
                wanted = {k for k in b.keywords if changes.get(k, True)}
                wanted |= {k for k, on in changes.items() if on}
                changed = {
                    f.relpath
                    for f in here
                    if merge.local_keyword_changes(b.keywords, [f], letters, in_base)
                }
                first = min(here, key=lambda f: (f.relpath not in changed, f.relpath))
                plan.reimports.append(Reimport(eid, first, boxes_here, frozenset(wanted)))
            continue
        keywords = patch.changes if patch else ()
        if boxes_here == synced:
            if keywords:
                plan.updates.append(Update(eid, keywords=keywords))
            continue
        r_synced = r.mailbox_ids - ignore
        remote_moved = r_synced != synced
        if not here:  # rule 3
            if remote_moved or r.keywords != b.keywords:
                plan.kept.append((eid, "changed on the server meanwhile; kept"))
            elif r.mailbox_ids & ignore:
                # Still in a mailbox we do not mirror: it leaves ours, no Trash.
                plan.updates.append(Update(eid, leave=frozenset(r_synced), reason="delete"))
                plan.deleted_in.update(folder_of[m] for m in r_synced)
            elif trash is None:
                plan.kept.append((eid, "no Trash mailbox on the server; kept"))
            elif r.mailbox_ids == {trash}:
                plan.destroy.append(eid)
                plan.deleted_in[folder_of[trash]] += 1
            else:
                leave = frozenset(r.mailbox_ids - {trash})
                join = frozenset() if trash in r.mailbox_ids else frozenset({trash})
                plan.updates.append(Update(eid, join, leave, reason="trash"))
                plan.deleted_in.update(folder_of[m] for m in leave)
            continue
        if remote_moved:  # rule 4: remote wins
            if keywords:
                plan.updates.append(Update(eid, keywords=keywords))
            continue
        join = frozenset(boxes_here - synced)
        leave = frozenset(synced - boxes_here)
        reason = "move" if join else "delete"
        plan.updates.append(Update(eid, join, leave, keywords, reason))
        if not join:
            plan.deleted_in.update(folder_of[m] for m in leave)
    return plan
