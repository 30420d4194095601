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
from dataclasses import dataclass, field
from pathlib import Path

from jmapsync.config import AccountConfig
from jmapsync.jmap.client import JmapClient
from jmapsync.maildir.keywords import FILE_NAME as KEYWORDS_FILE
from jmapsync.maildir.lineendings import Form, server_bytes
from jmapsync.maildir.store import MaildirStore
from jmapsync.state import archived
from jmapsync.state.db import StateDB
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


def check(account: AccountConfig, db: StateDB) -> Findings:
    """Compare the disk with the state (no network)."""
    findings = Findings()
    store = MaildirStore(account.maildir)
    boxes = db.mailboxes()
    mirrored = was_mirrored(db, boxes)  # `folders =`: the others have no folder
    folder_of = {mid: path for mid, (_, path) in boxes.items() if mid in mirrored}
    emails = db.emails()
    contents = db.contents()
    kept = archived.load(db.conn)
    expected: dict[str, set[str]] = {
        eid: {folder_of[m] for m in e.mailbox_ids if m in folder_of} for eid, e in emails.items()
    }
    folders = sorted(set(store.folders(account.layout)) | set(folder_of.values()))
    seen: dict[tuple[str, str], str] = {}
    hashes: dict[tuple[int, int], str] = {}  # (dev, inode) -> sha256: hard links once
    for f in store.scan(folders):
        findings.checked += 1
        rel = f.relpath
        is_kept = f.email_id is not None and (f.email_id, f.folder) in kept
        if f.email_id is None or (f.email_id not in emails and not is_kept):
            findings.extra.append(f"{rel} (not a message of this account)")
            continue
        key = (f.folder, f.email_id)
        if key in seen:
            findings.extra.append(f"{rel} (duplicate of {seen[key]})")
            continue
        seen[key] = rel
        if is_kept:
            findings.archived += 1
        elif f.folder not in expected[f.email_id]:
            findings.misplaced.append(f"{rel} (Email {f.email_id} is not in this mailbox)")
        content = contents.get(f.email_id)
        if content is None:
            continue  # no hash recorded (never synced this file): nothing to compare
        path = store.path(rel)
        try:
            st = path.stat()
            ident = (st.st_dev, st.st_ino)
            if ident not in hashes:
                hashes[ident] = _hash_local(path, content.form)
        except FileNotFoundError:
            findings.missing.append(f"{rel} (vanished while verifying)")
            continue
        if hashes[ident] != content.sha256:
            findings.altered.append(f"{rel} (differs from the server's message)")
    for eid, want in expected.items():
        for folder in sorted(want):
            if (folder, eid) not in seen:
                findings.missing.append(f"{folder or '.'}: Email {eid}")
    findings.extra.extend(
        f"{p} (stray file outside cur/ new/)" for p in _stray_files(store, folders)
    )
    return findings


async def check_downloads(account: AccountConfig, db: StateDB, findings: Findings) -> None:
    """--download: hash every blob as the server sends it now."""
    emails = db.emails()
    contents = db.contents()
    mirrored = was_mirrored(db, db.mailboxes())
    async with JmapClient(account) as client:
        await client.connect()
        for eid, email in sorted(emails.items()):
            if not email.mailbox_ids & mirrored:
                continue  # only in mailboxes `folders =` leaves out: never downloaded
            digest = hashlib.sha256()
            await client.stream_blob(email.blob_id, email.size, digest.update)
            recorded = contents.get(eid)
            if recorded is None or recorded.sha256 != digest.hexdigest():
                findings.server.append(f"Email {eid}: the server's blob differs from the state")
