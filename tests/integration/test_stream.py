"""Streamed passes (sync/stream.py) against the real Cyrus: which passes
stream, and that a streamed pass -- chunks of 3 Emails here (tests/conftest.py),
so that every Email, its links and its files straddle chunk boundaries --
leaves exactly the mirror and the state a pass of the whole would.

Every other pull test streams its passes that look at everything, too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, assert_files_table, message_files

from jmapsync.config import load
from jmapsync.state.db import StateDB
from jmapsync.sync import stream
from jmapsync.sync.engine import Engine


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The modes of the passes that went through stream.run."""
    seen: list[str] = []
    run = stream.run

    async def spy(ctx: Any, *args: Any, **kw: Any) -> None:
        await run(ctx, *args, **kw)
        seen.append(ctx.report.mode)

    monkeypatch.setattr(stream, "run", spy)
    return seen


def fill(account: Account) -> None:
    account.create_folder("Work")
    account.create_folder("Lists")
    for i in range(1, 8):
        account.append("INBOX", make_message(i), keywords=["$seen"] if i % 2 else [])
    for i in range(8, 12):
        account.append("Work", make_message(i), keywords=["$flagged", "project-x"])
    account.append("Lists", make_message(12))
    j = account.jmap()
    both = j.emails_in("INBOX")[0]
    j.set_mailboxes(both, [j.mailbox_id("INBOX"), j.mailbox_id("Lists")])  # one file, one link


def full(mirror: Mirror) -> Any:
    config = load(mirror.config_path)
    return asyncio.run(Engine(config, config.account(mirror.name), full=True).sync())


def test_a_first_sync_streams(account: Account, tmp_path: Path, streamed: list[str]) -> None:
    fill(account)
    mirror = Mirror(account, tmp_path)
    report = mirror.sync()
    assert streamed == ["full"]
    assert report.downloaded == 12 and report.linked == 1
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    assert mirror.sync().mode == "unchanged"


def test_a_full_reconcile_of_a_mirror_streams_and_converges(
    account: Account, tmp_path: Path, streamed: list[str]
) -> None:
    fill(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    j = account.jmap()
    work, inbox = j.emails_in("Work"), j.emails_in("INBOX")
    j.move(work[0], j.mailbox_id("Work"), j.mailbox_id("INBOX"))  # a rename
    j.set_keywords(work[1], ["$seen"])  # flags
    j.destroy(inbox[-1])  # a remove
    account.append("Lists", make_message(20))  # a download
    (mirror.maildir / "Work" / "cur" / "1700000000.M1.mutt:2,S").write_bytes(make_message(30))
    report = full(mirror)
    assert streamed[-1] == "full"
    assert (report.renamed, report.removed, report.downloaded) == (2, 1, 1)
    assert report.foreign == 1  # a mail program's file: left alone
    assert "Work/cur/1700000000.M1.mutt:2,S" in message_files(mirror.maildir)
    (mirror.maildir / "Work" / "cur" / "1700000000.M1.mutt:2,S").unlink()
    assert_exact_mirror(mirror)
    assert_files_table(mirror)


def test_a_two_way_first_sync_streams_only_into_an_empty_maildir(
    account: Account, account_factory: Any, tmp_path: Path, streamed: list[str]
) -> None:
    fill(account)
    mirror = Mirror(account, tmp_path / "a", direction="two-way")
    mirror.sync()
    assert streamed == ["full"]
    assert_exact_mirror(mirror)
    # and two-way from then on: a local flag change goes to the server
    path = next(p for rel, p in message_files(mirror.maildir).items() if rel.startswith("Work/"))
    path.rename(path.with_name(path.name.split(":2,")[0] + ":2,FS"))
    assert mirror.sync().pushed == 1
    assert_exact_mirror(mirror)

    other = account_factory()
    other.append("INBOX", make_message(1))
    local = Mirror(other, tmp_path / "b", direction="two-way")
    (local.maildir / "Mine" / "cur").mkdir(parents=True)  # a folder of the user's: a mailbox
    (local.maildir / "Mine" / "new").mkdir()
    (local.maildir / "Mine" / "tmp").mkdir()
    streamed.clear()
    local.sync()
    assert streamed == []  # the three-way merge has something to decide
    assert "Mine" in {m["name"] for m in other.jmap().mailboxes()}


def test_remote_changes_that_empty_a_mailbox_read_everything_first(
    account: Account, tmp_path: Path, streamed: list[str]
) -> None:
    """A streamed pass with remote changes keeps the emptied-mailbox check."""
    account.create_folder("Big")
    for i in range(12):
        account.append("Big", make_message(i))
    account.append("INBOX", make_message(50))
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    db = StateDB.for_account(mirror.state_dir, "test")
    with db.transaction() as conn:
        db.set_meta(conn, "local_stamp", None)  # no stamp: a pass that looks at everything
    db.close()
    j = account.jmap()
    j.destroy(*j.emails_in("Big"))
    streamed.clear()
    report = mirror.sync()
    assert streamed == ["full"]  # the changes emptied Big: the whole account was read
    assert report.removed == 12
    assert_exact_mirror(mirror)
