"""Engine bugs the state machine over the real engine found
(test_engine_machine.py), each as the smallest example that showed it, run
against the in-memory server's Stalwart personality (no import dedup).

Each test names the bug it pins; the fix is in the commit that added it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from jmapserver import JmapServer
from mailtools import make_message
from memmirror import memory_mirror
from mirror import Mirror, assert_exact_mirror, assert_files_table

from jmapsync.errors import JmapsyncError, TransportError
from jmapsync.jmap import http

MID = "{}.mailtools@mailtools.test"


@pytest.fixture
def stalwart() -> Iterator[JmapServer]:
    with JmapServer("stalwart") as s:
        yield s


def mutt_copy(mirror: Mirror, src: Path, folder: str, name: str = "1700000001.M1P1.host") -> Path:
    """mutt's `s`ave: a new file in new/, a Content-Length: header added."""
    raw = src.read_bytes().replace(b"\r\n", b"\n")
    head, _, body = raw.partition(b"\n\n")
    dst = mirror.maildir / folder / "new" / name
    dst.write_bytes(head + f"\nContent-Length: {len(body)}".encode() + b"\n\n" + body)
    return dst


def test_a_reimported_message_with_an_mua_copy_is_imported_once(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """Found by the machine (a duplicate on the server): the Email was
    destroyed on the server; here it was moved to Archive (a change: it is
    imported again) and mutt saved a copy of it to INBOX.  The copy was
    imported as a second, new message; now it joins the re-import."""
    eid = stalwart.deliver(make_message(1))
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    [f] = (mirror.maildir / "INBOX" / "new").iterdir()
    moved = mirror.maildir / "Archive" / "new" / f.name
    f.rename(moved)
    mutt_copy(mirror, moved, "INBOX")
    stalwart.destroy(eid)
    mirror.sync()
    [new] = stalwart.by_message_id(MID.format(1))
    assert stalwart.emails()[new].mailbox_ids == {
        stalwart.mailbox_id("Archive"),
        stalwart.mailbox_id("INBOX"),
    }
    assert_exact_mirror(mirror)
    assert mirror.sync().imported == 0


def test_two_copies_of_a_new_local_message_are_imported_once(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """The same new message written to two folders before a pass (a draft
    saved, then `cp` to another folder) became two Emails on a server that
    does not deduplicate; now one Email in both mailboxes."""
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    raw = make_message(2).replace(b"\r\n", b"\n")
    (mirror.maildir / "Drafts" / "new" / "1700000002.M2P1.host").write_bytes(raw)
    (mirror.maildir / "Archive" / "new" / "1700000003.M3P1.host").write_bytes(raw)
    assert mirror.sync().imported == 1
    [new] = stalwart.by_message_id(MID.format(2))
    assert stalwart.emails()[new].mailbox_ids == {
        stalwart.mailbox_id("Drafts"),
        stalwart.mailbox_id("Archive"),
    }
    assert_exact_mirror(mirror)


def test_a_local_move_the_server_overrules_leaves_no_stale_file_record(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """Found by the machine ("the next pass changed {'pushed': 1}"): moved here
    Trash -> Sent while the server moved it Trash -> Junk.  The server's move
    wins and nothing is sent -- but the files table kept the row of the file
    the USER moved out of Trash (the pass updated the table only by its own
    actions).  The next partial pass trusted Trash's recorded files and sent
    a join of Trash nobody asked for."""
    eid = stalwart.deliver(make_message(3), "Trash")
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    [f] = (mirror.maildir / "Trash" / "new").iterdir()
    f.rename(mirror.maildir / "Sent" / "new" / f.name)
    stalwart.move(eid, "Junk")
    mirror.sync()
    assert_files_table(mirror)
    again = mirror.sync()
    assert again.pushed == 0
    assert stalwart.emails()[eid].mailbox_ids == {stalwart.mailbox_id("Junk")}
    assert_exact_mirror(mirror)


def test_a_reimport_whose_answer_was_lost_is_not_imported_again(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """Found by the machine (a duplicate on the server): destroyed there,
    moved here -> re-imported; the server carried the import out and the
    answer was lost.  The journal recovery skipped files under our name, so
    the next pass imported it a second time."""
    eid = stalwart.deliver(make_message(1), ["INBOX", "Drafts"])
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    for folder in ("INBOX", "Drafts"):  # both copies moved: one re-import, two files
        [f] = (mirror.maildir / folder / "new").iterdir()
        f.rename(mirror.maildir / ("Archive" if folder == "INBOX" else "Sent") / "new" / f.name)
    stalwart.destroy(eid)
    stalwart.fault("lose", "api:Email/import")
    with contextlib.suppress(TransportError):
        mirror.sync()
    assert len(stalwart.by_message_id(MID.format(1))) == 1
    mirror.sync()
    [new] = stalwart.by_message_id(MID.format(1))
    assert stalwart.emails()[new].mailbox_ids == {
        stalwart.mailbox_id("Archive"),
        stalwart.mailbox_id("Sent"),
    }
    assert_exact_mirror(mirror)
    assert mirror.sync().imported == 0


@pytest.mark.parametrize("change", ["flag", "move"])
def test_the_pulls_own_renames_in_a_failed_pass_do_not_undo_a_later_server_change(
    stalwart: JmapServer, tmp_path: Path, change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found while writing the machine's oracle (which cannot see it: it
    models the engine's rules from the disk): the server flagged (or moved)
    a message, the pass renamed its file and then failed on a download; then
    another client took the change back.  The next pass took our own rename
    for the user's change and sent it again, over the newer one."""
    eid = stalwart.deliver(make_message(1))
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    if change == "flag":
        stalwart.add_keyword(eid, "$flagged")
    else:
        stalwart.move(eid, "Archive")
    stalwart.deliver(make_message(2, size=50_000))  # its download is cut
    stalwart.fault("cut", "download")
    monkeypatch.setattr(http, "RETRY_DELAYS", ())  # and not resumed: the pass fails
    with pytest.raises(JmapsyncError):
        mirror.sync()
    if change == "flag":
        stalwart.remove_keyword(eid, "$flagged")  # another client takes it back
    else:
        stalwart.move(eid, "INBOX")
    mirror.sync()
    e = stalwart.emails()[eid]
    assert e.keywords == set() and e.mailbox_ids == {stalwart.mailbox_id("INBOX")}
    assert_exact_mirror(mirror)


def test_a_folder_kept_for_an_mua_file_is_synced_by_the_next_pass(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """Found by the machine (Fastmail personality): the server destroyed a
    mailbox while mutt saved a copy into its folder.  The folder is kept (a
    file we did not write), but it was not in the recorded folder times, so
    every later pass took the "unchanged" fast path past it: the copy never
    reached the server."""
    eid = stalwart.deliver(make_message(1))
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    for sub in ("cur", "new", "tmp"):
        (mirror.maildir / "Projects" / sub).mkdir(parents=True)
    mirror.sync()
    [f] = (mirror.maildir / "INBOX" / "new").iterdir()
    mutt_copy(mirror, f, "Projects")
    stalwart.destroy_mailbox("Projects", remove_emails=True)
    report = mirror.sync()
    assert any("kept" in w for w in report.warnings)
    mirror.sync()
    assert stalwart.emails()[eid].mailbox_ids == {
        stalwart.mailbox_id("INBOX"),
        stalwart.mailbox_id("Projects"),
    }
    assert_exact_mirror(mirror)


def test_a_new_folder_of_copies_after_the_first_pass_becomes_a_mailbox(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """Found by the machine after merging main's adoption rule: "the first
    two-way pass" was told by a meta key that only a pass WITH new folders
    writes -- so the first new folder an account ever got, if it held only
    copies (mutt's `s` to a new folder), was taken for another tool's
    leftover: no mailbox, the copy never synced."""
    eid = stalwart.deliver(make_message(1))
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    mirror.sync()
    [f] = (mirror.maildir / "INBOX" / "new").iterdir()
    for sub in ("cur", "new", "tmp"):
        (mirror.maildir / "Keep" / sub).mkdir(parents=True)
    mutt_copy(mirror, f, "Keep")
    report = mirror.sync()
    assert not [w for w in report.warnings if "left by the tool" in w]
    assert stalwart.emails()[eid].mailbox_ids == {
        stalwart.mailbox_id("INBOX"),
        stalwart.mailbox_id("Keep"),
    }
    assert_exact_mirror(mirror)


@pytest.mark.parametrize("then", ["copy", "flag"])
def test_a_recovered_reimport_takes_the_changes_made_since(
    stalwart: JmapServer, tmp_path: Path, then: str
) -> None:
    """Found by the long machine run: a re-import's answer was lost, and
    before the next pass the user copied the message to another folder (a
    join nobody sent: the copy was dropped) -- or marked it read, renaming
    the journaled file (the recovery looked only at the journaled path, and
    the message was imported a second time)."""
    eid = stalwart.deliver(make_message(1))
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    [f] = (mirror.maildir / "INBOX" / "new").iterdir()
    moved = mirror.maildir / "Archive" / "new" / f.name
    f.rename(moved)  # a change: the destroyed Email is imported again
    stalwart.destroy(eid)
    stalwart.fault("lose", "api:Email/import")
    with contextlib.suppress(TransportError):
        mirror.sync()
    if then == "copy":
        shutil.copyfile(moved, mirror.maildir / "Drafts" / "new" / moved.name)
        want = {"Archive", "Drafts"}
    else:
        moved.rename(mirror.maildir / "Archive" / "cur" / (moved.name + ":2,S"))
        want = {"Archive"}
    mirror.sync()
    [new] = stalwart.by_message_id(MID.format(1))
    assert stalwart.emails()[new].mailbox_ids == {stalwart.mailbox_id(b) for b in want}
    assert stalwart.emails()[new].keywords == ({"$seen"} if then == "flag" else set())
    assert_exact_mirror(mirror)
    assert mirror.sync().imported == 0


def test_a_lost_reimport_moved_by_another_client_is_still_found(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """Found by the long machine run after the merge (a duplicate): the
    journal recovery looked for the lost import only in the mailbox it was
    put in; another client moved it meanwhile, and the next pass imported
    the message again."""
    eid = stalwart.deliver(make_message(1))
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    [f] = (mirror.maildir / "INBOX" / "new").iterdir()
    f.rename(mirror.maildir / "INBOX" / "cur" / (f.name + ":2,S"))  # a change here
    stalwart.destroy(eid)
    stalwart.fault("lose", "api:Email/import")
    with contextlib.suppress(TransportError):
        mirror.sync()
    [new] = stalwart.by_message_id(MID.format(1))
    stalwart.move(new, "Archive")  # another client files it
    mirror.sync()
    assert stalwart.by_message_id(MID.format(1)) == [new]
    assert_exact_mirror(mirror)
