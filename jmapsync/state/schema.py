"""The state database's tables (what each holds and why: state/db.py), and
the migrations between schema versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from jmapsync.errors import StateError

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mailboxes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent_id TEXT,
    role TEXT,
    path TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS emails (
    id TEXT PRIMARY KEY,
    blob_id TEXT NOT NULL,
    mailbox_ids TEXT NOT NULL,
    keywords TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS files (
    folder TEXT NOT NULL,
    name TEXT NOT NULL,
    email_id TEXT NOT NULL,
    PRIMARY KEY (folder, name)
);
CREATE INDEX IF NOT EXISTS files_by_email ON files (email_id);
CREATE TABLE IF NOT EXISTS contents (
    email_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    crlf_only INTEGER NOT NULL,
    form TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
-- direction = archive: kept files the server no longer backs (state/archived.py)
CREATE TABLE IF NOT EXISTS archived (
    email_id TEXT NOT NULL,
    folder TEXT NOT NULL,
    since REAL NOT NULL,
    gone INTEGER NOT NULL,
    PRIMARY KEY (email_id, folder)
);
"""


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create what is missing; refuse a database of a newer jmapsync."""
    conn.executescript(SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) > SCHEMA_VERSION:
        raise StateError(
            f"state database {path} has schema {row[0]}, newer than this jmapsync"
            f" ({SCHEMA_VERSION}); upgrade jmapsync"
        )
    elif int(row[0]) < SCHEMA_VERSION:
        # 1 -> 2: the contents table (created above); rows are backfilled
        # from the files by the next sync (version 1 wrote exact bytes only).
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
