"""Keywords beyond the five flags as Dovecot letters (maildir/keywords.py), and
how the plan and the merge use them: case tables and a round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jmapsync.config import parse
from jmapsync.errors import ConfigError
from jmapsync.jmap.types import Email, EmailId, MailboxId, parse_keyword
from jmapsync.maildir.files import LocalFile
from jmapsync.maildir.keywords import (
    DEFAULT_SERVER_ONLY,
    Letters,
    allocate,
    format_file,
    is_mappable,
    mapped,
    parse_file,
)
from jmapsync.sync.merge import merge_keywords
from jmapsync.sync.plan import plan_files

# -- the file, read as Dovecot reads it (maildir-keywords.c) -------------------


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        ("", {}),
        ("0 $Junk\n1 project-x\n", {0: "$Junk", 1: "project-x"}),
        ("0 $Junk\n1 project-x", {0: "$Junk", 1: "project-x"}),  # no final newline
        ("3 later\n0 first\n", {0: "first", 3: "later"}),  # any order
        ("25 z\n26 too-far\n-1 negative\n", {25: "z"}),  # 0..25 only
        ("nonumber\n", {}),  # no space: skipped (the .customflags header)
        ("x name\n", {0: "name"}),  # atoi("x") == 0, as in Dovecot
        ("2 \n", {}),  # empty name
        ("1 a\n1 b\n", {1: "b"}),  # a later line wins
        # Dovecot splits at the FIRST space: number "" (atoi: 0), name " 4 spaced".
        ("  4 spaced\n", {0: " 4 spaced"}),
    ],
)
def test_parse_file(text: str, slots: dict[int, str]) -> None:
    assert parse_file(text) == slots


def test_format_file_is_what_dovecot_writes() -> None:
    assert format_file({1: "project-x", 0: "$Junk"}) == "0 $Junk\n1 project-x\n"
    with pytest.raises(ValueError):
        format_file({26: "x"})
    with pytest.raises(ValueError):
        format_file({0: "a\nb"})


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("$junk", True),
        ("$NotJunk", True),
        ("$MDNSent", True),
        ("project-x", True),
        ("$seen", False),  # has its letter S
        ("$Forwarded", False),  # has P (Dovecot ignores P; documented)
        ("$hasattachment", False),  # server-only by default
        ("$HasNoAttachment", False),
        ("unknown-3", False),  # Dovecot's placeholder for a lost name
        ("unknown-3??", False),
        ("two words", False),
        ("a]b", False),
        ("", False),
    ],
)
def test_which_keywords_get_letters(name: str, ok: bool) -> None:
    assert is_mappable(name) is ok


def test_mapped_lowercases_and_skips_what_is_not_ours() -> None:
    slots = {0: "$Junk", 1: "$HasAttachment", 2: "project-X", 3: "$junk", 5: "unknown-5"}
    assert mapped(slots) == {0: "$junk", 2: "project-x"}  # 3 repeats 0: the lower wins


@pytest.mark.parametrize(
    ("slots", "needed", "new", "overflow"),
    [
        ({}, ["project-x", "$junk"], {0: "$junk", 1: "project-x"}, []),  # sorted order
        ({0: "$Junk"}, ["$junk"], {0: "$Junk"}, []),  # case-insensitive: kept as written
        ({0: "a", 2: "c"}, ["b", "d"], {0: "a", 1: "b", 2: "c", 3: "d"}, []),  # lowest free
        ({0: "$HasAttachment"}, ["$hasattachment"], {0: "$HasAttachment"}, []),
        ({i: f"k{i:02}" for i in range(25)}, ["y", "x"], None, ["y"]),  # 26 slots only
    ],
)
def test_allocate(
    slots: dict[int, str], needed: list[str], new: dict[int, str] | None, overflow: list[str]
) -> None:
    got, left = allocate(slots, needed)
    if new is None:
        new = {**slots, 25: "x"}
    assert got == new
    assert left == overflow


def test_allocate_never_renumbers() -> None:
    slots = {3: "c", 7: "g"}
    got, _ = allocate(slots, ["new"])
    assert {i: got[i] for i in slots} == slots


# -- letters <-> keywords -------------------------------------------------------

L = Letters({"a": "$junk", "b": "project-x"}, {"a": "$junk", "b": "project-x"})


@pytest.mark.parametrize(
    ("keywords", "letters"),
    [
        (set(), ""),
        ({"$seen"}, "S"),
        ({"$seen", "$junk"}, "Sa"),
        ({"project-x", "$flagged", "$junk"}, "Fab"),
        ({"$hasattachment", "project-y"}, ""),  # no letter: server-only here
    ],
)
def test_wanted_letters(keywords: set[str], letters: str) -> None:
    assert L.wanted(frozenset(keywords)) == letters


@pytest.mark.parametrize(
    ("flags", "keywords"),
    [
        ("", set()),
        ("Sa", {"$seen", "$junk"}),
        ("FTabz", {"$flagged", "$junk", "project-x"}),  # T and z are not ours
    ],
)
def test_keywords_in(flags: str, keywords: set[str]) -> None:
    assert L.keywords_in(flags) == keywords


keyword = st.from_regex(r"[a-z$][a-z0-9-]{0,12}", fullmatch=True).filter(is_mappable)


@given(st.lists(keyword, unique=True, max_size=30), st.data())
def test_round_trip_keywords_letters_keywords(names: list[str], data: st.DataObject) -> None:
    """Keywords -> a folder's slots -> letters on a file -> keywords again,
    through the file's text as Dovecot would read it."""
    slots, overflow = allocate({}, names)
    assert len(slots) == min(26, len(names)) and len(overflow) == max(0, len(names) - 26)
    letters = Letters.of(mapped(parse_file(format_file(slots))))
    lettered = sorted(letters.letter_of)
    chosen = (
        frozenset(data.draw(st.lists(st.sampled_from(lettered), unique=True)))
        if lettered
        else frozenset()
    )
    flags = letters.wanted(chosen | {"$seen"})
    assert letters.keywords_in(flags) == chosen | {"$seen"}
    assert {parse_keyword(k) for k in chosen} == set(chosen)


