"""`folders =` against the real Cyrus: what is mirrored, what is never sent,
and that changing the patterns goes through the deletion guards.

Fastmail's Notes (IMAP special-use \\XNotes -> JMAP role "xnotes") and
Snoozed (\\Snoozed -> "snoozed") are made here with those special uses: Cyrus
derives a mailbox's JMAP role from its first special-use flag, lower-cased
without the backslash (cyrusimap/cyrus-imapd imap/jmap_mailbox.c,
_mbox_get_role).  Cyrus 3.6 accepts \\Snoozed as it is and \\XNotes only when
imapd.conf lists it in specialuse_extra (tools/cyrus.py does); JMAP
Mailbox/set takes role "snoozed" but answers role "xnotes" with
invalidProperties.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, assert_files_table, message_files
from structlog.testing import capture_logs

from jmapsync.errors import DeletionRefused

NOT_SYNCED = "* !role:junk !role:xnotes !role:snoozed"
HIDDEN = frozenset({"Junk", "Notes", "Snoozed"})


def fastmail_like(account: Account) -> None:
    """Notes and Snoozed with the special uses Fastmail's Cyrus gives them."""
    account.create_folder("Notes", special_use="\\XNotes")
    account.create_folder("Snoozed", special_use="\\Snoozed")
    roles = {m["name"]: m["role"] for m in account.jmap().mailboxes(["name", "role"])}
    assert (roles["Notes"], roles["Snoozed"]) == ("xnotes", "snoozed")


def put(account: Account, folder: str, n: int, start: int, seen: bool = True) -> list[str]:
    j = account.jmap()
    box = j.mailbox_id(folder)
    kw = {"$seen": True} if seen else {}
    return [j.import_message(make_message(i), [box], keywords=kw) for i in range(start, start + n)]


def files_in(mirror: Mirror, folder: str) -> list[Path]:
    return [p for p in message_files(mirror.maildir).values() if p.parent.parent.name == folder]


def server(account: Account) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Every Email's mailboxes and keywords (to show nothing was written)."""
    j = account.jmap()
    ids = j.email_ids()
    return {
        e["id"]: (frozenset(e["mailboxIds"]), frozenset(e["keywords"]))
        for e in (j.get_emails(ids, ["mailboxIds", "keywords"]) if ids else [])
    }


def path_of(mirror: Mirror, eid: str, folder: str) -> Path:
    [p] = [p for p in files_in(mirror, folder) if p.name.startswith(eid + ".")]
    return p


@pytest.fixture
def synced(account: Account, tmp_path: Path) -> tuple[Mirror, dict[str, list[str]]]:
    """A two-way mirror of INBOX (3), Archive (2), Junk, Notes, Snoozed (2 each)
    with Junk, Notes and Snoozed not synced."""
    fastmail_like(account)
    ids = {
        "INBOX": put(account, "INBOX", 3, 1),
        "Archive": put(account, "Archive", 2, 10),
        "Junk": put(account, "Junk", 2, 20),
        "Notes": put(account, "Notes", 2, 30),
        "Snoozed": put(account, "Snoozed", 2, 40),
    }
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.set("folders", NOT_SYNCED)
    report = mirror.sync()
    assert report.downloaded == 5
    return mirror, ids


def test_excluded_mailboxes_are_neither_downloaded_nor_created(
    synced: tuple[Mirror, dict[str, list[str]]],
) -> None:
    mirror, _ = synced
    assert_exact_mirror(mirror, excluded=HIDDEN)
    assert not any((mirror.maildir / f).exists() for f in HIDDEN)
    assert_files_table(mirror)
    mirror.cli("verify", "--download")  # nothing missing where nothing is wanted
    time.sleep(0.2)  # let the folder times settle
    mirror.sync()
    again = mirror.sync()
    assert again.mode == "unchanged"  # the fast path holds with a selection


def test_only_listed_folders_in_pull_mode(account: Account, tmp_path: Path) -> None:
    fastmail_like(account)
    put(account, "INBOX", 2, 1)
    put(account, "Archive", 2, 10)
    put(account, "Notes", 1, 30)
    account.create_folder("Archive/2024")
    put(account, "Archive/2024", 1, 40)
    mirror = Mirror(account, tmp_path, direction="pull")
    mirror.set("folders", "INBOX role:archive/*")
    report = mirror.sync()
    assert report.downloaded == 3
    assert_exact_mirror(
        mirror, excluded=frozenset({"Archive", "Notes", "Sent", "Drafts", "Trash", "Junk"})
    )
    assert not (mirror.maildir / "Archive" / "cur").exists()  # only its child is synced
    assert (mirror.maildir / "Archive" / "2024" / "cur").is_dir()


