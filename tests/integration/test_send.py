"""`jmapsync send` against the real Cyrus: what leaves through its sendmail
(envelope, headers, body bytes, no Bcc), the Sent copy, exit codes, refusals,
offline queueing, and no second send after a crash at any step.

Cyrus 3.6 deduplicates imports (same bytes, same Email) but NOT submissions:
a second EmailSubmission of the same Email reaches the sink a second time.
So "exactly one in the sink" after a crash is a real proof here; the import
step is proven without deduplication in tests/unit/test_send_flush.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import new_account
from mailtools import Account
from mirror import ROOT, Mirror, message_files
from sendtools import KillProxy, free_port, send_cli, sink

from jmapsync.config import load
from jmapsync.jmap.client import JmapClient
from jmapsync.send import command
from jmapsync.send.flush import flush_account
from jmapsync.send.outbox import Outbox


def message(tag: str, *, bcc: bool = True, extra: bytes = b"") -> bytes:
    """A message as mutt pipes it: LF line ends, Bcc in the header."""
    return (
        b"Date: Mon, 30 Nov 2026 10:00:00 +0000\n"
        b"From: Alice Example <alice@example.com>\n"
        b"To: Bob <bob@example.org>\n"
        b"Cc: carol@example.org\n"
        + (b"Bcc: hidden@example.net,\n secret2@example.net\n" if bcc else b"")
        + b"Subject: send test "
        + tag.encode()
        + b"\n"
        b"Message-ID: <" + tag.encode() + b"@example.com>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n" + extra + b"\n"
        b"Hello Bob,\n"
        b".\n"
        b"..two dots\n"
        b"Gr\xc3\xbc\xc3\x9fe\n"
    )


def as_sent(raw: bytes) -> bytes:
    """What must leave: CRLF, no Bcc field (with its continuation line)."""
    out = raw.replace(b"Bcc: hidden@example.net,\n secret2@example.net\n", b"")
    return out.replace(b"\n", b"\r\n")


def emails_with(account: Account, message_id: str) -> list[dict[str, Any]]:
    j = account.jmap()
    found = j.call1("Email/query", {"filter": {"header": ["Message-ID", message_id]}})["ids"]
    return j.get_emails(found, ["id", "mailboxIds", "keywords", "messageId"]) if found else []


def assert_sent_copy(account: Account, message_id: str) -> None:
    j = account.jmap()
    [email] = emails_with(account, message_id)
    assert set(email["mailboxIds"]) == {j.mailbox_id("sent")}
    assert "$seen" in email["keywords"] and "$draft" not in email["keywords"]
    assert j.emails_in("Drafts") == []


def test_send_t_sends_headers_body_and_envelope_without_bcc_and_files_it_in_sent(
    account: Account, tmp_path: Path
) -> None:
    mirror = Mirror(account, tmp_path, direction="two-way")
    raw = message("t1")
    started = time.monotonic()
    done = send_cli(mirror, "-t", "-i", stdin=raw)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    [left] = sink(account.server, "t1@example.com")
    assert left.mail_from == "alice@example.com"  # Cyrus's Identity names no address: From's
    assert left.rcpt_to == (
        "bob@example.org",
        "carol@example.org",
        "hidden@example.net",
        "secret2@example.net",
    )
    assert left.data == as_sent(raw)  # headers and body byte for byte, Bcc gone
    assert b"hidden@" not in left.data and b"secret2" not in left.data
    assert_sent_copy(account, "t1@example.com")
    assert Outbox.for_account(mirror.state_dir, mirror.name).entries() == []
    print(f"send -t online: {elapsed:.3f} s (process start included)")
    # the mirror shows it in Sent after a sync, read, not a draft
    mirror.cli("sync")
    sent = [p for r, p in message_files(mirror.maildir).items() if r.startswith("Sent/")]
    assert len(sent) == 1 and sent[0].name.endswith(":2,S"), sent
    assert sent[0].read_bytes() == as_sent(raw).replace(b"\r\n", b"\n")
    assert not any(r.startswith("Drafts/") for r in message_files(mirror.maildir))


def test_recipients_from_arguments_and_envelope_sender_from_f(
    account: Account, tmp_path: Path
) -> None:
    mirror = Mirror(account, tmp_path)
    raw = message("args1")
    # git send-email: -f ADDR -i RCPT...; the To/Cc/Bcc fields do not add recipients
    done = send_cli(mirror, "-f", "bounces@example.com", "-i", "x@example.org", stdin=raw)
    assert done.returncode == 0, done.stderr
    [left] = sink(account.server, "args1@example.com")
    assert left.mail_from == "bounces@example.com"
    assert left.rcpt_to == ("x@example.org",)
    assert left.data == as_sent(raw)


def test_mutt_dsn_options_reach_the_envelope(account: Account, tmp_path: Path) -> None:
    """mutt passes -N/-R for $dsn_notify/$dsn_return, then "--" and the
    recipients; Cyrus offers the dsn submission extension."""
    mirror = Mirror(account, tmp_path)
    argv = ["-oem", "-oi", "-B8BITMIME", "-N", "failure,delay", "-R", "hdrs", "--"]
    done = send_cli(mirror, *argv, "bob@example.org", stdin=message("dsn1"))
    assert done.returncode == 0, done.stderr
    [left] = sink(account.server, "dsn1@example.com")
    assert "RET=HDRS" in left.mail_params
    assert left.rcpt_params == ("NOTIFY=FAILURE,DELAY",)


def test_exit_codes_65_64_67_78(account: Account, tmp_path: Path) -> None:
    mirror = Mirror(account, tmp_path)
    assert send_cli(mirror, "-t", stdin=b"no header here\n\nbody\n").returncode == 65
    assert send_cli(mirror, "-t", stdin=b"Subject: x\n\nno From, no -f\n").returncode == 65
    assert send_cli(mirror, "-i", stdin=message("x0")).returncode == 64  # no recipient
    assert send_cli(mirror, "-bd").returncode == 64
    mirror.set("addresses", "alice@example.com, *@alice.example")
    raw = message("nouser1").replace(b"alice@example.com", b"mallory@example.com")
    done = send_cli(mirror, "-t", stdin=raw)
    assert done.returncode == 67, done.stderr
    assert b"mallory@example.com" in done.stderr
    assert sink(account.server, "nouser1@example.com") == []
    assert Outbox.for_account(mirror.state_dir, mirror.name).entries() == []  # not kept
    raw = message("wild1").replace(b"alice@example.com", b"me@alice.example")
    assert send_cli(mirror, "-t", stdin=raw).returncode == 0  # *@alice.example
    assert len(sink(account.server, "wild1@example.com")) == 1
    mirror.config_path.write_text("[account broken\n")
    assert send_cli(mirror, "-t", stdin=message("x1")).returncode == 78


def test_exit_75_only_when_it_can_neither_queue_nor_send(account: Account, tmp_path: Path) -> None:
    mirror = Mirror(account, tmp_path)
    state = tmp_path / "state"
    state.write_text("a file where the state directory should be")
    done = send_cli(mirror, "-t", stdin=message("noq1"))  # cannot queue, can send
    assert done.returncode == 0, done.stderr
    assert len(sink(account.server, "noq1@example.com")) == 1
    mirror.set("session_url", f"http://127.0.0.1:{free_port()}/jmap/")  # and now not that
    done = send_cli(mirror, "-t", stdin=message("noq2"))
    assert done.returncode == 75, done.stderr
    assert b"cannot queue" in done.stderr


def test_a_refused_message_is_held_with_its_reason_and_sync_leaves_it(
    account: Account, tmp_path: Path
) -> None:
    """The sink refuses refuse-* recipients: Cyrus answers invalidRecipients."""
    mirror = Mirror(account, tmp_path, direction="two-way")
    raw = message("ref1").replace(b"To: Bob <bob@example.org>", b"To: refuse-bob@example.org")
    done = send_cli(mirror, "-t", stdin=raw)
    assert done.returncode == 0  # kept in the outbox: sendmail's "queued"
    err = done.stderr.decode()
    assert len(err.strip().splitlines()) == 1, err
    assert "invalidRecipients" in err and "refuse-bob@example.org" in err
    assert sink(account.server, "ref1@example.com") == []
    status = mirror.cli("status").stdout
    assert "0 queued, 1 held" in status and "invalidRecipients" in status, status
    mirror.cli("sync")  # does not retry a held message
    assert sink(account.server, "ref1@example.com") == []
    [entry] = Outbox.for_account(mirror.state_dir, mirror.name).entries()
    assert entry.state == "held" and entry.reason_kind == "invalidRecipients"
    # `send --flush` tries again (refused again: exit 69, still held)
    flushed = send_cli(mirror, "--flush")
    assert flushed.returncode == 69 and b"invalidRecipients" in flushed.stderr
    assert sink(account.server, "ref1@example.com") == []


def test_offline_send_queues_and_the_next_sync_sends_it_once(
    account: Account, tmp_path: Path
) -> None:
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    online = account.session_url
    mirror.set("session_url", f"http://127.0.0.1:{free_port()}/jmap/")  # nothing listens
    raw = message("off1")
    done = send_cli(mirror, "-t", stdin=raw)
    assert done.returncode == 0, done.stderr
    assert b"queued" in done.stderr
    outbox = Outbox.for_account(mirror.state_dir, mirror.name)
    [entry] = outbox.entries()
    assert (outbox.root / "new" / entry.id).read_bytes() == as_sent(raw)
    assert "send test off1" in mirror.cli("status").stdout
    assert sink(account.server, "off1@example.com") == []
    mirror.set("session_url", online)
    started = time.monotonic()
    mirror.cli("sync")
    print(f"sync with one queued message: {time.monotonic() - started:.3f} s")
    assert len(sink(account.server, "off1@example.com")) == 1
    assert outbox.entries() == []
    assert "outbox" not in mirror.cli("status").stdout
    assert_sent_copy(account, "off1@example.com")
    assert any(r.startswith("Sent/") for r in message_files(mirror.maildir))
    mirror.cli("sync")
    assert len(sink(account.server, "off1@example.com")) == 1


def test_cyrus_stopped_then_back_sends_once(cyrus_deleteonsend: Any, tmp_path: Path) -> None:
    account = new_account(cyrus_deleteonsend)
    mirror = Mirror(account, tmp_path)
    cyrus_deleteonsend.stop()
    try:
        done = send_cli(mirror, "-t", stdin=message("stop1"))
        assert done.returncode == 0 and b"queued" in done.stderr, done.stderr
    finally:
        cyrus_deleteonsend.start()
    mirror.cli("sync")
    assert len(sink(cyrus_deleteonsend, "stop1@example.com")) == 1
    assert_sent_copy(account, "stop1@example.com")


# -- crash safety ----------------------------------------------------------------


class Crash(BaseException):
    """Stands for SIGKILL: nothing of ours catches a BaseException."""


class Injector:
    def __init__(self, at: int) -> None:
        self.at, self.step, self.what = at, 0, ""

    def tick(self, what: str) -> None:
        self.step += 1
        if self.step == self.at:
            self.what = what
            raise Crash(what)

    def wrap(self, fn: Callable[..., Any], name: str, is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def awrapped(*args: Any, **kw: Any) -> Any:
                self.tick(f"before {name}")
                result = await fn(*args, **kw)
                self.tick(f"after {name}")
                return result

            return awrapped

        def wrapped(*args: Any, **kw: Any) -> Any:
            self.tick(f"before {name}")
            result = fn(*args, **kw)
            self.tick(f"after {name}")
            return result

        return wrapped


def _crash_loop(
    new_account: Callable[[], Account], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> int:
    """Kill one send at step N for N = 1, 2, ...; flush; exactly one left."""
    for at in range(1, 80):
        account = new_account()
        mirror = Mirror(account, tmp_path / f"run{at}")
        tag = f"crash{at}.{account.user}"
        inj = Injector(at)
        with monkeypatch.context() as m:
            for name in ("call", "upload"):
                m.setattr(JmapClient, name, inj.wrap(getattr(JmapClient, name), name, True))
            for name in ("add", "update", "hold", "done"):
                m.setattr(Outbox, name, inj.wrap(getattr(Outbox, name), f"outbox.{name}", False))
            with contextlib.suppress(Crash):
                rc = command.run(mirror.config_path, ["-t"], stdin=io.BytesIO(message(tag)))
        if not inj.what:
            assert rc == 0
            assert len(sink(account.server, f"{tag}@example.com")) == 1
            return at - 1
        config = load(mirror.config_path)
        asyncio.run(flush_account(config, config.accounts[0]))  # as sync does
        want = 0 if at == 1 else 1  # killed before the queue: never acknowledged
        got = sink(account.server, f"{tag}@example.com")
        assert len(got) == want, f"killed at step {at} ({inj.what}): sent {len(got)} times"
        if want:
            assert_sent_copy(account, f"{tag}@example.com")
            assert Outbox.for_account(mirror.state_dir, mirror.name).entries() == []
    raise AssertionError("the send never ran through")


def test_killed_at_every_step_then_flushed_sends_exactly_once(
    account_factory: Callable[[], Account], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = _crash_loop(account_factory, tmp_path, monkeypatch)
    assert steps >= 18, steps


def test_killed_at_every_step_on_a_cyrus_that_deletes_submissions_once_sent(
    cyrus_deleteonsend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cyrus's default: EmailSubmission/query finds nothing after the send; the
    Email having left Drafts is what proves it was sent."""
    steps = _crash_loop(lambda: new_account(cyrus_deleteonsend), tmp_path, monkeypatch)
    assert steps >= 18, steps


