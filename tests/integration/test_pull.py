"""Pull sync against the real Cyrus server: the first mirror, every kind of
server-side change, and a no-change pass that touches nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mailtools import Account, make_message
from mirror import (
    Mirror,
    assert_exact_mirror,
    assert_files_table,
    folder_of_paths,
    message_files,
    snapshot,
)

from jmapsync.state.db import StateDB


def seed_basic(account: Account) -> dict[str, str]:
    """INBOX + Work/Projects + Archive with a few messages; returns name -> Email id."""
    j = account.jmap()
    with account.imap() as i:
        i.create_folder("Work/Projects")
        i.append("INBOX", make_message(1), keywords=["$seen"])
        i.append("INBOX", make_message(2))
        i.append("Work", make_message(3), keywords=["$seen", "$flagged"])
        i.append("Work/Projects", make_message(4), keywords=["$answered"])
        i.append("Archive", make_message(5), keywords=["$seen", "project-x"])
    ids = {}
    for n in range(1, 6):
        [eid] = j.email_ids({"header": ["Message-ID", f"<{n}.mailtools@mailtools.test>"]})
        ids[f"m{n}"] = eid
    return ids


def test_first_sync_mirrors_the_account_byte_for_byte(account: Account, tmp_path: Path) -> None:
    seed_basic(account)
    mirror = Mirror(account, tmp_path)
    report = mirror.sync()
    assert report.mode == "full"
    assert report.downloaded == 5
    stats = assert_exact_mirror(mirror)
    assert stats == {"emails": 5, "files": 5}
    # Every mailbox is a Maildir folder, empty ones included (Sent, Drafts, Trash...).
    for folder in folder_of_paths(account).values():
        for sub in ("cur", "new", "tmp"):
            assert (mirror.maildir / folder / sub).is_dir(), folder
    # Unseen without flags lands in new/ without info; seen in cur/.
    names = {p.parent.name + "/" + p.name for p in message_files(mirror.maildir).values()}
    assert any(n.startswith("new/") and ":2," not in n for n in names)
    assert any(n.startswith("cur/") and n.endswith(":2,FS") for n in names)


def test_awkward_mailbox_names_and_deep_nesting(account: Account, tmp_path: Path) -> None:
    j = account.jmap()
    awkward = ["a.b", "..", " leading space", "Reisen ✈ Übersicht", "R&D", ".hidden", "cur"]
    ids = {}
    for n, name in enumerate(awkward):
        mid = j.create_mailbox(name)
        ids[name] = j.import_message(make_message(100 + n), [mid])
    parent = None
    for level in range(1, 6):
        parent = j.create_mailbox(f"L{level}", parent_id=parent)
    deep_id = j.import_message(make_message(200), [parent])

    for layout, expected in [
        (
            "verbatim",
            {
                "a.b": "a.b",
                "..": "%2E.",
                " leading space": " leading space",
                "Reisen ✈ Übersicht": "Reisen ✈ Übersicht",
                "R&D": "R&D",
                ".hidden": "%2Ehidden",
                "cur": "%63ur",
            },
        ),
        (
            "maildir++",
            {
                "a.b": ".a%2Eb",
                "..": ".%2E%2E",
                " leading space": ". leading space",
                "Reisen ✈ Übersicht": ".Reisen ✈ Übersicht",
                "R&D": ".R&D",
                ".hidden": ".%2Ehidden",
                "cur": ".cur",
            },
        ),
    ]:
        mirror = Mirror(account, tmp_path / layout, layout=layout)
        mirror.sync()
        for name, folder in expected.items():
            files = list((mirror.maildir / folder / "new").iterdir())
            assert [f.name for f in files] == [f"{ids[name]}.jmapsync"], (layout, name)
        deep = "L1/L2/L3/L4/L5" if layout == "verbatim" else ".L1.L2.L3.L4.L5"
        assert [f.name for f in (mirror.maildir / deep / "new").iterdir()] == [
            f"{deep_id}.jmapsync"
        ]
        # Nothing at all outside the maildir root.
        assert sorted(p.name for p in mirror.base.iterdir()) == ["config.ini", "mail", "state"]


def test_email_in_three_mailboxes_is_hard_linked(account: Account, tmp_path: Path) -> None:
    j = account.jmap()
    boxes = [j.mailbox_id("INBOX"), j.mailbox_id("Archive"), j.create_mailbox("Three")]
    eid = j.import_message(make_message(7), boxes, keywords={"$seen": True})
    mirror = Mirror(account, tmp_path)
    report = mirror.sync()
    assert report.downloaded == 1 and report.linked == 2
    paths = [
        mirror.maildir / f / "cur" / f"{eid}.jmapsync:2,S" for f in ("INBOX", "Archive", "Three")
    ]
    inodes = {p.stat().st_ino for p in paths}
    assert len(inodes) == 1 and paths[0].stat().st_nlink == 3
    assert_exact_mirror(mirror)


def test_large_and_odd_messages_are_byte_exact(account: Account, tmp_path: Path) -> None:
    """With line_endings = exact: a 5 MB message, a lone CR, CR CR LF, no final
    newline, headers only -- every file byte-identical to the server's blob."""
    big = make_message(300, size=5 * 1024 * 1024)
    odd = [
        b"From: a@example.test\r\nSubject: lone cr\r\n\r\nline one\rstill one\r\n",
        b"From: a@example.test\r\nSubject: crcrlf\r\n\r\nx\r\r\ny\r\n",
        b"From: a@example.test\r\nSubject: no final newline\r\n\r\nlast line",
        b"From: a@example.test\r\nSubject: headers only\r\n",
    ]
    with account.imap() as i:
        i.append("INBOX", big, keywords=["$seen"])
        for raw in odd:
            i.append("INBOX", raw)
    mirror = Mirror(account, tmp_path, line_endings="exact")
    mirror.sync()
    assert_exact_mirror(mirror)
    contents = {p.read_bytes() for p in message_files(mirror.maildir).values()}
    assert big in contents and all(raw in contents for raw in odd)


