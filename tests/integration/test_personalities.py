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
from daemonproc import DaemonProc, files_of, wait_for
from jmapserver import JmapServer
from mailtools import make_message
from memmirror import memory_mirror
from mirror import assert_exact_mirror, message_files
from structlog.testing import capture_logs

from jmapsync.config import load
from jmapsync.errors import JmapsyncError, MethodError, RateLimited, TransportError
from jmapsync.jmap import http, ratelimit
from jmapsync.maildir.flags import format_name, parse_name
from jmapsync.sync.engine import Engine, SyncReport


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


# -- both personalities: the ordinary work -----------------------------------------


def test_pull_first_sync_then_incremental_changes(server: JmapServer, tmp_path: Path) -> None:
    ids = [server.deliver(make_message(i), "INBOX" if i % 3 else "Archive") for i in range(8)]
    mirror = memory_mirror(server, tmp_path)
    first = mirror.sync()
    assert (first.mode, first.downloaded) == ("full", 8)
    assert_exact_mirror(mirror)
    server.add_keyword(ids[0], "$seen")
    server.move(ids[1], "Archive")
    server.destroy(ids[2])
    server.deliver(make_message(9), "Drafts", ["$draft"])
    server.rename_mailbox("Archive", "Old")
    again = mirror.sync()
    assert again.mode == "incremental" and again.downloaded == 1
    assert_exact_mirror(mirror)
    assert mirror.sync().downloaded == 0


def test_two_way_flags_moves_deletes_and_imports(server: JmapServer, tmp_path: Path) -> None:
    a = server.deliver(make_message(1))
    b = server.deliver(make_message(2))
    c = server.deliver(make_message(3), "Archive")
    mirror = memory_mirror(server, tmp_path, direction="two-way")
    mirror.sync()
    root = mirror.maildir
    (fa,) = (root / "INBOX" / "new").glob(f"{a}.*")
    fa.rename(root / "INBOX" / "cur" / f"{a}.jmapsync:2,FS")  # mutt: read + flag
    (fb,) = (root / "INBOX" / "new").glob(f"{b}.*")
    fb.rename(root / "Archive" / "new" / fb.name)  # a move across folders
    (fc,) = (root / "Archive" / "new").glob(f"{c}.*")
    fc.unlink()  # a delete: to Trash
    new_local_file(mirror, "Drafts", make_message(4).replace(b"\r\n", b"\n"))
    report = mirror.sync()
    assert report.imported == 1 and report.pushed == 3
    emails = server.emails()
    assert emails[a].keywords == {"$flagged", "$seen"}
    assert emails[b].mailbox_ids == {server.mailbox_id("Archive")}
    assert emails[c].mailbox_ids == {server.mailbox_id("Trash")}
    [new] = server.by_message_id("4.mailtools@mailtools.test")
    assert emails[new].mailbox_ids == {server.mailbox_id("Drafts")}
    assert_exact_mirror(mirror)
    assert mirror.sync().pushed == 0


def test_sync_from_a_subprocess_and_a_forced_full_reconcile(
    server: JmapServer, tmp_path: Path
) -> None:
    """The server thread answers a `jmapsync` process too; `cannotCalculateChanges`
    (here forced) makes the next pass a full reconcile."""
    server.deliver(make_message(1))
    mirror = memory_mirror(server, tmp_path)
    mirror.cli("sync")
    server.deliver(make_message(2))
    server.knobs.cannot_calculate = True
    report = mirror.sync()
    assert report.mode == "full" and report.downloaded == 1
    assert_exact_mirror(mirror)


def test_small_get_and_call_limits_are_obeyed(server: JmapServer, tmp_path: Path) -> None:
    """maxObjectsInGet 2, maxCallsInRequest 1, maxObjectsInSet 2: the server
    refuses anything bigger (requestTooLarge, HTTP 400), so a pass that
    completes kept to all three."""
    small = {"maxObjectsInGet": 2, "maxCallsInRequest": 1, "maxObjectsInSet": 2}
    ids = [server.deliver(make_message(i)) for i in range(7)]
    mirror = memory_mirror(server, tmp_path, direction="two-way")

    def sync() -> SyncReport:
        normal = dict(server.knobs.limits)
        server.knobs.limits.update(small)
        try:
            return mirror.sync()
        finally:
            server.knobs.limits.update(normal)  # for the checking helper

    sync()
    for eid in ids[:5]:
        server.add_keyword(eid, "$flagged")
    sync()
    assert_exact_mirror(mirror)
    for p in sorted((mirror.maildir / "INBOX").glob("*/*"))[:5]:
        p.rename(p.parent.parent / "cur" / (p.name.split(":")[0] + ":2,FS"))
    assert sync().pushed == 5
    assert_exact_mirror(mirror)


