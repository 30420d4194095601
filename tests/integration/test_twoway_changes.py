"""direction = two-way beyond flags: moves, deletes, new messages, folders,
conflicts and the deletion guards, each against the real Cyrus server.

Each test does on disk exactly what a mail program does (the renames, copies
and unlinks listed in ../shared/docs/jmap-sync-pitfalls.md, items 22-23),
syncs, and asserts the server over JMAP -- and that the mirror is exact again.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, assert_files_table, message_files
from structlog.testing import capture_logs

from jmapsync.errors import DeletionRefused


def setup(
    account: Account, tmp_path: Path, n: int = 3, **mirror_kw: str
) -> tuple[Mirror, list[str]]:
    j = account.jmap()
    inbox = j.mailbox_id("INBOX")
    ids = [
        j.import_message(make_message(i), [inbox], keywords={"$seen": True})
        for i in range(1, n + 1)
    ]
    mirror = Mirror(account, tmp_path, direction="two-way", **mirror_kw)
    mirror.sync()
    return mirror, ids


def path_of(mirror: Mirror, eid: str, folder: str | None = None) -> Path:
    paths = [
        p
        for p in message_files(mirror.maildir).values()
        if p.name.startswith(eid + ".")
        and (folder is None or p.parent.parent == mirror.maildir / folder)
    ]
    assert len(paths) == 1, paths
    return paths[0]


def boxes(account: Account, eid: str) -> set[str]:
    j = account.jmap()
    names = {m["id"]: path for path, m in j.mailbox_paths().items()}
    return {names[m] for m in j.get_email(eid, ["mailboxIds"])["mailboxIds"]}


def count(account: Account) -> int:
    return len(account.jmap().email_ids())


# -- moves -----------------------------------------------------------------------


def test_rename_across_folders_is_a_move_without_upload(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    src = path_of(mirror, ids[0])
    inode = src.stat().st_ino
    os.rename(src, mirror.maildir / "Archive" / "cur" / src.name)
    report = mirror.sync()
    assert report.pushed == 1 and report.imported == 0 and report.downloaded == 0
    assert boxes(account, ids[0]) == {"Archive"}  # same Email id: moved, not copied
    assert path_of(mirror, ids[0], "Archive").stat().st_ino == inode
    assert count(account) == 3
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    again = mirror.sync()
    assert (again.pushed, again.renamed, again.downloaded) == (0, 0, 0)


def mutt_save(src: Path, folder: Path, flags: str = "S") -> Path:
    """What mutt 2.2 does for `s =Folder`: a new file under mutt's own name in
    the target's new/ (flags in the name even there), with a Content-Length
    header added; the original is unlinked."""
    raw = src.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    copy = head + f"\nContent-Length: {len(body)}".encode() + b"\n\n" + body
    dst = folder / "new" / f"1732560000.12345_1.host:2,{flags}"
    dst.write_bytes(copy)
    src.unlink()
    return dst


def test_mutt_move_is_matched_by_message_id_and_body(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    copy = mutt_save(path_of(mirror, ids[1]), mirror.maildir / "Archive", flags="FS")
    report = mirror.sync()
    assert report.imported == 0 and report.pushed == 1 and report.superseded == 1
    assert boxes(account, ids[1]) == {"Archive"}
    assert "$flagged" in account.jmap().get_email(ids[1], ["keywords"])["keywords"]
    assert count(account) == 3  # no duplicate
    assert not copy.exists()  # the server's bytes replaced mutt's copy
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    mirror.cli("verify")


def test_identical_copy_under_another_name_joins_a_second_mailbox(
    account: Account, tmp_path: Path
) -> None:
    mirror, ids = setup(account, tmp_path)
    src = path_of(mirror, ids[0])
    shutil.copy(src, mirror.maildir / "Archive" / "cur" / "1732560000.M1P1.host:2,S")
    report = mirror.sync()
    assert report.adopted == 1 and report.imported == 0 and report.downloaded == 0
    assert boxes(account, ids[0]) == {"Inbox", "Archive"}
    assert_exact_mirror(mirror)


# -- deletes ---------------------------------------------------------------------


def test_delete_moves_to_trash_and_delete_in_trash_destroys(
    account: Account, tmp_path: Path
) -> None:
    mirror, ids = setup(account, tmp_path)
    path_of(mirror, ids[0]).unlink()
    report = mirror.sync()
    assert report.pushed == 1 and report.destroyed == 0
    assert boxes(account, ids[0]) == {"Trash"}
    trashed = path_of(mirror, ids[0], "Trash")  # the file followed to the Trash folder
    assert_exact_mirror(mirror)

    trashed.unlink()
    report = mirror.sync()
    assert report.destroyed == 1
    assert ids[0] not in account.jmap().email_ids()
    assert count(account) == 2
    assert_exact_mirror(mirror)


def test_delete_from_one_of_two_mailboxes_only_leaves_that_one(
    account: Account, tmp_path: Path
) -> None:
    mirror, ids = setup(account, tmp_path)
    j = account.jmap()
    j.set_mailboxes(ids[0], [j.mailbox_id("INBOX"), j.mailbox_id("Archive")])
    mirror.sync()
    path_of(mirror, ids[0], "Archive").unlink()
    mirror.sync()
    assert boxes(account, ids[0]) == {"Inbox"}
    assert_exact_mirror(mirror)


def test_trashed_flag_counts_as_a_delete(account: Account, tmp_path: Path) -> None:
    """mutt with maildir_trash: `d` + `$` renames X:2,S -> X:2,ST and keeps the file."""
    mirror, ids = setup(account, tmp_path)
    p = path_of(mirror, ids[2])
    os.rename(p, p.with_name(p.name + "T"))
    mirror.sync()
    assert boxes(account, ids[2]) == {"Trash"}
    assert "T" not in path_of(mirror, ids[2], "Trash").name.split(":2,")[1]
    assert_exact_mirror(mirror)
    # ... and the copy in Trash, without T, is not deleted again by the next pass.
    again = mirror.sync()
    assert again.destroyed == 0 and boxes(account, ids[2]) == {"Trash"}


# -- new messages ------------------------------------------------------------------


@pytest.mark.parametrize("line_endings", ["lf", "exact"])
def test_new_local_message_is_imported_byte_exact(
    account: Account, tmp_path: Path, line_endings: str
) -> None:
    """An MUA writes a draft with LF line endings: the server gets CRLF, and
    the local file is afterwards the line_endings form of the server's bytes."""
    mirror, _ = setup(account, tmp_path, line_endings=line_endings)
    raw_crlf = make_message(40, subject="draft from mutt")
    raw_lf = raw_crlf.replace(b"\r\n", b"\n")
    draft = mirror.maildir / "Drafts" / "cur" / "1732560001.M2P2.host:2,DS"
    draft.write_bytes(raw_lf)
    report = mirror.sync()
    assert report.imported == 1
    j = account.jmap()
    [eid] = j.emails_in("Drafts")
    email = j.get_email(eid, ["blobId", "keywords"])
    assert {"$draft", "$seen"} <= set(email["keywords"])
    assert j.download(email["blobId"]) == raw_crlf  # CRLF on the server, byte for byte
    assert not draft.exists()
    local = path_of(mirror, eid, "Drafts")
    assert local.read_bytes() == (raw_lf if line_endings == "lf" else raw_crlf)
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    mirror.cli("verify")  # the state knows the server's hash of what was sent
    again = mirror.sync()
    assert (again.imported, again.downloaded, again.pushed) == (0, 0, 0)
    assert len(j.emails_in("Drafts")) == 1


