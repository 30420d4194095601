"""AccountRunner's decisions with a scripted engine (no server, no network):
coalescing, backoff after failures of any kind, echo suppression, stop."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from pathlib import Path
from typing import Any

import pytest

from jmapsync.config import Config, parse
from jmapsync.daemon import account as account_mod
from jmapsync.daemon.account import AccountRunner
from jmapsync.daemon.backoff import Backoff
from jmapsync.errors import RateLimited, TransportError
from jmapsync.jmap.push import StateChange
from jmapsync.sync.engine import SyncReport


class Script:
    """What the fake engine does on each pass: an exception to raise, or a
    report to return after `delay` seconds."""

    def __init__(self, steps: list[Any], delay: float = 0.0) -> None:
        self.steps = steps
        self.delay = delay
        self.calls = 0
        self.running = 0
        self.max_running = 0

    def engine(self) -> type:
        script = self

        class FakeEngine:
            def __init__(self, config: Config, account: Any, **kw: Any) -> None:
                self.account = account

            async def sync(self) -> SyncReport:
                script.calls += 1
                script.running += 1
                script.max_running = max(script.max_running, script.running)
                try:
                    await asyncio.sleep(script.delay)
                    step = script.steps.pop(0) if script.steps else "ok"
                    if isinstance(step, BaseException):
                        raise step
                    return SyncReport(self.account.name, email_state=str(step))
                finally:
                    script.running -= 1

        return FakeEngine


def _config(tmp_path: Path) -> Config:
    (tmp_path / "mail").mkdir()
    return parse(
        f"[jmapsync]\nstate_dir = {tmp_path / 'state'}\npoll_interval = 300\npush = poll\n"
        f"[account a]\nsession_url = http://127.0.0.1:9/\nusername = u\npassword = p\n"
        f"maildir = {tmp_path / 'mail'}\n"
    )


def _runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: Script) -> AccountRunner:
    monkeypatch.setattr(account_mod, "Engine", script.engine())
    config = _config(tmp_path)
    fast = Backoff(base=0.01, cap=0.04, rng=random.Random(3))
    return AccountRunner(config, config.accounts[0], pass_backoff=fast)


async def _until(check: Any, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def test_failures_of_any_kind_are_retried_with_backoff_then_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script([TransportError("refused"), RuntimeError("bug"), "7"])
    runner = _runner(tmp_path, monkeypatch, script)

    async def run() -> None:
        runner.start()
        await _until(lambda: runner.status.passes == 1)
        assert runner.first_pass_done.is_set()
        assert runner.status.error is None and runner.status.sync == "idle"
        await runner.stop(1.0)

    asyncio.run(run())
    assert script.calls == 3
    assert runner._known["Email"] == "7"


def test_requests_during_a_pass_coalesce_into_one_more_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(["1", "2", "3", "4"], delay=0.1)
    runner = _runner(tmp_path, monkeypatch, script)

    async def run() -> None:
        runner.start()
        await _until(lambda: script.running == 1)
        for reason in ("local", "local", "remote", "poll", "local"):
            runner.request(reason)
        await _until(lambda: runner.status.passes == 2)
        await asyncio.sleep(0.25)  # nothing else was asked
        await runner.stop(1.0)

    asyncio.run(run())
    assert script.calls == 2
    assert script.max_running == 1


def test_a_state_change_we_already_hold_runs_no_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(["15", "16"])
    runner = _runner(tmp_path, monkeypatch, script)

    async def run() -> None:
        runner.start()
        await _until(lambda: runner.status.passes == 1)
        runner._on_state_change(StateChange({"u": {"Email": "15"}}, "15"), "u")  # our own
        runner._on_state_change(StateChange({"other": {"Email": "99"}}), "u")  # not ours
        await asyncio.sleep(0.1)
        assert script.calls == 1
        runner._on_state_change(StateChange({"u": {"Email": "16"}}, "16"), "u")  # news
        await _until(lambda: runner.status.passes == 2)
        await runner.stop(1.0)

    asyncio.run(run())
    assert script.calls == 2
    assert runner._push_state == "16"


def test_stop_cancels_a_pass_that_outlives_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(["1"], delay=30)
    runner = _runner(tmp_path, monkeypatch, script)

    async def run() -> float:
        runner.start()
        await _until(lambda: script.running == 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await runner.stop(0.2)
        return loop.time() - started

    took = asyncio.run(run())
    assert 0.15 <= took < 2
    assert script.running == 0 and runner.status.passes == 0


class FakeClient:
    """JmapClient's shape for the push loop: a session, nothing else."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        pass

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def connect(self) -> Any:
        return type("S", (), {"account_id": "u"})()


