"""`jmapsync sync` with nothing new, against the real Cyrus: the fast path of
sync/quick.py answers without loading the engine, and leaves every account
it cannot vouch for to the engine.

Each run is a real command line in a child process, which reports the
modules it loaded at exit: what loads is the behaviour under test (no
engine, no asyncio, no structlog, no HTTP library on the no-change path;
issue 16), never how long it took.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest
from faultproxy import FaultProxy, proxy_for
from mailtools import Account, make_message
from mirror import ROOT, Mirror, assert_exact_mirror, message_files

from jmapsync.state.db import StateDB

# Every jmapsync module a no-change pass may load, and no other: a module
# that creeps into the path shows here (tests/unit/test_architecture.py
# keeps the rest of the layout).
QUICK_MODULES = {
    "jmapsync",
    "jmapsync.cli",
    "jmapsync.config",
    "jmapsync.config_values",
    "jmapsync.errors",
    "jmapsync.jmap",
    "jmapsync.jmap.api",
    "jmapsync.jmap.changes",
    "jmapsync.jmap.progress",
    "jmapsync.jmap.types",
    "jmapsync.jmap.wire",
    "jmapsync.log",
    "jmapsync.maildir",
    "jmapsync.maildir.paths",
    "jmapsync.parser",
    "jmapsync.scrub",
    "jmapsync.send",
    "jmapsync.send.spool",
    "jmapsync.state",
    "jmapsync.state.archived",
    "jmapsync.state.db",
    "jmapsync.state.lock",
    "jmapsync.state.schema",
    "jmapsync.sync",
    "jmapsync.sync.arrival",
    "jmapsync.sync.quick",
    "jmapsync.sync.report",
    "jmapsync.sync.stamp",
}
# Heavy libraries (and what loads them) that a no-change pass must not load.
HEAVY = (
    "asyncio",
    "structlog",
    "httpx",
    "httpcore",
    "websockets",
    "watchdog",
    "apscheduler",
    "tqdm",
    "ssl",  # http:// here: TLS is loaded for https only
    "hashlib",
    "subprocess",
    "email.parser",
)

# QUICK_PATIENCE: how late the server's answer may be before the engine is
# preloaded (quick.PATIENCE_S); by default never here, so that which modules
# a pass loads does not depend on how fast Cyrus answers on a busy machine.
DRIVER = """
import json, os, sys
import jmapsync.sync.quick
jmapsync.sync.quick.PATIENCE_S = float(os.environ.get("QUICK_PATIENCE", "3600"))
from jmapsync.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    with open(os.environ["QUICK_MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
sys.exit(rc)
"""


def run(
    mirror: Mirror, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str], list[dict[str, object]]]:
    """`jmapsync -c CONFIG sync ARGS` in a child: its result, the modules it
    loaded, and its JSON log events."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "-c", str(mirror.config_path), "sync", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**(env or os.environ), "QUICK_MODULES_OUT": str(out)},
        timeout=120,
    )
    modules = set(json.loads(out.read_text()))
    events = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    return done, modules, events


def engine_loaded(modules: set[str]) -> bool:
    return "jmapsync.sync.engine" in modules


def done_event(events: list[dict[str, object]]) -> dict[str, object]:
    (done,) = [e for e in events if e["event"] == "sync-done"]
    return done


@pytest.fixture
def synced(account: Account, tmp_path: Path) -> Mirror:
    for i in range(1, 4):
        account.append("INBOX", make_message(i))
    account.create_folder("Work")
    account.append("Work", make_message(4))
    mirror = Mirror(account, tmp_path / "m")
    mirror.config_path.chmod(0o600)  # else each run warns about the password in it
    mirror.cli("sync")
    return mirror


def test_a_no_change_pass_loads_no_engine_and_records_like_the_engine(
    synced: Mirror, tmp_path: Path
) -> None:
    db = StateDB.for_account(synced.state_dir, "test")
    before = {k: db.get_meta(k) for k in ("email_state", "mailbox_state", "last_sync_at")}
    db.close()

    done, modules, events = run(synced, tmp_path)

    assert done.returncode == 0, done.stderr
    assert not engine_loaded(modules)
    ours = {m for m in modules if m == "jmapsync" or m.startswith("jmapsync.")}
    assert ours <= QUICK_MODULES, sorted(ours - QUICK_MODULES)
    assert [m for m in HEAVY if m in modules] == []
    event = done_event(events)
    assert event["mode"] == "unchanged"
    assert event["account"] == "test"
    assert event["level"] == "info"
    assert event["email_state"] == before["email_state"]
    assert [e["event"] for e in events] == ["sync-done"]
    db = StateDB.for_account(synced.state_dir, "test")
    try:
        assert db.get_meta("email_state") == before["email_state"]
        assert db.get_meta("mailbox_state") == before["mailbox_state"]
        assert db.get_meta("last_result") == "ok"
        assert float(db.get_meta("last_sync_at") or 0) > float(before["last_sync_at"] or 0)
    finally:
        db.close()
    assert_exact_mirror(synced)


def test_on_a_terminal_a_no_change_pass_says_so_without_structlog(
    synced: Mirror, tmp_path: Path
) -> None:
    """On a terminal `sync-done` is replaced by a sentence: no event is
    written, so structlog (and the asyncio it loads) is never imported."""
    out = tmp_path / "modules.json"
    child = pexpect.spawn(
        sys.executable,
        ["-c", DRIVER, "-c", str(synced.config_path), "sync"],
        cwd=str(ROOT),
        env={**os.environ, "QUICK_MODULES_OUT": str(out)},
        encoding="utf-8",
        timeout=60,
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert re.fullmatch(r"test: nothing new \(\d+\.\d s\)\s*", child.before or ""), child.before
    modules = set(json.loads(out.read_text()))
    assert [m for m in HEAVY if m in modules] == []
    assert not engine_loaded(modules)


def test_a_server_change_goes_to_the_engine(
    synced: Mirror, account: Account, tmp_path: Path
) -> None:
    account.append("INBOX", make_message(5))
    done, modules, events = run(synced, tmp_path)
    assert done.returncode == 0, done.stderr
    assert engine_loaded(modules)
    assert done_event(events)["downloaded"] == 1
    assert_exact_mirror(synced)
    # and back to the fast path
    done, modules, events = run(synced, tmp_path)
    assert not engine_loaded(modules)
    assert done_event(events)["mode"] == "unchanged"


def test_an_answer_late_enough_preloads_the_engine_and_changes_nothing_else(
    synced: Mirror, account: Account, tmp_path: Path
) -> None:
    """QUICK_PATIENCE=0: every answer is "late", so the engine is imported on
    a thread while the server answers.  With nothing new the pass is still
    the no-change one (the preload is wasted, nothing else); with a change
    the engine takes over with its modules already loaded."""
    late = {**os.environ, "QUICK_PATIENCE": "0"}
    done, modules, events = run(synced, tmp_path, env=late)
    assert done.returncode == 0, done.stderr
    assert done_event(events)["mode"] == "unchanged"
    assert engine_loaded(modules)  # by the preload: the no-change path never imports it
    assert [e["event"] for e in events] == ["sync-done"]

    account.append("INBOX", make_message(5))
    done, modules, events = run(synced, tmp_path, env=late)
    assert done.returncode == 0, done.stderr
    assert done_event(events)["downloaded"] == 1
    assert_exact_mirror(synced)


def test_a_keyword_change_on_the_server_goes_to_the_engine(
    synced: Mirror, account: Account, tmp_path: Path
) -> None:
    j = account.jmap()
    eid = j.email_ids()[0]
    j.set_keywords(eid, {"$flagged": True})
    _, modules, events = run(synced, tmp_path)
    assert engine_loaded(modules)
    assert done_event(events)["renamed"] == 1
    assert_exact_mirror(synced)
    _, modules, events = run(synced, tmp_path)  # the renamed file's folder is stamped again
    assert not engine_loaded(modules)


def test_a_local_change_goes_to_the_engine(synced: Mirror, tmp_path: Path) -> None:
    """A file renamed by a mail program (here: flagged) moves its folder's
    times: the engine looks."""
    synced.set("direction", "two-way")
    synced.cli("sync")
    path = next(p for p in message_files(synced.maildir).values() if "Work" in str(p))
    path.rename(path.with_name(path.name.split(":2,")[0] + ":2,F"))
    done, modules, events = run(synced, tmp_path)
    assert done.returncode == 0, done.stderr
    assert engine_loaded(modules)
    assert done_event(events)["pushed"] == 1
    _, modules, events = run(synced, tmp_path)
    # (our own Email/set changed the mailbox's counts: not a change of the tree)
    assert not engine_loaded(modules)
    assert done_event(events)["mode"] == "unchanged"


def test_a_new_local_folder_goes_to_the_engine(synced: Mirror, tmp_path: Path) -> None:
    (synced.maildir / "Other" / "cur").mkdir(parents=True)
    _, modules, _ = run(synced, tmp_path)
    assert engine_loaded(modules)


def test_another_user_on_the_same_url_goes_to_the_engine(
    synced: Mirror, account_factory: Callable[[], Account], tmp_path: Path
) -> None:
    """The cached session is keyed by session URL and user name."""
    bob = account_factory()
    bob.append("INBOX", make_message(9, subject="for bob"))
    synced.set("username", bob.user)
    synced.set("password", bob.password)
    synced.account = bob
    done, modules, events = run(synced, tmp_path)
    assert done.returncode == 0, done.stderr
    assert engine_loaded(modules)
    assert done_event(events)["mode"] == "full"
    assert_exact_mirror(synced)


def test_verbose_and_force_deletes_go_to_the_engine(synced: Mirror, tmp_path: Path) -> None:
    for args in (("--force-deletes",),):
        _, modules, _ = run(synced, tmp_path, *args)
        assert engine_loaded(modules)
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, "-v", "-c", str(synced.config_path), "sync"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "QUICK_MODULES_OUT": str(out)},
    )
    assert done.returncode == 0, done.stderr
    assert "jmapsync.sync.engine" in json.loads(out.read_text())


