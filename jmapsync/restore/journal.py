"""The restore journal: which bytes were sent to which account, and what came of it.

``<state_dir>/<account>.restore.sqlite3`` (WAL, synchronous=FULL), apart
from the sync state: a sync pass clears its own journal when it commits,
and must not take a restore's with it.

One row per message content (SHA-256 of the canonical bytes):

* written and committed BEFORE the upload: the intent (email_id NULL);
* updated right after Email/import answers, with the new Email id.

A rerun (after Ctrl-C, a crash, a SIGKILL) reads it first:

* a row with an Email id that the account still lists: that message is
  there, nothing is downloaded or sent for it;
* a row without an Email id: the import may or may not have happened.  The
  restore does not guess; it looks the message up like any other (same size
  and Message-ID, then the same bytes, downloaded and hashed), and imports it
  only when the account does not have it.

Rows stay after a complete restore, so that a later rerun of a large restore
costs one listing and no downloads.  The journal is bound to the account
(session URL and accountId): pointed at another one, it starts empty.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from jmapsync.errors import StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS imports (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    message_id TEXT,
    intent TEXT NOT NULL,
    email_id TEXT,
    updated_at REAL NOT NULL
);
"""


def journal_path(state_dir: Path, account: str) -> Path:
    return state_dir / f"{account}.restore.sqlite3"


class RestoreJournal:
    """The journal of one account's restores (module docstring)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """`readonly` (a dry run): an absent journal reads as empty and
        nothing is created or written."""
        self.path = path
        self.readonly = readonly
        self.conn: sqlite3.Connection | None = None
        try:
            if readonly:
                if path.exists():
                    self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                return
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"restore journal {path} is unusable: {exc}") from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.conn is None or self.readonly:
            raise RuntimeError("the restore journal is read-only")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def bind(self, session_url: str, account_id: str) -> None:
        """Start over when the journal was written for another account."""
        if self.conn is None:
            return
        whose = json.dumps([session_url, account_id])
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key='account'").fetchone()
        except sqlite3.Error:
            row = None
        if row is not None and row[0] == whose:
            return
        if self.readonly:
            self.close()  # another account's rows mean nothing here
            return
        with self._tx() as conn:
            conn.execute("DELETE FROM imports")
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('account', ?)", (whose,))

    def known(self) -> dict[str, str | None]:
        """sha256 -> Email id (None: intended, outcome unknown)."""
        if self.conn is None:
            return {}
        try:
            rows = self.conn.execute("SELECT sha256, email_id FROM imports").fetchall()
        except sqlite3.Error:
            return {}
        return {str(sha): (str(eid) if eid else None) for sha, eid in rows}

    def intend(self, items: Iterable[tuple[str, int, str | None, Mapping[str, object]]]) -> None:
        """Record (sha256, size, message_id, details) before their upload; one commit."""
        now = time.time()
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO imports VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT(sha256) DO UPDATE"
                " SET intent=excluded.intent, email_id=NULL, updated_at=excluded.updated_at",
                [
                    (sha, size, mid, json.dumps(dict(details), sort_keys=True), now)
                    for sha, size, mid, details in items
                ],
            )

    def done(self, items: Iterable[tuple[str, int, str | None, str]]) -> None:
        """Record (sha256, size, message_id, Email id): imported now, or found
        already there; one commit."""
        rows = [(sha, size, mid, "{}", eid, time.time()) for sha, size, mid, eid in items]
        if not rows:
            return
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE"
                " SET email_id=excluded.email_id, updated_at=excluded.updated_at",
                rows,
            )

    def pending(self) -> int:
        """Intents whose outcome is unknown (an interrupted run)."""
        return sum(1 for v in self.known().values() if v is None)
