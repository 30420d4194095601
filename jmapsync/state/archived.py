"""The `archived` table: what `direction = archive` kept that the server no longer has.

One row per (Email id, folder) whose file stays although the server no
longer backs it there: the Email is gone from the server (`gone`), or no
longer in the mailbox of that folder -- with the time this was first seen.
The table itself is created with the rest of the schema (state/db.py);
sync/archive.py keeps it, `jmapsync status` and `jmapsync verify` read it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple


class Archived(NamedTuple):
    email_id: str
    folder: str
    since: float  # POSIX time the pass first saw it
    gone: bool  # the Email is gone from the server (else: it left this mailbox)


def load(conn: sqlite3.Connection) -> dict[tuple[str, str], Archived]:
    """(Email id, folder) -> its record."""
    return {
        (eid, folder): Archived(eid, folder, float(since), bool(gone))
        for eid, folder, since, gone in conn.execute(
            "SELECT email_id, folder, since, gone FROM archived"
        )
    }


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM archived").fetchone()[0])


def update(
    conn: sqlite3.Connection, drop: Iterable[tuple[str, str]] | None, rows: Iterable[Archived]
) -> None:
    """Forget the (Email, folder) pairs in `drop` (None: all), then write `rows`."""
    if drop is None:
        conn.execute("DELETE FROM archived")
    else:
        conn.executemany("DELETE FROM archived WHERE email_id=? AND folder=?", list(drop))
    conn.executemany(
        "INSERT OR REPLACE INTO archived VALUES (?, ?, ?, ?)",
        [(a.email_id, a.folder, a.since, int(a.gone)) for a in rows],
    )
