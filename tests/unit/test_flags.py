"""Keywords <-> Maildir flag letters, and Maildir file names: case tables + properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jmapsync.maildir.flags import (
    FLAG_OF_KEYWORD,
    KEYWORD_OF_FLAG,
    STANDARD_FLAGS,
    MaildirName,
    flags_from_keywords,
    format_name,
    keywords_from_flags,
    merge_flags,
    parse_name,
)

STANDARD_KEYWORDS = sorted(FLAG_OF_KEYWORD)


def test_the_two_tables_are_inverse_and_cover_exactly_dfprs() -> None:
    assert "".join(sorted(KEYWORD_OF_FLAG)) == STANDARD_FLAGS == "DFPRS"
    assert {KEYWORD_OF_FLAG[f]: f for f in KEYWORD_OF_FLAG} == FLAG_OF_KEYWORD


@pytest.mark.parametrize(
    ("keywords", "flags"),
    [
        ([], ""),
        (["$seen"], "S"),
        (["$seen", "$flagged"], "FS"),
        (["$draft", "$flagged", "$forwarded", "$answered", "$seen"], "DFPRS"),
        (["$answered", "$draft"], "DR"),
        (["$Seen", "$FLAGGED"], "FS"),  # keywords are case-insensitive
        (["$seen", "$SEEN"], "S"),  # duplicates after lowercasing
        (["$junk", "$notjunk", "work", "$seen"], "S"),  # no standard letter: ignored
        (["$deleted"], ""),  # not T: JMAP has no expunge mark
        (["seen"], ""),  # without "$" it is a user keyword
    ],
)
def test_flags_from_keywords(keywords: list[str], flags: str) -> None:
    assert flags_from_keywords(keywords) == flags


@pytest.mark.parametrize(
    ("flags", "keywords"),
    [
        ("", set()),
        ("S", {"$seen"}),
        ("FS", {"$flagged", "$seen"}),
        ("DFPRS", {"$draft", "$flagged", "$forwarded", "$answered", "$seen"}),
        ("T", set()),  # trashed stays local
        ("ST", {"$seen"}),
        ("Sab", {"$seen"}),  # Dovecot keyword letters are not ours to map
        ("s", set()),  # lowercase s is a Dovecot keyword slot, not Seen
        ("SS", {"$seen"}),
    ],
)
def test_keywords_from_flags(flags: str, keywords: set[str]) -> None:
    assert keywords_from_flags(flags) == frozenset(keywords)


@pytest.mark.parametrize(
    ("filename", "base", "info", "flags"),
    [
        ("1700000000.M1P2.host:2,FS", "1700000000.M1P2.host", "FS", "FS"),
        ("1700000000.M1P2.host:2,", "1700000000.M1P2.host", "", ""),
        ("1700000000.M1P2.host", "1700000000.M1P2.host", None, ""),  # new/: no info yet
        # Dovecot's size extras sit before the colon, in the unique part.
        ("123.M4P5.h,S=1234,W=1260:2,Sa", "123.M4P5.h,S=1234,W=1260", "Sa", "Sa"),
        # Experimental semantics 1: unknown flags, so the whole name is the base.
        ("123.h:1,whatever", "123.h:1,whatever", None, ""),
        # Split on the LAST ":2,": the unique part may contain one.
        ("odd:2,name:2,S", "odd:2,name", "S", "S"),
        # Flags as found on disk, not re-sorted.
        ("x:2,SF", "x", "SF", "SF"),
    ],
)
def test_parse_name(filename: str, base: str, info: str | None, flags: str) -> None:
    parsed = parse_name(filename)
    assert parsed == MaildirName(base=base, info=info)
    assert parsed.flags == flags


@pytest.mark.parametrize(
    ("base", "flags", "name"),
    [
        ("m1", "", "m1:2,"),
        ("m1", "SF", "m1:2,FS"),
        ("m1", "SSFF", "m1:2,FS"),
        ("m1", "aTS", "m1:2,STa"),  # ASCII order: uppercase before lowercase
        ("m1,S=10", "S", "m1,S=10:2,S"),
    ],
)
def test_format_name_sorts_and_deduplicates(base: str, flags: str, name: str) -> None:
    assert format_name(base, flags) == name


@pytest.mark.parametrize(
    ("base", "flags"),
    [("", "S"), ("a/b", "S"), ("../x", ""), ("nul\x00", ""), ("ok", "S/"), ("ok", "\x00")],
)
def test_format_name_refuses_what_is_not_one_file_name(base: str, flags: str) -> None:
    with pytest.raises(ValueError, match="Maildir file name"):
        format_name(base, flags)


@pytest.mark.parametrize(
    ("on_disk", "wanted", "merged"),
    [
        ("", "", ""),
        ("", "S", "S"),
        ("S", "", ""),  # a standard letter not wanted is dropped
        ("FS", "S", "S"),
        ("S", "FS", "FS"),
        ("T", "S", "ST"),  # trashed survives
        ("ST", "", "T"),
        ("Sab", "RS", "RSab"),  # Dovecot keywords survive
        ("DFPRSTabz", "", "Tabz"),
        ("TT", "SS", "ST"),  # deduplicated
        ("zaT", "FD", "DFTaz"),  # sorted
    ],
)
def test_merge_flags(on_disk: str, wanted: str, merged: str) -> None:
    assert merge_flags(on_disk, wanted) == merged


@pytest.mark.parametrize("wanted", ["T", "Sa", "s"])
def test_merge_flags_refuses_non_standard_wanted_letters(wanted: str) -> None:
    """A caller asking for T would otherwise be ignored without notice."""
    with pytest.raises(ValueError, match="not standard"):
        merge_flags("", wanted)


# -- properties ---------------------------------------------------------------

standard_keyword_sets = st.frozensets(st.sampled_from(STANDARD_KEYWORDS))
# Flags fields as found on disk: standard letters, T, Dovecot letters, oddities.
disk_flags = st.text(alphabet="DFPRSTabcz,2:", max_size=12)
standard_flags = st.text(alphabet=STANDARD_FLAGS, max_size=8)
safe_bases = st.text(min_size=1).filter(lambda s: "/" not in s and "\x00" not in s)


@given(standard_keyword_sets)
def test_keywords_survive_a_trip_through_flags(keywords: frozenset[str]) -> None:
    assert keywords_from_flags(flags_from_keywords(keywords)) == keywords


@given(standard_keyword_sets, st.lists(st.sampled_from(["$junk", "work", "$Seen"])))
def test_flags_from_keywords_is_sorted_standard_and_unique(
    keywords: frozenset[str], extra: list[str]
) -> None:
    flags = flags_from_keywords([*keywords, *extra])
    assert flags == "".join(sorted(set(flags)))
    assert set(flags) <= set(STANDARD_FLAGS)


@given(safe_bases, disk_flags)
def test_format_then_parse_gives_back_base_and_flag_set(base: str, flags: str) -> None:
    parsed = parse_name(format_name(base, flags))
    assert parsed.base == base
    assert parsed.flags == "".join(sorted(set(flags)))


@given(disk_flags, standard_flags)
def test_merge_keeps_every_non_standard_letter_and_takes_standard_from_wanted(
    on_disk: str, wanted: str
) -> None:
    merged = merge_flags(on_disk, wanted)
    assert {c for c in merged if c not in STANDARD_FLAGS} == {
        c for c in on_disk if c not in STANDARD_FLAGS
    }
    assert {c for c in merged if c in STANDARD_FLAGS} == set(wanted)
    assert merged == "".join(sorted(set(merged)))


@given(disk_flags, standard_flags)
def test_merge_is_idempotent_so_a_second_sync_renames_nothing(on_disk: str, wanted: str) -> None:
    merged = merge_flags(on_disk, wanted)
    assert merge_flags(merged, wanted) == merged
