"""A real `jmapsync restore` process SIGKILLed at several points, then run
again until it finishes: every message ends up in the account exactly once.

Against Cyrus, and against a server that does NOT deduplicate imports
(tests/importfake.py served over HTTP): on Cyrus a second import of the same
bytes is refused anyway (alreadyExists), so only the second server can show
a duplicate if jmapsync's own dedup (listing + journal) failed.

Kill points: while the first batch uploads (its intents are journaled, no
import sent yet), right after an import answered, while a later batch
uploads, and at a random moment.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from importfake import ImportingServer, serve_http, standard_mailboxes
from mailtools import Account, make_message
from restorekit import ROOT, Setup

from jmapsync.restore.journal import journal_path

N = 300


def journal_rows(path: Path, pending: bool = False) -> int:
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.1)
        try:
            where = " WHERE email_id IS NULL" if pending else ""
            return int(conn.execute(f"SELECT count(*) FROM imports{where}").fetchone()[0])  # noqa: S608
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def kill_runs(cmd: list[str], journal: Path, count: Callable[[], int], log: Path) -> list[str]:
    """Start the restore once per kill point and SIGKILL it there; the points
    that were reached (a run may finish before its point)."""
    seed = int(os.environ.get("JMAPSYNC_TEST_SEED") or time.time_ns() % 10**6)
    rng = random.Random(seed)
    k_import = rng.randrange(1, N // 2)
    k_later = rng.randrange(N // 3, N - 20)
    delay = rng.uniform(0.3, 2.0)

    def uploading() -> bool:
        return journal_rows(journal, pending=True) > 0

    points: list[tuple[str, Callable[[float], bool]]] = [
        ("first batch uploading", lambda _t0: uploading()),
        (f"right after {k_import} imports", lambda _t0: count() >= k_import),
        (f"uploading after {k_later} imports", lambda _t0: uploading() and count() >= k_later),
        (f"{delay:.2f} s after start", lambda t0: time.monotonic() >= t0 + delay),
    ]
    reached = []
    for name, condition in points:
        with log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=ROOT)
        t0 = time.monotonic()
        try:
            while proc.poll() is None and time.monotonic() < t0 + 120:
                if condition(t0):
                    proc.send_signal(signal.SIGKILL)
                    reached.append(name)
                    break
                time.sleep(0.005)
        finally:
            if proc.poll() is None and name not in reached:
                proc.kill()
            proc.wait()
        if proc.returncode == 0:
            break  # finished before this point: nothing left to interrupt
    print(f"seed {seed}: killed {reached}")
    return reached


def test_restore_killed_then_rerun_cyrus(
    tmp_path: Path, account_factory: Callable[[], Account]
) -> None:
    a, b = account_factory(), account_factory()
    a.create_folder("Work/Deep")
    a.append_many("INBOX", [make_message(i) for i in range(200)])
    a.append_many("Work/Deep", [make_message(i, seed="deep") for i in range(100)])
    s = Setup(tmp_path)
    s.add("a", a)
    s.add("b", b)
    s.cli("sync", "--account", "a")
    j = b.jmap()

    def count() -> int:
        return int(j.call1("Email/query", {"limit": 0, "calculateTotal": True})["total"])

    cmd = s.cmd("restore", "--account", "b", "--from", str(s.maildir("a")))
    reached = kill_runs(cmd, journal_path(s.state_dir, "b"), count, tmp_path / "runs.log")
    assert len(reached) >= 2, reached
    done = s.cli("restore", "--account", "b", "--from", str(s.maildir("a")))
    assert "skipped:        0 files" in done.stdout
    assert sorted(j.email_ids()) == sorted(a.jmap().email_ids())
    assert journal_rows(journal_path(s.state_dir, "b"), pending=True) == 0


def test_restore_killed_then_rerun_server_without_dedup(tmp_path: Path) -> None:
    server = ImportingServer()
    standard_mailboxes(server)
    src = tmp_path / "src"
    for i in range(N):
        folder = "INBOX" if i % 3 else "Lists/dev"
        path = src / folder / "cur" / f"{i}.host:2,S"
        path.parent.mkdir(parents=True, exist_ok=True)
        (src / folder / "new").mkdir(exist_ok=True)
        path.write_bytes(make_message(i, date=None))
    # one message in two folders: one Email, two mailboxes
    (src / "Lists/dev/cur/dup.host:2,").write_bytes(make_message(1))
    with serve_http(server) as url:
        state = tmp_path / "state"
        config = tmp_path / "config.ini"
        config.write_text(
            f"[jmapsync]\nstate_dir = {state}\n[account fake]\nsession_url = {url}\n"
            f"username = {server.user}\npassword = {server.password}\nmaildir = {tmp_path / 'm'}\n"
        )
        cmd = [sys.executable, "-m", "jmapsync", "-c", str(config)]
        cmd += ["restore", "--account", "fake", "--from", str(src)]
        reached = kill_runs(
            cmd, journal_path(state, "fake"), lambda: len(server.emails), tmp_path / "runs.log"
        )
        assert len(reached) >= 2, reached
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert server.duplicates() == []
    assert len(server.emails) == N
    both = [e for e in server.emails if b"<1.mailtools@" in e.blob]
    assert [sorted(server.path_of(m) for m in e.mailbox_ids) for e in both] == [
        ["INBOX", "Lists/dev"]
    ]
