"""A blob the server cannot deliver (404, a size it lied about) must not block
the account: the pass records everything else -- deletions included -- says
it failed (exit 1, `status`), and every later pass tries that Email again; in
two-way mode its missing file is never taken for a local delete."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
from fakeserver import FakeEmail, FakeServer, account_config, client_factory

from jmapsync.config import Config
from jmapsync.errors import DownloadsFailed
from jmapsync.state.db import StateDB
from jmapsync.sync.engine import Engine, SyncReport

MSG = b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n"


def files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "mail").rglob("*.jmapsync*"))


def test_a_poison_blob_is_retried_and_blocks_nothing(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_mailbox("inbox", "Inbox", role="inbox")
    server.add_mailbox("trash", "Trash", role="trash")
    server.emails += [
        FakeEmail("M1", MSG + b"1", ["inbox"]),
        FakeEmail("M2", MSG + b"2", ["inbox"], size=len(MSG) + 9),  # lies about its size
        FakeEmail("M3", MSG + b"3", ["inbox"]),
        FakeEmail("M4", MSG + b"4", ["inbox"]),
    ]
    missing = {"M3"}

    def lose_m3(request: httpx.Request) -> httpx.Response | None:
        if "/download/" in request.url.path and any(m in request.url.path for m in missing):
            return httpx.Response(404)
        return None

    server.override = lose_m3
    account = account_config(tmp_path, server, direction="two-way")
    config = Config(path=None, state_dir=tmp_path / "state", accounts=(account,))

    def sync() -> SyncReport:
        return asyncio.run(Engine(config, account, client_factory=client_factory(server)).sync())

    with pytest.raises(DownloadsFailed, match="2 of 4 downloads failed"):
        sync()
    assert files(tmp_path) == ["M1.jmapsync", "M4.jmapsync"]
    db = StateDB.for_account(tmp_path / "state", "fake")
    assert db.email_state is not None  # everything else is recorded
    assert "downloads failed" in str(db.summary()["last_result"])
    db.close()

    # The server deletes M1: that goes through although M2 and M3 still fail,
    # and neither of their missing files is sent as a local delete.
    server.emails = [e for e in server.emails if e.id != "M1"]
    server.state += 1
    with pytest.raises(DownloadsFailed, match="2 of 2"):
        sync()
    assert files(tmp_path) == ["M4.jmapsync"]
    assert not any("Email/set" in r for r in server.requests)
    assert {e.id: e.mailbox_ids for e in server.emails} == {
        "M2": ["inbox"],
        "M3": ["inbox"],
        "M4": ["inbox"],
    }

    # Healed on the server (a new size comes with a new state; the lost blob
    # just answers again): the next pass fetches exactly those two.
    server.emails[0].size = None
    server.state += 1
    missing.clear()
    report = sync()
    assert report.downloaded == 2
    assert files(tmp_path) == ["M2.jmapsync", "M3.jmapsync", "M4.jmapsync"]
    assert os.listdir(tmp_path / "mail/INBOX/tmp") == []
    # and nothing is left to retry: the next pass with nothing new is the fast path
    assert sync().mode == "unchanged"
