"""The working set of a streamed pass (sync/stream.py), in SQLite, not in memory.

A pass that looks at everything -- a first sync, the daily full reconcile,
a pass after which nothing can be trusted -- would otherwise hold every
Email, every scanned file and every planned path at once: ~1 KB per
message, 1 GB at a million.  Here they live in temporary tables of the
state database's connection (SQLite's temp database: a file of its own,
never written to the state database or its WAL, gone when the connection
closes or the process dies), read back in chunks of Email ids.  Their names
start with stage_: SQLite resolves an unqualified name to the temp table
first, and the state database's own queries must keep finding its tables:

    model     the Emails as the server has them (the full read, or the
              records plus the remote changes)
    scan      the message files on disk
    files     the files this pass leaves (rows of the `files` table)
    contents  the content records learnt (downloads, backfills)
    kept      direction = archive: (Email, folder) -> gone

The pass's record copies them into the real tables in its one transaction
(`record_into`): nothing of a pass that dies is kept but what it did on disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from typing import cast

from jmapsync.jmap.types import Email, EmailId
from jmapsync.maildir.files import LocalFile, Subdir
from jmapsync.state.db import EMAIL_COLUMNS, Content, FileRecord, email_of_row, join_set

_TABLES = """
DROP TABLE IF EXISTS temp.stage_model;
DROP TABLE IF EXISTS temp.stage_scan;
DROP TABLE IF EXISTS temp.stage_files;
DROP TABLE IF EXISTS temp.stage_contents;
DROP TABLE IF EXISTS temp.stage_kept;
CREATE TEMP TABLE stage_model (
    id TEXT PRIMARY KEY, blob_id TEXT NOT NULL, mailbox_ids TEXT NOT NULL,
    keywords TEXT NOT NULL, size INTEGER NOT NULL, received_at TEXT NOT NULL
);
CREATE TEMP TABLE stage_scan (
    folder TEXT NOT NULL, sub TEXT NOT NULL, name TEXT NOT NULL,
    email_id TEXT, flags TEXT NOT NULL, inode INTEGER NOT NULL
);
CREATE TEMP TABLE stage_files (folder TEXT NOT NULL, name TEXT NOT NULL, email_id TEXT NOT NULL);
CREATE TEMP TABLE stage_contents (
    email_id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    crlf_only INTEGER NOT NULL, form TEXT NOT NULL
);
CREATE TEMP TABLE stage_kept (email_id TEXT NOT NULL, folder TEXT NOT NULL, gone INTEGER NOT NULL);
"""


_AFTER_ALL = "\U0010ffff"  # sorts after every Id (RFC 8620: URL-safe base64 characters)


def _row(e: Email) -> tuple[str, str, str, str, int, str]:
    received = "" if e.received_at is None else str(int(e.received_at))
    return (e.id, e.blob_id, join_set(e.mailbox_ids), join_set(e.keywords), e.size, received)


class Staging:
    """The temp tables of one streamed pass, on the state database's connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.executescript(_TABLES)
        self._scan_indexed = False

    def close(self) -> None:
        """Drop the tables (their file shrinks back); the connection stays."""
        self.conn.executescript(_TABLES.split("CREATE", maxsplit=1)[0])

    # -- the remote model ------------------------------------------------------------

    def clear_model(self) -> None:
        self.conn.execute("DELETE FROM temp.stage_model")

    def add_emails(self, emails: Iterable[Email]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO temp.stage_model VALUES (?, ?, ?, ?, ?, ?)", map(_row, emails)
        )

    def copy_records(self) -> None:
        """The Emails as last synced (then `apply` the remote changes)."""
        self.conn.execute(f"INSERT INTO temp.stage_model SELECT {EMAIL_COLUMNS} FROM main.emails")  # noqa: S608

    def apply(self, changed: Mapping[EmailId, Email], destroyed: Iterable[EmailId]) -> None:
        self.conn.executemany("DELETE FROM temp.stage_model WHERE id=?", [(e,) for e in destroyed])
        self.add_emails(changed.values())

    def model_size(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM temp.stage_model").fetchone()[0])

    def emails(self, batch: int = 4096) -> Iterator[Email]:
        """Every Email of the model, by id, `batch` rows at a time."""
        last = ""
        while True:
            rows = self.conn.execute(
                f"SELECT {EMAIL_COLUMNS} FROM temp.stage_model WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
                (last, batch),
            ).fetchall()
            if not rows:
                return
            yield from map(email_of_row, rows)
            last = rows[-1][0]

    def holds_mailbox(self, mailbox_id: str) -> bool:
        """Does any Email of the model name this mailbox?"""
        pattern = f"% {mailbox_id} %"
        row = self.conn.execute(
            "SELECT 1 FROM temp.stage_model WHERE ' ' || mailbox_ids || ' ' LIKE ? LIMIT 1",
            (pattern,),
        ).fetchone()
        return row is not None

    # -- the local scan --------------------------------------------------------------

    def add_scan(self, files: Iterable[LocalFile]) -> None:
        self.conn.executemany(
            "INSERT INTO temp.stage_scan VALUES (?, ?, ?, ?, ?, ?)",
            ((f.folder, f.subdir, f.name, f.email_id, f.flags, f.inode) for f in files),
        )

    def foreign(self) -> Iterator[LocalFile]:
        """The scanned files that are not ours (no Email id in the name)."""
        for folder, sub, name, _eid, flags, inode in self.conn.execute(
            "SELECT * FROM temp.stage_scan WHERE email_id IS NULL"
        ):
            yield LocalFile(folder, cast(Subdir, sub), name, None, flags, inode)

    def chunks(self, size: int) -> Iterator[tuple[dict[EmailId, Email], list[LocalFile]]]:
        """(Emails, their scanned files) of every Email id in the model or on
        disk, `size` ids at a time in id order: each Email with ALL its files,
        as plan_files needs it."""
        if not self._scan_indexed:
            self.conn.execute(
                "CREATE INDEX IF NOT EXISTS temp.stage_scan_id ON stage_scan (email_id)"
            )
            self._scan_indexed = True
        last = ""
        while True:
            # The chunk ends at the `size`-th id after `last` on the side
            # that reaches it first (each side by its index, never a union).
            ends = [
                row[0]
                for query in (
                    "SELECT id FROM temp.stage_model WHERE id > ? ORDER BY id LIMIT 1 OFFSET ?",
                    "SELECT email_id FROM temp.stage_scan WHERE email_id > ?"
                    " ORDER BY email_id LIMIT 1 OFFSET ?",
                )
                if (row := self.conn.execute(query, (last, size - 1)).fetchone()) is not None
            ]
            end = min(ends) if ends else _AFTER_ALL
            bounds = (last, end)
            emails = {
                e.id: e
                for e in map(
                    email_of_row,
                    self.conn.execute(
                        f"SELECT {EMAIL_COLUMNS} FROM temp.stage_model WHERE id > ? AND id <= ?",  # noqa: S608
                        bounds,
                    ),
                )
            }
            files = [
                LocalFile(folder, cast(Subdir, sub), name, eid, flags, inode)
                for folder, sub, name, eid, flags, inode in self.conn.execute(
                    "SELECT * FROM temp.stage_scan WHERE email_id > ? AND email_id <= ?", bounds
                )
            ]
            if not emails and not files:
                return
            yield emails, files
            if end == _AFTER_ALL:
                return
            last = end

    # -- what the pass leaves --------------------------------------------------------

    def add_files(self, files: Iterable[FileRecord]) -> None:
        self.conn.executemany(
            "INSERT INTO temp.stage_files VALUES (?, ?, ?)",
            ((f.folder, f.name, f.email_id) for f in files),
        )

    def add_contents(self, items: Mapping[str, Content]) -> None:
        self.conn.executemany(
            "INSERT OR REPLACE INTO temp.stage_contents VALUES (?, ?, ?, ?, ?)",
            [(e, c.sha256, c.size, int(c.crlf_only), c.form) for e, c in items.items()],
        )

    def add_kept(self, pairs: Mapping[tuple[str, str], bool]) -> None:
        self.conn.executemany(
            "INSERT INTO temp.stage_kept VALUES (?, ?, ?)",
            [(eid, folder, int(gone)) for (eid, folder), gone in pairs.items()],
        )

    def kept(self) -> dict[tuple[str, str], bool]:
        return {(e, f): bool(g) for e, f, g in self.conn.execute("SELECT * FROM temp.stage_kept")}

    def record_into(self, conn: sqlite3.Connection) -> None:
        """Inside the pass's transaction: the Emails, files and contents
        tables become the model, the files left and the contents learnt."""
        conn.execute("DELETE FROM main.emails")
        conn.execute("INSERT INTO main.emails SELECT * FROM temp.stage_model")
        conn.execute("DELETE FROM main.files")
        conn.execute("INSERT OR REPLACE INTO main.files SELECT * FROM temp.stage_files")
        conn.execute("INSERT OR REPLACE INTO main.contents SELECT * FROM temp.stage_contents")
        conn.execute(
            "DELETE FROM main.contents WHERE email_id NOT IN (SELECT email_id FROM main.files)"
        )