def test_the_password_command_runs_once_when_the_engine_takes_over(
    synced: Mirror, account: Account, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\necho run >> {counter}\necho {account.password}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    text = synced.config_path.read_text().replace(
        f"password = {account.password}", f"password_command = {script}"
    )
    synced.config_path.write_text(text)
    account.append("INBOX", make_message(6))  # the fast path asks, then declines

    done, modules, events = run(synced, tmp_path)

    assert done.returncode == 0, done.stderr
    assert engine_loaded(modules)
    assert done_event(events)["downloaded"] == 1
    assert counter.read_text().splitlines() == ["run"]


def test_a_failing_password_command_fails_the_account_once(synced: Mirror, tmp_path: Path) -> None:
    text = synced.config_path.read_text()
    synced.config_path.write_text(
        "\n".join(
            "password_command = /bin/false" if line.startswith("password =") else line
            for line in text.splitlines()
        )
        + "\n"
    )
    done, modules, events = run(synced, tmp_path)
    assert done.returncode == 1
    assert not engine_loaded(modules)
    assert done.stderr.splitlines()[-1] == (
        "jmapsync: account test: password_command exited with status 1"
    )
    (failed,) = [e for e in events if e["event"] == "sync-failed"]
    assert failed["level"] == "error"
    db = StateDB.for_account(synced.state_dir, "test")
    try:
        assert db.get_meta("last_result") == "error: password_command exited with status 1"
    finally:
        db.close()


def test_a_silent_server_is_waited_for_once(account: Account, tmp_path: Path) -> None:
    """The fast path's request stalls: the engine does not send it again
    (it asks for the session afresh, as after its own stalled request)."""
    account.append("INBOX", make_message(1))
    with proxy_for(account.session_url) as proxy:
        mirror = proxied(account, tmp_path / "m", proxy)
        mirror.cli("sync")
        proxy.connections = 0
        proxy.stall_after = 0
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        done, modules, events = run(mirror, tmp_path, env=env)
    assert done.returncode == 1
    assert engine_loaded(modules)
    (refetch,) = [e for e in events if e["event"] == "session-refetch"]
    assert str(refetch["reason"]).startswith("API request Mailbox/changes,")
    assert done.stderr.splitlines()[-1] == (
        "jmapsync: account test: session: no progress for 2 s (less than 1 KiB/s)"
    )
    assert proxy.connections == 2  # the fast path's API request, the engine's session GET


def proxied(account: Account, base: Path, proxy: FaultProxy) -> Mirror:
    mirror = Mirror(account, base)
    text = mirror.config_path.read_text().replace(account.session_url, proxy.url())
    mirror.config_path.write_text(text + "timeout = 2\n")
    return mirror


def test_a_download_waiting_for_retry_goes_to_the_engine(synced: Mirror, tmp_path: Path) -> None:
    """An Email whose download failed is planned by every pass until it
    arrives (record.py `retry_downloads`): nothing changed on either side is
    no reason to skip it."""
    db = StateDB.for_account(synced.state_dir, "test")
    try:
        eid = next(iter(db.emails()))
        with db.transaction() as conn:
            db.set_meta(conn, "retry_downloads", json.dumps([eid]))
    finally:
        db.close()
    done, modules, events = run(synced, tmp_path)
    assert done.returncode == 0, done.stderr
    assert engine_loaded(modules)
    assert done_event(events)["mode"] != "unchanged"
    _, modules, events = run(synced, tmp_path)  # the engine's pass cleared it
    assert not engine_loaded(modules)
    assert done_event(events)["mode"] == "unchanged"
