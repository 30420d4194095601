"""The pull plan as case tables, plus a property: plan, apply, plan again -> nothing to do."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmapsync.jmap.types import BlobId, Email, EmailId, MailboxId
from jmapsync.maildir.files import LocalFile, email_id_of, split_rel
from jmapsync.maildir.flags import parse_name
from jmapsync.sync.plan import (
    Download,
    FilePlan,
    Link,
    Remove,
    Rename,
    plan_files,
    plan_folders,
)

INBOX, WORK, ARCH = MailboxId("mbInbox"), MailboxId("mbWork"), MailboxId("mbArch")
FOLDERS = {INBOX: "INBOX", WORK: "Work", ARCH: "Archive"}


def email(eid: str, boxes: set[MailboxId], keywords: set[str] = frozenset()) -> Email:  # type: ignore[assignment]
    return Email(
        EmailId(eid),
        BlobId("G" + eid),
        frozenset(boxes),
        frozenset(keywords),
        100,
    )


def local(rel: str, inode: int = 0) -> LocalFile:
    folder, sub, name = split_rel(rel)
    parsed = parse_name(name)
    return LocalFile(folder, sub, name, email_id_of(parsed.base), parsed.flags, inode)  # type: ignore[arg-type]


CASES = [
    pytest.param(
        [email("M1", {INBOX})],
        [],
        FilePlan(downloads=[Download("M1", "GM1", 100, "INBOX/new/M1.jmapsync")]),
        id="new unseen email is downloaded into new/ without info",
    ),
    pytest.param(
        [email("M1", {INBOX}, {"$seen", "$flagged"})],
        [],
        FilePlan(downloads=[Download("M1", "GM1", 100, "INBOX/cur/M1.jmapsync:2,FS")]),
        id="seen email goes to cur/ with sorted flags",
    ),
    pytest.param(
        [email("M1", {INBOX, WORK, ARCH}, {"$seen"})],
        [],
        FilePlan(
            downloads=[
                Download(
                    "M1",
                    "GM1",
                    100,
                    "Archive/cur/M1.jmapsync:2,S",
                    ("INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S"),
                )
            ]
        ),
        id="email in three mailboxes: one download, two links",
    ),
    pytest.param(
        [email("M1", {INBOX}, {"$seen"})],
        ["INBOX/cur/M1.jmapsync:2,S"],
        FilePlan(),
        id="nothing changed: nothing to do",
    ),
    pytest.param(
        [email("M1", {INBOX}, {"$seen", "$answered"})],
        ["INBOX/cur/M1.jmapsync:2,S"],
        FilePlan(
            renames=[
                Rename("INBOX/cur/M1.jmapsync:2,S", "INBOX/cur/M1.jmapsync:2,RS", "M1", "flags")
            ]
        ),
        id="keyword change is a rename",
    ),
    pytest.param(
        [email("M1", {INBOX}, {"$seen"})],
        ["INBOX/new/M1.jmapsync"],
        FilePlan(
            renames=[Rename("INBOX/new/M1.jmapsync", "INBOX/cur/M1.jmapsync:2,S", "M1", "flags")]
        ),
        id="seen on the server: new/ -> cur/ with S",
    ),
    pytest.param(
        [email("M1", {INBOX})],
        ["INBOX/cur/M1.jmapsync:2,"],
        FilePlan(),
        id="unseen file already in cur/ (mutt's 'old') stays there",
    ),
    pytest.param(
        [email("M1", {INBOX}, {"$seen"})],
        ["INBOX/cur/M1.jmapsync:2,Sa"],
        FilePlan(),
        id="non-standard letters on disk are not a difference",
    ),
    pytest.param(
        [email("M1", {INBOX}, {"$seen", "$flagged"})],
        ["INBOX/cur/M1.jmapsync:2,STa"],
        FilePlan(
            renames=[
                Rename("INBOX/cur/M1.jmapsync:2,STa", "INBOX/cur/M1.jmapsync:2,FSa", "M1", "flags")
            ]
        ),
        id="a flag rename keeps keyword letters, drops T (the mirror holds the server's view)",
    ),
    pytest.param(
        [email("M1", {WORK}, {"$seen"})],
        ["INBOX/cur/M1.jmapsync:2,S"],
        FilePlan(
            renames=[Rename("INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S", "M1", "move")]
        ),
        id="server move is a rename, not a download",
    ),
    pytest.param(
        [email("M1", {INBOX, WORK}, {"$seen"})],
        ["INBOX/cur/M1.jmapsync:2,S"],
        FilePlan(links=[Link("INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S", "M1")]),
        id="added to a second mailbox: hard link",
    ),
    pytest.param(
        [email("M1", {WORK})],
        ["INBOX/cur/M1.jmapsync:2,S", "Work/new/M1.jmapsync"],
        FilePlan(removes=[Remove("INBOX/cur/M1.jmapsync:2,S", "M1", "left-mailbox")]),
        id="left one of two mailboxes: that file goes",
    ),
    pytest.param(
        [],
        ["INBOX/cur/M1.jmapsync:2,S", "Work/cur/M1.jmapsync:2,S"],
        FilePlan(
            removes=[
                Remove("INBOX/cur/M1.jmapsync:2,S", "M1", "destroyed"),
                Remove("Work/cur/M1.jmapsync:2,S", "M1", "destroyed"),
            ]
        ),
        id="destroyed on the server: every copy goes",
    ),
    pytest.param(
        [email("M1", {INBOX}, {"$seen"})],
        ["INBOX/cur/M1.jmapsync:2,S", "INBOX/new/M1.jmapsync"],
        FilePlan(removes=[Remove("INBOX/new/M1.jmapsync", "M1", "duplicate")]),
        id="a duplicate (crash leftover) is removed, the exact one kept",
    ),
    pytest.param(
        [email("M1", {MailboxId("unknown")})],
        ["INBOX/cur/M1.jmapsync:2,S"],
        FilePlan(),
        id="email in an unmapped mailbox is left alone",
    ),
    pytest.param(
        [],
        ["INBOX/cur/1700000000.123_1.host:2,S", "INBOX/new/mutt-file"],
        FilePlan(),
        id="files not written by jmapsync are never touched",
    ),
]


@pytest.mark.parametrize(("emails", "files", "expected"), CASES)
def test_plan_case(emails: list[Email], files: list[str], expected: FilePlan) -> None:
    plan = plan_files({e.id: e for e in emails}, FOLDERS, [local(f) for f in files])
    assert plan.renames == expected.renames
    assert plan.links == expected.links
    assert plan.downloads == expected.downloads
    assert plan.removes == expected.removes


def test_foreign_files_are_reported() -> None:
    plan = plan_files({}, FOLDERS, [local("INBOX/new/mutt-file")])
    assert [f.name for f in plan.foreign] == ["mutt-file"]


def test_final_lists_every_owned_file_after_the_plan() -> None:
    emails = {EmailId("M1"): email("M1", {INBOX, WORK}, {"$seen"})}
    plan = plan_files(emails, FOLDERS, [local("Archive/cur/M1.jmapsync:2,")])
    assert dict(plan.owned()) == {
        "INBOX/cur/M1.jmapsync:2,S": "M1",
        "Work/cur/M1.jmapsync:2,S": "M1",
    }


def test_folder_rename_is_a_move_and_old_paths_are_removal_candidates() -> None:
    old = {INBOX: "INBOX", WORK: "Work", MailboxId("gone"): "Old"}
    new = {INBOX: "INBOX", WORK: "Job"}
    fp = plan_folders(old, new)
    assert fp.moves == (("Work", "Job"),)
    assert set(fp.remove_if_empty) == {"Work", "Old"}
    assert set(fp.create) == {"INBOX", "Job"}


# -- property: the plan converges -----------------------------------------------------

KEYWORDS = ["$seen", "$flagged", "$answered", "$draft", "$forwarded", "custom"]
BOXES = list(FOLDERS)

emails_st = st.dictionaries(
    st.sampled_from([f"M{i}" for i in range(6)]),
    st.tuples(
        st.sets(st.sampled_from(BOXES), min_size=1, max_size=3),
        st.sets(st.sampled_from(KEYWORDS)),
    ),
    max_size=6,
)
files_st = st.lists(
    st.tuples(
        st.sampled_from([f"M{i}" for i in range(8)] + [None]),
        st.sampled_from(["INBOX", "Work", "Archive", "Stale"]),
        st.sampled_from(["cur", "new"]),
        st.sampled_from(["", "S", "FS", "RS", "Ta", "D"]),
    ),
    max_size=10,
)


def apply(plan: FilePlan, disk: dict[str, str | None]) -> None:
    """Carry a plan out on a dict standing for the disk (relpath -> Email id)."""
    for r in plan.renames:
        assert r.src in disk and r.dst not in disk, r
        disk[r.dst] = disk.pop(r.src)
    for lk in plan.links:
        assert lk.src in disk and lk.dst not in disk, lk
        disk[lk.dst] = disk[lk.src]
    for d in plan.downloads:
        for dst in (d.dst, *d.links):
            assert dst not in disk, dst
            disk[dst] = d.email_id
    for rm in plan.removes:
        assert rm.path in disk, rm
        del disk[rm.path]


def scan(disk: dict[str, str | None]) -> list[LocalFile]:
    return [local(rel) for rel in sorted(disk)]


@settings(max_examples=300, deadline=None)
@given(emails_st, files_st)
def test_plan_then_apply_then_plan_is_empty(
    spec: dict[str, tuple[set[MailboxId], set[str]]],
    files: list[tuple[str | None, str, str, str]],
) -> None:
    """Whatever the disk holds, one plan makes it mirror the server exactly."""
    emails = {EmailId(e): email(e, boxes, kws) for e, (boxes, kws) in spec.items()}
    disk: dict[str, str | None] = {}
    for n, (eid, folder, sub, flags) in enumerate(files):
        base = f"{eid}.jmapsync" if eid else f"foreign{n}"
        name = base if (sub == "new" and not flags) else f"{base}:2,{flags}"
        disk.setdefault(f"{folder}/{sub}/{name}", eid)

    plan = plan_files(emails, FOLDERS, scan(disk))
    apply(plan, disk)
    assert dict(plan.owned()) == {rel: eid for rel, eid in disk.items() if eid}

    again = plan_files(emails, FOLDERS, scan(disk))
    assert again.empty, again.counts()
    # Every Email is in exactly the folders of its mailboxes, once each.
    for e in emails.values():
        where = sorted(split_rel(rel)[0] for rel, eid in disk.items() if eid == e.id)
        assert where == sorted(FOLDERS[m] for m in e.mailbox_ids)
    # Foreign files survive untouched.
    assert sum(1 for v in disk.values() if v is None) == sum(1 for f in files if f[0] is None)
    # No file of a destroyed Email remains.
    assert {v for v in disk.values() if v} <= set(emails)
