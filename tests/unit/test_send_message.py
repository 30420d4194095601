"""What `jmapsync send` makes of the message on stdin (send/message.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from jmapsync.errors import MessageError
from jmapsync.send.message import prepare

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)

MUTT = (
    b"Date: Mon, 1 Jan 2026 10:00:00 +0100\n"
    b"From: Alice Example <alice@example.com>\n"
    b"To: Bob <bob@example.org>, carol@example.org\n"
    b"Cc: Dave <dave@example.net>\n"
    b"Bcc: secret@example.net,\n"
    b"\tother-secret@example.net\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
    b"Message-ID: <20260101.abc@example.com>\n"
    b"MIME-Version: 1.0\n"
    b"\n"
    b"Hi Bob,\n"
    b".\n"
    b"a line with a lone CR\r in it\n"
    b"-- \n"
    b"Alice\n"
)


def test_t_takes_to_cc_bcc_and_the_bcc_field_is_gone_with_its_continuation() -> None:
    p = prepare(MUTT, [], from_headers=True, now=NOW)
    assert p.recipients == (
        "bob@example.org",
        "carol@example.org",
        "dave@example.net",
        "secret@example.net",
        "other-secret@example.net",
    )
    assert b"secret" not in p.data
    assert b"Bcc" not in p.data and b"bcc" not in p.data.lower()
    assert p.from_address == "alice@example.com" and p.from_name == "Alice Example"
    assert p.message_id == "20260101.abc@example.com"
    assert p.subject == "Grüße"


def test_crlf_everywhere_body_bytes_kept_nothing_added_when_present() -> None:
    p = prepare(MUTT, [], from_headers=True, now=NOW)
    head, _, body = p.data.partition(b"\r\n\r\n")
    assert body == b"Hi Bob,\r\n.\r\na line with a lone CR\r in it\r\n-- \r\nAlice\r\n"
    assert b"\n" not in p.data.replace(b"\r\n", b"")
    want_head = MUTT.split(b"\n\n")[0].replace(b"\n", b"\r\n")
    want_head = want_head.replace(
        b"Bcc: secret@example.net,\r\n\tother-secret@example.net\r\n", b""
    )
    assert head == want_head  # unchanged fields byte-identical, in order; no Date/Message-ID added


def test_arguments_without_t_are_the_only_recipients() -> None:
    p = prepare(MUTT, ["x@example.org", "X@example.org, y@example.org"], from_headers=False)
    assert p.recipients == ("x@example.org", "y@example.org")  # deduplicated, case-insensitively
    assert b"Bcc" not in p.data  # stripped without -t too: Cyrus would send it on


def test_t_with_arguments_adds_them_as_postfix_does() -> None:
    p = prepare(MUTT, ["extra@example.org"], from_headers=True)
    assert p.recipients[0] == "extra@example.org" and len(p.recipients) == 6


def test_resent_fields_name_the_recipients_of_a_bounce() -> None:
    raw = (
        b"Resent-From: alice@example.com\r\nResent-To: zed@example.org\r\n"
        b"Resent-Bcc: hidden@example.org\r\n" + MUTT.replace(b"\n", b"\r\n")
    )
    p = prepare(raw, [], from_headers=True)
    assert p.recipients == ("zed@example.org", "hidden@example.org")
    assert b"hidden@" not in p.data and b"secret@" not in p.data


def test_missing_message_id_date_and_from_are_added() -> None:
    raw = b"To: bob@example.org\nSubject: x\n\nbody\n"
    p = prepare(raw, [], from_headers=True, envelope_from="me@example.com", full_name="Me", now=NOW)
    assert p.from_address == "me@example.com"
    head = p.data.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[:2] == [b"To: bob@example.org", b"Subject: x"]
    assert head[2] == b"From: Me <me@example.com>"
    assert head[3] == b"Message-ID: <" + p.message_id.encode() + b">"
    assert p.message_id.endswith("@example.com")
    assert head[4] == b"Date: Fri, 02 Jan 2026 03:04:05 +0000"
    assert p.data.endswith(b"\r\n\r\nbody\r\n")


def test_git_format_patch_mbox_line_is_dropped() -> None:
    raw = b"From 1234abcd Mon Sep 17 00:00:00 2001\nFrom: a@example.com\nTo: b@example.org\n\nx\n"
    p = prepare(raw, [], from_headers=True)
    assert p.data.startswith(b"From: a@example.com\r\n")


def test_header_only_message_stays_header_only() -> None:
    p = prepare(b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <m@x>\r\nDate: x", [],
                from_headers=True)  # fmt: skip
    assert p.data == b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <m@x>\r\nDate: x\r\n"


@pytest.mark.parametrize(
    ("raw", "recipients", "t"),
    [
        (b"", ["b@example.org"], False),  # empty
        (b"   \n\n", ["b@example.org"], False),
        (b"just a body line\n\nmore\n", ["b@example.org"], False),  # no header first
        (b" continuation first\nFrom: a@example.com\n\nx", ["b@example.org"], False),
        (b"To: b@example.org\n\nno From, no -f\n", [], True),
        (b"From: not an address\nTo: b@example.org\n\nx\n", [], True),
        (b"From: a@example.com\nTo: undisclosed-recipients:;\n\nx\n", [], True),  # nobody
        (b"From: a@example.com\n\nx\n", ["bad address"], False),
    ],
)
def test_messages_that_cannot_be_sent_as_they_are(
    raw: bytes, recipients: list[str], t: bool
) -> None:
    with pytest.raises(MessageError):
        prepare(raw, recipients, from_headers=t)
