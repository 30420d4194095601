"""`jmapsync sync --dry-run` against the real Cyrus: it changes nothing -- no
file (not even the Maildir root), no state (the database byte-identical, or
not created), no server write (the server's states unchanged, and no
Mailbox/set, Email/set, upload or Email/import leaves the client) -- and what
it lists is what the real pass then does, count for count.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, assert_files_table, message_files, snapshot

from jmapsync.config import load
from jmapsync.errors import DeletionRefused
from jmapsync.jmap.client import JmapClient
from jmapsync.sync.engine import Engine, SyncReport

COUNTS = (
    "downloaded",
    "bytes",
    "renamed",
    "linked",
    "removed",
    "folders_created",
    "folders_moved",
    "folders_removed",
    "pushed",
    "destroyed",
    "imported",
    "adopted",
    "superseded",
    "mailboxes_created",
    "mailboxes_destroyed",
    "rewritten",
)
WRITES = {"Mailbox/set", "Email/set", "Email/import"}
# The kind of listed action behind each count (a download's links are links).
ACTION_OF = {
    "downloaded": ("download",),
    "renamed": ("rename",),
    "linked": ("link",),
    "removed": ("remove",),
    "folders_created": ("create folder",),
    "folders_moved": ("move folder",),
    "folders_removed": ("remove folder",),
    "destroyed": ("Email/set destroy",),
    "imported": ("Email/import",),
    "mailboxes_created": ("Mailbox/set create",),
    "mailboxes_destroyed": ("Mailbox/set destroy",),
    "rewritten": ("rewrite",),
    "adopted": ("take over copy",),
    "superseded": ("remove copy",),
}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every JMAP method name and upload the client sends, in this process."""
    names: list[str] = []
    call, upload = JmapClient.call, JmapClient.upload

    async def spy_call(self: JmapClient, calls: Sequence[Any], *args: Any) -> Any:
        names.extend(str(c[0]) for c in calls)
        return await call(self, calls, *args)

    async def spy_upload(self: JmapClient, data: bytes, *args: Any) -> str:
        names.append("upload")
        return await upload(self, data, *args)

    monkeypatch.setattr(JmapClient, "call", spy_call)
    monkeypatch.setattr(JmapClient, "upload", spy_upload)
    yield names


def dry_sync(mirror: Mirror, *, force_deletes: bool = False) -> SyncReport:
    config = load(mirror.config_path)
    engine = Engine(config, config.account(mirror.name), force_deletes=force_deletes, dry_run=True)
    return asyncio.run(engine.sync())


def server_view(account: Account) -> tuple[str, str, dict[str, Any]]:
    j = account.jmap()
    ids = j.email_ids()
    emails = j.get_emails(ids, ["mailboxIds", "keywords"]) if ids else []
    boxes = j.mailboxes(["name", "parentId", "role"])
    return (
        j.state("Email"),
        j.state("Mailbox"),
        {
            "emails": sorted(json.dumps(e, sort_keys=True) for e in emails),
            "mailboxes": sorted(json.dumps(b, sort_keys=True) for b in boxes),
        },
    )


def state_files(state_dir: Path) -> dict[str, str] | None:
    """name -> SHA-256 of every file in the state directory (None: no directory)."""
    if not state_dir.exists():
        return None
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in state_dir.iterdir()}


def root_view(mirror: Mirror) -> tuple[Any, ...] | None:
    if not mirror.maildir.exists():
        return None
    st = mirror.maildir.stat()
    return (st.st_ino, st.st_mtime_ns, snapshot(mirror.maildir))


def dry_then_real(
    mirror: Mirror, sent: list[str], *, force_deletes: bool = False
) -> tuple[SyncReport, SyncReport]:
    """A dry run that changes nothing, then the real pass: the same counts."""
    before = (root_view(mirror), state_files(mirror.state_dir), server_view(mirror.account))
    sent.clear()
    dry = dry_sync(mirror, force_deletes=force_deletes)
    assert not WRITES & set(sent) and "upload" not in sent, sent
    after = (root_view(mirror), state_files(mirror.state_dir), server_view(mirror.account))
    assert after[0] == before[0], "the Maildir changed"
    assert after[1] == before[1], "the state directory changed"
    assert after[2] == before[2], "the server changed"
    assert dry.dry_run
    for count, actions in ACTION_OF.items():
        listed = sum(1 for w in dry.would if w["action"] in actions)
        assert listed == getattr(dry, count), (count, dry.would)
    real = mirror.sync(force_deletes=force_deletes)
    assert {k: getattr(dry, k) for k in COUNTS} == {k: getattr(real, k) for k in COUNTS}
    return dry, real


def path_of(mirror: Mirror, eid: str) -> Path:
    [p] = [p for p in message_files(mirror.maildir).values() if p.name.startswith(eid + ".")]
    return p


def seed(account: Account, n: int = 4) -> list[str]:
    j = account.jmap()
    inbox = j.mailbox_id("INBOX")
    return [
        j.import_message(make_message(i), [inbox], keywords={"$seen": True})
        for i in range(1, n + 1)
    ]


