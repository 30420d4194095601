"""`jmapsync send` against a fake server that does what Cyrus will not:
a second Email for the same bytes, no onSuccessUpdateEmail, EmailSubmissions
that vanish once sent, refusals.  Crash at every step, then flush: the
message leaves exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakesubmit import SENT, SubmitServer, client_factory, config_for

from jmapsync.jmap.client import JmapClient
from jmapsync.send import command
from jmapsync.send.flush import flush_account
from jmapsync.send.outbox import Entry, Outbox

MESSAGE = (
    b"From: Me <me@example.com>\n"
    b"To: Bob <bob@example.org>\n"
    b"Bcc: hidden@example.net\n"
    b"Subject: crash test\n"
    b"Message-ID: <crash.1@example.com>\n"
    b"Date: Mon, 1 Jan 2026 10:00:00 +0000\n"
    b"\n"
    b"body\n"
)


def send(server: SubmitServer, tmp_path: Path, *argv: str, raw: bytes = MESSAGE, **kw: Any) -> int:
    config = config_for(tmp_path, server, **kw)
    return command.run(
        None,
        list(argv),
        stdin=io.BytesIO(raw),
        client_factory=client_factory(server),
        config=config,
    )


def outbox(tmp_path: Path) -> Outbox:
    return Outbox.for_account(tmp_path / "state", "fake")


def entries_of(tmp_path: Path) -> list[Entry]:
    box = outbox(tmp_path)
    try:
        return box.entries()
    finally:
        box.close()


def assert_sent_once(server: SubmitServer) -> None:
    assert len(server.delivered) == 1, [e for e, _ in server.delivered]
    envelope, data = server.delivered[0]
    assert envelope["mailFrom"]["email"] == "me@example.com"
    assert [r["email"] for r in envelope["rcptTo"]] == ["bob@example.org", "hidden@example.net"]
    assert b"Bcc" not in data and b"hidden" not in data
    mine = [e for e in server.emails.values() if b"<crash.1@example.com>" in e.blob]
    assert len(mine) == 1, "the message was imported twice"
    assert mine[0].mailbox_ids == {SENT} and mine[0].keywords == {"$seen"}


def test_send_imports_submits_and_moves_the_copy_to_sent(tmp_path: Path) -> None:
    server = SubmitServer()
    assert send(server, tmp_path, "-t") == 0
    assert_sent_once(server)
    assert outbox(tmp_path).entries() == []
    assert not list((outbox(tmp_path).root / "new").iterdir())
    # onSuccessUpdateEmail did the move: no separate Email/set
    assert server.calls.count("Email/set") == 0


class Crash(BaseException):
    """Stands for SIGKILL: nothing of ours catches a BaseException."""


class Injector:
    def __init__(self, at: int) -> None:
        self.at, self.step, self.fired, self.what = at, 0, False, ""

    def tick(self, what: str) -> None:
        self.step += 1
        if self.step == self.at:
            self.fired, self.what = True, what
            raise Crash(what)

    def wrap(self, fn: Callable[..., Any], name: str, is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def awrapped(*args: Any, **kw: Any) -> Any:
                self.tick(f"before {name}")
                result = await fn(*args, **kw)
                self.tick(f"after {name}")  # done, its answer lost
                return result

            return awrapped

        def wrapped(*args: Any, **kw: Any) -> Any:
            self.tick(f"before {name}")
            result = fn(*args, **kw)
            self.tick(f"after {name}")
            return result

        return wrapped


def crashed_send(
    server: SubmitServer, tmp_path: Path, at: int, monkeypatch: pytest.MonkeyPatch
) -> Injector:
    inj = Injector(at)
    with monkeypatch.context() as m:
        for name in ("call", "upload"):
            m.setattr(JmapClient, name, inj.wrap(getattr(JmapClient, name), name, True))
        for name in ("add", "update", "hold", "done"):
            m.setattr(Outbox, name, inj.wrap(getattr(Outbox, name), f"outbox.{name}", False))
        with contextlib.suppress(Crash):
            send(server, tmp_path, "-t")
    return inj


@pytest.mark.parametrize(
    "variant",
    [
        {},  # no deduplication of imports, EmailSubmissions kept
        {"delete_on_send": True},  # EmailSubmissions vanish once sent (Cyrus's default)
        {"refuse_on_success": True},  # no onSuccessUpdateEmail: a separate Email/set
        {"dedupe_imports": True},  # Cyrus-like imports
    ],
    ids=["plain", "delete-on-send", "no-onsuccess", "dedupe"],
)
def test_killed_at_every_step_then_flushed_sends_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: dict[str, bool]
) -> None:
    steps = 0
    for at in range(1, 100):
        server = SubmitServer(**variant)
        run_dir = tmp_path / f"run{at}"
        inj = crashed_send(server, run_dir, at, monkeypatch)
        if not inj.fired:
            steps = at - 1
            assert_sent_once(server)
            break
        # the restart: a flush (as `sync`, the daemon or `send --flush` do)
        config = config_for(run_dir, server)
        rc = command.run(None, ["--flush"], client_factory=client_factory(server), config=config)
        if at == 1:  # killed before the message was queued: never acknowledged, never sent
            assert server.delivered == [] and rc == 0, inj.what
            continue
        assert rc == 0, inj.what
        try:
            assert_sent_once(server)
        except AssertionError as exc:
            raise AssertionError(f"killed at step {at} ({inj.what}): {exc}") from None
        assert outbox(run_dir).entries() == [], inj.what
    assert steps >= 18, f"only {steps} side effects: the injection misses the send"


def test_a_lost_submission_answer_is_not_sent_again_although_the_server_forgot_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case the EmailSubmission list cannot decide (deleted on send): the
    Email left Drafts, which only a successful submission does."""
    server = SubmitServer(delete_on_send=True)
    for at in range(1, 40):
        inj = crashed_send(server, tmp_path, at, monkeypatch)
        if inj.what == "after call" and server.delivered:
            break
        server = SubmitServer(delete_on_send=True)
        tmp_path = tmp_path.parent / f"{tmp_path.name}x"
    assert server.delivered and server.submissions == {}
    assert outbox(tmp_path).entries()[0].state == "submitting"
    command.run(None, ["--flush"], client_factory=client_factory(server),
                config=config_for(tmp_path, server))  # fmt: skip
    assert_sent_once(server)


