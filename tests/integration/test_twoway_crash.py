"""Crash safety of a two-way pass, isync style: fail at step N, for every N.

One pass with every kind of local change (flag, move by rename, mutt's move,
delete, two new messages, a new folder) is interrupted at its Nth side
effect -- before it, or right after it with the answer lost -- for N = 1, 2,
... until a pass runs through.  After each interruption a clean pass must
reach exactly the state an uninterrupted pass reaches: no message imported
twice, no change lost, no local file lost, an exact mirror.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, assert_files_table, message_files

from jmapsync.jmap.client import JmapClient
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import StateDB


class Crash(BaseException):
    """Stands for SIGKILL: nothing of ours catches a BaseException."""


class Injector:
    def __init__(self, at: int) -> None:
        self.at = at
        self.step = 0
        self.fired = False

    def tick(self, what: str) -> None:
        self.step += 1
        if self.step == self.at:
            self.fired = True
            raise Crash(f"step {self.at}: {what}")

    def wrap_async(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        async def wrapped(*args: Any, **kw: Any) -> Any:
            self.tick(f"before {name}")
            result = await fn(*args, **kw)
            self.tick(f"after {name}")  # the side effect happened, its answer is lost
            return result

        return wrapped

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapped(*args: Any, **kw: Any) -> Any:
            self.tick(f"before {name}")
            result = fn(*args, **kw)
            self.tick(f"after {name}")
            return result

        return wrapped


def scenario(account: Account, tmp_path: Path) -> tuple[Mirror, list[str]]:
    j = account.jmap()
    inbox = j.mailbox_id("INBOX")
    ids = [
        j.import_message(make_message(i), [inbox], keywords={"$seen": True}) for i in range(1, 5)
    ]
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    files = {p.name.split(".")[0]: p for p in message_files(mirror.maildir).values()}
    md = mirror.maildir
    p = files[ids[0]]
    os.rename(p, p.with_name(p.name.replace(":2,S", ":2,FS")))  # flag
    p = files[ids[1]]
    os.rename(p, md / "Archive" / "cur" / p.name)  # move by rename
    p = files[ids[2]]  # mutt's move: a copy with a header added, then unlink
    head, _, body = p.read_bytes().partition(b"\n\n")
    (md / "Archive" / "new" / "1732560000.1_1.host:2,S").write_bytes(
        head + b"\nContent-Length: 99\n\n" + body
    )
    p.unlink()
    files[ids[3]].unlink()  # delete
    (md / "INBOX" / "new" / "1732560001.2_1.host").write_bytes(
        make_message(20).replace(b"\r\n", b"\n")
    )
    for sub in ("cur", "new", "tmp"):
        (md / "Projects" / sub).mkdir(parents=True)
    (md / "Projects" / "cur" / "1732560002.3_1.host:2,S").write_bytes(
        make_message(21).replace(b"\r\n", b"\n")
    )
    return mirror, ids


def assert_outcome(account: Account, mirror: Mirror, ids: list[str]) -> None:
    j = account.jmap()
    names = {m["id"]: path for path, m in j.mailbox_paths().items()}
    emails = j.get_emails(j.email_ids(), ["id", "mailboxIds", "keywords", "messageId"])
    by_mid: dict[str, list[dict[str, Any]]] = {}
    for e in emails:
        by_mid.setdefault(e["messageId"][0], []).append(e)
    assert all(len(v) == 1 for v in by_mid.values()), "an Email was imported twice"
    where = {
        mid.split(".")[0]: ({names[m] for m in v[0]["mailboxIds"]}, set(v[0]["keywords"]))
        for mid, v in by_mid.items()
    }
    assert where["1"] == ({"Inbox"}, {"$seen", "$flagged"})
    assert where["2"][0] == {"Archive"}
    assert where["3"][0] == {"Archive"}
    assert where["4"][0] == {"Trash"}
    assert where["20"][0] == {"Inbox"}
    assert where["21"] == ({"Projects"}, {"$seen"})
    assert len(emails) == 6
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    assert journal_rows(mirror) == 0  # every intent done and recorded


def run_with_crash(mirror: Mirror, at: int, monkeypatch: pytest.MonkeyPatch) -> int | None:
    """One pass crashed at step `at`: the journal rows it left; None if the
    pass had fewer steps."""
    inj = Injector(at)
    with monkeypatch.context() as m:
        for name in ("call", "upload"):
            m.setattr(JmapClient, name, inj.wrap_async(getattr(JmapClient, name), name))
        for name in ("rename", "deliver", "remove", "link"):
            m.setattr(MaildirStore, name, inj.wrap(getattr(MaildirStore, name), name))
        for name in ("journal_add", "journal_update"):
            m.setattr(StateDB, name, inj.wrap(getattr(StateDB, name), name))
        try:
            mirror.sync()
        except Crash:
            return journal_rows(mirror)
    assert not inj.fired
    return None


def test_interrupted_at_every_step_then_resumed(
    account_factory: Callable[[], Account], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = 0
    left: list[int] = []  # journal rows each interrupted pass left behind
    for at in range(1, 200):
        account = account_factory()
        mirror, ids = scenario(account, tmp_path / f"run{at}")
        rows = run_with_crash(mirror, at, monkeypatch)
        mirror.sync()  # the clean pass after the "restart"
        assert_outcome(account, mirror, ids)
        if rows is None:
            steps = at - 1
            break
        left.append(rows)
    assert steps > 20, f"only {steps} side effects: the injection misses the pass"
    assert max(left) >= 3  # intents were journaled before their writes


def journal_rows(mirror: Mirror) -> int:
    import sqlite3

    db = mirror.state_dir / f"{mirror.name}.sqlite3"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM journal").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_real_process_killed_while_importing_never_imports_twice(
    account: Account, tmp_path: Path
) -> None:
    """SIGKILL a real `jmapsync sync` while it uploads, and again while it
    adopts the imported files; the next run imports each message once."""
    import signal
    import time

    n = 150
    mirror, _ = setup_two_way(account, tmp_path)
    new = mirror.maildir / "INBOX" / "new"
    for i in range(n):
        (new / f"17325600{i:02d}.{i}_1.host").write_bytes(
            make_message(100 + i).replace(b"\r\n", b"\n")
        )

    def foreign() -> int:
        return sum(1 for p in new.iterdir() if ".jmapsync" not in p.name)

    for kill_when in (lambda: journal_rows(mirror) >= 20, lambda: foreign() <= n - 60):
        proc = mirror.popen("sync")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the pass ended before the kill"
        assert proc.stderr is not None
        proc.stderr.close()
    assert 0 < foreign() < n  # killed half-way
    mirror.cli("sync")
    j = account.jmap()
    mids = [e["messageId"][0] for e in j.get_emails(j.email_ids(), ["messageId"])]
    assert len(mids) == len(set(mids)) == n + 1  # each once, nothing lost
    assert_exact_mirror(mirror)
    assert_files_table(mirror)


def setup_two_way(account: Account, tmp_path: Path) -> tuple[Mirror, str]:
    j = account.jmap()
    eid = j.import_message(make_message(1), [j.mailbox_id("INBOX")], keywords={"$seen": True})
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    return mirror, eid
