"""The folder times of the last pass, and the check that none moved since.

The rule is sync/scope.py's (read it there): the last pass recorded the
modification times of each folder's directory, cur/ and new/ and of the
root, each older than a marker touched just after they were read; a folder
whose times are all the same now holds exactly what that pass recorded.

This module is what the "nothing changed" check needs and nothing more
(os, json, the id types): the engine's fast path and the no-change fast path of
sync/quick.py, which must answer without importing the engine, ask the same
`local_unchanged()`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from jmapsync.jmap.types import EmailId
from jmapsync.maildir.paths import inside

if TYPE_CHECKING:
    from jmapsync.config import AccountConfig
    from jmapsync.state.db import StateDB

ROOT_KEY = "/"  # the Maildir root's own time in the stamp (never a folder path)

Times = dict[str, list[int] | None]


def local_times(root: Path, folders: list[str]) -> Times:
    """mtime_ns of each folder's directory and of its cur/ and new/, and of
    the root (a new top-level folder changes only its time); None where a
    directory is missing."""
    out: Times = {}
    try:
        out[ROOT_KEY] = [root.stat().st_mtime_ns]
    except OSError:
        out[ROOT_KEY] = None
    for folder in folders:
        base = inside(root, folder)
        try:
            out[folder] = [base.stat().st_mtime_ns] + [
                (base / sub).stat().st_mtime_ns for sub in ("cur", "new")
            ]
        except OSError:
            out[folder] = None
    return out


def recorded_times(db: StateDB, account: AccountConfig) -> Times | None:
    """The folder times the last pass recorded, if they are for this
    Maildir root and layout."""
    raw = db.get_meta("local_stamp")
    if raw is None:
        return None
    recorded = json.loads(raw)
    if recorded.get("layout") != account.layout or recorded.get("root") != str(account.maildir):
        return None
    folders: Times = recorded.get("folders", {})
    return folders


def retry_downloads(db: StateDB) -> frozenset[EmailId]:
    """Emails whose download failed in an earlier pass (record.py): planned
    again by every pass until they arrive -- so no pass is "unchanged"
    while one waits (the engine's fast path and sync/quick.py)."""
    raw = db.get_meta("retry_downloads")
    return frozenset(EmailId(e) for e in json.loads(raw)) if raw else frozenset()


def local_unchanged(db: StateDB, account: AccountConfig) -> bool:
    """True when no folder changed since the last pass recorded its stamp,
    and the settings that shape the files are the same."""
    folders = recorded_times(db, account)
    if folders is None or db.get_meta("line_endings") != account.line_endings:
        return False
    if (db.get_meta("folders") or "*") != " ".join(account.folders):
        return False  # `folders =` changed: folders come or go
    if ROOT_KEY not in folders or any(v is None for v in folders.values()):
        return False
    # The recorded times were older than a marker touched after they were
    # read: any later change has a newer time.  No marker needed to compare.
    return local_times(account.maildir, sorted(f for f in folders if f != ROOT_KEY)) == folders
