"""The CRLF -> LF rule is lossless: convert only what converts back exactly."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jmapsync.maildir.lineendings import (
    Inspector,
    inspect,
    local_bytes,
    local_form,
    server_bytes,
    to_crlf,
    to_lf,
)


@pytest.mark.parametrize(
    ("blob", "crlf_only"),
    [
        (b"Subject: x\r\n\r\nbody\r\n", True),
        (b"Subject: x\r\n\r\nline one\rstill one\r\n", False),  # lone CR
        (b"Subject: x\r\n\r\nx\r\r\ny\r\n", False),  # CR CR LF
        (b"Subject: x\r\n\r\nlast line", False),  # no final newline
        (b"Subject: x\n\nbare lf\n", False),
        (b"Subject: x\r\n\r\nmixed\nend\r\n", False),
        (b"", False),
        (b"\r\n", True),
        (b"\r", False),
        (b"\x00\xff binary\r\n", True),
    ],
)
def test_crlf_only_cases(blob: bytes, crlf_only: bool) -> None:
    assert inspect(blob).crlf_only is crlf_only


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_chunking_does_not_change_the_verdict(blob: bytes, cuts: list[int]) -> None:
    """A CR at the end of one network chunk and its LF in the next is one CRLF."""
    whole = inspect(blob)
    i = Inspector()
    points = sorted({c for c in cuts if c <= len(blob)} | {0, len(blob)})
    for a, b in itertools.pairwise(points):
        i.feed(blob[a:b])
    assert i.finish() == whole


lines = st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))


@given(lines)
def test_crlf_text_round_trips_exactly(parts: list[bytes]) -> None:
    blob = b"".join(p + b"\r\n" for p in parts)
    if not blob:
        return
    info = inspect(blob)
    assert info.crlf_only
    lf = local_bytes(blob, local_form("lf", info))
    assert b"\r" not in lf
    assert server_bytes(lf, "lf") == blob


@given(st.binary(max_size=300))
def test_whatever_is_converted_comes_back_byte_for_byte(blob: bytes) -> None:
    info = inspect(blob)
    form = local_form("lf", info)
    assert server_bytes(local_bytes(blob, form), form) == blob
    if not info.crlf_only:
        assert local_bytes(blob, form) == blob  # stored exact
    assert local_form("exact", info) == "exact"


def test_to_lf_and_back() -> None:
    assert to_lf(b"a\r\nb\r\n") == b"a\nb\n"
    assert to_crlf(b"a\nb\n") == b"a\r\nb\r\n"