def test_bare_lf_message_is_refused_by_cyrus(account: Account) -> None:
    """Documents the server quirk: every blob on Cyrus is CRLF, so a bare-LF
    mirror file can only come from another server (the fake-server tests)."""
    from mailtools import ImapError

    with account.imap() as i, pytest.raises(ImapError):
        i.append("INBOX", b"From: a@example.test\nSubject: lf\n\nbody\n")


def test_custom_keywords_are_recorded_and_get_dovecot_letters(
    account: Account, tmp_path: Path
) -> None:
    """project-x is kept in the state and written as Dovecot does: letter a,
    named in the folder's dovecot-keywords."""
    ids = seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    db = StateDB.for_account(mirror.state_dir, "test")
    emails = db.emails()
    db.close()
    assert "project-x" in emails[ids["m5"]].keywords  # type: ignore[index]
    [path] = [p for p in message_files(mirror.maildir).values() if ids["m5"] in p.name]
    assert path.name.endswith(":2,Sa")
    assert (mirror.maildir / "Archive" / "dovecot-keywords").read_text() == "0 project-x\n"


def test_every_kind_of_server_change_is_applied(account: Account, tmp_path: Path) -> None:
    ids = seed_basic(account)
    j = account.jmap()
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    before = snapshot(mirror.maildir)

    def inode_of(eid: str) -> int:
        [p] = [p for p in message_files(mirror.maildir).values() if p.name.startswith(eid)]
        return p.stat().st_ino

    m1_inode, m3_inode = inode_of(ids["m1"]), inode_of(ids["m3"])
    # keyword changes, a move, a copy into a second mailbox, a delete, a new delivery
    j.add_keyword(ids["m1"], "$flagged")
    j.remove_keyword(ids["m3"], "$seen")
    j.move(ids["m3"], j.mailbox_id("Work"), j.mailbox_id("Archive"))
    j.set_mailboxes(ids["m4"], [j.mailbox_id("Work/Projects"), j.mailbox_id("INBOX")])
    j.destroy(ids["m2"])
    new_id = j.import_message(make_message(50), [j.mailbox_id("Work")])
    # mailbox changes: create, rename (with a child)
    j.create_mailbox("Fresh")
    j.rename_mailbox(j.mailbox_id("Work"), "Job")

    report = mirror.sync()
    assert report.mode == "incremental"
    assert report.downloaded == 1  # only the new delivery
    assert report.folders_moved >= 2  # Work -> Job and Work/Projects -> Job/Projects
    assert_exact_mirror(mirror)
    # Renames, not downloads: the same inodes carry on.
    assert inode_of(ids["m1"]) == m1_inode
    assert inode_of(ids["m3"]) == m3_inode
    assert (mirror.maildir / "Job/Projects/cur").is_dir()
    assert not (mirror.maildir / "Work").exists()
    assert (mirror.maildir / "Fresh/new").is_dir()
    assert any(new_id in p for p in message_files(mirror.maildir))
    assert snapshot(mirror.maildir) != before
    assert_files_table(mirror)  # updated by the pass's own changes only

    # Cyrus 3.6 quirk: destroying a mailbox makes Email/changes from any
    # earlier state answer cannotCalculateChanges, so this pass is a full
    # reconcile -- which must still download nothing.
    j.destroy_mailbox(j.mailbox_id("Junk"))
    report = mirror.sync()
    assert report.mode == "full"
    assert report.downloaded == 0 and report.folders_removed == 1
    assert not (mirror.maildir / "Junk").exists()
    assert_exact_mirror(mirror)


