"""The state of one pass, handed to every stage and to both directions.

A pass is a pipeline (docs/DESIGN.md): remote read -> local scope -> plan
(local->remote and remote->local) -> execute -> record.  The stages do not
import each other's internals; what they share lives here: the account and
its store and state database, the report they all add to, the Emails as
last synced (the base of the three-way merge), the content hashes learnt
during the pass, and the "files table may be stale" journal mark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jmapsync.config import AccountConfig
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId, MailboxId
from jmapsync.maildir.keywords import Letters
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import Content, StateDB
from jmapsync.sync.report import SyncReport

if TYPE_CHECKING:  # a dry run's module is loaded by a dry run only
    from jmapsync.log import Logger
    from jmapsync.sync.dryrun import DryRun
    from jmapsync.sync.watched import Watch


FETCHED_MAX = 64 * 1024 * 1024  # blobs kept for reuse in one pass, in bytes


@dataclass
class PassContext:
    """One pass over one account (one attempt: a stateMismatch makes a new one)."""

    account: AccountConfig
    db: StateDB
    store: MaildirStore
    log: Logger
    report: SyncReport
    force_deletes: bool = False  # --force-deletes: the deletion guards let everything through
    # Emails as last synced: the base of the three-way merge (two-way only).
    base: dict[EmailId, Email] = field(default_factory=dict)
    # Content hashes of the server bytes learnt during the pass (downloads,
    # imports, rewrites), recorded with the pass.
    new_contents: dict[str, Content] = field(default_factory=dict)
    # The files table is rewritten whole at the end of this pass: an earlier
    # pass died after its first file action, or this one made file changes
    # the pull plan does not list (folder moves, the user's renames, imports).
    rewrite_files: bool = False
    # Folders of vanished mailboxes kept because they hold an MUA's file:
    # not stamped as clean, so the next pass looks again (and makes them
    # mailboxes) instead of taking its "unchanged" fast path past them.
    kept_folders: set[str] = field(default_factory=set)
    # Folder -> the Dovecot keyword letters jmapsync maps there (sync/letters.py).
    letters: dict[str, Letters] = field(default_factory=dict)
    # Folders whose time stamp must not be recorded: the next pass looks at
    # all their files (new letters reached only some of them).
    unsettled: set[str] = field(default_factory=set)
    # Folder -> keywords already logged as left without a letter (None: not
    # looked at this pass).
    overflow_told: dict[str, list[str]] | None = None
    # Blobs read whole during the pass (to compare a mail program's file with
    # the server's message): the download of the same blob takes them from
    # here instead of the network.  Blobs never change, so this is exact.
    fetched: dict[str, bytes] = field(default_factory=dict)
    fetched_bytes: int = 0
    # The mailboxes `folders =` mirrors (sync/selection.py); None: all of them.
    selected: frozenset[MailboxId] | None = None
    # Mailboxes whose name cannot become a folder -> why (left alone this pass).
    unmapped: dict[MailboxId, str] = field(default_factory=dict)
    # A dry run (sync/dryrun.py): every write is listed there instead of done.
    dry: DryRun | None = None
    # inotify on the folders a partial pass may write without scanning
    # (sync/watched.py; closed when the attempt ends).
    watch: Watch | None = None

    @property
    def two_way(self) -> bool:
        return self.account.direction == "two-way"

    @property
    def archive(self) -> bool:
        """A pull that never removes a file (sync/archive.py)."""
        return self.account.direction == "archive"

    def mark_files_pending(self, *, rewrite: bool = False) -> None:
        """Journal, before any file action: the files table may no longer match
        the disk until this pass commits; if it never does, the next pass
        rewrites the table whole.  `rewrite`: this pass does too (its file
        actions are not all in the plan)."""
        self.rewrite_files = self.rewrite_files or rewrite
        if self.db.get_meta("files_pending") != "1":
            with self.db.transaction() as conn:
                self.db.set_meta(conn, "files_pending", "1")

    async def fetch_blob(self, client: JmapClient, blob_id: str, size: int) -> bytes:
        """client.fetch_blob, kept for the pass's download (up to FETCHED_MAX bytes)."""
        data = self.fetched.get(blob_id)
        if data is None:
            data = await client.fetch_blob(blob_id, size)
            if self.fetched_bytes + len(data) <= FETCHED_MAX:
                self.fetched[blob_id] = data
                self.fetched_bytes += len(data)
        return data

    def warn(self, event: str, message: str, **fields: object) -> None:
        """A warning in the log and in the report (the CLI counts them)."""
        self.log.warning(event, **fields)
        self.report.warnings.append(message)
