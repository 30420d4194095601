"""`direction = archive` in the pure plan, as a case table: nothing ever
leaves the Maildir; moves become links; keyword changes still rename; and
the books (which kept files the server no longer backs)."""

from __future__ import annotations

import pytest

from jmapsync.jmap.types import BlobId, Email, EmailId, MailboxId
from jmapsync.maildir.files import LocalFile, email_id_of, split_rel
from jmapsync.maildir.flags import parse_name
from jmapsync.sync.archive import kept_pairs
from jmapsync.sync.plan import Download, Link, Remove, Rename, plan_files

INBOX, WORK, ARCH = MailboxId("mbInbox"), MailboxId("mbWork"), MailboxId("mbArch")
FOLDERS = {INBOX: "INBOX", WORK: "Work", ARCH: "Archive"}


def email(eid: str, boxes: set[MailboxId], keywords: frozenset[str] = frozenset()) -> Email:
    return Email(EmailId(eid), BlobId("G" + eid), frozenset(boxes), keywords, 100, 1e9)


def local(rel: str) -> LocalFile:
    folder, sub, name = split_rel(rel)
    parsed = parse_name(name)
    return LocalFile(folder, sub, name, email_id_of(parsed.base), parsed.flags)  # type: ignore[arg-type]


SEEN = frozenset({"$seen"})
CASES = [
    pytest.param(
        [],
        ["INBOX/cur/M1.jmapsync:2,S"],
        ([], [], [], []),
        {"INBOX/cur/M1.jmapsync:2,S"},
        {("M1", "INBOX"): True},
        id="destroyed on the server: the file stays",
    ),
    pytest.param(
        [email("M1", {WORK}, SEEN)],
        ["INBOX/cur/M1.jmapsync:2,S"],
        ([], [Link("INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S", "M1")], [], []),
        {"INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S"},
        {("M1", "INBOX"): False},
        id="moved on the server: a link in the new folder, the old file stays",
    ),
    pytest.param(
        [email("M1", {WORK}, frozenset({"$seen", "$flagged"}))],
        ["INBOX/cur/M1.jmapsync:2,S"],
        (
            [Rename("INBOX/cur/M1.jmapsync:2,S", "INBOX/cur/M1.jmapsync:2,FS", "M1", "flags")],
            [Link("INBOX/cur/M1.jmapsync:2,FS", "Work/cur/M1.jmapsync:2,FS", "M1")],
            [],
            [],
        ),
        {"INBOX/cur/M1.jmapsync:2,FS", "Work/cur/M1.jmapsync:2,FS"},
        {("M1", "INBOX"): False},
        id="moved and flagged: the kept copy is renamed too, the link follows it",
    ),
    pytest.param(
        [email("M1", {INBOX}, frozenset({"$seen", "$flagged"}))],
        ["INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S"],
        (
            [
                Rename("INBOX/cur/M1.jmapsync:2,S", "INBOX/cur/M1.jmapsync:2,FS", "M1", "flags"),
                Rename("Work/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,FS", "M1", "flags"),
            ],
            [],
            [],
            [],
        ),
        {"INBOX/cur/M1.jmapsync:2,FS", "Work/cur/M1.jmapsync:2,FS"},
        {("M1", "Work"): False},
        id="left a mailbox: its copy stays there, keyword changes still rename it",
    ),
    pytest.param(
        [email("M1", {INBOX}, SEEN)],
        ["INBOX/cur/M1.jmapsync:2,S", "INBOX/new/M1.jmapsync"],
        ([], [], [], [Remove("INBOX/new/M1.jmapsync", "M1", "duplicate")]),
        {"INBOX/cur/M1.jmapsync:2,S"},
        {},
        id="a second copy in one folder is still a duplicate: removing it loses nothing",
    ),
    pytest.param(
        [email("M1", {INBOX}, SEEN)],
        [],
        ([], [], [Download("M1", "GM1", 100, "INBOX/cur/M1.jmapsync:2,S", (), 1e9)], []),
        {"INBOX/cur/M1.jmapsync:2,S"},
        {},
        id="new mail is downloaded as in pull, with its arrival time",
    ),
]


@pytest.mark.parametrize(("emails", "files", "actions", "owned", "archived"), CASES)
def test_archive_plan(
    emails: list[Email],
    files: list[str],
    actions: tuple[list[Rename], list[Link], list[Download], list[Remove]],
    owned: set[str],
    archived: dict[tuple[str, str], bool],
) -> None:
    model = {e.id: e for e in emails}
    plan = plan_files(model, FOLDERS, [local(f) for f in files], keep=True)
    assert (plan.renames, plan.links, plan.downloads, plan.removes) == actions
    assert {rel for rel, _ in plan.owned()} == owned
    assert kept_pairs(model, FOLDERS, plan.owned()) == archived


def test_pull_still_removes_what_archive_keeps() -> None:
    """The same situations in pull mode: the files go (the switch guard's reason)."""
    plan = plan_files({}, FOLDERS, [local("INBOX/cur/M1.jmapsync:2,S")])
    assert plan.removes == [Remove("INBOX/cur/M1.jmapsync:2,S", "M1", "destroyed")]
    moved = {EmailId("M1"): email("M1", {WORK}, SEEN)}
    plan = plan_files(moved, FOLDERS, [local("INBOX/cur/M1.jmapsync:2,S")])
    assert plan.renames == [
        Rename("INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S", "M1", "move")
    ]


def test_unmappable_mailbox_is_left_alone_not_archived() -> None:
    unknown = {EmailId("M1"): email("M1", {MailboxId("elsewhere")}, SEEN)}
    plan = plan_files(unknown, FOLDERS, [local("INBOX/cur/M1.jmapsync:2,S")], keep=True)
    assert plan.empty
    assert kept_pairs(unknown, FOLDERS, plan.owned()) == {}