def _run_channel(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    up_for: float,
    seconds: float,
    backoff_base: float = 0.05,
) -> tuple[list[float], Script]:
    """A runner whose push channel opens, stays up `up_for` s and is closed
    by the server, again and again; returns the times it was opened."""
    from jmapsync.jmap import push

    opens: list[float] = []

    async def channel(*a: Any, **kw: Any) -> Any:
        opens.append(asyncio.get_running_loop().time())
        yield push.Opened("websocket")
        await asyncio.sleep(up_for)
        raise TransportError("closed by the server")

    script = Script([])
    monkeypatch.setattr(account_mod, "Engine", script.engine())
    monkeypatch.setattr(account_mod, "JmapClient", FakeClient)
    monkeypatch.setattr(push, "transports", lambda session: ["websocket"])
    monkeypatch.setattr(push, "open_channel", channel)
    config = _config(tmp_path)
    account = dataclasses.replace(config.accounts[0], push="auto")
    runner = AccountRunner(
        config, account, push_backoff=Backoff(base=backoff_base, cap=10, rng=random.Random(5))
    )

    async def run() -> None:
        runner.start()
        await asyncio.sleep(seconds)
        await runner.stop(0.5)

    asyncio.run(run())
    return opens, script


def test_a_channel_that_drops_at_once_is_reopened_with_growing_delays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened-then-closed must not reset the backoff: otherwise a flaky
    server gets a reconnect, and a pass, every few milliseconds."""
    opens, script = _run_channel(tmp_path, monkeypatch, up_for=0, seconds=1.0)
    assert 3 <= len(opens) <= 7  # 0.05, 0.1, 0.2, 0.4 s (halved at worst) ... not 1 per ms
    assert script.calls <= len(opens) + 1  # a pass per (re)connect, coalesced at most


def test_a_long_lived_channel_the_server_ends_is_reopened_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cyrus ends an event stream every 300 s: routine, no backoff delay."""
    monkeypatch.setattr(account_mod, "PUSH_STABLE_S", 0.1)
    opens, _ = _run_channel(tmp_path, monkeypatch, up_for=0.15, seconds=1.0, backoff_base=0.6)
    gaps = [b - a for a, b in itertools.pairwise(opens)]
    assert len(opens) >= 5
    assert max(gaps) < 0.15 + 0.2  # up_for plus scheduling; a backoff would add >= 0.3


def test_rate_limited_passes_wait_as_asked_and_do_not_fail_the_account_at_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP 429 / rateLimit: the retry waits the server's Retry-After (not
    the 1 s backoff), and the account shows no error for the first few."""
    from structlog.testing import capture_logs

    slow = RateLimited("HTTP 429", retry_after=0.05)
    script = Script([slow, slow, "9"])
    runner = _runner(tmp_path, monkeypatch, script)
    seen: list[tuple[str, str | None]] = []
    runner._on_status = lambda: seen.append((runner.status.sync, runner.status.error))

    async def run() -> None:
        runner.start()
        await _until(lambda: runner.status.passes == 1)
        await runner.stop(1.0)

    with capture_logs() as logs:
        asyncio.run(run())
    assert script.calls == 3
    assert all(error is None for _, error in seen)
    assert ("rate-limited", None) in seen
    waits = [e["retry_in"] for e in logs if e["event"] == "pass-rate-limited"]
    assert waits == [0.05, 0.05]
    assert not [e for e in logs if e["event"] == "pass-failed"]


def test_a_server_that_keeps_refusing_shows_the_account_failed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = RateLimited("HTTP 429", retry_after=0.01)
    script = Script([slow] * (account_mod.RATE_LIMIT_GRACE + 1) + ["3"])
    runner = _runner(tmp_path, monkeypatch, script)
    errors: list[str | None] = []
    runner._on_status = lambda: errors.append(runner.status.error)

    async def run() -> None:
        runner.start()
        await _until(lambda: runner.status.passes == 1)
        await runner.stop(1.0)

    asyncio.run(run())
    assert "HTTP 429" in errors  # shown once the grace was used up
    assert runner.status.error is None  # and cleared by the good pass
