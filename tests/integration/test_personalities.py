"""The real engine against the in-memory server in both personalities
(tests/jmapserver): what Cyrus on loopback never shows.

Stalwart: no import dedup, opaque ids, a clamped Email/query limit.
Fastmail: Bearer only, downloads on a second host, typeless push, 429 and
`rateLimit`.  Each test names the habit it proves jmapsync copes with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from jmapserver import JmapServer
from mailtools import make_message
from memmirror import memory_mirror
from mirror import assert_exact_mirror, message_files

from jmapsync.config import load
from jmapsync.sync.engine import Engine


@pytest.fixture(params=["stalwart", "fastmail"])
def server(request: pytest.FixtureRequest) -> Iterator[JmapServer]:
    with JmapServer(request.param) as s:
        yield s


@pytest.fixture
def stalwart() -> Iterator[JmapServer]:
    with JmapServer("stalwart") as s:
        yield s


@pytest.fixture
def fastmail() -> Iterator[JmapServer]:
    with JmapServer("fastmail") as s:
        yield s


def full_sync(mirror: object) -> None:
    """One pass that reads the whole account (as `full_sync_interval` does)."""
    config = load(mirror.config_path)  # type: ignore[attr-defined]
    asyncio.run(Engine(config, config.account("test"), full=True).sync())


def test_full_read_on_a_clamping_server_pages_by_the_limit_it_returns(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """RFC 8620 5.5: a server may clamp `limit` and says so in the answer.
    A page shorter than asked is not the end: stopping there read 3 of 10
    Emails and then removed the 7 other files from the Maildir."""
    for i in range(10):
        stalwart.deliver(make_message(i))
    mirror = memory_mirror(stalwart, tmp_path)
    mirror.sync()
    assert len(message_files(mirror.maildir)) == 10
    stalwart.knobs.query_max = 3  # an admin lowered jmap.protocol.query.max-results
    full_sync(mirror)
    assert_exact_mirror(mirror)
    assert len(message_files(mirror.maildir)) == 10
