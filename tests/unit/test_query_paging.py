"""jmap/mail.py query_ended: when a full read's Email/query paging stops.

RFC 8620 5.5: a server may clamp `limit` and returns the limit it used; the
read must go on while pages are as long as THAT limit, and while `total`
says more follow.  Stopping at "shorter than asked" truncated the full read on
a clamping server (Stalwart's jmap.protocol.query.max-results) and the pull
then removed every file beyond the first page."""

from __future__ import annotations

from typing import Any

import pytest

from jmapsync.jmap.mail import query_ended

IDS3 = ["a", "b", "c"]


@pytest.mark.parametrize(
    ("result", "ids", "asked", "total", "ended"),
    [
        ({"position": 0}, IDS3, 3, 10, False),  # a full page, more to come
        ({"position": 0}, IDS3, 500, 3, True),  # short page, total reached: done
        ({"position": 0, "limit": 3}, IDS3, 500, 10, False),  # clamped, said so
        ({"position": 0, "limit": 3}, IDS3, 500, None, False),  # clamped, no total
        # the last clamped page is full: one more (empty) page confirms the end,
        # rather than trusting `total` alone
        ({"position": 7, "limit": 3}, IDS3, 500, 10, False),
        ({"position": 7, "limit": 3}, IDS3[:2], 500, 9, True),
        ({"position": 0}, IDS3, 500, 10, False),  # clamped silently: total tells
        ({}, IDS3, 500, None, True),  # nothing to go by: short page ends (old rule)
        ({"position": 4}, [], 500, 10, True),  # empty page always ends
        ({"position": 0, "limit": 900}, IDS3, 500, None, True),  # a "limit" above ours
    ],
)
def test_query_ended(
    result: dict[str, Any], ids: list[str], asked: int, total: int | None, ended: bool
) -> None:
    assert query_ended(result, ids, asked, total) is ended
