"""`jmapsync daemon` against real Cyrus servers: push over WebSocket and
EventSource, the fallback to polling, restarts, bad accounts, signals.

poll_interval is 300 s in every test that proves push: a change that shows
up within a few seconds came by push (or by the Maildir watcher), not by the
polling backstop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import new_account
from daemonproc import (
    ROOT,
    Acct,
    DaemonProc,
    files_of,
    status,
    status_text,
    wait_for,
    write_config,
)
from mailtools import Account, make_message

# Cyrus pushes after polling its own state once a second; a pass is ~50 ms.
PUSH_DEADLINE_S = 6.0
BAD_PASSWORD = "Xyzzy-not-it-4711"


def keywords(account: Account, eid: str) -> set[str]:
    return set(account.jmap().get_email(eid, ["keywords"])["keywords"])


def test_websocket_push_both_ways_without_echo(cyrus_ws: Any, tmp_path: Path) -> None:
    """Remote changes arrive by WebSocket push, local renames reach the server
    via the watcher, our own write is not fetched back, SIGTERM exits 0."""
    acct = new_account(cyrus_ws)
    j = acct.jmap()
    inbox = j.mailbox_id("INBOX")
    first = j.import_message(make_message(1), [inbox])
    config = write_config(tmp_path, [Acct("a", acct)], poll_interval="300")
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")
        d.wait_event("push-connected", transport="websocket")
        assert files_of(maildir, first)
        live = status(config)["a"]["daemon"]
        assert (live["transport"], live["connection"]) == ("websocket", "connected")

        # remote -> local: a new message, then a flag change (a rename)
        second = j.import_message(make_message(2), [inbox])
        wait_for("pushed message on disk", lambda: files_of(maildir, second), PUSH_DEADLINE_S)
        j.add_keyword(second, "$flagged")
        wait_for(
            "remote flag as a rename",
            lambda: any(p.name.endswith(":2,F") for p in files_of(maildir, second)),
            PUSH_DEADLINE_S,
        )

        # local -> remote: mark the first message read
        [path] = files_of(maildir, first)
        os.rename(path, maildir / "INBOX" / "cur" / f"{first}.jmapsync:2,S")
        wait_for("keyword on the server", lambda: "$seen" in keywords(acct, first), 5)
        state = j.state("Email")
        # Cyrus sends its StateChange for our write within ~1 s: wait for it,
        # then make sure nothing followed -- no pass fetched or wrote again.
        time.sleep(1.6)
        assert j.state("Email") == state, "the server saw a second write"
        assert [e["pushed"] for e in d.events("sync-done") if e.get("pushed")] == [1]
        after = d.events("pass")[-1]
        assert after["reasons"] != ["remote"], "our own write's StateChange ran a pass"
        rc, took = d.stop()
    assert rc == 0 and took < 10
    assert "daemon" not in status(config)["a"]  # the status file went with it


def test_eventsource_push(cyrus_ws: Any, tmp_path: Path) -> None:
    acct = new_account(cyrus_ws)
    config = write_config(tmp_path, [Acct("a", acct, extra={"push": "eventsource"})])
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        d.wait_event("push-connected", transport="eventsource")
        d.wait_event("daemon-ready")
        eid = acct.import_message(make_message(3))
        wait_for("message via EventSource", lambda: files_of(maildir, eid), PUSH_DEADLINE_S)
        assert status(config)["a"]["daemon"]["transport"] == "eventsource"
        assert d.stop()[0] == 0


def test_stock_cyrus_falls_back_to_polling(cyrus_stock: Any, tmp_path: Path) -> None:
    """Debian's httpd offers no WebSocket and answers eventSourceUrl with 204:
    push = auto ends at polling, which still mirrors."""
    acct = new_account(cyrus_stock)
    config = write_config(tmp_path, [Acct("a", acct)], poll_interval="0.5")
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        d.wait_event("push-unavailable", using="poll")
        assert d.events("push-transport-unavailable", transport="eventsource")
        eid = acct.import_message(make_message(4))
        wait_for("message by polling", lambda: files_of(maildir, eid), 5)
        assert status(config)["a"]["daemon"]["transport"] == "poll"
        assert d.stop()[0] == 0


def test_push_poll_never_opens_a_channel(cyrus_ws: Any, tmp_path: Path) -> None:
    acct = new_account(cyrus_ws)
    config = write_config(tmp_path, [Acct("a", acct)], poll_interval="0.5", push="poll")
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")
        eid = acct.import_message(make_message(5))
        wait_for("message by polling", lambda: files_of(maildir, eid), 5)
        assert not d.events("push-connected")
        assert d.stop()[0] == 0


def test_full_reconcile_runs_on_schedule(cyrus_ws: Any, tmp_path: Path) -> None:
    """Every full_sync_interval the next pass reads the whole account again
    (mode "full"), not just the changes since the stored state."""
    acct = new_account(cyrus_ws)
    eid = acct.import_message(make_message(10))
    config = write_config(tmp_path, [Acct("a", acct)], full_sync_interval="1")
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")
        d.wait_event("full-reconcile", timeout=5)
        d.wait_event("sync-done", mode="full", count=2, timeout=5)  # the first pass + this one
        assert files_of(tmp_path / "mail" / "a", eid)
        assert d.stop()[0] == 0


def test_server_restart_reconnects_and_catches_up(cyrus_ws: Any, tmp_path: Path) -> None:
    """Cyrus goes away under a running daemon: the local change made meanwhile
    and the remote change made after the restart both arrive, without
    restarting the daemon."""
    acct = new_account(cyrus_ws)
    eid = acct.import_message(make_message(6))
    config = write_config(tmp_path, [Acct("a", acct)], poll_interval="300")
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        d.wait_event("push-connected")
        d.wait_event("daemon-ready")
        cyrus_ws.stop()
        try:
            d.wait_event("push-lost", timeout=10)
            [path] = files_of(maildir, eid)
            os.rename(path, path.parent.parent / "cur" / f"{eid}.jmapsync:2,FS")
            d.wait_event("pass-failed", timeout=10)
        finally:
            cyrus_ws.start()
        d.wait_event("push-connected", count=2, timeout=30)
        wait_for("local change after restart", lambda: "$flagged" in keywords(acct, eid), 30)
        new = acct.import_message(make_message(7))
        wait_for("remote change after restart", lambda: files_of(maildir, new), PUSH_DEADLINE_S)
        assert d.stop()[0] == 0


def test_wrong_password_account_does_not_stop_the_other(cyrus_ws: Any, tmp_path: Path) -> None:
    good, bad = new_account(cyrus_ws), new_account(cyrus_ws)
    config = write_config(
        tmp_path, [Acct("bad", bad, password=BAD_PASSWORD), Acct("good", good)], poll_interval="300"
    )
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")  # READY does not wait for the bad account to heal
        d.wait_event("pass-failed", account="bad")
        eid = good.import_message(make_message(8))
        wait_for("good account syncs", lambda: files_of(tmp_path / "mail" / "good", eid), 6)
        live = status(config)
        assert live["bad"]["daemon"]["sync"] == "backoff"
        assert "credentials" in live["bad"]["daemon"]["error"]
        assert live["good"]["daemon"]["connection"] == "connected"
        text = status_text(config)
        assert text.startswith("daemon: running, pid ")
        assert "  daemon:         backoff: session: the server refused the credentials" in text
        assert "  push:           websocket (connected; push = auto)" in text
        assert "  last change:    " in text and "downloaded 1" in text
        assert BAD_PASSWORD not in d.log_path.read_text()  # a password is never logged
        assert d.stop()[0] == 0


def test_password_command_runs_again_after_the_server_refuses_it(
    cyrus_ws: Any, tmp_path: Path
) -> None:
    """A rotated password heals without a restart: after a 401 the daemon
    asks password_command again instead of reusing the old secret."""
    acct = new_account(cyrus_ws)
    secret = tmp_path / "secret.txt"
    secret.write_text(BAD_PASSWORD + "\n")
    config = write_config(tmp_path, [Acct("a", acct, password_command=f"cat {secret}")])
    with DaemonProc(config) as d:
        d.wait_event("pass-failed")
        secret.write_text(acct.password + "\n")
        d.wait_event("pass", timeout=15)  # the next retry (backoff 0.5-2 s)
        d.wait_event("push-connected", timeout=15)
        assert status(config)["a"]["daemon"]["error"] is None
        assert BAD_PASSWORD not in d.log_path.read_text()
        assert d.stop()[0] == 0


def test_sighup_adds_an_account(cyrus_ws: Any, tmp_path: Path) -> None:
    first, second = new_account(cyrus_ws), new_account(cyrus_ws)
    eid = second.import_message(make_message(9))
    config = write_config(tmp_path, [Acct("one", first)])
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")
        write_config(tmp_path, [Acct("one", first), Acct("two", second)])
        d.signal(signal.SIGHUP)
        d.wait_event("reload", added=["two"], removed=[], changed=[])
        wait_for("added account synced", lambda: files_of(tmp_path / "mail" / "two", eid), 6)
        assert len(d.events("daemon-start")) == 1  # the same process
        write_config(tmp_path, [Acct("two", second)])
        d.signal(signal.SIGHUP)
        d.wait_event("reload", added=[], removed=["one"], changed=[])
        assert d.stop()[0] == 0


def test_sigterm_during_a_large_first_sync_exits_cleanly_and_resumes(
    cyrus_ws: Any, tmp_path: Path
) -> None:
    acct = new_account(cyrus_ws)
    # ~5 s of first sync here (60 MB): well beyond the 2 s a pass gets at SIGTERM
    n = 3000
    acct.append_many("INBOX", [make_message(k, size=20_000) for k in range(n)])
    config = write_config(tmp_path, [Acct("a", acct)], poll_interval="300")
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        wait_for("first files", lambda: files_of(maildir), 30, every=0.002)
        rc, took = d.stop()
        assert d.events("stop-cancels-pass")
    have = len(files_of(maildir))
    assert rc == 0 and took < 10
    assert have < n, "the first sync finished before SIGTERM: make the mailbox larger"
    # the next start downloads only what is missing
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready", timeout=60)
        assert len(files_of(maildir)) == n
        downloaded = sum(e.get("downloaded", 0) for e in d.events("sync-done"))
        assert downloaded == n - have
        assert d.stop()[0] == 0
    assert not [p for p in maildir.rglob("tmp/*") if p.is_file()], "a part file was left"
    done = subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(config), "verify"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_second_daemon_on_the_same_state_is_refused_and_sigint_stops(
    cyrus_ws: Any, tmp_path: Path
) -> None:
    acct = new_account(cyrus_ws)
    config = write_config(tmp_path, [Acct("a", acct)])
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")
        second = subprocess.run(
            [sys.executable, "-m", "jmapsync", "-c", str(config), "daemon"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
            check=False,
        )
        assert second.returncode == 1
        assert f"another jmapsync daemon (pid {d.proc.pid})" in second.stderr
        assert status(config)["a"]["daemon"]["connection"] == "connected"  # untouched
        d.signal(signal.SIGINT)
        assert d.proc.wait(timeout=10) == 0


def test_systemd_notify_ready_status_watchdog_stopping(cyrus_ws: Any, tmp_path: Path) -> None:
    """What a Type=notify unit sees, with a NOTIFY_SOCKET bound here."""
    acct = new_account(cyrus_ws)
    config = write_config(tmp_path, [Acct("a", acct)])
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(10)
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        got: list[str] = []

        def receive(until: str) -> None:
            while not any(until in m for m in got):
                got.append(sock.recv(4096).decode())

        with DaemonProc(config, env=env) as d:
            receive("READY=1")
            assert not d.events("pass-failed")
            assert any(m.startswith("READY=1\nSTATUS=a: ") for m in got)
            receive("WATCHDOG=1")
            got.clear()
            receive("WATCHDOG=1")  # again: it keeps pinging (every 0.2 s here)
            d.signal(signal.SIGTERM)
            receive("STOPPING=1")
            assert d.proc.wait(timeout=10) == 0