def test_without_onsuccessupdateemail_a_second_email_set_moves_the_copy(tmp_path: Path) -> None:
    server = SubmitServer(refuse_on_success=True)
    assert send(server, tmp_path, "-t") == 0
    assert_sent_once(server)
    assert server.calls.count("Email/set") == 1


def test_a_refusal_is_held_with_its_reason_and_retried_only_by_flush(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = SubmitServer(refuse="forbiddenFrom")
    assert send(server, tmp_path, "-t") == 0  # kept in the outbox: "queued"
    err = capsys.readouterr().err
    assert "refused" in err and "forbiddenFrom" in err and len(err.strip().splitlines()) == 1
    [entry] = outbox(tmp_path).entries()
    assert entry.state == "held" and entry.reason_kind == "forbiddenFrom"
    assert (outbox(tmp_path).root / "cur" / entry.id).exists()
    # sync and the daemon leave it alone (no request at all: new/ is empty)
    config = config_for(tmp_path, server)
    calls = len(server.calls)
    asyncio.run(flush_account(config, config.accounts[0], client_factory=client_factory(server)))
    assert len(server.calls) == calls
    # status shows it
    status = command.outbox_status(config, "fake")
    assert status["messages"][0]["state"] == "held"
    assert "forbiddenFrom" in status["messages"][0]["reason"]
    # the user fixed it: send --flush tries again, and it goes once
    server.refuse = None
    assert command.run(None, ["--flush"], client_factory=client_factory(server), config=config) == 0
    assert_sent_once(server)


def test_no_submission_capability_holds_the_message(tmp_path: Path) -> None:
    server = SubmitServer(with_submission=False)
    assert send(server, tmp_path, "-t") == 0
    [entry] = outbox(tmp_path).entries()
    assert entry.state == "held" and entry.reason_kind == "noSubmission"
    assert "Email submission" in (entry.reason or "")


def test_offline_queues_and_a_flush_sends_it_later(tmp_path: Path) -> None:
    server = SubmitServer(down=True)
    assert send(server, tmp_path, "-t") == 0
    [entry] = outbox(tmp_path).entries()
    assert entry.state == "queued" and "down" in (entry.reason or "")
    server.down = False
    config = config_for(tmp_path, server)
    assert command.run(None, ["--flush"], client_factory=client_factory(server), config=config) == 0
    assert_sent_once(server)


def test_no_identity_for_from_is_ex_nouser_and_nothing_stays_queued(tmp_path: Path) -> None:
    server = SubmitServer()
    raw = MESSAGE.replace(b"From: Me <me@example.com>", b"From: other@example.com")
    assert send(server, tmp_path, "-t", raw=raw) == command.EX_NOUSER
    assert server.delivered == [] and outbox(tmp_path).entries() == []
    # offline, the identities cached by the last online send still decide
    server.down = True
    assert send(server, tmp_path, "-t", raw=raw) == command.EX_NOUSER
    assert outbox(tmp_path).entries() == []
    assert send(server, tmp_path, "-t") == 0  # a From we may use is queued
    assert len(outbox(tmp_path).entries()) == 1


def test_unwritable_outbox_sends_directly_or_is_tempfail(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")  # the state dir cannot be made
    server = SubmitServer()
    assert send(server, tmp_path, "-t") == 0
    assert_sent_once(server)
    server = SubmitServer(down=True)
    assert send(server, tmp_path, "-t") == command.EX_TEMPFAIL


def test_usage_errors_are_ex_usage_and_queue_nothing(tmp_path: Path) -> None:
    server = SubmitServer()
    assert send(server, tmp_path, "--account", "nope", "-t") == command.EX_USAGE
    assert send(server, tmp_path) == command.EX_USAGE  # no recipient, no -t
    assert send(server, tmp_path, "-X", "/tmp/log") == command.EX_USAGE
    assert server.calls == [] and not (tmp_path / "state").exists()


def test_the_outbox_is_private(tmp_path: Path) -> None:
    server = SubmitServer(down=True)
    assert send(server, tmp_path, "-t") == 0
    root = outbox(tmp_path).root
    for d in (tmp_path / "state", root.parent, root, root / "new"):
        assert d.stat().st_mode & 0o777 == 0o700, d
    [entry] = outbox(tmp_path).entries()
    assert (root / "new" / entry.id).stat().st_mode & 0o777 == 0o600


def test_while_another_process_sends_the_outbox_send_leaves_it_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon flushing at that moment holds flush.lock: `send` waits a
    while, then leaves the message for it (exit 0, one line on stderr)."""
    server = SubmitServer()
    monkeypatch.setattr(command, "LOCK_WAIT_S", 0.2)
    box = outbox(tmp_path)
    with box.lock(0) as got:
        assert got
        assert send(server, tmp_path, "-t") == 0
    assert "another jmapsync process" in capsys.readouterr().err
    assert server.delivered == [] and len(box.entries()) == 1
    config = config_for(tmp_path, server)
    asyncio.run(flush_account(config, config.accounts[0], client_factory=client_factory(server)))
    assert_sent_once(server)


def test_a_file_without_a_row_is_never_sent_and_status_shows_it(tmp_path: Path) -> None:
    """`send` died between writing the file and committing its row: the mail
    program saw a failure, so the message was never acknowledged."""
    server = SubmitServer(down=True)
    assert send(server, tmp_path, "-t") == 0  # makes the outbox
    box = outbox(tmp_path)
    [entry] = box.entries()
    box.done(entry)
    (box.root / "new" / "1700000000.deadbeef").write_bytes(MESSAGE)
    server.down = False
    config = config_for(tmp_path, server)
    assert command.run(None, ["--flush"], client_factory=client_factory(server), config=config) == 0
    assert server.delivered == []
    assert command.outbox_status(config, "fake")["not_queued"] == ["1700000000.deadbeef"]


def test_a_full_or_read_only_state_disk_never_loses_or_doubles_a_message(tmp_path: Path) -> None:
    """A real tmpfs: full, `send` sends directly (0) or gives up (75); read-only
    under a queued message, a flush reports it and sends nothing twice later."""
    import mounts

    if why := mounts.skip_reason():
        pytest.skip(why)
    with mounts.tmpfs("256k") as m:
        filler = m.path / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
        server = SubmitServer()
        assert send(server, m.path, "-t") == 0  # no room to queue: sent at once
        assert_sent_once(server)
        server = SubmitServer(down=True)
        assert send(server, m.path, "-t") == command.EX_TEMPFAIL
        filler.unlink()
        assert send(server, m.path, "-t") == 0  # room again: queued
        assert len(entries_of(m.path)) == 1  # (closed again: a ro remount needs no writer)
        m.read_only()
        server.down = False
        config = config_for(m.path, server)
        report = asyncio.run(
            flush_account(config, config.accounts[0], client_factory=client_factory(server))
        )
        assert report.error and "outbox" in report.error, report
        assert server.delivered == []  # nothing is sent that could not be journaled first
        m.read_only(False)
        asyncio.run(
            flush_account(config, config.accounts[0], client_factory=client_factory(server))
        )
        assert_sent_once(server)


@pytest.mark.parametrize("delete_on_send", [False, True])
def test_a_submission_the_http_layer_sends_twice_goes_out_once(
    tmp_path: Path, delete_on_send: bool
) -> None:
    """The server received the submission, the connection broke, the request
    was repeated: ifInState makes the repeat a stateMismatch, and the server
    is asked whether the message went before anything is sent again."""
    server = SubmitServer(replay_submission=True, delete_on_send=delete_on_send)
    assert send(server, tmp_path, "-t") == 0
    assert_sent_once(server)
    assert not server.replay_submission  # the repeat did happen
    assert entries_of(tmp_path) == []
