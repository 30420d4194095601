"""`jmapsync verify`: prove the mirror against the state, never changing anything.

Every file under the Maildir root is checked against what the last sync
recorded: which Emails exist, in which folders, and the SHA-256 of the
server's bytes.  A file in LF form is converted back before hashing, so the
check holds in both `line_endings` modes.  With `--download` every blob is
fetched again and hashed too, which also catches a state that no longer
matches the server.

Findings (each makes the exit status non-zero):

- missing:    a file the state says exists in a folder is not there
- extra:      a file that belongs to no recorded Email, or a second copy of
              an Email in one folder (a duplicate), or a stray non-mail file
- altered:    the content differs from the server's bytes
- misplaced:  an Email's file sits in a folder none of its mailboxes maps to

Not findings: files `direction = archive` kept although the server no longer
has them there (the state lists them); they are counted apart and their
content is checked like any other.
- server:     (--download) the server's blob differs from the recorded hash

A later `sync` repairs what is missing, misplaced or duplicated; an altered
file is reported, not overwritten, in two-way mode.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from jmapsync.config import AccountConfig
from jmapsync.errors import StateError
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import MailboxId
from jmapsync.maildir.keywords import FILE_NAME as KEYWORDS_FILE
from jmapsync.maildir.lineendings import Form, server_bytes
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import StateDB, db_error
from jmapsync.sync.folders import was_mirrored


@dataclass
class Findings:
    checked: int = 0
    archived: int = 0  # kept by direction = archive: fine, counted apart
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)
    server: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.altered or self.misplaced or self.server)

    def lines(self) -> list[str]:
        out = []
        for kind in ("missing", "extra", "altered", "misplaced", "server"):
            for item in getattr(self, kind):
                out.append(f"{kind:<10} {item}")
        return out


def _hash_local(path: Path, form: Form) -> str:
    return hashlib.sha256(server_bytes(path.read_bytes(), form)).hexdigest()


def _stray_files(store: MaildirStore, folders: list[str]) -> list[str]:
    """Files directly in a folder (not in cur/ new/ tmp/) look like lost mail."""
    out = []
    for folder in folders:
        try:
            entries = list(os.scandir(store.path(folder)))
        except FileNotFoundError:
            continue  # a folder the state knows is gone: its files are reported missing
        for entry in entries:
            if (
                entry.is_file(follow_symlinks=False)
                and not entry.name.startswith(".")
                and entry.name != KEYWORDS_FILE  # the folder's Dovecot letters
            ):
                out.append(f"{folder}/{entry.name}" if folder else entry.name)
    return out


# The files found on disk, in the state database connection's temp database
# (never the state file: verify changes nothing), so that a million files
# are compared without holding a million records (issue 16).
_SCAN_TABLE = """
DROP TABLE IF EXISTS temp.verify_scan;
CREATE TEMP TABLE verify_scan (email_id TEXT NOT NULL, folder TEXT NOT NULL, rel TEXT NOT NULL);
"""
_CHUNK = 4096


def check(account: AccountConfig, db: StateDB) -> Findings:
    """Compare the disk with the state (no network).

    Streamed: the scan goes into a temp table; then every file is read back
    in Email order beside its Email's record (one query), and every recorded
    Email beside the folders it was found in (a merge of two ordered
    queries) -- memory stays flat however many messages there are."""
    findings = Findings()
    store = MaildirStore(account.maildir)
    boxes = db.mailboxes()
    mirrored = was_mirrored(db, boxes)  # `folders =`: the others have no folder
    folder_of = {mid: path for mid, (_, path) in boxes.items() if mid in mirrored}
    folders = sorted(set(store.folders(account.layout)) | set(folder_of.values()))
    try:
        _compare(db.conn, store, folders, folder_of, findings)
    except sqlite3.Error as exc:
        # Reading the state, or writing the scan into SQLite's temporary
        # directory ($SQLITE_TMPDIR, else /var/tmp or /tmp): one line either way.
        err = db_error(db.path, exc)
        raise StateError(f"{err} (verify keeps its scan in SQLite's temporary directory)") from None
    findings.extra.extend(
        f"{p} (stray file outside cur/ new/)" for p in _stray_files(store, folders)
    )
    return findings


def _compare(
    conn: sqlite3.Connection,
    store: MaildirStore,
    folders: list[str],
    folder_of: Mapping[MailboxId, str],
    findings: Findings,
) -> None:
    """The scan into the temp table, then both comparisons (see `check`)."""
    conn.executescript(_SCAN_TABLE)
    try:
        batch: list[tuple[str, str, str]] = []
        for f in store.scan(folders, lazy=True):
            findings.checked += 1
            if f.email_id is None:
                findings.extra.append(f"{f.relpath} (not a message of this account)")
                continue
            batch.append((f.email_id, f.folder, f.relpath))
            if len(batch) >= _CHUNK:
                conn.executemany("INSERT INTO temp.verify_scan VALUES (?, ?, ?)", batch)
                batch.clear()
        conn.executemany("INSERT INTO temp.verify_scan VALUES (?, ?, ?)", batch)
        conn.execute("CREATE INDEX temp.verify_scan_order ON verify_scan (email_id, folder)")
        _check_files(conn, store, folder_of, findings)
        _check_missing(conn, folder_of, findings)
    finally:
        conn.executescript(_SCAN_TABLE.split("CREATE", maxsplit=1)[0])


def _expected(mailbox_ids: str, folder_of: Mapping[MailboxId, str]) -> set[str]:
    """The folders an Email's files belong in (its `mailbox_ids` column)."""
    return {folder_of[MailboxId(m)] for m in mailbox_ids.split() if m in folder_of}


