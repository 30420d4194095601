"""The bits of RFC 5322 two-way sync reads from an MUA's file."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jmapsync.maildir import message

MUTT_COPY = b"From: a@b\nMessage-ID:\n <x.1@host>\nSubject: hi\nContent-Length: 6\n\nbody!\n"
SERVER = b"From: a@b\r\nMessage-ID:\r\n <x.1@host>\r\nSubject: hi\r\n\r\nbody!\r\n"


def test_message_id_unfolds_and_drops_brackets() -> None:
    assert message.message_id(MUTT_COPY) == "x.1@host"
    assert message.message_id(SERVER) == "x.1@host"
    assert message.message_id(b"Subject: none\n\nbody\n") is None
    assert message.message_id(b"Subject: x\n\nMessage-ID: <in.body@x>\n") is None


def test_same_body_ignores_headers_and_line_endings() -> None:
    assert message.same_body(MUTT_COPY, SERVER)
    assert not message.same_body(MUTT_COPY, SERVER.replace(b"body!", b"body?"))


def test_looks_like_message() -> None:
    assert message.looks_like_message(MUTT_COPY)
    assert message.looks_like_message(b"Subject: only headers\n")
    assert not message.looks_like_message(b"\x00\x01 binary\n")
    assert not message.looks_like_message(b"just some notes\nSubject: x\n\nbody")
    assert not message.looks_like_message(b"")


def test_upload_form_is_crlf() -> None:
    assert message.upload_form(b"a: b\n\nx\n") == b"a: b\r\n\r\nx\r\n"
    assert message.upload_form(SERVER) == SERVER  # already CRLF: untouched
    assert message.upload_form(b"a: b\r\n\nx\r\n") == b"a: b\r\n\r\nx\r\n"  # mixed
    assert message.upload_form(b"a: b\r\nlone\rcr\r\n") == b"a: b\r\nlone\rcr\r\n"


@given(st.binary())
def test_upload_form_never_leaves_a_bare_lf(data: bytes) -> None:
    out = message.upload_form(data)
    assert out.count(b"\n") == out.count(b"\r\n")
    assert message.upload_form(out) == out