# -- the plan: which letters a rename keeps -------------------------------------

A, B = MailboxId("mA"), MailboxId("mB")
FOLDER_OF = {A: "INBOX", B: "Archive"}


def email(keywords: set[str], *boxes: MailboxId) -> Email:
    return Email(EmailId("E1"), "B1", frozenset(boxes or (A,)), frozenset(keywords), 10)


def lf(rel: str) -> LocalFile:
    folder, sub, name = rel.split("/")
    flags = name.split(":2,")[1] if ":2," in name else ""
    return LocalFile(folder, sub, name, "E1", flags)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keywords", "on_disk", "renamed_to"),
    [
        ({"$seen", "$junk"}, "INBOX/cur/E1.jmapsync:2,S", "INBOX/cur/E1.jmapsync:2,Sa"),
        ({"$seen"}, "INBOX/cur/E1.jmapsync:2,Sa", "INBOX/cur/E1.jmapsync:2,S"),  # server cleared it
        ({"$seen"}, "INBOX/cur/E1.jmapsync:2,Sz", None),  # z is not ours: kept
        ({"$seen", "project-x"}, "INBOX/cur/E1.jmapsync:2,Saz", "INBOX/cur/E1.jmapsync:2,Sbz"),
        ({"$junk"}, "INBOX/new/E1.jmapsync", "INBOX/new/E1.jmapsync:2,a"),
    ],
)
def test_plan_decides_mapped_letters_and_keeps_the_others(
    keywords: set[str], on_disk: str, renamed_to: str | None
) -> None:
    plan = plan_files({EmailId("E1"): email(keywords)}, FOLDER_OF, [lf(on_disk)], {"INBOX": L})
    assert [r.dst for r in plan.renames] == ([renamed_to] if renamed_to else [])


def test_letters_are_per_folder() -> None:
    """One Email in two folders: each file gets its folder's letter."""
    other = Letters({"c": "$junk"}, {"c": "$junk"})
    e = email({"$seen", "$junk"}, A, B)
    plan = plan_files({EmailId("E1"): e}, FOLDER_OF, [], {"INBOX": L, "Archive": other})
    [d] = plan.downloads
    assert {d.dst, *d.links} == {"Archive/cur/E1.jmapsync:2,Sc", "INBOX/cur/E1.jmapsync:2,Sa"}


# -- the merge: when a letter speaks --------------------------------------------


@pytest.mark.parametrize(
    ("base", "remote", "files", "letters", "patch"),
    [
        # a letter added locally sets the keyword; removed, clears it
        ({"$seen"}, {"$seen"}, ["INBOX/cur/E1.jmapsync:2,Sa"], L, (("$junk", True),)),
        ({"$junk"}, {"$junk"}, ["INBOX/cur/E1.jmapsync:2,"], L, (("$junk", False),)),
        # the server changed it meanwhile: its value stays (comes down by rename)
        ({"$seen"}, {"$seen", "$junk"}, ["INBOX/cur/E1.jmapsync:2,S"], L, ()),
        # a letter new since the last pass: only its presence speaks
        ({"$junk"}, {"$junk"}, ["INBOX/cur/E1.jmapsync:2,"], Letters({"a": "$junk"}), ()),
        (
            {"$seen"},
            {"$seen"},
            ["INBOX/cur/E1.jmapsync:2,Sa"],
            Letters({"a": "$junk"}),
            (("$junk", True),),
        ),
        # a letter that named another keyword when the files were written: silent
        (
            {"$seen"},
            {"$seen"},
            ["INBOX/cur/E1.jmapsync:2,Sa"],
            Letters({"a": "$junk"}, {"a": "old"}),
            (),
        ),
        # a letter not ours: nothing
        ({"$seen"}, {"$seen"}, ["INBOX/cur/E1.jmapsync:2,Sz"], L, ()),
        # a file moved in from another folder: its letters are that folder's
        ({"$seen"}, {"$seen"}, ["Archive/cur/E1.jmapsync:2,Sa"], L, ()),
    ],
)
def test_merge_of_letters(
    base: set[str],
    remote: set[str],
    files: list[str],
    letters: Letters,
    patch: tuple[tuple[str, bool], ...],
) -> None:
    eid = EmailId("E1")
    got = merge_keywords(
        {eid: email(base)},
        {eid: email(remote)},
        {"E1": [lf(f) for f in files]},
        {"INBOX": letters, "Archive": letters},
        FOLDER_OF,
    )
    assert (got[0].changes if got else ()) == patch


# -- config ---------------------------------------------------------------------

_ACCOUNT = "[account a]\nsession_url = http://h/\nusername = u\npassword = p\nmaildir = /m\n"


def test_server_only_keywords_config() -> None:
    assert parse(_ACCOUNT).accounts[0].server_only_keywords == DEFAULT_SERVER_ONLY
    c = parse(_ACCOUNT + "server_only_keywords = $HasAttachment $IsMailingList\n")
    assert c.accounts[0].server_only_keywords == {"$hasattachment", "$ismailinglist"}
    assert parse(_ACCOUNT + "server_only_keywords =\n").accounts[0].server_only_keywords == set()
    with pytest.raises(ConfigError):
        parse(_ACCOUNT + "server_only_keywords = a(b\n")
