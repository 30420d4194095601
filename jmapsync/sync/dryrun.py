"""A dry run (`jmapsync sync --dry-run`): the real pass, deciding everything, doing nothing.

The dry run is not a second copy of the rules: the engine runs the same
pass -- remote read, scope, the local->remote decisions (sync/twoway.py,
sync/merge.py, the guards), the pull plan (sync/plan.py) -- with
`PassContext.dry` set, and every place that would write asks this object
instead:

- server writes (Mailbox/set, Email/set, upload + Email/import) are listed
  and answered as if they had succeeded, so the pull plan is made against the
  model AS IF they had happened (`twoway.Update.apply`, as after a real
  Email/set); a mailbox "created" gets a placeholder id;
- Maildir writes are listed; the renames the local->remote stage makes (a
  copy taken over under our name) and the folder moves are kept in an
  overlay of the scan, so the pull plan sees what the real pass's scan after
  them would see;
- the state database is a throwaway copy (`state_copy`): the remote read's
  and the journal's bookkeeping run unchanged and touch nothing.

What a dry run cannot know is the server's answer: an import of bytes the
server already holds (Cyrus: alreadyExists) is listed as an import, a write
the server would refuse as done.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from jmapsync.jmap.mail import WriteResult
from jmapsync.jmap.types import Mailbox, MailboxId, State
from jmapsync.maildir.files import LocalFile, Subdir, join, split_rel
from jmapsync.maildir.flags import parse_name
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import StateDB
from jmapsync.state.lock import account_peek
from jmapsync.sync.plan import FilePlan, FolderPlan
from jmapsync.sync.report import SyncReport
from jmapsync.sync.twoway import Update

SERVER = "server"
MAILDIR = "maildir"


@contextlib.contextmanager
def state_copy(state_dir: Path, account: str) -> Iterator[StateDB]:
    """The account's state database, copied into a temporary directory (or a
    fresh one there): the pass may write to it as it always does, and the
    real one stays byte-identical -- or is not even created.  Held under a
    shared lock so that no sync changes it while it is copied."""
    with (
        account_peek(state_dir / f"{account}.lock"),
        tempfile.TemporaryDirectory(prefix="jmapsync-dry-") as tmp,
    ):
        src = state_dir / f"{account}.sqlite3"
        dst = Path(tmp) / src.name
        # The -wal file holds commits not yet checkpointed into the main file.
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
        db = StateDB(dst)
        try:
            yield db
        finally:
            db.close()


@dataclass(frozen=True, slots=True)
class Would:
    """One thing the pass would do."""

    side: str  # SERVER or MAILDIR: where the change would happen
    action: str  # "Email/set update", "download", "rename", ...
    what: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"side": self.side, "action": self.action, "what": self.what, "detail": self.detail}


@dataclass
class DryRun:
    """What one dry pass would do, and the overlay that stands for its writes."""

    actions: list[Would] = field(default_factory=list)
    # Mailbox id -> folder path, to name mailboxes in the list (set by the engine).
    names: Mapping[MailboxId, str] = field(default_factory=dict)
    new_mailboxes: dict[MailboxId, Mailbox] = field(default_factory=dict)
    destroyed_mailboxes: set[MailboxId] = field(default_factory=set)
    moved: dict[str, str] = field(default_factory=dict)  # folder moves: old path -> new
    renamed: dict[str, LocalFile] = field(default_factory=dict)  # relpath -> file after rename
    removed: set[str] = field(default_factory=set)  # relpaths (superseded MUA copies)
    plan: FilePlan | None = None

    def add(self, side: str, action: str, what: str, detail: str = "") -> None:
        self.actions.append(Would(side, action, what, detail))

    def name(self, mid: str) -> str:
        return self.names.get(MailboxId(mid), mid) or "INBOX"

    # -- server writes -------------------------------------------------------------

    def create_mailbox(self, names: tuple[str, ...], parent: str | None) -> MailboxId:
        """A Mailbox/set create, answered with a placeholder id."""
        mid = MailboxId(f"dry-{len(self.new_mailboxes) + 1}")
        self.new_mailboxes[mid] = Mailbox(
            mid, names[-1], MailboxId(parent) if parent else None, None
        )
        self.add(SERVER, "Mailbox/set create", "/".join(names))
        return mid

    def destroy_mailbox(self, mid: MailboxId, folder: str) -> None:
        self.destroyed_mailboxes.add(mid)
        self.add(SERVER, "Mailbox/set destroy", folder, "folder removed locally, mailbox empty")

    def mailboxes(self, current: Mapping[MailboxId, Mailbox]) -> dict[MailboxId, Mailbox]:
        """The mailboxes as the server would hold them after our Mailbox/set."""
        out = {m: b for m, b in current.items() if m not in self.destroyed_mailboxes}
        return out | self.new_mailboxes

    def email_set(self, updates: list[Update], destroy: list[str], state: State) -> WriteResult:
        """An Email/set, listed and answered as done (the state does not move)."""
        for u in updates:
            self.add(SERVER, "Email/set update", u.email_id, self._describe(u))
        for eid in destroy:
            self.add(SERVER, "Email/set destroy", eid, "deleted in Trash")
        return WriteResult(
            new_state=state, updated={u.email_id for u in updates}, destroyed=set(destroy)
        )

    def _describe(self, u: Update) -> str:
        parts = [u.reason]
        if u.join:
            parts.append("joins " + ", ".join(sorted(self.name(m) for m in u.join)))
        if u.leave:
            parts.append("leaves " + ", ".join(sorted(self.name(m) for m in u.leave)))
        if u.keywords:
            parts.append(" ".join(("+" if on else "-") + k for k, on in u.keywords))
        return "; ".join(parts)

    def email_import(self, f: LocalFile, mailbox_ids: Iterable[str]) -> None:
        into = ", ".join(sorted(self.name(m) for m in mailbox_ids))
        self.add(SERVER, "Email/import", f.relpath, f"into {into}")

    # -- Maildir writes ------------------------------------------------------------

    def rename(self, f: LocalFile, dst: str, email_id: str, action: str) -> None:
        """A rename the local->remote stage makes (a copy of a message we
        hold, or a recovered import, taken over under our name): listed, and
        kept for the scan."""
        folder, sub, name = split_rel(dst)
        parsed = parse_name(name)
        self.renamed[f.relpath] = LocalFile(
            folder, cast(Subdir, sub), name, email_id, parsed.flags, f.inode
        )
        self.add(MAILDIR, action, f"{f.relpath} -> {dst}")

    def remove_copy(self, rel: str) -> None:
        """An MUA's copy the server's bytes replace."""
        self.removed.add(rel)
        self.add(MAILDIR, "remove copy", rel, "replaced by the server's bytes")

    def on_disk(self, rel: str) -> str:
        """Where the file the plan leaves at `rel` is now (before its renames,
        links and this stage's own renames)."""
        back = {f.relpath: old for old, f in self.renamed.items()}
        if self.plan is not None:
            back |= {r.dst: r.src for r in self.plan.renames}
            back |= {lk.dst: lk.src for lk in self.plan.links}
        for _ in range(3):  # a link from a renamed file from a taken-over copy
            rel = back.get(rel, rel)
        moved_back = {new: old for old, new in self.moved.items()}
        folder, sub, name = split_rel(rel)
        return join(moved_back.get(folder, folder), sub, name)

    def after_folder_moves(self, scan: Iterable[LocalFile]) -> list[LocalFile]:
        """The scan as it would be after the folder moves (applied once)."""
        if not self.moved:
            return list(scan)
        return [
            LocalFile(self.moved[f.folder], f.subdir, f.name, f.email_id, f.flags, f.inode)
            if f.folder in self.moved
            else f
            for f in scan
        ]

    def overlay(self, scan: Iterable[LocalFile]) -> list[LocalFile]:
        """The scan as it would be after this stage's renames and removals."""
        return [self.renamed.get(f.relpath, f) for f in scan if f.relpath not in self.removed]

    def folders_before(self, store: MaildirStore, report: SyncReport, fplan: FolderPlan) -> None:
        for src, dst in fplan.moves:
            if store.can_move_folder(src, dst):
                self.moved[src] = dst
                report.folders_moved += 1
                self.add(MAILDIR, "move folder", f"{src} -> {dst}", "mailbox renamed")
        for folder in fplan.create:
            if folder not in self.moved.values() and store.needs_folder(folder):
                report.folders_created += 1
                self.add(MAILDIR, "create folder", folder or ".")

    def files(
        self, report: SyncReport, plan: FilePlan, fetched: Collection[str] = frozenset()
    ) -> None:
        """The pull plan's file actions, listed and counted as the executor would
        (`fetched`: blobs this pass already read, which download no bytes)."""
        self.plan = plan
        for r in plan.renames:
            self.add(MAILDIR, "rename", f"{r.src} -> {r.dst}", r.reason)
        for lk in plan.links:
            self.add(MAILDIR, "link", f"{lk.src} -> {lk.dst}")
        for d in plan.downloads:
            self.add(MAILDIR, "download", f"{d.email_id} -> {d.dst}", f"{d.size} bytes")
            for dst in d.links:
                self.add(MAILDIR, "link", f"{d.dst} -> {dst}")
        for rm in plan.removes:
            self.add(MAILDIR, "remove", rm.path, rm.reason)
        report.renamed += len(plan.renames)
        report.linked += len(plan.links) + sum(len(d.links) for d in plan.downloads)
        report.downloaded += len(plan.downloads)
        report.bytes += sum(d.size for d in plan.downloads if d.blob_id not in fetched)
        report.removed += len(plan.removes)

    def folders_after(
        self, store: MaildirStore, report: SyncReport, fplan: FolderPlan, removed: set[str]
    ) -> None:
        """Folders of vanished (or deselected) mailboxes: removed if the plan
        leaves them empty, as apply_after would find them."""
        plan = self.plan or FilePlan()
        gone = {r.path for r in plan.removes} | {r.src for r in plan.renames} | removed
        gone |= set(self.removed)
        came = Counter(split_rel(rel)[0] for rel, _ in plan.owned())
        for folder in fplan.remove_if_empty:
            if folder in self.moved or not store.is_folder(folder) or came[folder]:
                continue
            left = [rel for rel in store.leftovers(folder) if rel not in gone]
            if left or not folder:  # the root (maildir++ inbox) is never removed
                self.add(MAILDIR, "keep folder", folder, "holds files jmapsync did not write")
            else:
                report.folders_removed += 1
                self.add(MAILDIR, "remove folder", folder)


LIMIT = 20  # actions of one kind printed before "... and N more"


def render(report: SyncReport) -> str:
    """One readable block for an account (the CLI prints it)."""
    lines = [f"account {report.account}: dry run, nothing was changed"]
    if report.mode == "unchanged":
        lines.append("  nothing changed on either side: the pass would do nothing")
        return "\n".join(lines)
    for side, title in ((SERVER, "to the server"), (MAILDIR, "to the Maildir")):
        acts = [w for w in report.would if w["side"] == side]
        lines.append(f"  {title}:" + ("" if acts else " nothing"))
        shown: Counter[str] = Counter()
        for w in acts:
            shown[w["action"]] += 1
            if shown[w["action"]] <= LIMIT:
                detail = f"  ({w['detail']})" if w["detail"] else ""
                lines.append(f"    {w['action']:<19} {w['what']}{detail}")
        for action, n in shown.items():
            if n > LIMIT:
                lines.append(f"    ... and {n - LIMIT} more {action} (--json lists all)")
    lines.append("  in all: " + summary(report))
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def summary(report: SyncReport) -> str:
    """The counts a real pass would report, in words."""
    parts = [
        (report.mailboxes_created, "mailbox(es) created"),
        (report.mailboxes_destroyed, "mailbox(es) destroyed"),
        (report.pushed, "Email/set update(s)"),
        (report.destroyed, "Email(s) destroyed"),
        (report.imported, "import(s)"),
        (report.adopted, "copy(ies) taken over"),
        (report.folders_moved, "folder move(s)"),
        (report.folders_created, "folder(s) created"),
        (report.downloaded, f"download(s) ({report.bytes} bytes)"),
        (report.renamed, "rename(s)"),
        (report.linked, "link(s)"),
        (report.removed, "file removal(s)"),
        (report.superseded, "MUA copy(ies) replaced"),
        (report.folders_removed, "folder(s) removed"),
        (report.rewritten, "line-ending rewrite(s)"),
    ]
    return ", ".join(f"{n} {what}" for n, what in parts if n) or "nothing"
