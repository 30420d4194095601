"""The two-way decisions (sync/twoway.py) as a case table, and the guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from jmapsync.jmap.types import BlobId, Email, EmailId, MailboxId
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.flags import keywords_from_flags
from jmapsync.sync.guards import deletion_guard, missing_locally
from jmapsync.sync.twoway import PushPlan, Update, plan_push

IN, AR, WK, TR = (MailboxId(m) for m in ("in", "ar", "wk", "tr"))
FOLDER_OF = {IN: "INBOX", AR: "Archive", WK: "Work", TR: "Trash"}
FOLDER = {"I": IN, "A": AR, "W": WK, "T": TR}


def email(boxes: str, flags: str = "S") -> Email:
    return Email(
        EmailId("M1"),
        BlobId("G1"),
        frozenset(FOLDER[b] for b in boxes),
        frozenset(keywords_from_flags(flags)),
        10,
    )


def files(spec: str) -> list[LocalFile]:
    """ "I:S A:FS" -> a file in INBOX with S, one in Archive with FS."""
    out = []
    for item in spec.split():
        box, flags = item.split(":")
        folder = FOLDER_OF[FOLDER[box]]
        out.append(LocalFile(folder, "cur", f"M1.jmapsync:2,{flags}", "M1", flags))
    return out


def plan(base: str, local: str, remote: str | None, rflags: str = "S") -> PushPlan:
    return plan_push(
        {EmailId("M1"): email(base)},
        {} if remote is None else {EmailId("M1"): email(remote, rflags)},
        {"M1": files(local)} if local else {},
        FOLDER_OF,
        TR,
    )


def test_nothing_changed_nothing_sent() -> None:
    assert plan("I", "I:S", "I").empty


def test_local_move_is_a_mailbox_patch() -> None:
    p = plan("I", "A:S", "I")
    assert p.updates == [Update("M1", frozenset({AR}), frozenset({IN}), (), "move")]
    assert p.updates[0].as_jmap() == {"mailboxIds/ar": True, "mailboxIds/in": None}
    assert p.deletions == 0


def test_local_copy_joins_a_second_mailbox() -> None:
    [u] = plan("I", "I:S A:S", "I").updates
    assert (u.join, u.leave) == ({AR}, frozenset())


def test_move_with_flag_change_is_one_update() -> None:
    [u] = plan("I", "A:FS", "I").updates
    assert u.as_jmap() == {"mailboxIds/ar": True, "mailboxIds/in": None, "keywords/$flagged": True}


def test_delete_moves_to_trash() -> None:
    p = plan("I", "", "I")
    assert p.updates == [Update("M1", frozenset({TR}), frozenset({IN}), (), "trash")]
    assert p.deletions == 1 and p.deleted_in == {"INBOX": 1}


def test_trashed_flag_is_a_delete() -> None:
    assert plan("I", "I:ST", "I").updates[0].reason == "trash"


def test_delete_in_trash_destroys() -> None:
    p = plan("T", "", "T")
    assert p.destroy == ["M1"] and not p.updates


def test_delete_from_one_of_two_mailboxes_leaves_only_that_one() -> None:
    [u] = plan("IA", "I:S", "IA").updates
    assert (u.join, u.leave, u.reason) == (frozenset(), {AR}, "delete")


def test_concurrent_moves_settle_on_the_remote_one() -> None:
    p = plan("I", "A:S", "W")
    assert p.empty


def test_delete_here_and_move_or_flag_there_keeps_the_message() -> None:
    assert plan("I", "", "W").kept and plan("I", "", "W").empty
    assert plan("I", "", "I", rflags="FS").kept


def test_delete_there_and_change_here_imports_again() -> None:
    [r] = plan("I", "I:FS", None).reimports
    assert r.mailbox_ids == {IN} and "$flagged" in r.keywords
    assert plan("I", "A:S", None).reimports  # moved here, destroyed there
    assert plan("I", "I:S", None).empty  # unchanged here: the pull removes the file


def test_unmapped_folder_or_mailbox_is_left_alone() -> None:
    stray = LocalFile("Elsewhere", "cur", "M1.jmapsync:2,S", "M1", "S")
    p = plan_push(
        {EmailId("M1"): email("I")}, {EmailId("M1"): email("I")}, {"M1": [stray]}, FOLDER_OF, TR
    )
    assert p.empty  # not a delete from INBOX: we cannot tell


def test_no_trash_mailbox_refuses_the_delete() -> None:
    p = plan_push({EmailId("M1"): email("I")}, {EmailId("M1"): email("I")}, {}, FOLDER_OF, None)
    assert p.empty and p.kept


def test_guard_counts_and_thresholds() -> None:
    p = PushPlan(updates=[Update(f"M{i}", reason="trash") for i in range(5)])
    p.deleted_in.update({"INBOX": 5})
    assert deletion_guard(p, {"INBOX": 50}, max_deletes=10) == []
    assert "more than max_deletes = 4" in deletion_guard(p, {"INBOX": 50}, max_deletes=4)[0]
    many = PushPlan(updates=[Update(f"M{i}", reason="trash") for i in range(12)])
    many.deleted_in.update({"INBOX": 12})
    assert "emptied" in deletion_guard(many, {"INBOX": 12}, max_deletes=100)[0]
    assert deletion_guard(many, {"INBOX": 13}, max_deletes=100) == []  # one left
    root = Path("/mail")
    missing = missing_locally({"Work": 3}, ["Work"], root_missing=False, root=root)
    assert missing is not None and "vanished with 3 messages" in missing
    assert missing_locally({"Work": 0}, ["Work"], root_missing=False, root=root) is None
    missing = missing_locally({}, [], root_missing=True, root=root)
    assert missing is not None and "root" in missing


@pytest.mark.parametrize("moves", [0, 3])
def test_moves_are_not_deletions(moves: int) -> None:
    p = PushPlan(
        updates=[Update(f"M{i}", join=frozenset({AR}), reason="move") for i in range(moves)]
    )
    assert p.deletions == 0


def test_reimport_takes_the_changed_file_and_every_folder() -> None:
    [r] = plan("IA", "A:S I:FS", None).reimports
    assert r.mailbox_ids == {IN, AR} and "$flagged" in r.keywords
    assert r.file.folder == "INBOX"