@pytest.mark.parametrize(
    ("marker", "when"),
    [
        (b"POST /jmap/upload/", "before"),
        (b"POST /jmap/upload/", "after"),
        (b'"Email/import"', "before"),
        (b'"Email/import"', "after"),
        (b'"EmailSubmission/set"', "before"),
        (b'"EmailSubmission/set"', "after"),
    ],
    ids=["upload-before", "upload-after", "import-before", "import-after", "submit-before",
         "submit-after"],
)  # fmt: skip
@pytest.mark.parametrize("server", ["cyrus", "cyrus_deleteonsend"])
def test_real_process_sigkilled_at_a_request_never_sends_twice(
    marker: bytes, when: str, server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    cyrus = request.getfixturevalue(server)
    account = new_account(cyrus)
    proxy = KillProxy(account.http_port, marker, when)
    try:
        mirror = Mirror(account, tmp_path)
        mirror.set("session_url", proxy.url())
        tag = f"kill.{account.user}"
        proc = send_popen(mirror, "-t")
        proxy.victim = proc.pid
        assert proc.stdin is not None
        proc.stdin.write(message(tag))
        proc.stdin.close()
        assert proc.wait(timeout=60) == -9, "the send ended before the kill"
        assert proxy.fired.is_set()
    finally:
        proxy.close()
    mirror.set("session_url", account.session_url)
    before = len(sink(cyrus, f"{tag}@example.com"))
    assert before == (1 if marker.startswith(b'"EmailSub') and when == "after" else 0)
    done = send_cli(mirror, "--flush")
    assert done.returncode == 0, done.stderr
    assert len(sink(cyrus, f"{tag}@example.com")) == 1
    assert_sent_copy(account, f"{tag}@example.com")


def send_popen(mirror: Mirror, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "jmapsync", "-c", str(mirror.config_path), "send", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


def test_the_daemon_sends_what_was_queued_once_the_server_is_back(
    account: Account, tmp_path: Path
) -> None:
    from daemonproc import Acct, DaemonProc, wait_for, write_config

    proxy = KillProxy(account.http_port)
    proxy.down = True
    try:
        config = write_config(tmp_path, [Acct("a", account)], push="poll", poll_interval="300")
        text = config.read_text().replace(account.session_url, proxy.url())
        config.write_text(text)
        with DaemonProc(config) as d:
            d.wait_event("pass-failed")
            done = subprocess.run(
                [sys.executable, "-m", "jmapsync", "-c", str(config), "send", "-t"],
                input=message("daemon1"),
                capture_output=True,
                cwd=ROOT,
                check=False,
            )
            assert done.returncode == 0 and b"queued" in done.stderr, done.stderr
            proxy.down = False  # the server is back: the retry pass sends it first
            wait_for(
                "the queued message sent", lambda: sink(account.server, "daemon1@example.com"), 90
            )
            d.wait_event("send-sent", timeout=10)
            d.wait_event("pass", timeout=10)
            assert d.stop()[0] == 0
    finally:
        proxy.close()
    assert len(sink(account.server, "daemon1@example.com")) == 1
    assert_sent_copy(account, "daemon1@example.com")
    assert Outbox.for_account(tmp_path / "state", "a").entries() == []


def test_the_idle_daemon_sends_a_message_queued_meanwhile_at_once(
    account: Account, tmp_path: Path
) -> None:
    """The daemon watches the outbox: a message `send` could only queue (its
    own connection failed) goes as soon as it lands there, not at the next
    pass, which poll_interval puts 300 s away."""
    from daemonproc import Acct, DaemonProc, wait_for, write_config

    config = write_config(tmp_path, [Acct("a", account)], push="poll", poll_interval="300")
    offline = tmp_path / "offline.ini"  # same state_dir and account, a dead server
    offline.write_text(config.read_text().replace(account.session_url, "http://127.0.0.1:9/jmap/"))
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready", timeout=60)
        d.wait_event("pass", timeout=60)
        done = subprocess.run(
            [sys.executable, "-m", "jmapsync", "-c", str(offline), "send", "-t"],
            input=message("idle1"),
            capture_output=True,
            cwd=ROOT,
            check=False,
        )
        assert done.returncode == 0 and b"queued" in done.stderr, done.stderr
        wait_for("the queued message sent", lambda: sink(account.server, "idle1@example.com"), 60)
        assert d.stop()[0] == 0
    assert len(sink(account.server, "idle1@example.com")) == 1
    assert Outbox.for_account(tmp_path / "state", "a").entries() == []
