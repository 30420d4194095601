"""The pure parts of `jmapsync restore`, as case tables: modified UTF-7,
folder names, arrival times, mailbox mapping, grouping and decisions."""

from __future__ import annotations

import datetime as dt

import pytest

from jmapsync.jmap.types import Mailbox, MailboxId
from jmapsync.maildir import mutf7
from jmapsync.restore import plan
from jmapsync.restore.arrival import (
    Stamp,
    mtimes_are_copy_times,
    received_times,
    utc_date,
)
from jmapsync.restore.folders import mailbox_names
from jmapsync.restore.source import parse_date, strip_tuid

DAY = 86400.0
T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("wire", "name"),
    [
        ("Reisen &Jwg- &ANw-bersicht", "Reisen ✈ Übersicht"),
        ("&ZeVnLIqe-", "日本語"),
        ("R&-D", "R&D"),
        ("&2D3eAA- emoji", "😀 emoji"),
        ("plain", "plain"),
    ],
)
def test_mutf7_decodes_what_an_imap_server_sends(wire: str, name: str) -> None:
    assert mutf7.decode(wire) == name


@pytest.mark.parametrize(
    "bad",
    [
        "R&D",  # unterminated shift
        "&AGE-",  # "a" encoded: a server never shifts printable ASCII
        "&Jwg",  # no "-"
        "&Jw-",  # not whole UTF-16 units
        "&2D0-",  # a lone surrogate
        "Übersicht",  # 8-bit: not modified UTF-7 at all
        "&Jwh-",  # non-zero fill bits: not the canonical spelling
    ],
)
def test_mutf7_refuses_what_no_server_would_send(bad: str) -> None:
    with pytest.raises(ValueError):
        mutf7.decode(bad)
    assert mutf7.decode_if_encoded(bad) == bad


@pytest.mark.parametrize(
    ("path", "layout", "kind", "names"),
    [
        ("", "verbatim", "foreign", ["INBOX"]),
        ("", "maildir++", "jmapsync", ["INBOX"]),
        ("INBOX", "verbatim", "jmapsync", ["INBOX"]),
        ("Inbox", "verbatim", "foreign", ["INBOX"]),  # IMAP: INBOX is case-insensitive
        ("Inbox", "verbatim", "jmapsync", ["Inbox"]),  # ours: only INBOX is the inbox
        ("Work/Projects", "verbatim", "jmapsync", ["Work", "Projects"]),
        ("a%2Fb", "verbatim", "jmapsync", ["a/b"]),  # jmapsync's escaping reversed
        ("a%2Fb", "verbatim", "foreign", ["a%2Fb"]),  # "%" means nothing to mbsync
        ("100%", "verbatim", "foreign", ["100%"]),
        (".Work.Projects", "maildir++", "foreign", ["Work", "Projects"]),
        ("Work.Projects", "maildir++", "foreign", ["Work", "Projects"]),  # OfflineIMAP
        ("INBOX", "maildir++", "foreign", ["INBOX"]),  # OfflineIMAP's inbox folder
        (".a%2Eb", "maildir++", "jmapsync", ["a.b"]),
        ("Reisen &Jwg- &ANw-bersicht/Kind", "verbatim", "foreign", ["Reisen ✈ Übersicht", "Kind"]),
        (".Reisen &Jwg-", "maildir++", "foreign", ["Reisen ✈"]),
        ("R&D", "verbatim", "foreign", ["R&D"]),
        ("Reisen ✈ Übersicht", "verbatim", "jmapsync", ["Reisen ✈ Übersicht"]),
    ],
)
def test_folder_names(path: str, layout: str, kind: str, names: list[str]) -> None:
    assert mailbox_names(path, layout, kind) == names  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "layout", "kind"),
    [
        ("a%2fb", "verbatim", "jmapsync"),  # lower-case hex: not how jmapsync writes it
        ("Work", "maildir++", "jmapsync"),  # our Maildir++ folders start with "."
        ("..x", "maildir++", "foreign"),  # empty component
        ("a/ /b", "verbatim", "foreign"),
    ],
)
def test_folder_names_refused(path: str, layout: str, kind: str) -> None:
    with pytest.raises(ValueError):
        mailbox_names(path, layout, kind)  # type: ignore[arg-type]


# -- arrival times -------------------------------------------------------------


def test_copied_folder_takes_the_date_headers() -> None:
    """mbsync/cp: every mtime within a minute, Date headers over two years."""
    stamps = [Stamp(T0 + 800 * DAY + i, T0 + i * 7 * DAY) for i in range(100)]
    assert mtimes_are_copy_times(stamps) is True
    times = received_times({"INBOX": stamps})["INBOX"]
    assert times == [s.date for s in stamps]


