"""The daemon's small parts, without a server: backoff, debounce, status file,
sd_notify, push message parsing, echo rule, tmp/ cleanup, config keys."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from pathlib import Path

import pytest

from jmapsync.config import parse
from jmapsync.daemon.account import is_echo, transport_order
from jmapsync.daemon.backoff import Backoff
from jmapsync.daemon.debounce import Debouncer
from jmapsync.daemon.notify import notify, watchdog_interval
from jmapsync.daemon.status import read_status, remove_status, write_status
from jmapsync.daemon.tmpclean import clean_tmp
from jmapsync.daemon.watch import relevant
from jmapsync.errors import ConfigError, ProtocolError
from jmapsync.jmap.push import SseParser, StateChange, parse_state_change

# -- backoff -----------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    b = Backoff(base=1.0, cap=30.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    nominal = [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    for d, n in zip(delays, nominal, strict=True):
        assert n / 2 <= d <= n
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jitter: capped delays differ


def test_backoff_reset_starts_again_at_base() -> None:
    b = Backoff(base=0.5, cap=60.0, rng=random.Random(1))
    for _ in range(6):
        b.next_delay()
    b.reset()
    assert 0.25 <= b.next_delay() <= 0.5


def test_backoff_two_clients_do_not_retry_in_lock_step() -> None:
    a, b = Backoff(rng=random.Random(1)), Backoff(rng=random.Random(2))
    assert [a.next_delay() for _ in range(5)] != [b.next_delay() for _ in range(5)]


def test_backoff_survives_very_many_failures() -> None:
    b = Backoff(base=1.0, cap=300.0, failures=10_000)
    assert 150 <= b.next_delay() <= 300


# -- debounce ----------------------------------------------------------------------


def test_debounce_a_burst_fires_once_after_it_is_quiet() -> None:
    async def run() -> tuple[list[float], float]:
        fired: list[float] = []
        loop = asyncio.get_running_loop()
        d = Debouncer(lambda: fired.append(loop.time()), quiet=0.05, max_wait=1.0)
        start = loop.time()
        for _ in range(20):
            d.hint()
            await asyncio.sleep(0.005)
        last = loop.time()
        await asyncio.sleep(0.15)
        assert not d.pending
        return [t - last for t in fired], last - start

    after_last, _ = asyncio.run(run())
    assert len(after_last) == 1
    assert 0.03 <= after_last[0] <= 0.3  # quiet = 0.05; the rest is a loaded CI machine


def test_debounce_a_steady_trickle_still_fires_by_max_wait() -> None:
    async def run() -> list[float]:
        fired: list[float] = []
        loop = asyncio.get_running_loop()
        d = Debouncer(lambda: fired.append(loop.time()), quiet=0.05, max_wait=0.2)
        start = loop.time()
        while loop.time() - start < 0.35:
            d.hint()  # never quiet for 50 ms
            await asyncio.sleep(0.01)
        d.cancel()
        return [t - start for t in fired]

    fired = asyncio.run(run())
    assert fired, "max_wait must bound the delay"
    assert 0.18 <= fired[0] <= 0.34  # max_wait = 0.2 despite the trickle (quiet alone: never)


def test_debounce_cancel_drops_the_pending_burst() -> None:
    async def run() -> int:
        fired: list[int] = []
        d = Debouncer(lambda: fired.append(1), quiet=0.02, max_wait=0.1)
        d.hint()
        assert d.pending and d.hints == 1
        d.cancel()
        await asyncio.sleep(0.06)
        return len(fired)

    assert asyncio.run(run()) == 0


# -- status file -------------------------------------------------------------------


def test_status_file_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "state" / "daemon-status.json"
    write_status(path, {"pid": os.getpid(), "accounts": {"a": {"transport": "websocket"}}})
    write_status(path, {"pid": os.getpid(), "accounts": {"a": {"transport": "poll"}}})
    got = read_status(path)
    assert got is not None and got["accounts"]["a"]["transport"] == "poll"
    assert [p.name for p in path.parent.iterdir()] == ["daemon-status.json"]  # no temp left


def test_status_file_of_a_dead_daemon_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "daemon-status.json"
    dead = os.fork()
    if dead == 0:  # pragma: no cover - child
        os._exit(0)
    os.waitpid(dead, 0)
    write_status(path, {"pid": dead, "accounts": {}})
    assert read_status(path) is None
    assert read_status(path, check_pid=False) is not None


def test_status_file_garbage_reads_as_no_daemon(tmp_path: Path) -> None:
    path = tmp_path / "daemon-status.json"
    path.write_text("{not json")
    assert read_status(path) is None
    path.write_text('{"pid": "12"}')
    assert read_status(path) is None


def test_remove_status_leaves_another_daemons_file(tmp_path: Path) -> None:
    path = tmp_path / "daemon-status.json"
    write_status(path, {"pid": 1, "accounts": {}})
    remove_status(path, os.getpid())
    assert path.exists()
    write_status(path, {"pid": os.getpid(), "accounts": {}})
    remove_status(path, os.getpid())
    assert not path.exists()


# -- sd_notify ---------------------------------------------------------------------


def _bound(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock


def test_notify_sends_one_datagram_with_all_lines(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with _bound(path) as sock:
        assert notify("READY=1", "STATUS=a: websocket\nconnected", environ={"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=a: websocket connected"


def test_notify_abstract_socket() -> None:
    name = f"jmapsync-test-{os.getpid()}-{time.monotonic_ns()}"
    with _bound("\0" + name) as sock:
        assert notify("WATCHDOG=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(64) == b"WATCHDOG=1"


def test_notify_without_systemd_or_with_a_dead_socket_does_nothing(tmp_path: Path) -> None:
    assert notify("READY=1", environ={}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval_is_half_of_watchdogsec_for_this_pid() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}) is None


# -- push messages -----------------------------------------------------------------


def test_state_change_parsed_per_account() -> None:
    sc = parse_state_change(
        {
            "@type": "StateChange",
            "changed": {"alice": {"Email": "455", "Mailbox": "450"}, "shared": {"Email": "9"}},
            "pushState": "455",
        }
    )
    assert sc == StateChange(
        {"alice": {"Email": "455", "Mailbox": "450"}, "shared": {"Email": "9"}}, "455"
    )
    assert sc.states("alice") == {"Email": "455", "Mailbox": "450"}
    assert sc.states("bob") == {}


@pytest.mark.parametrize(
    "data",
    [
        {"@type": "StateChange"},
        {"@type": "StateChange", "changed": []},
        {"@type": "StateChange", "changed": {"a": {"Email": 5}}},
        {"@type": "StateChange", "changed": {"a": "Email"}},
    ],
)
def test_malformed_state_change_is_a_protocol_error(data: object) -> None:
    with pytest.raises(ProtocolError):
        parse_state_change(data)


def test_other_push_messages_are_not_state_changes() -> None:
    assert parse_state_change({"@type": "Response", "methodResponses": []}) is None
    assert parse_state_change(["StateChange"]) is None
    assert parse_state_change({"type": "connect"}) is None  # no changed map: not one
    assert parse_state_change({"@type": "Other", "changed": {}}) is None


@pytest.mark.parametrize("kind", ["connect", "change", "delivery", None])
def test_typeless_state_change_with_a_changed_map_is_accepted(kind: str | None) -> None:
    """Fastmail's event source: {"changed": {...}, "type": ...} without "@type"
    (mattwynne/email-tools PushNotification.spec.ts sees "connect", then
    "delivery"; smkent/jmapc models/event.py).  Ignored, the daemon polled."""
    data: dict[str, object] = {"changed": {"u1": {"Email": "12", "Mailbox": "3"}}}
    if kind is not None:
        data["type"] = kind
    sc = parse_state_change(data)
    assert sc is not None and sc.typeless
    assert sc.states("u1") == {"Email": "12", "Mailbox": "3"}
    with pytest.raises(ProtocolError):
        parse_state_change({"changed": {"u1": {"Email": 12}}})


def test_sse_parser_events_pings_comments_and_multiline_data() -> None:
    p = SseParser()
    lines = [
        ": comment",
        "event: ping",
        'data: {"interval":30}',
        "",
        "event: state",
        "id: 455",
        'data: {"@type":"StateChange",',
        'data: "changed":{}}',
        "",
        "",
    ]
    out = [e for e in (p.feed(line) for line in lines) if e is not None]
    assert out == [("ping", '{"interval":30}'), ("state", '{"@type":"StateChange",\n"changed":{}}')]
    assert p.last_id == "455"


def test_echo_rule() -> None:
    known = {"Email": "15", "Mailbox": "14"}
    assert is_echo({"Email": "15"}, known)  # the state our own write produced
    assert is_echo({"Email": "15", "Mailbox": "14"}, known)
    assert not is_echo({"Email": "16"}, known)
    assert not is_echo({"Email": "15", "Mailbox": "16"}, known)  # a mailbox changed
    assert not is_echo({"Email": "15"}, {})  # nothing synced yet
    assert not is_echo({}, known)


def test_transport_order_from_the_push_key() -> None:
    assert transport_order("auto") == ["websocket", "eventsource"]
    assert transport_order("eventsource") == ["eventsource"]
    assert transport_order("websocket") == ["websocket"]
    assert transport_order("poll") == []


# -- watcher filter, tmp cleanup ---------------------------------------------------


@pytest.mark.parametrize(
    ("event", "src", "dest", "wanted"),
    [
        ("moved", "/m/INBOX/new/X.jmapsync", "/m/INBOX/cur/X.jmapsync:2,S", True),
        ("created", "/m/INBOX/cur/Y", "", True),
        ("deleted", "/m/INBOX/cur/Y", "", True),
        ("created", "/m/Work", "", True),  # a new folder
        ("created", "/m/INBOX/tmp/Z.jmapsync-part", "", False),
        ("moved", "/m/INBOX/tmp/Z.jmapsync-part", "/m/INBOX/new/Z.jmapsync", True),
        ("modified", "/m/INBOX/cur/Y", "", False),
        ("opened", "/m/INBOX/cur/Y", "", False),
        ("closed_no_write", "/m/INBOX/cur/Y", "", False),
    ],
)
def test_watch_filter(event: str, src: str, dest: str, wanted: bool) -> None:
    assert relevant(event, src, dest) is wanted


def test_clean_tmp_removes_only_old_files_in_tmp(tmp_path: Path) -> None:
    now = time.time()
    old = now - 37 * 3600
    for rel in ("INBOX/tmp/old", "INBOX/tmp/new", "INBOX/cur/old", "Work/tmp/old2"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        if "old" in p.name:
            os.utime(p, (old, old))
    (tmp_path / "INBOX/tmp/sub").mkdir()
    os.utime(tmp_path / "INBOX/tmp/sub", (old, old))
    removed = sorted(p.relative_to(tmp_path).as_posix() for p in clean_tmp(tmp_path, now=now))
    assert removed == ["INBOX/tmp/old", "Work/tmp/old2"]
    assert (tmp_path / "INBOX/cur/old").exists() and (tmp_path / "INBOX/tmp/new").exists()
    assert (tmp_path / "INBOX/tmp/sub").is_dir()


# -- config ------------------------------------------------------------------------

_ACCOUNT = "[account a]\nsession_url = http://h/\nusername = u\npassword = p\nmaildir = /m\n"


def test_daemon_config_keys_and_defaults() -> None:
    c = parse("[jmapsync]\nstate_dir = /s\n" + _ACCOUNT)
    assert (c.full_sync_interval_s, c.log_format, c.accounts[0].push) == (86400.0, "auto", "auto")
    c = parse(
        "[jmapsync]\npush = poll\nfull_sync_interval = 3600\nlog_format = json\n"
        + _ACCOUNT
        + "[account b]\nsession_url = http://h/\nusername = u\npassword = p\nmaildir = /n\n"
        + "push = websocket\n"
    )
    assert c.full_sync_interval_s == 3600 and c.log_format == "json"
    assert [a.push for a in c.accounts] == ["poll", "websocket"]


@pytest.mark.parametrize(
    "text",
    [
        "[jmapsync]\npush = sse\n" + _ACCOUNT,
        _ACCOUNT + "push = always\n",
        "[jmapsync]\nlog_format = xml\n" + _ACCOUNT,
        "[jmapsync]\nfull_sync_interval = 0\n" + _ACCOUNT,
    ],
)
def test_daemon_config_bad_values(text: str) -> None:
    with pytest.raises(ConfigError):
        parse(text)


def test_change_counts_are_the_nonzero_change_counters() -> None:
    from jmapsync.daemon.account import change_counts
    from jmapsync.sync.engine import SyncReport

    report = SyncReport(
        "a", downloaded=2, bytes=100, foreign=3, imported=1, seconds=0.5, planned=9, partial=True
    )
    report.warnings.append("x")
    assert change_counts(report) == {"downloaded": 2, "imported": 1}
    assert change_counts(SyncReport("a", mode="unchanged", email_state="5")) == {}