def test_sync_with_nothing_new_changes_no_file(account: Account, tmp_path: Path) -> None:
    seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    before = snapshot(mirror.maildir)
    db_before = StateDB.for_account(mirror.state_dir, "test")
    state = db_before.email_state
    db_before.close()
    for _ in range(3):
        report = mirror.sync()
        assert report.mode in ("incremental", "unchanged")
        assert (report.downloaded, report.renamed, report.linked, report.removed) == (0, 0, 0, 0)
        assert snapshot(mirror.maildir) == before
    db = StateDB.for_account(mirror.state_dir, "test")
    assert db.email_state == state
    db.close()


def test_unchanged_pass_skips_the_scan_but_sees_any_local_change(
    account: Account, tmp_path: Path
) -> None:
    """Once the folders' times are recorded (and not too fresh to trust), a pass
    with no remote change reads no records and scans no file; a local rename
    -- even right after a pass -- makes the next pass look again."""
    import time

    seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    time.sleep(0.2)  # older than the racy window
    mirror.sync()  # records a trustworthy stamp
    assert mirror.sync().mode == "unchanged"
    [f] = [p for p in message_files(mirror.maildir).values() if p.name.endswith(":2,S")][:1]
    os.rename(f, f.with_name(f.name + "F"))  # a flag set by hand, at once
    report = mirror.sync()
    assert report.mode == "incremental" and report.renamed == 1  # pull restores the server's
    assert_exact_mirror(mirror)
    # a change on the server is never skipped
    j = account.jmap()
    j.add_keyword(j.email_ids()[0], "$flagged")
    time.sleep(0.2)
    assert mirror.sync().mode == "incremental"
    assert_exact_mirror(mirror)


def test_pull_mode_restores_local_flag_edits_and_deletions(
    account: Account, tmp_path: Path
) -> None:
    seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    files = sorted(message_files(mirror.maildir).values())
    os.rename(files[0], files[0].with_name(files[0].name.split(":")[0] + ":2,FRS"))
    files[1].unlink()
    report = mirror.sync()
    assert report.renamed == 1 and report.downloaded == 1
    assert_exact_mirror(mirror)


def test_broken_state_string_leads_to_full_reconcile(account: Account, tmp_path: Path) -> None:
    seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    db = StateDB.for_account(mirror.state_dir, "test")
    with db.transaction() as conn:
        db.set_meta(conn, "email_state", "bogus")
    db.close()
    before = snapshot(mirror.maildir)
    report = mirror.sync()
    assert report.mode == "full"
    assert report.downloaded == 0
    assert snapshot(mirror.maildir) == before


def test_cannot_calculate_changes_after_expunge_purge(account: Account, tmp_path: Path) -> None:
    ids = seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    j = account.jmap()
    j.destroy(ids["m1"])
    j.add_keyword(ids["m2"], "$seen")
    account.server.ctl("cyr_expire", "-X", "0", "-E", "0")
    report = mirror.sync()
    assert report.mode in ("full", "incremental")  # Cyrus may still compute it
    assert_exact_mirror(mirror)


def test_unknown_folder_files_are_reused_not_downloaded(account: Account, tmp_path: Path) -> None:
    """A mirror file found in a folder no mailbox maps to (e.g. a rename
    interrupted by a crash) is moved to where it belongs, not downloaded again."""
    ids = seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    [src] = [p for p in message_files(mirror.maildir).values() if p.name.startswith(ids["m1"])]
    stash = mirror.maildir / "Stash"
    for sub in ("cur", "new", "tmp"):
        (stash / sub).mkdir(parents=True)
    os.rename(src, stash / "cur" / src.name)
    report = mirror.sync()
    assert report.downloaded == 0 and report.renamed == 1
    assert_exact_mirror(mirror)


def test_two_processes_never_sync_one_account_at_once(account: Account, tmp_path: Path) -> None:
    import fcntl

    seed_basic(account)
    mirror = Mirror(account, tmp_path)
    mirror.state_dir.mkdir(parents=True)
    lock = mirror.state_dir / "test.lock"
    with lock.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        done = mirror.cli("sync", check=False)
    assert done.returncode == 1
    assert "another jmapsync process" in done.stderr
    assert (
        done.stderr.count("\njmapsync: account test:")
        + done.stderr.startswith("jmapsync: account test:")
        == 1
    )


def test_maildirplusplus_rename_moves_dot_folders(account: Account, tmp_path: Path) -> None:
    """Maildir++: inbox is the root, a rename moves .Work and .Work.Projects."""
    ids = seed_basic(account)
    mirror = Mirror(account, tmp_path, layout="maildir++")
    mirror.sync()
    assert_exact_mirror(mirror)
    assert (mirror.maildir / "cur").is_dir() and (mirror.maildir / ".Work.Projects/cur").is_dir()
    j = account.jmap()
    j.rename_mailbox(j.mailbox_id("Work"), "Job")
    j.move(ids["m1"], j.mailbox_id("INBOX"), j.mailbox_id("Job/Projects"))
    report = mirror.sync()
    assert report.downloaded == 0 and report.folders_moved == 2
    assert not (mirror.maildir / ".Work").exists()
    assert not (mirror.maildir / ".Work.Projects").exists()
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
