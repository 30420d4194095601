"""PURE: decide what must happen on the local side so that it mirrors the remote.

No network, no disk: the engine gathers the remote model (Emails and the
folder of each Mailbox) and a scan of the local files, and this module returns
the actions that make the scan equal to the model.  Because the plan converges
on a target instead of replaying events, running it again after a crash
finishes the job: a file that already arrived is recognised by the Email id in
its name and is neither downloaded nor written twice.

Per Email, with D = the folders of its mailboxes and F = its Maildir flags
in each folder (D F P R S, and the Dovecot letters of its other keywords in
that folder's ``dovecot-keywords``: maildir/keywords.py):

1. In each folder of D keep one of its files (prefer the exact wanted name,
   then the right flags); rename it if the letters jmapsync owns there
   differ from F (other letters on disk, e.g. Dovecot letters of keywords
   we do not map, are kept; ``T`` is dropped: the mirror holds what the
   server holds).
   Further copies in the same folder are duplicates: removed.
2. Folders of D without a file are "missing"; files of the Email in folders
   outside D are "extra".  Each missing folder takes an extra file by rename
   (a server-side move becomes a local rename, never a re-download).
3. Remaining missing folders are hard-linked from a kept file, or, when the
   Email has no file at all, filled by one download (then links).
4. Remaining extra files are removed (the Email left that mailbox, or was
   destroyed on the server).

Conservative rules: an Email in a mailbox we cannot map, or with no mailbox
at all, is left exactly as it is on disk; files not written by jmapsync (no
Email id in the name) are never touched by the pull plan.

Mailboxes `folders =` excludes are no folders of D: an Email also in one of
them is mirrored in its other folders, one only in excluded mailboxes has
none (a file it still has -- the folder was mirrored before -- goes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import NamedTuple

from jmapsync.jmap.types import Email, EmailId, MailboxId
from jmapsync.maildir.files import TRASHED, LocalFile, join, wanted_name
from jmapsync.maildir.flags import merge_flags
from jmapsync.maildir.keywords import NO_LETTERS, Letters


class Rename(NamedTuple):
    src: str  # relative path "folder/cur/name"
    dst: str
    email_id: str
    reason: str  # "flags" | "move"


class Link(NamedTuple):
    src: str
    dst: str
    email_id: str


class Download(NamedTuple):
    email_id: str
    blob_id: str
    size: int
    dst: str  # the first file; the others are Links from it
    links: tuple[str, ...] = ()
    received_at: float | None = None  # the file's mtime


class Remove(NamedTuple):
    path: str
    email_id: str
    reason: str  # "destroyed" | "left-mailbox" | "duplicate"


@dataclass
class FilePlan:
    renames: list[Rename] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    removes: list[Remove] = field(default_factory=list)
    foreign: list[LocalFile] = field(default_factory=list)
    # Every file jmapsync owns as it will be after the plan, except the files of
    # downloads (owned() adds those): relpath -> Email id.  Kept apart because a
    # first sync of 100 000 messages would hold every path twice.
    final: dict[str, str] = field(default_factory=dict)

    def owned(self) -> Iterator[tuple[str, str]]:
        """(relpath, Email id) of every file jmapsync owns after the plan."""
        yield from self.final.items()
        for d in self.downloads:
            yield d.dst, d.email_id
            for link in d.links:
                yield link, d.email_id

    @property
    def empty(self) -> bool:
        return not (self.renames or self.links or self.downloads or self.removes)

    def counts(self) -> dict[str, int]:
        return {
            "renames": len(self.renames),
            "links": len(self.links),
            "downloads": len(self.downloads),
            "removes": len(self.removes),
            "foreign": len(self.foreign),
        }


def plan_files(
    emails: Mapping[EmailId, Email],
    folder_of: Mapping[MailboxId, str],
    scan: Iterable[LocalFile],
    letters: Mapping[str, Letters] | None = None,
    excluded: Set[MailboxId] = frozenset(),
    *,
    keep: bool = False,
) -> FilePlan:
    """Actions that make the local files mirror `emails` (see module docstring);
    `folder_of` has the folders of the mirrored mailboxes, `excluded` names
    the mailboxes `folders =` leaves out; `letters`: folder -> the Dovecot
    keyword letters jmapsync maps there.

    `keep` (direction = archive): no file of an Email leaves its folder --
    not when the Email is destroyed, not when it leaves the mailbox (step 4
    keeps the file, with its flags kept up to date), and a move is a link
    from a kept file, never a rename (step 2)."""
    plan = FilePlan()
    letters = letters or {}
    by_email: dict[str, list[LocalFile]] = defaultdict(list)
    for f in scan:
        if f.email_id is None:
            plan.foreign.append(f)
        else:
            by_email[f.email_id].append(f)

    for email_id in sorted(set(by_email) | set(emails)):
        eid = EmailId(email_id)
        files = by_email.get(email_id, [])
        email = emails.get(eid)
        if email is None:
            for f in files:
                if keep:
                    plan.final[f.relpath] = email_id
                else:
                    plan.removes.append(Remove(f.relpath, email_id, "destroyed"))
            continue
        if not email.mailbox_ids or any(
            m not in folder_of and m not in excluded for m in email.mailbox_ids
        ):
            for f in files:  # cannot place it safely: leave it as it is
                plan.final[f.relpath] = email_id
            continue
        folders = {
            folder_of[m]: letters.get(folder_of[m], NO_LETTERS)
            for m in email.mailbox_ids
            if m in folder_of
        }
        if not _in_place(plan, email, folders, files):
            _plan_email(plan, email, folders, files, letters if keep else None)
    return plan


def _in_place(
    plan: FilePlan, email: Email, folders: Mapping[str, Letters], files: list[LocalFile]
) -> bool:
    """Fast path for the common case -- one file per folder, flags right -- so a
    pass over 100 000 unchanged Emails costs little.  False: plan it in full."""
    if len(files) != len(folders):
        return False
    seen = set()
    for f in files:
        lt = folders.get(f.folder)
        if lt is None or f.folder in seen or TRASHED in f.flags:
            return False
        flags = lt.wanted(email.keywords)
        if lt.owned_part(f.flags) != flags or (f.subdir == "new" and "S" in flags):
            return False
        seen.add(f.folder)
    for f in files:
        plan.final[f.relpath] = email.id
    return True


def _plan_email(
    plan: FilePlan,
    email: Email,
    folders: Mapping[str, Letters],
    files: list[LocalFile],
    keep_in: Mapping[str, Letters] | None = None,
) -> None:
    """`keep_in` (archive: the letters of every folder): files in folders the
    Email left stay there."""
    eid = email.id
    in_folder: dict[str, list[LocalFile]] = defaultdict(list)
    for f in files:
        in_folder[f.folder].append(f)

    kept: list[str] = []  # final relpaths of files that stay
    missing: list[str] = []  # final relpaths wanted in folders without a file

    for folder in sorted(folders):
        lt = folders[folder]
        flags = lt.wanted(email.keywords)
        exact = join(folder, *wanted_name(eid, flags))
        candidates = in_folder.pop(folder, [])
        if not candidates:
            missing.append(exact)
            continue
        candidates.sort(
            key=lambda f: (
                TRASHED in f.flags,
                f.relpath != exact,
                lt.owned_part(f.flags) != flags,
                f.subdir,
                f.name,
            )
        )
        final = _keep(plan, candidates[0], flags, lt, eid)
        plan.final[final] = eid
        kept.append(final)
        for dupe in candidates[1:]:
            plan.removes.append(Remove(dupe.relpath, eid, "duplicate"))

    extras = sorted((f for fs in in_folder.values() for f in fs), key=lambda f: f.relpath)
    if keep_in is not None:  # archive: the copies in folders the Email left stay, flags current
        for folder, fs in in_folder.items():
            _keep_best(plan, fs, keep_in.get(folder, NO_LETTERS), email, kept)
        extras = []
    unfilled: list[str] = []
    for dst in missing:
        if extras:
            plan.renames.append(Rename(extras.pop(0).relpath, dst, eid, "move"))
            plan.final[dst] = eid
            kept.append(dst)
        else:
            unfilled.append(dst)
    if unfilled and kept:
        plan.links.extend(Link(kept[0], dst, eid) for dst in unfilled)
        plan.final.update(dict.fromkeys(unfilled, eid))
    elif unfilled:
        # One download per Email; its other folders are hard links to it.
        plan.downloads.append(
            Download(
                eid, email.blob_id, email.size, unfilled[0], tuple(unfilled[1:]), email.received_at
            )
        )
    for f in extras:
        plan.removes.append(Remove(f.relpath, eid, "left-mailbox"))


def _keep_best(
    plan: FilePlan, files: list[LocalFile], lt: Letters, email: Email, kept: list[str]
) -> None:
    """Archive: keep one file of the Email in a folder it left (the others
    there are duplicates), renamed if its flags changed."""
    flags = lt.wanted(email.keywords)
    files.sort(
        key=lambda f: (TRASHED in f.flags, lt.owned_part(f.flags) != flags, f.subdir, f.name)
    )
    final = _keep(plan, files[0], flags, lt, email.id)
    plan.final[final] = email.id
    kept.append(final)
    for dupe in files[1:]:
        plan.removes.append(Remove(dupe.relpath, email.id, "duplicate"))


def _final_path(f: LocalFile, flags: str, letters: Letters, email_id: str) -> str:
    if (
        letters.owned_part(f.flags) == flags
        and not (f.subdir == "new" and "S" in flags)
        and TRASHED not in f.flags
    ):
        return f.relpath
    # T goes: in two-way mode a T file was sent as a delete before this plan,
    # so one still wanted here is a delete the server refused or overrode.
    merged = merge_flags(f.flags.replace(TRASHED, ""), flags, letters.owned)
    sub = "cur" if (f.subdir == "cur" or "S" in flags) else "new"
    sub, name = wanted_name(email_id, merged, sub)
    return join(f.folder, sub, name)


def _keep(plan: FilePlan, f: LocalFile, flags: str, letters: Letters, email_id: str) -> str:
    dst = _final_path(f, flags, letters, email_id)
    if dst != f.relpath:
        plan.renames.append(Rename(f.relpath, dst, email_id, "flags"))
    return dst


class FolderPlan(NamedTuple):
    create: tuple[str, ...]
    moves: tuple[tuple[str, str], ...]  # (old path, new path) of renamed mailboxes
    remove_if_empty: tuple[str, ...]  # folders of mailboxes that are gone


def plan_folders(old: Mapping[MailboxId, str], new: Mapping[MailboxId, str]) -> FolderPlan:
    """Folder-level actions from the mailbox paths last synced and now wanted.

    A renamed mailbox is a folder move (its files move with it, nothing is
    downloaded again); the per-file plan afterwards catches whatever a move
    could not carry (e.g. a destination that already held mail).
    """
    moves = tuple(sorted((old[m], new[m]) for m in old.keys() & new.keys() if old[m] != new[m]))
    wanted = set(new.values())
    gone = tuple(sorted(p for p in set(old.values()) - wanted))
    return FolderPlan(create=tuple(sorted(wanted)), moves=moves, remove_if_empty=gone)