def test_a_file_that_is_not_a_message_is_left_alone(account: Account, tmp_path: Path) -> None:
    mirror, _ = setup(account, tmp_path)
    junk = mirror.maildir / "INBOX" / "new" / "notes.txt"
    junk.write_bytes(b"\x00\x01 not a mail at all\n")
    report = mirror.sync()
    assert report.imported == 0 and junk.exists()
    assert any("not a mail message" in w for w in report.warnings)


# -- folders -----------------------------------------------------------------------


def test_new_local_folders_become_mailboxes(account: Account, tmp_path: Path) -> None:
    mirror, _ = setup(account, tmp_path, n=1)
    for sub in ("cur", "new", "tmp"):
        (mirror.maildir / "Projects" / "2026" / sub).mkdir(parents=True)
    (mirror.maildir / "Projects" / "2026" / "cur" / "1.M3P3.host:2,S").write_bytes(
        make_message(50).replace(b"\r\n", b"\n")
    )
    report = mirror.sync()
    assert report.mailboxes_created == 2  # "Projects" (no cur/ of its own) and its child
    assert report.imported == 1
    assert len(account.jmap().emails_in("Projects/2026")) == 1
    assert_exact_mirror(mirror)


def test_removed_empty_folder_destroys_its_empty_mailbox(account: Account, tmp_path: Path) -> None:
    j = account.jmap()
    j.create_mailbox("Old")
    mirror, _ = setup(account, tmp_path, n=1)
    shutil.rmtree(mirror.maildir / "Old")
    report = mirror.sync()
    assert report.mailboxes_destroyed == 1
    assert "Old" not in j.mailbox_paths()
    assert not (mirror.maildir / "Old").exists()