def test_a_download_cut_mid_body_leaves_nothing_behind(
    server: JmapServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "RETRY_DELAYS", ())  # no resume: the pass fails
    server.deliver(make_message(1, size=30_000))
    mirror = memory_mirror(server, tmp_path)
    server.fault("cut", "download")
    with pytest.raises(JmapsyncError):
        mirror.sync()
    assert not message_files(mirror.maildir)
    mirror.sync()
    assert_exact_mirror(mirror)


# -- Fastmail ------------------------------------------------------------------------


def test_fastmail_downloads_from_the_second_host_with_the_bearer_token(
    fastmail: JmapServer, tmp_path: Path
) -> None:
    fastmail.deliver(make_message(1))
    fastmail.deliver(make_message(2, size=6 * 1024 * 1024))  # streamed, not in memory
    mirror = memory_mirror(fastmail, tmp_path)
    mirror.sync()
    downloads = [s for s in fastmail.seen if s.kind == "download"]
    assert_exact_mirror(mirror)
    assert len(downloads) == 2
    assert {(s.host, s.auth) for s in downloads} == {("download", "bearer")}
    assert all(s.host == "api" for s in fastmail.seen if s.kind != "download")


def test_http_429_is_waited_out_as_the_server_asks(fastmail: JmapServer, tmp_path: Path) -> None:
    fastmail.deliver(make_message(1))
    mirror = memory_mirror(fastmail, tmp_path)
    fastmail.fault("429", "api", times=2, retry_after="1")
    fastmail.fault("429", "download", times=1, retry_after="1")
    with capture_logs() as logs:
        mirror.sync()
    assert_exact_mirror(mirror)
    waits = [(e["what"].split()[0], e["retry_in"]) for e in logs if e["event"] == "rate-limited"]
    assert waits == [("API", 1.0), ("API", 1.0), ("download", 1.0)]
    refused = [s for s in fastmail.seen if s.fault == "429"]
    assert len(refused) == 3  # each 429 once: none repeated by a second HTTP stack


def test_http_429_that_does_not_stop_fails_the_pass_as_rate_limited(
    fastmail: JmapServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "DELAYS_S", (0.0, 0.0))
    mirror = memory_mirror(fastmail, tmp_path)
    fastmail.fault("429", "*", times=3, retry_after="0")  # the first try and two more
    with pytest.raises(RateLimited):
        mirror.sync()
    assert len([s for s in fastmail.seen if s.fault == "429"]) == 3
    mirror.sync()  # the server let go: the account syncs
    assert_exact_mirror(mirror)


def test_rate_limit_set_errors_are_sent_again(
    fastmail: JmapServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ratelimit, "DELAYS_S", (0.0, 0.0, 0.0))
    ids = [fastmail.deliver(make_message(i)) for i in range(3)]
    mirror = memory_mirror(fastmail, tmp_path, direction="two-way")
    mirror.sync()
    for p in (mirror.maildir / "INBOX" / "new").iterdir():
        p.rename(mirror.maildir / "INBOX" / "cur" / (p.name + ":2,F"))
    fastmail.knobs.rate_limit_records = 2
    assert mirror.sync().pushed == 3
    assert all(fastmail.emails()[i].keywords == {"$flagged"} for i in ids)
    assert_exact_mirror(mirror)