def test_real_arrival_mtimes_are_kept() -> None:
    """Mail that arrived over months: mtimes a few minutes after each Date."""
    stamps = [Stamp(T0 + i * DAY + 300, T0 + i * DAY) for i in range(30)]
    assert mtimes_are_copy_times(stamps) is False
    assert received_times({"x": stamps})["x"] == [s.mtime for s in stamps]


def test_mail_of_one_day_cannot_be_judged_and_keeps_mtimes() -> None:
    stamps = [Stamp(T0 + 900 * DAY, T0 + i * 60) for i in range(50)]
    assert mtimes_are_copy_times(stamps) is None
    assert received_times({"x": stamps})["x"] == [s.mtime for s in stamps]


def test_undecidable_folder_follows_the_tree() -> None:
    """A folder with one message, copied together with a folder that shows the copy."""
    copy = T0 + 1000 * DAY
    big = [Stamp(copy + i, T0 + i * 10 * DAY) for i in range(20)]
    single = [Stamp(copy + 30, T0 + 3 * DAY)]
    out = received_times({"big": big, "single": single})
    assert out["single"] == [T0 + 3 * DAY]


def test_a_file_without_date_keeps_its_mtime_in_a_copied_folder() -> None:
    stamps = [Stamp(T0 + 800 * DAY + i, T0 + i * 7 * DAY) for i in range(10)]
    stamps.append(Stamp(T0 + 800 * DAY, None))
    assert received_times({"x": stamps})["x"][-1] == T0 + 800 * DAY


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Mon, 01 Jan 2024 00:37:00 +0000", "2024-01-01T00:37:00Z"),
        (b"Mon, 01 Jan 2024 02:37:00 +0200", "2024-01-01T00:37:00Z"),
        (b"Mon, 01 Jan 2024 00:37:00 -0000", "2024-01-01T00:37:00Z"),
        (b"1 Jan 2024 00:37 GMT", "2024-01-01T00:37:00Z"),
    ],
)
def test_parse_date(header: bytes, expected: str) -> None:
    t = parse_date(header)
    assert t is not None
    assert utc_date(t) == expected


@pytest.mark.parametrize("header", [None, b"", b"yesterday", b"Mon, 01 Jan 1900 00:00:00 +0000"])
def test_parse_date_refuses_nonsense(header: bytes | None) -> None:
    assert parse_date(header) is None


# -- mbsync's X-TUID -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"A: 1\r\nX-TUID: 4gBrARJBKFla\r\n\r\nbody\r\n", b"A: 1\r\n\r\nbody\r\n"),
        (b"X-TUID: Ubn+ZZzMP/b6\r\n\r\nbody\r\n", b"\r\nbody\r\n"),
        # not the last header line: not mbsync's, kept
        (
            b"X-TUID: 4gBrARJBKFla\r\nA: 1\r\n\r\nb\r\n",
            b"X-TUID: 4gBrARJBKFla\r\nA: 1\r\n\r\nb\r\n",
        ),
        # in the body: kept
        (b"A: 1\r\n\r\nX-TUID: 4gBrARJBKFla\r\n\r\n", b"A: 1\r\n\r\nX-TUID: 4gBrARJBKFla\r\n\r\n"),
        # another length: not mbsync's
        (b"A: 1\r\nX-TUID: short\r\n\r\nb\r\n", b"A: 1\r\nX-TUID: short\r\n\r\nb\r\n"),
    ],
)
def test_strip_tuid(raw: bytes, expected: bytes) -> None:
    assert strip_tuid(raw) == expected


# -- mailboxes -----------------------------------------------------------------


def _mb(mid: str, name: str, parent: str | None = None, role: str | None = None) -> Mailbox:
    return Mailbox(MailboxId(mid), name, MailboxId(parent) if parent else None, role)


REMOTE = [
    _mb("in", "Inbox", role="inbox"),
    _mb("si", "Sent Items", role="sent"),
    _mb("tr", "Trash", role="trash"),
    _mb("wk", "Work"),
    _mb("rc", "Receipts", "in"),
    _mb("nfc", "Übersicht"),  # NFC on the server
]


def test_folders_map_to_existing_mailboxes_by_name_and_inbox_by_role() -> None:
    p = plan.plan_mailboxes(
        {"INBOX": ["INBOX"], "Work": ["Work"], "INBOX/Receipts": ["INBOX", "Receipts"]}, REMOTE
    )
    assert p.create == []
    assert p.target == {
        "INBOX": ("INBOX",),
        "Work": ("Work",),
        "INBOX/Receipts": ("INBOX", "Receipts"),
    }
    assert p.existing[("INBOX", "Receipts")] == "rc"


