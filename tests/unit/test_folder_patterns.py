"""`folders =` (sync/selection.py) as a case table, the config key, and the
pure decisions that depend on it (plan.py, twoway.py, guards.py)."""

from __future__ import annotations

import pytest

from jmapsync.config import parse
from jmapsync.errors import ConfigError
from jmapsync.jmap.types import BlobId, Email, EmailId, Mailbox, MailboxId
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.flags import keywords_from_flags
from jmapsync.sync.guards import EMPTIED_MIN, deselected, left_by_mailbox
from jmapsync.sync.plan import plan_files
from jmapsync.sync.selection import Selection, mailbox_paths
from jmapsync.sync.twoway import Refusal, Update, plan_push


def box(mid: str, name: str, parent: str | None = None, role: str | None = None) -> Mailbox:
    return Mailbox(MailboxId(mid), name, MailboxId(parent) if parent else None, role)


# A Fastmail-like tree: the inbox is named "Inbox", Notes has role xnotes
# (Cyrus: IMAP special-use \XNotes, lower-cased without the backslash),
# Snoozed has role snoozed.
TREE = {
    b.id: b
    for b in [
        box("in", "Inbox", role="inbox"),
        box("rc", "Receipts", "in"),
        box("ar", "Archive", role="archive"),
        box("a3", "2023", "ar"),
        box("a4", "2024", "ar"),
        box("jk", "Junk", role="junk"),
        box("nt", "Notes", role="xnotes"),
        box("ns", "Sub", "nt"),
        box("sz", "Snoozed", role="snoozed"),
        box("wk", "Work"),
        box("wp", "Projects", "wk"),
        box("wa", "Alpha", "wp"),
        box("om", "Old Mail"),
        box("tr", "Trash", role="trash"),
    ]
}
PATH = mailbox_paths(TREE.values())
ALL = set(PATH.values())
TOP = {p for p in ALL if "/" not in p}


def selected(*patterns: str) -> set[str]:
    return {PATH[m] for m in Selection.parse(patterns).select(TREE)}


def test_paths_name_the_inbox_INBOX_whatever_the_server_calls_it() -> None:
    assert PATH[MailboxId("in")] == "INBOX"
    assert PATH[MailboxId("rc")] == "INBOX/Receipts"
    assert PATH[MailboxId("wa")] == "Work/Projects/Alpha"


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        # * crosses levels, % stays within one (mbsync.1 "Patterns")
        (("*",), ALL),
        (("%",), TOP),
        (
            ("%/%",),
            {"INBOX/Receipts", "Archive/2023", "Archive/2024", "Notes/Sub", "Work/Projects"},
        ),
        (("Work/*",), {"Work/Projects", "Work/Projects/Alpha"}),
        (("Work*",), {"Work", "Work/Projects", "Work/Projects/Alpha"}),
        (("INBOX", "Work/%"), {"INBOX", "Work/Projects"}),
        # ! excludes; the last pattern that matches decides
        (("*", "!role:junk"), ALL - {"Junk"}),
        (("*", "!Archive*"), ALL - {"Archive", "Archive/2023", "Archive/2024"}),
        (("Work", "Work/*", "!Work/Projects/Alpha"), {"Work", "Work/Projects"}),
        (("!Work/Projects/Alpha", "Work/*"), ALL),
        (("*", "!*"), set()),
        (("!*", "INBOX"), {"INBOX"}),
        # a list that starts with ! starts from everything (mbsync: nothing)
        (("!role:junk",), ALL - {"Junk"}),
        (
            ("!role:xnotes", "!role:xnotes/*", "!role:snoozed"),
            ALL - {"Notes", "Notes/Sub", "Snoozed"},
        ),
        # roles; what follows the role's name is matched below its mailbox
        (("role:archive/*",), {"Archive/2023", "Archive/2024"}),
        (("role:ARCHIVE", "role:inbox/*"), {"Archive", "INBOX/Receipts"}),
        (("role:nosuch",), set()),
        (("role:junk*",), {"Junk"}),
        # INBOX in any case, every other name case-sensitive
        (("inbox",), {"INBOX"}),
        (("Inbox/*",), {"INBOX/Receipts"}),
        (("work",), set()),
        # a name with a space (quoted in the config file)
        (("Old Mail",), {"Old Mail"}),
        # literal characters that mean something in a regex
        (("Old.Mail", "Work/Projects/Alph?"), set()),
    ],
)
def test_patterns(patterns: tuple[str, ...], expected: set[str]) -> None:
    assert selected(*patterns) == expected