def test_first_sync_dry_run_creates_nothing_at_all(
    account: Account, tmp_path: Path, sent: list[str]
) -> None:
    seed(account)
    account.create_folder("Work/Projects")
    mirror = Mirror(account, tmp_path, direction="two-way")
    dry, real = dry_then_real(mirror, sent)
    assert dry.downloaded == 4 and dry.folders_created == 8
    assert real.mode == "full"
    assert_exact_mirror(mirror)


def test_two_way_pass_with_every_kind_of_change(
    account: Account, tmp_path: Path, sent: list[str]
) -> None:
    ids = seed(account, 8)
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    j = account.jmap()
    md = mirror.maildir
    # local: a flag, a move, a delete, a new message, a copy, mutt's move, a new folder
    p = path_of(mirror, ids[0])
    os.rename(p, p.with_name(p.name.replace(":2,S", ":2,FS")))
    p = path_of(mirror, ids[1])
    os.rename(p, md / "Archive" / "cur" / p.name)
    path_of(mirror, ids[2]).unlink()
    (md / "INBOX" / "new" / "1732560000.M1P1.host").write_bytes(make_message(50))
    shutil.copy(path_of(mirror, ids[3]), md / "Junk" / "cur" / "1732560000.M2P2.host:2,S")
    p = path_of(mirror, ids[4])
    raw = p.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    (md / "Archive" / "new" / "1732560000.M3P3.host:2,S").write_bytes(
        head + f"\nContent-Length: {len(body)}".encode() + b"\n\n" + body
    )
    p.unlink()
    for sub in ("cur", "new", "tmp"):
        (md / "Projects" / sub).mkdir(parents=True)
    (md / "Projects" / "cur" / "1732560000.M4P4.host:2,S").write_bytes(make_message(51))
    # remote: a new message, a flag, a move, a renamed mailbox
    j.import_message(make_message(60), [j.mailbox_id("INBOX")])
    j.add_keyword(ids[5], "$answered")
    j.move(ids[6], j.mailbox_id("INBOX"), j.mailbox_id("Drafts"))
    j.rename_mailbox(j.mailbox_id("Sent"), "Sent Items")

    dry, _ = dry_then_real(mirror, sent)
    assert (dry.pushed, dry.imported, dry.adopted, dry.superseded) == (5, 2, 1, 1)
    assert (dry.mailboxes_created, dry.folders_moved) == (1, 1)
    assert dry.downloaded >= 2 and dry.renamed >= 2
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    # and with nothing left to do, both say so
    dry, _ = dry_then_real(mirror, sent)
    assert not any(getattr(dry, k) for k in COUNTS)


def test_pull_pass_with_a_selection_change_and_a_line_endings_switch(
    account: Account, tmp_path: Path, sent: list[str]
) -> None:
    ids = seed(account, 3)
    j = account.jmap()
    for i in range(2):
        j.import_message(make_message(20 + i), [j.mailbox_id("Junk")])
    mirror = Mirror(account, tmp_path, direction="pull")
    mirror.sync()
    mirror.set("folders", "* !role:junk")
    mirror.set("line_endings", "exact")
    j.remove_keyword(ids[0], "$seen")
    dry, _ = dry_then_real(mirror, sent)
    assert (dry.removed, dry.folders_removed, dry.rewritten) == (2, 1, 3)
    assert not (mirror.maildir / "Junk").exists()


def test_unchanged_fast_path_and_a_refused_pass_agree(
    account: Account, tmp_path: Path, sent: list[str]
) -> None:
    ids = seed(account, 12)
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    mirror.sync()
    dry, real = dry_then_real(mirror, sent)
    assert dry.mode == real.mode == "unchanged"
    for eid in ids:  # the whole INBOX deleted at once: the guard refuses
        path_of(mirror, eid).unlink()
    before = server_view(account)
    with pytest.raises(DeletionRefused) as dry_refusal:
        dry_sync(mirror)
    with pytest.raises(DeletionRefused) as real_refusal:
        mirror.sync()
    assert str(dry_refusal.value) == str(real_refusal.value)
    assert server_view(account) == before
    dry, real = dry_then_real(mirror, sent, force_deletes=True)
    assert dry.pushed == 12


def test_command_line_dry_run_prints_each_account_and_creates_nothing(
    account: Account, tmp_path: Path
) -> None:
    seed(account, 2)
    mirror = Mirror(account, tmp_path, direction="two-way")
    done = mirror.cli("sync", "--dry-run")
    assert not mirror.maildir.exists() and not mirror.state_dir.exists()
    assert "account test: dry run, nothing was changed" in done.stdout
    assert "to the server: nothing" in done.stdout
    assert done.stdout.count("    download ") == 2
    assert "2 download(s)" in done.stdout
    out = json.loads(mirror.cli("sync", "--dry-run", "--json").stdout)
    assert out["test"]["downloaded"] == 2 and out["test"]["dry_run"] is True
    assert [w["action"] for w in out["test"]["would"]].count("download") == 2
    assert not mirror.maildir.exists() and not mirror.state_dir.exists()
