"""SIGKILL a real `jmapsync sync` at several points, rerun, and the mirror is exact:
nothing missing, nothing duplicated, no stray files outside tmp/."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, assert_files_table, message_files

N = 300
FOLDERS = ["INBOX", "Archive", "Work", "Work/Deep", "Lists/python"]


@pytest.fixture
def loaded(account: Account) -> Account:
    rng = random.Random(7)
    with account.imap() as i:
        for folder in FOLDERS:
            if folder not in ("INBOX", "Archive"):
                i.create_folder(folder, exist_ok=True)
        for n in range(N):
            kws = [k for k in ("$seen", "$flagged", "$answered") if rng.random() < 0.4]
            raw = make_message(n, size=rng.choice([3000, 20000, 90000]))
            i.append(rng.choice(FOLDERS), raw, keywords=kws)
    # a few Emails in two mailboxes
    j = account.jmap()
    arch = j.mailbox_id("Archive")
    for eid in j.emails_in("INBOX")[:10]:
        j.set_mailboxes(eid, [j.mailbox_id("INBOX"), arch])
    return account


def kill_when(mirror: Mirror, files_at_least: int, timeout: float = 60) -> tuple[int, int]:
    """Start `jmapsync sync`, SIGKILL it once the Maildir holds that many files.

    Returns (files seen when killed, exit status)."""
    proc = mirror.popen("sync")
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        seen = len(message_files(mirror.maildir)) if mirror.maildir.exists() else 0
        if seen >= files_at_least:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    rc = proc.wait(timeout=timeout)
    assert proc.stderr is not None
    proc.stderr.close()
    return seen, rc


@pytest.mark.slow
def test_first_sync_killed_at_several_points_resumes_exactly(
    loaded: Account, tmp_path: Path
) -> None:
    mirror = Mirror(loaded, tmp_path)
    killed = []
    for point in (0, 1, 40, 150, 280):
        seen, rc = kill_when(mirror, point)
        killed.append((point, seen, rc))
    # At least some kills must have landed mid-sync, or the test proves nothing.
    assert sum(1 for _, _, rc in killed if rc == -signal.SIGKILL) >= 3, killed
    report = mirror.sync()
    stats = assert_exact_mirror(mirror)
    assert stats["emails"] == N
    assert_files_table(mirror)
    # The killed runs' files were reused: the final pass downloaded only the rest.
    assert report.downloaded <= N - max(seen for _, seen, rc in killed if rc != 0) + 10


@pytest.mark.slow
def test_incremental_sync_killed_midway_resumes_exactly(loaded: Account, tmp_path: Path) -> None:
    mirror = Mirror(loaded, tmp_path)
    mirror.sync()
    j = loaded.jmap()
    inbox, work = j.mailbox_id("INBOX"), j.mailbox_id("Work")
    ids = j.emails_in("Archive")
    for eid in ids[:20]:
        j.add_keyword(eid, "$flagged")
    for eid in j.emails_in("INBOX")[10:30]:
        j.move(eid, inbox, work)
    j.destroy(*ids[20:30])
    # Downloads become visible in batches of 64 (execute.Commits): with 200 new
    # messages the kill lands after the first batch, mid-pass -- with fewer
    # than one batch the files appeared only as the pass ended, and the kill
    # often came after its commit (the next pass then had nothing to do).
    for n in range(N, N + 200):
        j.import_message(make_message(n, size=20000), [inbox])
    base = len(message_files(mirror.maildir))
    _, rc = kill_when(mirror, base + 5)
    assert rc == -signal.SIGKILL, "the pass ended before the kill: nothing was tested"
    report = mirror.sync()
    assert report.mode == "incremental"
    assert_exact_mirror(mirror)
    assert_files_table(mirror)  # rewritten whole: the killed pass left it stale
