"""What a restore did (or, with --dry-run, would do), and its progress hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Progress(Protocol):
    """One stage's progress; the CLI hands in tqdm bars on a terminal."""

    def update(self, n: int, nbytes: int = 0) -> None: ...

    def close(self) -> None: ...


# (description, total items, total bytes) -> a bar
ProgressFactory = Callable[[str, int, int], Progress]


class NoProgress:
    def update(self, n: int, nbytes: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something not restored: a file, a message, or a whole folder (count files)."""

    what: str
    reason: str
    count: int = 1


@dataclass
class RestoreReport:
    account: str
    source: Path
    layout: str
    kind: str = "foreign"  # "jmapsync" mirror or "foreign" Maildir
    mbsync: bool = False
    dry_run: bool = False
    folders: int = 0
    files: int = 0
    messages: int = 0  # distinct contents among the readable files
    imported: int = 0
    imported_bytes: int = 0
    present: int = 0  # already in the account (not imported again)
    recovered: int = 0  # of those: imports of an interrupted run
    created: list[str] = field(default_factory=list)  # mailboxes created (or to create)
    by_role: dict[str, str] = field(default_factory=dict)  # folder -> role it went to
    to_import: dict[str, int] = field(default_factory=dict)  # dry run: mailbox -> messages
    to_import_messages: int = 0
    to_import_bytes: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped_count(self) -> int:
        return sum(s.count for s in self.skipped)
