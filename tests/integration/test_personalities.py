"""The real engine against the in-memory server in both personalities
(tests/jmapserver): what Cyrus on loopback never shows.

Stalwart: no import dedup, opaque ids, a clamped Email/query limit.
Fastmail: Bearer only, downloads on a second host, typeless push, 429 and
`rateLimit`.  Each test names the habit it proves jmapsync copes with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from jmapserver import JmapServer
from mailtools import make_message
from memmirror import memory_mirror
from mirror import assert_exact_mirror, message_files

from jmapsync.config import load
from jmapsync.errors import TransportError
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


def new_local_file(
    mirror: object, folder: str, raw: bytes, name: str = "1700000000.x.host"
) -> Path:
    """A message written by a mail program (its own name, in new/)."""
    path = mirror.maildir / folder / "new" / name  # type: ignore[attr-defined]
    path.write_bytes(raw)
    return path


def test_never_imports_twice_after_a_lost_import_answer(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """The test Cyrus cannot fail: Stalwart imports the same bytes twice as two
    Emails.  The import is carried out, its answer lost; the next pass must
    find it (journal) instead of importing again -- and the HTTP client must
    not send the lost request a second time on its own."""
    stalwart.deliver(make_message(1))
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    new_local_file(mirror, "INBOX", make_message(2).replace(b"\r\n", b"\n"))
    stalwart.fault("lose", "api:Email/import")
    with contextlib.suppress(TransportError):
        mirror.sync()
    assert len(stalwart.by_message_id("2.mailtools@mailtools.test")) == 1
    mirror.sync()
    assert len(stalwart.by_message_id("2.mailtools@mailtools.test")) == 1
    assert len(stalwart.emails()) == 2
    assert_exact_mirror(mirror)
    imports = [s for s in stalwart.seen if "Email/import" in s.calls]
    assert len(imports) == 1
