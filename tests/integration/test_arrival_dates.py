"""Arrival dates on disk, against Cyrus: every file jmapsync writes has the
Email's receivedAt as mtime (mbsync's CopyArrivalDate), and a mirror written
before that rule gets it from the next pass without any download."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
import time
from pathlib import Path

import pytest
from mailtools import Account, make_message
from mirror import Mirror, message_files

from jmapsync.config import load
from jmapsync.maildir.flags import parse_name
from jmapsync.sync.engine import Engine

T0 = dt.datetime(2019, 5, 17, 8, 3, 11, tzinfo=dt.UTC)


def received(account: Account) -> dict[str, int]:
    """Email id -> receivedAt (POSIX seconds) as the server says."""
    j = account.jmap()
    out = {}
    for e in j.get_emails(j.email_ids(), ["id", "receivedAt"]):
        when = dt.datetime.fromisoformat(e["receivedAt"].replace("Z", "+00:00"))
        out[e["id"]] = int(when.timestamp())
    return out


def mtimes(mirror: Mirror) -> dict[str, tuple[str, int]]:
    """relpath -> (Email id, mtime in seconds, exactly: no fraction allowed)."""
    out = {}
    for rel, path in message_files(mirror.maildir).items():
        ns = path.stat().st_mtime_ns
        assert ns % 1_000_000_000 == 0, f"{rel}: mtime has a fraction"
        eid = parse_name(path.name).base.removesuffix(".jmapsync")
        out[rel] = (eid, ns // 1_000_000_000)
    return out


def fill(account: Account) -> None:
    account.create_folder("Work/Deep")
    j = account.jmap()
    inbox, deep = j.mailbox_id("INBOX"), j.mailbox_id("Work/Deep")
    for i in range(6):
        boxes = [inbox, deep] if i == 2 else [deep if i % 2 else inbox]
        j.import_message(make_message(i), boxes, ["$seen"], T0 + dt.timedelta(days=97 * i))
    big = make_message(9, size=5 * 1024 * 1024)  # streamed to tmp/, not held in memory
    j.import_message(big, [inbox], [], T0 - dt.timedelta(days=1000))


@pytest.mark.parametrize("line_endings", ["lf", "exact"])
def test_every_file_written_has_received_at_as_mtime(
    account: Account, tmp_path: Path, line_endings: str
) -> None:
    fill(account)
    m = Mirror(account, tmp_path, line_endings=line_endings)
    m.sync()
    want = received(account)
    got = mtimes(m)
    assert len(got) == 8  # 7 Emails, one of them in two folders
    for rel, (eid, mtime) in got.items():
        assert mtime == want[eid], rel


def test_older_mirror_gets_arrival_times_without_downloading(
    account: Account, tmp_path: Path
) -> None:
    fill(account)
    m = Mirror(account, tmp_path)
    m.sync()
    # What a mirror from before this rule looks like: mtimes of the sync,
    # no stamp in the state.
    now = time.time()
    for path in message_files(m.maildir).values():
        os.utime(path, (now, now))
    conn = sqlite3.connect(m.state_dir / "test.sqlite3")
    with conn:
        conn.execute("DELETE FROM meta WHERE key='arrival_times'")
        conn.execute("UPDATE emails SET received_at=''")
    conn.close()

    report = m.sync()
    assert report.mode == "full"
    assert report.downloaded == 0
    want = received(account)
    assert all(mtime == want[eid] for eid, mtime in mtimes(m).values())
    assert m.sync().mode != "full"  # once stamped, passes are incremental again


def test_full_reconcile_puts_back_a_touched_mtime(account: Account, tmp_path: Path) -> None:
    fill(account)
    m = Mirror(account, tmp_path)
    m.sync()
    path = next(iter(message_files(m.maildir).values()))
    os.utime(path, (time.time(), time.time()))
    config = load(m.config_path)
    report = asyncio.run(Engine(config, config.account(m.name), full=True).sync())
    assert report.downloaded == 0
    want = received(account)
    assert all(mtime == want[eid] for eid, mtime in mtimes(m).values())


def test_line_endings_rewrite_keeps_the_arrival_time(account: Account, tmp_path: Path) -> None:
    fill(account)
    m = Mirror(account, tmp_path, line_endings="lf")
    m.sync()
    m.set("line_endings", "exact")
    report = m.sync()
    assert report.rewritten == 7
    want = received(account)
    assert all(mtime == want[eid] for eid, mtime in mtimes(m).values())


def test_two_way_import_file_keeps_its_time_as_received_at(
    account: Account, tmp_path: Path
) -> None:
    """A draft a mail program wrote: imported with its mtime as receivedAt; the
    file that replaces it under our name has exactly the server's receivedAt."""
    m = Mirror(account, tmp_path, direction="two-way")
    m.sync()
    when = T0.timestamp() + 0.25  # a fraction: the server keeps whole seconds
    path = m.maildir / "INBOX" / "cur" / "1700000000.draft.host:2,DS"
    path.write_bytes(make_message(77).replace(b"\r\n", b"\n"))
    os.utime(path, (when, when))
    assert m.sync().imported == 1
    want = received(account)
    [(eid, mtime)] = mtimes(m).values()
    assert want[eid] == int(T0.timestamp())
    assert mtime == want[eid]