def test_special_names_go_to_the_role_when_no_mailbox_has_that_name() -> None:
    p = plan.plan_mailboxes(
        {"Sent": ["Sent"], "Sent/2023": ["Sent", "2023"], "Trash": ["Trash"]}, REMOTE
    )
    assert p.target["Sent"] == ("Sent Items",)
    assert p.by_role == {"Sent": "sent", "Sent/2023": "sent"}
    assert p.target["Sent/2023"] == ("Sent Items", "2023")
    assert p.create == [plan.NewMailbox(("Sent Items", "2023"), "2023", "si")]
    assert p.target["Trash"] == ("Trash",)  # a mailbox of that name: no role needed


def test_a_name_match_beats_the_role() -> None:
    remote = [*REMOTE, _mb("snt", "Sent")]
    p = plan.plan_mailboxes({"Sent": ["Sent"]}, remote)
    assert p.target["Sent"] == ("Sent",)
    assert p.by_role == {}


def test_missing_mailboxes_are_created_parents_first_and_nfd_matches_nfc() -> None:
    nfd = "Übersicht".replace("Ü", "U\u0308")
    p = plan.plan_mailboxes({"A/B/C": ["A", "B", "C"], nfd: [nfd], "Work/X": ["Work", "X"]}, REMOTE)
    assert [n.key for n in p.create] == [("A",), ("A", "B"), ("Work", "X"), ("A", "B", "C")]
    assert p.create[0].parent is None
    assert p.create[1].parent == ("A",)  # a new parent by key
    assert p.create[2].parent == "wk"  # an existing parent by id
    assert p.target[nfd] == ("Übersicht",)


def test_refused_folders_and_an_account_without_inbox() -> None:
    p = plan.plan_mailboxes({"x": "bad name", "INBOX": ["INBOX"]}, [_mb("w", "Work")])
    assert p.refused == {"x": "bad name", "INBOX": "the account has no inbox-role mailbox"}
    assert p.target == {}


# -- messages ------------------------------------------------------------------


def _piece(rel: str, sha: str, folder: str, kws: set[str], t: float) -> plan.Piece:
    return plan.Piece(rel, sha, 100, "m@x", folder, frozenset(kws), t)


def test_equal_contents_are_one_message_in_every_folder() -> None:
    msgs = plan.group(
        [
            _piece("INBOX/cur/a", "s1", "INBOX", {"$seen"}, 20.0),
            _piece("Work/cur/a", "s1", "Work", {"$flagged"}, 10.0),
            _piece("Work/cur/b", "s2", "Work", set(), 5.0),
        ]
    )
    assert len(msgs) == 2
    m = msgs[0]
    assert m.folders == ("INBOX", "Work")
    assert m.keywords == {"$seen", "$flagged"}
    assert m.received_at == 10.0
    assert m.files == ("INBOX/cur/a", "Work/cur/a")


def _decide(journal: dict[str, str | None], listed: list[plan.Listed]) -> plan.Decision:
    msg = plan.Message("s1", 100, "m@x", ("f",), ("Work",), frozenset(), 0.0)
    p = plan.plan_mailboxes({"Work": ["Work"]}, REMOTE)
    return plan.decide(msg, p, journal, {e.id: e for e in listed}, plan.index_by_size(listed))


def test_decide_journal_hit_needs_no_download() -> None:
    listed = [plan.Listed("E1", "B1", ("m@x",), 100)]
    assert _decide({"s1": "E1"}, listed) == plan.Present("E1", "journal")


def test_decide_journal_email_gone_from_the_account_is_checked_again() -> None:
    assert _decide({"s1": "E9"}, []) == plan.Import((("Work",),))


@pytest.mark.parametrize(
    ("listed", "candidates"),
    [
        ([plan.Listed("E1", "B1", ("m@x",), 100)], ["E1"]),
        ([plan.Listed("E1", "B1", ("other@x",), 100)], []),  # another Message-ID
        ([plan.Listed("E1", "B1", ("m@x",), 101)], []),  # another size
        ([plan.Listed("E1", "B1", (), 100)], ["E1"]),  # the server found no Message-ID
    ],
)
def test_decide_candidates_by_size_and_message_id(
    listed: list[plan.Listed], candidates: list[str]
) -> None:
    d = _decide({"s1": None}, listed)
    if candidates:
        assert isinstance(d, plan.Check)
        assert [c.email_id for c in d.candidates] == candidates
    else:
        assert d == plan.Import((("Work",),))


def test_decide_message_whose_folders_have_no_mailbox_is_skipped() -> None:
    msg = plan.Message("s1", 100, None, ("f",), ("x",), frozenset(), 0.0)
    p = plan.plan_mailboxes({"x": "no good"}, REMOTE)
    assert plan.decide(msg, p, {}, {}, {}) == plan.Skip("no good")