@pytest.mark.parametrize("patterns", [(), ("!",), ("role:",), ("!role:",), ("",)])
def test_bad_patterns_are_refused(patterns: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        Selection.parse(patterns)


def test_a_parent_cycle_has_no_path() -> None:
    boxes = [box("a", "A", "b"), box("b", "B", "a"), box("c", "C")]
    assert mailbox_paths(boxes) == {MailboxId("c"): "C"}


_ACCOUNT = "[account a]\nsession_url = http://h/\nusername = u\npassword = p\nmaildir = /m\n"


def test_config_folders_key_per_account_and_global_default() -> None:
    assert parse(_ACCOUNT).accounts[0].folders == ("*",)
    c = parse(_ACCOUNT + 'folders = INBOX "Old Mail/*" !role:junk\n')
    assert c.accounts[0].folders == ("INBOX", "Old Mail/*", "!role:junk")
    c = parse(
        "[jmapsync]\nfolders = * !role:xnotes\n"
        + _ACCOUNT
        + "[account b]\nsession_url = http://h/\nusername = u\npassword = p\nmaildir = /n\n"
        + "folders = INBOX\n"
    )
    assert [a.folders for a in c.accounts] == [("*", "!role:xnotes"), ("INBOX",)]


@pytest.mark.parametrize(
    "line", ["folders =\n", "folders = !\n", "folders = role:\n", 'folders = "INBOX\n']
)
def test_config_bad_folders(line: str) -> None:
    with pytest.raises(ConfigError, match="folders"):
        parse(_ACCOUNT + line)


# -- the pure decisions with a selection -------------------------------------------

IN, AR, NT, TR = (MailboxId(m) for m in ("in", "ar", "nt", "tr"))
FOLDER_OF = {IN: "INBOX", AR: "Archive", NT: "Notes", TR: "Trash"}


def email(*boxes: MailboxId, flags: str = "S") -> Email:
    return Email(EmailId("M1"), BlobId("G1"), frozenset(boxes), keywords_from_flags(flags), 10)


def file(folder: str, flags: str = "S") -> LocalFile:
    return LocalFile(folder, "cur", f"M1.jmapsync:2,{flags}", "M1", flags)


def test_pull_plan_mirrors_an_email_only_in_its_included_mailboxes() -> None:
    e = email(IN, NT)
    plan = plan_files({e.id: e}, {IN: "INBOX"}, [], excluded={NT})
    assert [d.dst for d in plan.downloads] == ["INBOX/cur/M1.jmapsync:2,S"]
    assert not plan.downloads[0].links


def test_pull_plan_removes_the_files_of_an_email_only_in_excluded_mailboxes() -> None:
    e = email(NT)
    plan = plan_files({e.id: e}, {IN: "INBOX"}, [file("Notes")], excluded={NT})
    assert [r.path for r in plan.removes] == ["Notes/cur/M1.jmapsync:2,S"]


def test_pull_plan_still_leaves_an_unmappable_mailbox_alone() -> None:
    e = email(IN, MailboxId("zz"))
    plan = plan_files({e.id: e}, {IN: "INBOX"}, [file("INBOX")], excluded={NT})
    assert plan.empty and plan.final == {"INBOX/cur/M1.jmapsync:2,S": "M1"}


def push(
    base: Email, files: list[LocalFile], remote: Email | None, ignore: set[MailboxId]
) -> list[object]:
    p = plan_push(
        {base.id: base},
        {} if remote is None else {remote.id: remote},
        {"M1": files} if files else {},
        FOLDER_OF,
        TR,
        ignore,
    )
    return [*p.updates, *p.destroy, *p.reimports, *p.refused]


def test_excluded_membership_is_never_written_nor_read() -> None:
    # In INBOX and the excluded Notes; no file in Notes: nothing to send.
    assert push(email(IN, NT), [file("INBOX")], email(IN, NT), {NT}) == []


def test_flag_change_of_an_email_also_in_an_excluded_mailbox_is_sent() -> None:
    [u] = push(email(IN, NT), [file("INBOX", "FS")], email(IN, NT), {NT})
    assert u == Update("M1", keywords=(("$flagged", True),))


def test_move_within_the_mirror_keeps_the_excluded_membership() -> None:
    [u] = push(email(IN, NT), [file("Archive")], email(IN, NT), {NT})
    assert isinstance(u, Update) and (u.join, u.leave) == ({AR}, {IN})


def test_delete_of_an_email_still_in_an_excluded_mailbox_leaves_ours_without_trash() -> None:
    [u] = push(email(IN, NT), [], email(IN, NT), {NT})
    assert u == Update("M1", leave=frozenset({IN}), reason="delete")


def test_delete_when_trash_is_excluded_still_moves_to_trash() -> None:
    [u] = push(email(IN), [], email(IN), {TR})
    assert isinstance(u, Update) and (u.join, u.leave, u.reason) == ({TR}, {IN}, "trash")


def test_move_into_an_excluded_folder_is_refused() -> None:
    assert push(email(IN), [file("Notes")], email(IN), {NT}) == [Refusal("M1", True, ("Notes",))]


def test_copy_into_an_excluded_folder_is_refused_too() -> None:
    assert push(email(IN), [file("INBOX"), file("Notes")], email(IN), {NT}) == [
        Refusal("M1", True, ("Notes",))
    ]


def test_move_out_of_an_excluded_folder_is_refused() -> None:
    assert push(email(NT), [file("INBOX")], email(NT), {NT}) == [Refusal("M1", False, ("Notes",))]


def test_leftover_file_in_a_deselected_folder_says_nothing() -> None:
    # Notes was mirrored, now is not: its old file is no move and no delete.
    assert push(email(IN, NT), [file("INBOX"), file("Notes")], email(IN, NT), {NT}) == []
    assert push(email(NT), [file("Notes")], email(NT), {NT}) == []


def test_newly_selected_mailbox_without_files_is_no_delete() -> None:
    # Archive was excluded until now (ignored this pass): its missing files
    # are not local deletes; the pull downloads them.
    assert push(email(IN, AR), [file("INBOX")], email(IN, AR), {AR}) == []
    assert push(email(AR), [], email(AR), {AR}) == []


def test_remote_move_into_an_excluded_mailbox_beats_a_local_change() -> None:
    # The server moved it to Notes (excluded) while the user moved it here.
    assert push(email(IN), [file("Archive")], email(NT), {NT}) == []


def test_emptied_mailbox_check_counts_mirrored_mailboxes_only() -> None:
    records = {EmailId(f"M{i}"): email(IN, NT) for i in range(EMPTIED_MIN)}
    changed = {e: Email(e, BlobId("G"), frozenset({IN}), frozenset(), 1) for e in records}
    assert left_by_mailbox(records, changed, [])[NT] == EMPTIED_MIN
    assert NT not in left_by_mailbox(records, changed, [], only={IN})


def test_deselection_guard() -> None:
    held = {"Archive": EMPTIED_MIN, "Notes": 2, "Work": 3}
    assert deselected(held, ["Notes", "Work"], max_deletes=100) is None
    why = deselected(held, ["Archive", "Notes"], max_deletes=100)
    assert why is not None and "'Archive' (10)" in why
    assert deselected(held, ["Notes", "Work"], max_deletes=4) is not None
    assert deselected(held, ["Gone"], max_deletes=0) is None