def _check_files(
    conn: sqlite3.Connection,
    store: MaildirStore,
    folder_of: Mapping[MailboxId, str],
    findings: Findings,
) -> None:
    """Each file found: whose it is, whether it is a duplicate, in the right
    folder, and (where a hash is recorded) holding the server's bytes."""
    rows = conn.execute(
        "SELECT s.email_id, s.folder, s.rel, e.mailbox_ids, c.sha256, c.form,"
        " k.email_id IS NOT NULL"
        " FROM temp.verify_scan s"
        " LEFT JOIN emails e ON e.id = s.email_id"
        " LEFT JOIN contents c ON c.email_id = s.email_id"
        " LEFT JOIN archived k ON k.email_id = s.email_id AND k.folder = s.folder"
        " ORDER BY s.email_id, s.folder, s.rowid"
    )
    first: tuple[str, str, str] = ("", "", "")  # (Email, folder, file) seen first
    hashes: dict[tuple[int, int], str] = {}  # (dev, inode) -> sha256, for one Email's links
    for eid, folder, rel, mailbox_ids, sha256, form, is_kept in rows:
        if mailbox_ids is None and not is_kept:
            findings.extra.append(f"{rel} (not a message of this account)")
            continue
        if (eid, folder) == first[:2]:
            findings.extra.append(f"{rel} (duplicate of {first[2]})")
            continue
        if eid != first[0]:
            hashes.clear()  # an Email's hard links are its own files: next to each other here
        first = (eid, folder, rel)
        if is_kept:
            findings.archived += 1
        elif folder not in _expected(mailbox_ids, folder_of):
            findings.misplaced.append(f"{rel} (Email {eid} is not in this mailbox)")
        if sha256 is None:
            continue  # no hash recorded (never synced this file): nothing to compare
        path = store.path(rel)
        try:
            st = path.stat()
            ident = (st.st_dev, st.st_ino)
            if ident not in hashes:
                hashes[ident] = _hash_local(path, cast(Form, form))
        except FileNotFoundError:
            findings.missing.append(f"{rel} (vanished while verifying)")
            continue
        if hashes[ident] != sha256:
            findings.altered.append(f"{rel} (differs from the server's message)")


def _check_missing(
    conn: sqlite3.Connection, folder_of: Mapping[MailboxId, str], findings: Findings
) -> None:
    """Each recorded Email: a file in every folder its mailboxes map to.
    The Emails and the files found are both read in Email id order and
    merged (two cursors on one connection)."""
    found = conn.execute(
        "SELECT DISTINCT email_id, folder FROM temp.verify_scan ORDER BY email_id, folder"
    )
    pending = next(found, None)
    for eid, mailbox_ids in conn.execute("SELECT id, mailbox_ids FROM emails ORDER BY id"):
        have: set[str] = set()
        while pending is not None and pending[0] <= eid:
            if pending[0] == eid:
                have.add(pending[1])
            pending = next(found, None)
        for folder in sorted(_expected(mailbox_ids, folder_of) - have):
            findings.missing.append(f"{folder or '.'}: Email {eid}")


async def check_downloads(account: AccountConfig, db: StateDB, findings: Findings) -> None:
    """--download: hash every blob as the server sends it now (Emails read
    from the state a row at a time, as `check` does)."""
    mirrored = was_mirrored(db, db.mailboxes())
    rows = db.conn.execute(
        "SELECT e.id, e.blob_id, e.size, e.mailbox_ids, c.sha256"
        " FROM emails e LEFT JOIN contents c ON c.email_id = e.id ORDER BY e.id"
    )
    async with JmapClient(account) as client:
        await client.connect()
        for eid, blob_id, size, mailbox_ids, recorded in rows:
            if not mirrored.intersection(mailbox_ids.split()):
                continue  # only in mailboxes `folders =` leaves out: never downloaded
            digest = hashlib.sha256()
            await client.stream_blob(blob_id, size, digest.update)
            if recorded is None or recorded != digest.hexdigest():
                findings.server.append(f"Email {eid}: the server's blob differs from the state")
