"""What the local->remote direction did on the server, handed back to the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from jmapsync.jmap.types import Email, EmailId, State
from jmapsync.maildir.files import LocalFile

# A file to import: the file, its bytes, and its mailboxes (None: its folder's).
Import = tuple[LocalFile, bytes, frozenset[str] | None]


@dataclass
class Outcome:
    """The server after our writes, as a change to the remote model.

    The direction never edits the engine's model: it returns this, and the
    engine applies it (`RemoteModel.apply_writes`) before the pull plan runs."""

    email_state: State  # the Email state our last write produced (or the read's)
    changed: dict[EmailId, Email] = field(default_factory=dict)  # updated, imported, joined
    destroyed: set[EmailId] = field(default_factory=set)
    rescan: bool = False  # local files were renamed or written: scan again
    superseded: list[tuple[str, str]] = field(default_factory=list)  # (relpath, Email id)

    def current(self, emails: Mapping[EmailId, Email], eid: EmailId) -> Email | None:
        """An Email as the server holds it now: the read, plus our writes."""
        if eid in self.destroyed:
            return None
        return self.changed.get(eid) or emails.get(eid)