def test_an_email_in_an_included_and_an_excluded_mailbox(
    synced: tuple[Mirror, dict[str, list[str]]],
) -> None:
    mirror, ids = synced
    account = mirror.account
    j = account.jmap()
    eid = ids["INBOX"][0]
    notes = j.mailbox_id("Notes")
    j.set_mailboxes(eid, [j.mailbox_id("INBOX"), notes])  # like an IMAP COPY to Notes
    mirror.sync()
    assert_exact_mirror(mirror, excluded=HIDDEN)
    # A local flag change goes out; the Notes membership stays as it is.
    p = path_of(mirror, eid, "INBOX")
    os.rename(p, p.with_name(p.name.replace(":2,S", ":2,FS")))
    report = mirror.sync()
    assert report.pushed == 1
    e = j.get_email(eid, ["mailboxIds", "keywords"])
    assert set(e["mailboxIds"]) == {j.mailbox_id("INBOX"), notes} and "$flagged" in e["keywords"]
    # A local delete leaves INBOX only: it is still in Notes, so no Trash.
    path_of(mirror, eid, "INBOX").unlink()
    report = mirror.sync()
    assert report.pushed == 1 and report.destroyed == 0
    assert set(j.get_email(eid, ["mailboxIds"])["mailboxIds"]) == {notes}
    assert_exact_mirror(mirror, excluded=HIDDEN)


def test_a_move_into_an_excluded_folder_is_refused_and_undone(
    synced: tuple[Mirror, dict[str, list[str]]],
) -> None:
    mirror, ids = synced
    account = mirror.account
    before = server(account)
    notes = mirror.maildir / "Notes"
    for sub in ("cur", "new", "tmp"):
        (notes / sub).mkdir(parents=True)
    moved = path_of(mirror, ids["INBOX"][0], "INBOX")
    os.rename(moved, notes / "cur" / moved.name)
    # and one the way a shell copy + rm does it: same bytes, another name
    copied = path_of(mirror, ids["INBOX"][1], "INBOX")
    shutil.copy(copied, notes / "cur" / "1732560000.M1P1.host:2,S")
    copied.unlink()
    with capture_logs() as logs:
        report = mirror.sync()
    refused = [e for e in logs if e["event"] == "move-refused"]
    assert refused and refused[0]["folder"] == "Notes" and refused[0]["count"] == 2
    assert report.pushed == report.imported == report.destroyed == 0
    assert server(account) == before  # nothing was sent
    assert len(files_in(mirror, "INBOX")) == 3  # both are back where the server has them
    assert not files_in(mirror, "Notes")  # nothing lost: they were moved back, not copied
    assert_exact_mirror(mirror, excluded=HIDDEN)


def test_a_move_out_of_an_excluded_folder_is_refused(account: Account, tmp_path: Path) -> None:
    fastmail_like(account)
    put(account, "INBOX", 2, 1)
    [snoozed] = put(account, "Snoozed", 1, 40)
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()  # everything, Snoozed included
    # Snoozed is taken out of the selection, and its message moved to INBOX
    # before the next pass: a move out of a folder no longer synced.
    mirror.set("folders", "* !role:snoozed")
    src = path_of(mirror, snoozed, "Snoozed")
    os.rename(src, mirror.maildir / "INBOX" / "cur" / src.name)
    before = server(account)
    with capture_logs() as logs:
        report = mirror.sync()
    assert [e["into"] for e in logs if e["event"] == "move-refused"] == [False]
    assert report.pushed == 0 and server(account) == before  # it stays in Snoozed
    assert not (mirror.maildir / "Snoozed").exists()
    assert_exact_mirror(mirror, excluded=frozenset({"Snoozed"}))


