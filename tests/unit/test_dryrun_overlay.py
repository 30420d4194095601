"""The dry run's stand-ins for writes (sync/dryrun.py): the scan as it would be
after the folder moves and the local->remote renames, and where a file the
plan leaves somewhere is now."""

from __future__ import annotations

from jmapsync.jmap.types import MailboxId, State
from jmapsync.maildir.files import LocalFile
from jmapsync.sync.dryrun import SERVER, DryRun, render
from jmapsync.sync.plan import FilePlan, Link, Rename
from jmapsync.sync.report import SyncReport
from jmapsync.sync.twoway import Update


def lf(folder: str, name: str, eid: str | None = "M1") -> LocalFile:
    return LocalFile(folder, "cur", name, eid, "S")


def test_folder_moves_apply_once_even_in_a_chain() -> None:
    dry = DryRun(moved={"A": "B", "B": "C"})
    scan = [lf("A", "M1.jmapsync:2,S"), lf("B", "M2.jmapsync:2,S", "M2")]
    moved = dry.after_folder_moves(scan)
    assert [f.relpath for f in moved] == ["B/cur/M1.jmapsync:2,S", "C/cur/M2.jmapsync:2,S"]


def test_overlay_takes_over_a_copy_and_drops_removed_copies() -> None:
    dry = DryRun()
    copy = lf("Junk", "1732560000.M1P1.host:2,S", None)
    dry.rename(copy, "Junk/cur/M1.jmapsync:2,S", "M1", "take over copy")
    dry.remove_copy("INBOX/new/mutt")
    scan = [copy, lf("INBOX", "M1.jmapsync:2,S"), LocalFile("INBOX", "new", "mutt", None, "")]
    out = dry.overlay(scan)
    assert [(f.relpath, f.email_id) for f in out] == [
        ("Junk/cur/M1.jmapsync:2,S", "M1"),
        ("INBOX/cur/M1.jmapsync:2,S", "M1"),
    ]
    assert [w.action for w in dry.actions] == ["take over copy", "remove copy"]


def test_on_disk_follows_links_renames_and_folder_moves_back() -> None:
    dry = DryRun(moved={"Sent": "Sent Items"})
    dry.plan = FilePlan(
        renames=[
            Rename(
                "Sent Items/cur/M1.jmapsync:2,S", "Sent Items/cur/M1.jmapsync:2,FS", "M1", "flags"
            )
        ],
        links=[Link("Sent Items/cur/M1.jmapsync:2,FS", "INBOX/cur/M1.jmapsync:2,FS", "M1")],
    )
    assert dry.on_disk("INBOX/cur/M1.jmapsync:2,FS") == "Sent/cur/M1.jmapsync:2,S"
    assert dry.on_disk("Work/cur/M2.jmapsync:2,S") == "Work/cur/M2.jmapsync:2,S"


def test_email_set_is_answered_as_done_and_listed() -> None:
    dry = DryRun(names={MailboxId("in"): "INBOX", MailboxId("ar"): "Archive"})
    u = Update("M1", frozenset({"ar"}), frozenset({"in"}), (("$flagged", True),), "move")
    result = dry.email_set([u], ["M2"], State("7"))
    assert (result.updated, result.destroyed, result.new_state) == ({"M1"}, {"M2"}, "7")
    assert [(w.side, w.action, w.detail) for w in dry.actions] == [
        (SERVER, "Email/set update", "move; joins Archive; leaves INBOX; +$flagged"),
        (SERVER, "Email/set destroy", "deleted in Trash"),
    ]


def test_render_lists_each_side_and_cuts_long_lists() -> None:
    report = SyncReport("a", dry_run=True, downloaded=25, bytes=2500)
    report.would = [
        {"side": "maildir", "action": "download", "what": f"M{i}", "detail": "100 bytes"}
        for i in range(25)
    ]
    text = render(report)
    assert "to the server: nothing" in text
    assert text.count("    download ") == 20
    assert "... and 5 more download (--json lists all)" in text
    assert "in all: 25 download(s) (2500 bytes)" in text
    assert "the pass would do nothing" in render(SyncReport("a", mode="unchanged", dry_run=True))
