"""The per-keyword three-way merge of flags as a case table."""

from __future__ import annotations

import pytest

from jmapsync.jmap.types import BlobId, Email, EmailId, MailboxId
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.flags import keywords_from_flags
from jmapsync.sync.merge import KeywordPatch, apply_patch, merge_keywords


def email(flags: str, extra: tuple[str, ...] = ()) -> Email:
    kws = frozenset(keywords_from_flags(flags)) | frozenset(extra)
    return Email(EmailId("M1"), BlobId("G1"), frozenset({MailboxId("mb")}), kws, 10)


def file(flags: str, folder: str = "INBOX") -> LocalFile:
    sub = "cur" if "S" in flags else "new"
    return LocalFile(folder, sub, f"M1.jmapsync:2,{flags}", "M1", flags)


@pytest.mark.parametrize(
    ("base", "local", "remote", "expected"),
    [
        ("S", ["FS"], "S", [("$flagged", True)]),
        ("S", [""], "S", [("$seen", False)]),
        ("S", ["FS"], "RS", [("$flagged", True)]),  # remote's R comes down by rename
        ("S", ["FS"], "FS", []),  # both set F: nothing to send
        ("S", ["S"], "", []),  # only the remote changed
        ("S", [""], "", []),  # both cleared S
        ("FS", ["S"], "FRS", [("$flagged", False)]),
        ("S", ["S", "FS"], "S", [("$flagged", True)]),  # one of two folders' files changed
        (
            "",
            ["DFPRS"],
            "",
            [(k, True) for k in ("$draft", "$flagged", "$forwarded", "$answered", "$seen")],
        ),
    ],
    ids=repr,
)
def test_merge_case(
    base: str, local: list[str], remote: str, expected: list[tuple[str, bool]]
) -> None:
    patches = merge_keywords(
        {EmailId("M1"): email(base)},
        {EmailId("M1"): email(remote)},
        {"M1": [file(f, f"F{i}") for i, f in enumerate(local)]},
    )
    got = sorted(patches[0].changes) if patches else []
    assert got == sorted(expected)


def test_patch_touches_single_keys_and_keeps_server_keywords() -> None:
    patch = KeywordPatch("M1", (("$flagged", True), ("$seen", False)))
    assert patch.as_jmap() == {"keywords/$flagged": True, "keywords/$seen": None}
    e = email("S", ("$hasattachment", "project-x"))
    assert apply_patch(e, patch).keywords == {"$flagged", "$hasattachment", "project-x"}


def test_new_or_destroyed_emails_are_not_flag_changes() -> None:
    assert merge_keywords({}, {EmailId("M1"): email("")}, {"M1": [file("F")]}) == []
    assert merge_keywords({EmailId("M1"): email("")}, {}, {"M1": [file("F")]}) == []