def test_waking_snoozed_messages_fire_no_emptied_mailbox_check(
    synced: tuple[Mirror, dict[str, list[str]]],
) -> None:
    """Fastmail moves snoozed messages back to the inbox when they wake: the
    excluded Snoozed empties at once, which is no reason for a full read."""
    mirror, _ = synced
    account = mirror.account
    j = account.jmap()
    woke = put(account, "Snoozed", 11, 50)
    mirror.sync()
    for eid in woke:
        j.move(eid, j.mailbox_id("Snoozed"), j.mailbox_id("INBOX"))
    with capture_logs() as logs:
        report = mirror.sync()
    assert not [e for e in logs if e["event"] == "mailbox-emptied-remotely"]
    assert report.mode == "incremental" and report.downloaded == 11
    assert_exact_mirror(mirror, excluded=HIDDEN)


def test_a_remote_change_in_an_excluded_mailbox_is_a_cheap_partial_pass(
    synced: tuple[Mirror, dict[str, list[str]]],
) -> None:
    mirror, ids = synced
    account = mirror.account
    time.sleep(0.2)
    mirror.sync()
    put(account, "Junk", 1, 60)  # new spam
    account.jmap().add_keyword(ids["Notes"][0], "$flagged")
    report = mirror.sync()
    assert report.partial and report.downloaded == report.renamed == 0
    assert not (mirror.maildir / "Junk").exists()
    # ...and a local flag change still goes out in a partial pass
    time.sleep(0.2)
    mirror.sync()
    p = path_of(mirror, ids["Archive"][0], "Archive")
    os.rename(p, p.with_name(p.name.replace(":2,S", ":2,RS")))
    report = mirror.sync()
    assert report.partial and report.pushed == 1
    assert "$answered" in account.jmap().get_email(ids["Archive"][0], ["keywords"])["keywords"]
    assert_exact_mirror(mirror, excluded=HIDDEN)
    assert_files_table(mirror)


@pytest.mark.parametrize("direction", ["pull", "two-way"])
def test_changing_the_patterns_adds_and_removes_folders_behind_the_guards(
    account: Account, tmp_path: Path, direction: str
) -> None:
    put(account, "INBOX", 2, 1)
    put(account, "Archive", 12, 10)
    put(account, "Sent", 2, 30)
    mirror = Mirror(account, tmp_path, direction=direction)
    mirror.sync()
    before = server(account)
    state = account.jmap().state("Email")

    # Dropping Archive (12 messages) would empty a big folder: refused.
    mirror.set("folders", "* !Archive")
    with pytest.raises(DeletionRefused, match="no longer selected"):
        mirror.sync()
    assert len(files_in(mirror, "Archive")) == 12  # nothing was removed
    # Forced: the local copies go, the server keeps every message.
    with capture_logs() as logs:
        report = mirror.sync(force_deletes=True)
    assert [(e["folder"], e["files"]) for e in logs if e["event"] == "folder-deselected"] == [
        ("Archive", 12)
    ]
    assert report.removed == 12 and report.folders_removed == 1 and report.pushed == 0
    assert not (mirror.maildir / "Archive").exists()
    assert server(account) == before and account.jmap().state("Email") == state
    assert_exact_mirror(mirror, excluded=frozenset({"Archive"}))
    assert_files_table(mirror)

    # A small folder goes without --force-deletes (with the log line).
    mirror.set("folders", "* !Archive !role:sent")
    report = mirror.sync()
    assert report.removed == 2 and not (mirror.maildir / "Sent").exists()
    assert server(account) == before

    # Back in: downloaded again, nothing counted as deleted, nothing sent.
    mirror.set("folders", "*")
    report = mirror.sync()
    assert report.downloaded == 14 and report.pushed == report.destroyed == 0
    assert server(account) == before and account.jmap().state("Email") == state
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    time.sleep(0.2)
    mirror.sync()
    assert mirror.sync().mode == "unchanged"


def test_a_new_local_folder_the_patterns_exclude_creates_no_mailbox(
    synced: tuple[Mirror, dict[str, list[str]]],
) -> None:
    mirror, _ = synced
    mirror.set("folders", NOT_SYNCED + " !Private*")
    for sub in ("cur", "new", "tmp"):
        (mirror.maildir / "Private" / sub).mkdir(parents=True)
    with capture_logs() as logs:
        report = mirror.sync()
    assert report.mailboxes_created == 0
    assert [e["folder"] for e in logs if e["event"] == "folder-not-created"] == ["Private"]
    assert "Private" not in {m["name"] for m in mirror.account.jmap().mailboxes(["name"])}