def test_removed_folder_whose_mailbox_got_mail_is_recreated(
    account: Account, tmp_path: Path
) -> None:
    j = account.jmap()
    old = j.create_mailbox("Old")
    mirror, _ = setup(account, tmp_path, n=1)
    shutil.rmtree(mirror.maildir / "Old")
    j.import_message(make_message(60), [old])  # arrives meanwhile
    report = mirror.sync()
    assert report.mailboxes_destroyed == 0
    assert any("kept" in w for w in report.warnings)
    assert "Old" in j.mailbox_paths()
    assert_exact_mirror(mirror)


# -- conflicts ---------------------------------------------------------------------


def test_move_here_and_move_there_settle_on_the_remote_move(
    account: Account, tmp_path: Path
) -> None:
    mirror, ids = setup(account, tmp_path)
    src = path_of(mirror, ids[0])
    os.rename(src, mirror.maildir / "Archive" / "cur" / src.name)
    j = account.jmap()
    j.move(ids[0], j.mailbox_id("INBOX"), j.mailbox_id("Junk"))
    mirror.sync()
    assert boxes(account, ids[0]) == {"Junk"}
    assert_exact_mirror(mirror)


def test_delete_here_and_flag_there_keeps_the_message(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    path_of(mirror, ids[0]).unlink()
    account.jmap().add_keyword(ids[0], "$flagged")
    report = mirror.sync()
    assert boxes(account, ids[0]) == {"Inbox"}
    assert report.downloaded == 1  # brought back
    assert path_of(mirror, ids[0], "INBOX").name.endswith(":2,FS")
    assert_exact_mirror(mirror)


def test_delete_there_and_flag_here_imports_it_again(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    p = path_of(mirror, ids[0])
    os.rename(p, p.with_name(p.name.replace(":2,S", ":2,FS")))
    j = account.jmap()
    subject = j.get_email(ids[0], ["subject"])["subject"]
    j.destroy(ids[0])
    report = mirror.sync()
    assert report.imported == 1
    [back] = [
        e
        for e in j.get_emails(j.emails_in("INBOX"), ["subject", "keywords"])
        if e["subject"] == subject
    ]
    assert "$flagged" in back["keywords"]
    assert_exact_mirror(mirror)


def test_reimport_of_an_email_in_two_mailboxes_keeps_both(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    j = account.jmap()
    j.set_mailboxes(ids[0], [j.mailbox_id("INBOX"), j.mailbox_id("Archive")])
    mirror.sync()
    p = path_of(mirror, ids[0], "INBOX")
    os.rename(p, p.with_name(p.name.replace(":2,S", ":2,FS")))
    j.destroy(ids[0])
    report = mirror.sync()
    assert report.imported == 1
    [back] = [e for e in j.email_ids() if e not in ids[1:]]
    assert boxes(account, back) == {"Inbox", "Archive"}
    assert "$flagged" in j.get_email(back, ["keywords"])["keywords"]
    assert_exact_mirror(mirror)


# -- guards ------------------------------------------------------------------------


def test_more_deletions_than_max_deletes_are_refused_until_forced(
    account: Account, tmp_path: Path
) -> None:
    mirror, ids = setup(account, tmp_path, n=4)
    mirror.set("max_deletes", "2")
    for eid in ids[:3]:
        path_of(mirror, eid).unlink()
    state = account.jmap().state("Email")
    done = mirror.cli("sync", check=False)
    assert done.returncode == 1
    assert "3 deletions in one pass, more than max_deletes = 2" in done.stderr
    assert account.jmap().state("Email") == state  # nothing sent
    assert len(message_files(mirror.maildir)) == 1  # and nothing brought back
    mirror.cli("sync", "--force-deletes")
    assert len(account.jmap().emails_in("Trash")) == 3
    assert_exact_mirror(mirror)


def test_emptied_folder_is_refused(account: Account, tmp_path: Path) -> None:
    mirror, _ = setup(account, tmp_path, n=12)
    for p in (mirror.maildir / "INBOX" / "cur").iterdir():
        p.unlink()
    with pytest.raises(DeletionRefused, match="emptied: 'INBOX' \\(12\\)"):
        mirror.sync()
    assert len(account.jmap().emails_in("INBOX")) == 12


def test_vanished_root_and_vanished_folder_are_refused(account: Account, tmp_path: Path) -> None:
    mirror, _ = setup(account, tmp_path, n=2)
    state = account.jmap().state("Email")
    shutil.rmtree(mirror.maildir / "INBOX")
    with pytest.raises(DeletionRefused, match="'INBOX' vanished with 2 messages"):
        mirror.sync()
    assert not (mirror.maildir / "INBOX").exists()  # not recreated behind the user's back
    shutil.rmtree(mirror.maildir)
    with pytest.raises(DeletionRefused, match=r"Maildir root .* is missing"):
        mirror.sync()
    assert not mirror.maildir.exists()
    assert account.jmap().state("Email") == state


def test_server_side_emptied_mailbox_is_rechecked_by_a_full_read(
    account: Account, tmp_path: Path
) -> None:
    mirror, ids = setup(account, tmp_path, n=12)
    mirror.set("direction", "pull")
    account.jmap().destroy(*ids)
    report = mirror.sync()
    assert report.mode == "full" and report.removed == 12
    assert_exact_mirror(mirror)


def test_many_moved_out_of_a_mailbox_that_still_holds_mail_is_a_partial_pass(
    account: Account, tmp_path: Path
) -> None:
    """A batch of moves out of the inbox (a filter, "archive all") is no
    emptied mailbox: the state says another Email stays there.  Before,
    any 10 leaving one mailbox made the pass read and scan everything --
    26 s at 300 000 messages for 170 changes."""
    mirror, ids = setup(account, tmp_path, n=13)
    mirror.set("direction", "pull")
    time.sleep(0.2)  # racy folder times settle
    mirror.sync()
    j = account.jmap()
    for eid in ids[:12]:
        j.move(eid, j.mailbox_id("INBOX"), j.mailbox_id("Archive"))
    with capture_logs() as logs:
        report = mirror.sync()
    assert not [e for e in logs if e["event"] == "mailbox-emptied-remotely"]
    assert report.mode == "incremental" and report.partial and report.renamed == 12
    assert_exact_mirror(mirror)
    # ...while Archive losing all 12 is the emptied mailbox: a full read
    j.destroy(*ids[:12])
    report = mirror.sync()
    assert report.mode == "full"
    assert_exact_mirror(mirror)


# -- pull mode ---------------------------------------------------------------------


def test_pull_mode_puts_the_server_view_back(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    mirror.set("direction", "pull")
    state = account.jmap().state("Email")
    src = path_of(mirror, ids[0])
    os.rename(src, mirror.maildir / "Archive" / "cur" / src.name)  # moved
    path_of(mirror, ids[1]).unlink()  # deleted
    foreign = mirror.maildir / "INBOX" / "new" / "1.M9P9.host"
    foreign.write_bytes(make_message(70))  # a new local message
    report = mirror.sync()
    assert report.pushed == report.imported == 0
    assert account.jmap().state("Email") == state
    assert path_of(mirror, ids[0], "INBOX") and path_of(mirror, ids[1], "INBOX")
    assert foreign.exists()  # never touched, never sent


# -- partial passes ------------------------------------------------------------------


def test_incremental_passes_look_only_at_changed_folders_and_emails(
    account: Account, tmp_path: Path
) -> None:
    """After the first pass, a remote change or a local rename is handled by a
    partial pass (Scope), and the mirror and the files table stay exact."""
    mirror, ids = setup(account, tmp_path, n=5)
    time.sleep(0.2)  # let the folders' times settle ("racy" ones are scanned again)
    mirror.sync()
    j = account.jmap()
    j.add_keyword(ids[0], "$flagged")  # remote flag
    j.move(ids[1], j.mailbox_id("INBOX"), j.mailbox_id("Archive"))  # remote move
    report = mirror.sync()
    assert report.partial and report.renamed == 2 and report.planned == 2
    assert_exact_mirror(mirror)
    assert_files_table(mirror)

    time.sleep(0.2)
    mirror.sync()
    src = path_of(mirror, ids[2])
    os.rename(src, mirror.maildir / "Junk" / "cur" / src.name)  # local move
    p = path_of(mirror, ids[3])
    os.rename(p, p.with_name(p.name.replace(":2,S", ":2,RS")))  # local flag
    report = mirror.sync()
    # INBOX and Junk changed: their 4 Emails are planned, not all 5
    assert report.partial and report.pushed == 2 and report.planned == 4
    assert boxes(account, ids[2]) == {"Junk"}
    assert_exact_mirror(mirror)
    assert_files_table(mirror)

    # A file an MUA wrote needs every record (it may be a copy of any message):
    (mirror.maildir / "INBOX" / "new" / "1.M1P1.host").write_bytes(make_message(80))
    report = mirror.sync()
    assert not report.partial and report.imported == 1
    assert_exact_mirror(mirror)
    assert_files_table(mirror)


@pytest.fixture(params=["watched", "listed"])
def listings(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How a pass learns what a folder it wrote to without scanning holds at
    the end: an inotify watch (sync/watched.py; on here for any size) or
    listing it again (below watched.WATCH_FROM names).  Returns the folders
    listed at the end of passes."""
    from jmapsync.sync import prints, scope, watched

    monkeypatch.setattr(watched, "WATCH_FROM", 0 if request.param == "watched" else 10**9)
    listed: list[str] = []

    def spy(path: Path) -> prints.Print:
        listed.append(path.name)
        return prints.listing(path)

    monkeypatch.setattr(scope, "listing", spy)
    return listed


@pytest.mark.parametrize("direction", ["pull", "two-way"])
def test_a_pass_that_wrote_into_a_folder_it_did_not_scan_leaves_it_unchanged(
    account: Account,
    tmp_path: Path,
    listings: list[str],
    request: pytest.FixtureRequest,
    direction: str,
) -> None:
    """A remote flag, move and delivery: the pass writes into INBOX and
    Archive without scanning them, and the next pass finds nothing to do --
    learnt from the watch's events, or by listing both folders."""
    j = account.jmap()
    inbox = j.mailbox_id("INBOX")
    ids = [j.import_message(make_message(i), [inbox], keywords={"$seen": True}) for i in (1, 2)]
    mirror = Mirror(account, tmp_path, direction=direction)
    mirror.sync()
    time.sleep(0.2)
    mirror.sync()
    j.add_keyword(ids[0], "$flagged")
    j.move(ids[1], j.mailbox_id("INBOX"), j.mailbox_id("Archive"))
    j.import_message(make_message(9), [j.mailbox_id("Archive")])
    listings.clear()
    report = mirror.sync()
    assert report.partial and (report.renamed, report.downloaded) == (2, 1)
    watched = request.node.callspec.params["listings"] == "watched"
    assert sorted(listings) == ([] if watched else ["Archive", "INBOX"])
    assert mirror.sync().mode == "unchanged"
    assert_exact_mirror(mirror)
    assert_files_table(mirror)


def test_a_change_made_while_a_pass_runs_is_seen_by_the_next_pass(
    account: Account,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listings: list[str],
    request: pytest.FixtureRequest,
) -> None:
    """mutt renames a file after our scan but before our commit: the folder's
    recorded times must not hide that change from the next pass (whether the
    pass learns what the folder holds from its watch or by listing it)."""
    from jmapsync.sync.execute import Executor
    from jmapsync.sync.plan import FilePlan

    mirror, ids = setup(account, tmp_path)
    time.sleep(0.2)
    mirror.sync()
    account.jmap().add_keyword(ids[0], "$flagged")  # a remote change: our pass writes
    victim = path_of(mirror, ids[1])
    real = Executor.run

    async def execute_with_mutt(self: Executor, plan: FilePlan, **kw: Any) -> None:
        os.rename(victim, victim.with_name(victim.name.replace(":2,S", ":2,RS")))
        await real(self, plan, **kw)

    listings.clear()
    with monkeypatch.context() as m:
        m.setattr(Executor, "run", execute_with_mutt)
        mirror.sync()
    assert listings == ([] if request.node.callspec.params["listings"] == "watched" else ["INBOX"])
    time.sleep(0.2)
    report = mirror.sync()
    assert report.pushed == 1
    assert "$answered" in account.jmap().get_email(ids[1], ["keywords"])["keywords"]
    assert_exact_mirror(mirror)