def test_rate_limit_that_outlasts_the_tries_keeps_the_local_change(
    fastmail: JmapServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the refused flag was logged and the pull renamed the file back
    -- the user's change undone.  Now the pass fails and the change waits."""
    monkeypatch.setattr(ratelimit, "DELAYS_S", (0.0, 0.0))
    eid = fastmail.deliver(make_message(1))
    mirror = memory_mirror(fastmail, tmp_path, direction="two-way")
    mirror.sync()
    [p] = (mirror.maildir / "INBOX" / "new").iterdir()
    flagged = mirror.maildir / "INBOX" / "cur" / (p.name + ":2,F")
    p.rename(flagged)
    fastmail.knobs.rate_limit_records = 100
    with pytest.raises(RateLimited):
        mirror.sync()
    assert flagged.exists() and fastmail.emails()[eid].keywords == set()
    fastmail.knobs.rate_limit_records = 0
    mirror.sync()
    assert fastmail.emails()[eid].keywords == {"$flagged"}
    assert_exact_mirror(mirror)


def test_read_only_token_pulls_and_refuses_two_way(fastmail: JmapServer, tmp_path: Path) -> None:
    fastmail.deliver(make_message(1))
    pull = memory_mirror(fastmail, tmp_path / "pull", read_only=True)
    pull.sync()
    assert_exact_mirror(pull)
    two_way = memory_mirror(fastmail, tmp_path / "tw", read_only=True, direction="two-way")
    two_way.sync()
    [p] = (two_way.maildir / "INBOX" / "new").iterdir()
    p.rename(two_way.maildir / "INBOX" / "cur" / (p.name + ":2,S"))
    with pytest.raises(MethodError) as err:
        two_way.sync()
    assert err.value.type == "accountReadOnly"


def _daemon_config(server: JmapServer, base: Path, **keys: str) -> Path:
    creds = server.credentials()
    lines = [
        "[jmapsync]",
        f"state_dir = {base / 'state'}",
        "poll_interval = 3600",  # a message that arrives came by push, not by the backstop
        "[account a]",
        f"session_url = {server.session_url}",
        *(f"{k} = {v}" for k, v in creds.items()),
        f"maildir = {base / 'mail'}",
        "direction = two-way",
        *(f"{k} = {v}" for k, v in keys.items()),
    ]
    path = base / "config.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_daemon_follows_fastmails_typeless_push(fastmail: JmapServer, tmp_path: Path) -> None:
    """Fastmail's state events carry no "@type": before, the daemon dropped
    them and waited for its hourly poll; now a delivery arrives at once."""
    config = _daemon_config(fastmail, tmp_path, push="eventsource")
    with DaemonProc(config) as d:
        d.wait_event("push-connected", transport="eventsource")
        d.wait_event("daemon-ready")
        eid = fastmail.deliver(make_message(7))
        wait_for("pushed message on disk", lambda: files_of(tmp_path / "mail", eid), 10)
        d.wait_event("push-typeless")
        assert d.stop()[0] == 0


# -- engine rules that need a server that does not deduplicate ---------------------


def test_a_reimport_carries_the_merged_keywords_of_every_copy(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """Destroyed on the server, changed here (F on the INBOX copy, D on the
    Archive copy): the re-import carries both changes and the keywords
    without a Maildir letter -- not the flags of one file."""
    eid = stalwart.deliver(make_message(1), ["INBOX", "Archive"], ["$seen", "custom"])
    mirror = memory_mirror(stalwart, tmp_path, direction="two-way")
    mirror.sync()
    (a,) = (mirror.maildir / "INBOX" / "cur").glob(f"{eid}.*")
    (b,) = (mirror.maildir / "Archive" / "cur").glob(f"{eid}.*")
    # mutt adds a letter, keeping the others (`custom` has a Dovecot letter)
    a.rename(a.with_name(format_name(f"{eid}.jmapsync", parse_name(a.name).flags + "F")))
    b.rename(b.with_name(format_name(f"{eid}.jmapsync", parse_name(b.name).flags + "D")))
    stalwart.destroy(eid)
    mirror.sync()
    [new] = stalwart.by_message_id("1.mailtools@mailtools.test")
    e = stalwart.emails()[new]
    assert e.keywords == {"$seen", "$flagged", "$draft", "custom"}
    assert e.mailbox_ids == {stalwart.mailbox_id("INBOX"), stalwart.mailbox_id("Archive")}
    assert_exact_mirror(mirror)


# -- jmapsync check ------------------------------------------------------------------


def test_check_notes_fastmails_habits(fastmail: JmapServer, tmp_path: Path) -> None:
    mirror = memory_mirror(fastmail, tmp_path)
    out = mirror.cli("check").stdout
    assert "downloads come from another host" in out
    assert 'without "@type": "StateChange"' in out
    assert "READ-ONLY" not in out and "clamps" not in out
    ro = memory_mirror(fastmail, tmp_path / "ro", read_only=True, direction="two-way")
    out = ro.cli("check").stdout
    assert "READ-ONLY" in out and "pull works" in out and "sending will not" in out


def test_check_notes_stalwarts_habits(stalwart: JmapServer, tmp_path: Path) -> None:
    stalwart.knobs.query_max = 3  # Stalwart returns `limit` only when more Emails match
    for i in range(5):
        stalwart.deliver(make_message(i))
    out = memory_mirror(stalwart, tmp_path).cli("check").stdout
    assert "Email/query clamps limit to 3" in out
    assert "no state event within" in out  # Stalwart pushes only on a change
    assert "another host" not in out and "READ-ONLY" not in out


def test_restore_lists_a_clamping_servers_account_to_the_end(
    stalwart: JmapServer, tmp_path: Path
) -> None:
    """The restore's inventory pages as the full read does (mail.py
    query_ended).  Stopping at the first page shorter than asked saw 3 of
    10 Emails, and on a server that does not deduplicate imports the
    restore then made the 7 others twice."""
    for i in range(10):
        stalwart.deliver(make_message(i))
    mirror = memory_mirror(stalwart, tmp_path)
    mirror.sync()
    stalwart.knobs.query_max = 3
    out = mirror.cli("restore", "--account", "test").stdout
    assert len(stalwart.emails()) == 10, out
    assert not [s for s in stalwart.seen if "Email/import" in s.calls]
