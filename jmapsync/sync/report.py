"""What one pass did (`SyncReport`), and the download progress hook.

The report is filled in by every stage of a pass; the CLI, the daemon's
status and the tests read it.  The progress bar is drawn only on a terminal,
and tqdm is imported only then: a pass from cron never loads it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SyncReport:
    """What one pass did, for the CLI, logs and tests."""

    account: str
    mode: str = "incremental"  # or "full", "unchanged"
    partial: bool = False  # incremental, looking only at changed folders and Emails (Scope)
    planned: int = 0  # Emails the plan looked at
    downloaded: int = 0
    bytes: int = 0
    renamed: int = 0
    moved: int = 0  # of the renamed: to another folder (the rest changed only flags)
    linked: int = 0
    removed: int = 0
    folders_created: int = 0
    folders_moved: int = 0
    folders_removed: int = 0
    rewritten: int = 0  # files converted between LF and exact form
    pushed: int = 0  # Emails whose local flag or folder changes went to the server
    destroyed: int = 0  # Emails destroyed on the server (deleted here from Trash)
    imported: int = 0  # local new messages sent with Email/import
    adopted: int = 0  # MUA copies of known messages taken over under our name
    superseded: int = 0  # MUA copies replaced by the server's bytes
    mailboxes_created: int = 0
    mailboxes_destroyed: int = 0
    foreign: int = 0
    seconds: float = 0.0
    email_state: str | None = None
    warnings: list[str] = field(default_factory=list)
    # Items this pass could not take and left for a later one (a mailbox whose
    # name cannot become a folder); `jmapsync status` shows them.
    skipped: list[str] = field(default_factory=list)
    # Seconds per stage: remote, folders, scan_plan, execute, record (sync/engine.py)
    phases: dict[str, float] = field(default_factory=dict)
    dry_run: bool = False  # counts and `would` say what the pass would have done
    would: list[dict[str, str]] = field(default_factory=list)  # dry run: each action

    def add_counts(self, other: SyncReport) -> None:
        """Add another attempt's counts of things done (not its mode or state)."""
        for name in COUNTED:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("warnings", "would")} | {
            "warnings": len(self.warnings)
        }


# The fields of SyncReport that count things done (a retried pass adds them up).
COUNTED = (
    "downloaded",
    "bytes",
    "renamed",
    "linked",
    "removed",
    "folders_created",
    "folders_moved",
    "folders_removed",
    "rewritten",
    "pushed",
    "destroyed",
    "imported",
    "adopted",
    "superseded",
    "mailboxes_created",
    "mailboxes_destroyed",
)


class Progress:
    """Download progress; the CLI swaps in a tqdm bar on a TTY."""

    def update(self, n: int, nbytes: int) -> None:
        """Called after each finished download."""

    def close(self) -> None:
        """Called once at the end."""


ProgressFactory = Callable[[int, int], Progress]


def progress_bar_factory() -> ProgressFactory | None:
    """A tqdm bar on a TTY, nothing otherwise (structured logs say the rest)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # only on a TTY: keeps start-up light

    class Bar(Progress):
        def __init__(self, total: int, total_bytes: int) -> None:
            self.bar = tqdm(total=total, unit="msg", desc="downloading", leave=False)

        def update(self, n: int, nbytes: int) -> None:
            self.bar.update(n)

        def close(self) -> None:
            self.bar.close()

    return Bar
