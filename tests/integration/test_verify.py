"""`jmapsync verify` against the real Cyrus: the findings that need more than
one Email or one folder (test_mirror_line_endings.py has one of each kind).

verify reads the scan back from a temp table in Email order and merges the
recorded Emails with the folders their files were found in (sync/verify.py):
these tests pin what that merge must get right -- an Email in two folders,
missing files scattered among many Emails, and `--download` finding a state
that no longer matches the server."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, message_files


def findings(mirror: Mirror) -> tuple[int, list[str]]:
    done = mirror.cli("verify", check=False)
    lines = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    return done.returncode, lines


def test_an_email_in_two_folders_is_checked_in_each(account: Account, tmp_path: Path) -> None:
    with account.imap() as i:
        i.create_folder("Work")
        i.append("INBOX", make_message(1, subject="twice"))
    j = account.jmap()
    [eid] = j.email_ids({"header": ["Subject", "twice"]})
    j.set_mailboxes(eid, [j.mailbox_id("INBOX"), j.mailbox_id("Work")])
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    files = message_files(mirror.maildir)
    assert len(files) == 2
    assert mirror.cli("verify").stdout.strip().endswith("2 files checked: OK")

    [work] = [p for rel, p in files.items() if rel.startswith("Work/")]
    work.unlink()
    rc, lines = findings(mirror)
    assert rc == 1
    assert lines == [f"missing    Work: Email {eid}"]


def test_missing_files_among_many_emails_are_each_named(account: Account, tmp_path: Path) -> None:
    with account.imap() as i:
        for folder in ("A", "B"):
            i.create_folder(folder)
        for n in range(30):
            i.append(("INBOX", "A", "B")[n % 3], make_message(n))
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    files = sorted(message_files(mirror.maildir).items())
    assert len(files) == 30
    gone = [files[k] for k in (0, 7, 13, 29)]  # first, last and between, over the folders
    for _, path in gone:
        path.unlink()
    rc, lines = findings(mirror)
    assert rc == 1
    want = sorted(
        f"missing    {rel.split('/')[0]}: Email {path.name.split('.')[0]}" for rel, path in gone
    )
    assert sorted(lines) == want


def test_download_finds_a_state_the_server_does_not_match(account: Account, tmp_path: Path) -> None:
    with account.imap() as i:
        for n in range(3):
            i.append("INBOX", make_message(n))
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    assert mirror.cli("verify", "--download").returncode == 0
    conn = sqlite3.connect(mirror.state_dir / f"{mirror.name}.sqlite3")
    with conn:
        [eid] = conn.execute("SELECT email_id FROM contents ORDER BY email_id LIMIT 1").fetchone()
        conn.execute("UPDATE contents SET sha256 = ? WHERE email_id = ?", ("0" * 64, eid))
    conn.close()
    done = mirror.cli("verify", "--download", check=False)
    assert done.returncode == 1
    lines = sorted(line.strip() for line in done.stdout.splitlines() if line.startswith("  "))
    [file] = [p for p in message_files(mirror.maildir).values() if p.name.startswith(eid)]
    folder = os.path.relpath(file, mirror.maildir)
    assert lines == [
        f"altered    {folder} (differs from the server's message)",
        f"server     Email {eid}: the server's blob differs from the state",
    ]
