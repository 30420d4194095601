"""post_sync_command without a server: which passes run it, its environment,
its config keys, its output cleaning, its process handling; the daemon's
debounce rule."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

import pytest
import structlog

from jmapsync import hooks
from jmapsync.config import parse
from jmapsync.daemon import posthook
from jmapsync.errors import ConfigError
from jmapsync.sync.report import SyncReport

ROOT = Path(__file__).resolve().parents[2]
NOT_CHANGES = {"planned", "foreign"}  # what the pass looked at, not what it did


def _config(tmp_path: Path, extra: str = "", account_extra: str = "") -> str:
    return (
        f"[jmapsync]\nstate_dir = {tmp_path / 'state'}\n{extra}"
        "[account a]\nsession_url = https://h.example\nusername = u\npassword = p\n"
        f"maildir = {tmp_path / 'mail'}\n{account_extra}"
    )


def test_every_change_counter_of_the_report_has_an_environment_variable() -> None:
    counters = {
        f.name
        for f in dataclasses.fields(SyncReport)
        if f.type in ("int", int) and f.name not in NOT_CHANGES
    }
    assert counters == set(hooks.COUNTERS), (
        "a SyncReport counter needs its JMAPSYNC_* variable in hooks.COUNTERS"
        " (and a line in config.example.ini)"
    )
    assert set(hooks.COUNTERS) >= hooks.LOCAL


def test_config_example_documents_exactly_the_variables_the_hook_gets() -> None:
    documented = set(
        re.findall(r"^;\s+(JMAPSYNC_[A-Z_]+)\s", (ROOT / "config.example.ini").read_text(), re.M)
    )
    given = {var for var, _ in hooks.COUNTERS.values()} | set(hooks.ENV)
    assert documented == given


@pytest.mark.parametrize(
    ("changes", "runs"),
    [
        ({}, False),
        ({"downloaded": 1}, True),
        ({"renamed": 2, "moved": 1}, True),
        ({"removed": 1}, True),
        ({"linked": 1}, True),
        ({"folders_created": 1}, True),
        ({"rewritten": 3}, True),
        ({"imported": 1}, True),  # the local file is renamed to the Email id
        ({"adopted": 1}, True),
        # Only the server changed: the Maildir is as the user left it.
        ({"pushed": 4}, False),
        ({"destroyed": 1}, False),
        ({"mailboxes_created": 1}, False),
        ({"bytes": 10, "planned": 5, "foreign": 2}, False),
    ],
)
def test_the_hook_runs_only_after_a_pass_that_changed_the_maildir(
    changes: dict[str, int], runs: bool
) -> None:
    assert hooks.has_local_changes(SyncReport("a", **changes)) is runs


def test_environment_sums_the_passes_of_one_run(tmp_path: Path) -> None:
    config = parse(_config(tmp_path), tmp_path / "c.ini")
    totals = hooks.Totals()
    totals.add(SyncReport("a", downloaded=2, bytes=300, renamed=5, moved=2, seconds=0.5))
    totals.add(SyncReport("a", mode="full", downloaded=1, removed=1, warnings=["w"], seconds=0.25))
    env = hooks.environment(config, config.accounts[0], totals)
    assert env["JMAPSYNC_ACCOUNT"] == "a"
    assert env["JMAPSYNC_MAILDIR"] == str(tmp_path / "mail")
    assert env["JMAPSYNC_CONFIG"] == str(tmp_path / "c.ini")
    assert env["JMAPSYNC_PASSES"] == "2"
    assert env["JMAPSYNC_MODE"] == "full"
    assert (env["JMAPSYNC_NEW"], env["JMAPSYNC_BYTES"]) == ("3", "300")
    assert (env["JMAPSYNC_RENAMED"], env["JMAPSYNC_MOVED"]) == ("5", "2")
    assert env["JMAPSYNC_FLAGS_CHANGED"] == "3"
    assert env["JMAPSYNC_REMOVED"] == "1"
    assert env["JMAPSYNC_WARNINGS"] == "1"
    assert env["JMAPSYNC_SECONDS"] == "0.750"
    assert env["JMAPSYNC_PUSHED"] == "0"


def test_config_global_command_account_override_and_off(tmp_path: Path) -> None:
    text = _config(tmp_path, "post_sync_command = notmuch new\npost_sync_timeout = 7\n")
    text += (
        f"[account b]\nsession_url = https://h.example\nusername = u\npassword = p\n"
        f"maildir = {tmp_path / 'b'}\npost_sync_command = mu index\npost_sync_delay = 2.5\n"
        f"[account c]\nsession_url = https://h.example\nusername = u\npassword = p\n"
        f"maildir = {tmp_path / 'c'}\npost_sync_command =\n"
    )
    a, b, c = parse(text).accounts
    assert (a.post_sync_command, a.post_sync_timeout_s, a.post_sync_delay_s) == (
        "notmuch new",
        7.0,
        5.0,
    )
    assert (b.post_sync_command, b.post_sync_timeout_s, b.post_sync_delay_s) == (
        "mu index",
        7.0,
        2.5,
    )
    assert c.post_sync_command is None
    assert parse(_config(tmp_path)).accounts[0].post_sync_command is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("post_sync_command = sh -c 'unclosed\n", "post_sync_command"),
        ("post_sync_timeout = 0\n", "post_sync_timeout must be positive"),
        ("post_sync_delay = soon\n", "post_sync_delay"),
    ],
)
def test_config_refuses_bad_hook_keys(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(_config(tmp_path, account_extra=extra))


def test_output_lines_lose_escapes_and_control_characters() -> None:
    assert hooks.clean(b"\x1b[31mred\x1b[0m text\r") == "red text"
    assert hooks.clean(b"a\x07b\x00c\x1b]0;title\x07d") == "abcd"
    assert hooks.clean("Grüße\t✈".encode()) == "Grüße\t✈"
    assert hooks.clean(b"\xff\xfe") == "\ufffd\ufffd"
    long = hooks.clean(b"x" * 5000)
    assert len(long) == hooks.MAX_LINE_CHARS + 3


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "hook.py"
    path.write_text(body)
    return f"{sys.executable} {path}"


def test_run_logs_output_and_reports_failure_and_timeout(tmp_path: Path) -> None:
    base = _config(tmp_path)
    config = parse(base, tmp_path / "c.ini")
    noisy = _script(tmp_path, "import sys\nprint('\\x1b[1mhello\\x1b[0m')\nsys.exit(3)\n")
    account = dataclasses.replace(config.accounts[0], post_sync_command=noisy)
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(hooks.run(config, account, hooks.Totals.of(SyncReport("a"))))
    assert (result.ok, result.detail) == (False, "exit status 3")
    assert {"event": "post-sync-output", "stream": "stdout", "line": "hello"} in [
        {k: e.get(k) for k in ("event", "stream", "line")} for e in logs
    ]
    assert any(e["event"] == "post-sync-failed" and e["result"] == "exit status 3" for e in logs)

    slow = _script(tmp_path, "import time\ntime.sleep(60)\n")
    account = dataclasses.replace(account, post_sync_command=slow, post_sync_timeout_s=0.5)
    started = time.monotonic()
    result = asyncio.run(hooks.run(config, account, hooks.Totals()))
    assert (result.ok, result.detail) == (False, "timed out after 0.5 s")
    assert time.monotonic() - started < 30  # SIGTERM ended it, not its own end

    missing = dataclasses.replace(account, post_sync_command="/nonexistent/hook --x")
    result = asyncio.run(hooks.run(config, missing, hooks.Totals()))
    assert not result.ok and result.detail.startswith("could not start /nonexistent/hook")


def test_no_shell_unless_the_command_asks_for_one(tmp_path: Path) -> None:
    config = parse(_config(tmp_path), tmp_path / "c.ini")
    target = tmp_path / "out"
    account = dataclasses.replace(
        config.accounts[0], post_sync_command=f"echo $JMAPSYNC_NEW > {target}"
    )
    with structlog.testing.capture_logs() as logs:
        asyncio.run(hooks.run(config, account, hooks.Totals.of(SyncReport("a", downloaded=4))))
    assert not target.exists()
    assert [e["line"] for e in logs if e["event"] == "post-sync-output"] == [
        f"$JMAPSYNC_NEW > {target}"
    ]
    account = dataclasses.replace(
        account, post_sync_command=f"sh -c 'echo $JMAPSYNC_NEW > {target}'"
    )
    asyncio.run(hooks.run(config, account, hooks.Totals.of(SyncReport("a", downloaded=4))))
    assert target.read_text() == "4\n"


def test_a_timeout_ends_the_hooks_children_too(tmp_path: Path) -> None:
    """The hook's own process group gets the SIGTERM: a shell's child does
    not live on after the timeout."""
    config = parse(_config(tmp_path), tmp_path / "c.ini")
    pidfile = tmp_path / "child.pid"
    account = dataclasses.replace(
        config.accounts[0],
        post_sync_command=f"sh -c 'sleep 60 & echo $! > {pidfile}; wait'",
        post_sync_timeout_s=1.0,
    )
    result = asyncio.run(hooks.run(config, account, hooks.Totals()))
    assert result.detail == "timed out after 1 s"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def test_daemon_debounce_one_run_for_passes_close_together(tmp_path: Path) -> None:
    """Three passes within post_sync_delay of each other: one run with their
    sum; a pass with no local change adds nothing; a later pass: a second run."""
    config = parse(_config(tmp_path), tmp_path / "c.ini")
    out = tmp_path / "runs"
    hook = _script(
        tmp_path,
        "import os\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(os.environ['JMAPSYNC_PASSES'] + ' ' + os.environ['JMAPSYNC_NEW'] + '\\n')\n",
    )
    account = dataclasses.replace(config.accounts[0], post_sync_command=hook, post_sync_delay_s=0.3)

    async def scenario() -> None:
        runner = posthook.PostSyncHook(config, account)
        for n in (1, 2, 3):
            runner.add(SyncReport("a", downloaded=n))
            await asyncio.sleep(0.05)
        runner.add(SyncReport("a", pushed=5))  # nothing local: not counted
        await _wait(out.exists)
        runner.add(SyncReport("a", downloaded=10))
        await _wait(lambda: len(out.read_text().splitlines()) == 2)
        await runner.stop()

    asyncio.run(scenario())
    assert out.read_text().splitlines() == ["3 6", "1 10"]


def test_daemon_stop_runs_the_waiting_hook(tmp_path: Path) -> None:
    config = parse(_config(tmp_path), tmp_path / "c.ini")
    out = tmp_path / "ran"
    account = dataclasses.replace(
        config.accounts[0],
        post_sync_command=f"sh -c 'echo $JMAPSYNC_NEW > {out}'",
        post_sync_delay_s=60.0,
    )

    async def scenario() -> None:
        runner = posthook.PostSyncHook(config, account)
        runner.add(SyncReport("a", downloaded=2))
        await runner.stop()

    asyncio.run(scenario())
    assert out.read_text() == "2\n"


async def _wait(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)
