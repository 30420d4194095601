"""post_sync_command with `jmapsync sync` against the real Cyrus; the sentence
a pass ends with on a terminal; the modes of what a real sync creates."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
from mailtools import Account, make_message
from mirror import ROOT, Mirror, message_files

RECORD = """\
import json, os, sys
with open(sys.argv[1], "a") as f:
    env = {k: v for k, v in os.environ.items() if k.startswith("JMAPSYNC_")}
    f.write(json.dumps(env) + "\\n")
"""


def _recording_hook(mirror: Mirror) -> Path:
    """post_sync_command = a script appending its JMAPSYNC_* variables to a file."""
    script = mirror.base / "record.py"
    script.write_text(RECORD)
    runs = mirror.base / "runs.jsonl"
    mirror.set("post_sync_command", f"{sys.executable} {script} {runs}")
    return runs


def _runs(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _events(stderr: str, name: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == name:
            out.append(e)
    return out


def test_the_hook_runs_with_the_counts_after_a_pass_that_changed_the_maildir(
    account: Account, tmp_path: Path
) -> None:
    j = account.jmap()
    first = account.import_message(make_message(1))
    second = account.import_message(make_message(2))
    mirror = Mirror(account, tmp_path, direction="two-way")
    runs = _recording_hook(mirror)

    mirror.cli("--log-format", "json", "sync")
    [run] = _runs(runs)
    assert run["JMAPSYNC_ACCOUNT"] == "test"
    assert run["JMAPSYNC_MAILDIR"] == str(mirror.maildir)
    assert run["JMAPSYNC_CONFIG"] == str(mirror.config_path)
    assert (run["JMAPSYNC_NEW"], run["JMAPSYNC_PASSES"], run["JMAPSYNC_REMOVED"]) == ("2", "1", "0")
    assert int(run["JMAPSYNC_FOLDERS_CREATED"]) >= 1  # INBOX, Trash, ...
    assert int(run["JMAPSYNC_BYTES"]) > 0

    # Nothing new on either side: no run.
    done = mirror.cli("--log-format", "json", "sync")
    [quiet] = _events(done.stderr, "sync-done")
    assert not any(quiet[k] for k in ("downloaded", "renamed", "removed", "folders_created"))
    assert len(_runs(runs)) == 1

    # A flag change and a move on the server: renames, one of them a move.
    j.add_keyword(first, "$flagged")
    j.move(second, j.mailbox_id("INBOX"), j.create_mailbox("Reisen"))
    mirror.cli("sync")
    run = _runs(runs)[-1]
    assert (run["JMAPSYNC_RENAMED"], run["JMAPSYNC_MOVED"], run["JMAPSYNC_FLAGS_CHANGED"]) == (
        "2",
        "1",
        "1",
    )
    assert (run["JMAPSYNC_NEW"], run["JMAPSYNC_FOLDERS_CREATED"]) == ("0", "1")
    assert len(_runs(runs)) == 2

    # Only a local change, sent to the server: the Maildir is as the user left
    # it, nothing to tell an indexer.
    [path] = [p for p in message_files(mirror.maildir).values() if p.name.startswith(first)]
    path.rename(mirror.maildir / "INBOX" / "cur" / (path.name + "S"))  # as mutt does
    done = mirror.cli("--log-format", "json", "sync")
    assert _events(done.stderr, "sync-done")[0]["pushed"] == 1
    assert len(_runs(runs)) == 2


def test_a_failing_hook_is_logged_and_shown_in_status_but_the_sync_succeeds(
    account: Account, tmp_path: Path
) -> None:
    account.import_message(make_message(1))
    mirror = Mirror(account, tmp_path)
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\nprint('indexing...')\n"
        "print('\\x1b[31mboom\\x1b[0m: database locked', file=sys.stderr)\nsys.exit(3)\n"
    )
    mirror.set("post_sync_command", f"{sys.executable} {script}")
    done = mirror.cli("--log-format", "json", "sync")
    assert done.returncode == 0
    lines = [(e["stream"], e["line"]) for e in _events(done.stderr, "post-sync-output")]
    assert lines == [("stdout", "indexing..."), ("stderr", "boom: database locked")]
    [failed] = _events(done.stderr, "post-sync-failed")
    assert (failed["result"], failed["level"], failed["account"]) == (
        "exit status 3",
        "warning",
        "test",
    )
    assert "post_sync:      FAILED: exit status 3 (" in mirror.cli("status").stdout
    data = json.loads(mirror.cli("status", "--json").stdout)["test"]["post_sync"]
    assert (data["ok"], data["detail"]) == (False, "exit status 3")

    # The next run that works replaces it.
    script.write_text("print('fine')\n")
    account.import_message(make_message(2))
    mirror.cli("sync")
    assert "post_sync:      ok: exit status 0 (" in mirror.cli("status").stdout


def test_a_slow_hook_is_stopped_at_post_sync_timeout(account: Account, tmp_path: Path) -> None:
    account.import_message(make_message(1))
    mirror = Mirror(account, tmp_path)
    pidfile = tmp_path / "hook.pid"
    script = tmp_path / "slow.py"
    script.write_text(
        f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    mirror.set("post_sync_command", f"{sys.executable} {script}")
    mirror.set("post_sync_timeout", "1")
    started = time.monotonic()
    done = mirror.cli("--log-format", "json", "sync")
    assert done.returncode == 0
    assert time.monotonic() - started < 60  # not the hook's 120 s
    [failed] = _events(done.stderr, "post-sync-failed")
    assert failed["result"] == "timed out after 1 s"
    assert "post_sync:      FAILED: timed out after 1 s" in mirror.cli("status").stdout
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


def _spawn(mirror: Mirror, *args: str) -> str:
    """jmapsync on a pseudo-terminal (stdout and stderr a TTY, as in a shell)."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "jmapsync", "-c", str(mirror.config_path), *args],
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=120,
        dimensions=(50, 200),
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return str(child.before).replace("\r\n", "\n")


def test_on_a_terminal_a_pass_ends_with_one_sentence_instead_of_the_event_dump(
    account: Account, tmp_path: Path
) -> None:
    for i in range(3):
        account.import_message(make_message(i, size=20_000))
    mirror = Mirror(account, tmp_path)
    out = _spawn(mirror, "sync")
    [line] = [x for x in out.splitlines() if x.startswith("test: ")]
    assert line.startswith("test: 3 new, ") and " folders created (" in line
    assert " kB) in " in line and line.endswith(" s")
    assert "sync-done" not in out and "downloaded=" not in out

    out = _spawn(mirror, "sync")
    [line] = [x for x in out.splitlines() if x.startswith("test: ")]
    assert line.startswith("test: nothing new (") and line.endswith(" s)")

    # -v keeps the structured event too
    out = _spawn(mirror, "-v", "sync")
    assert "sync-done" in out and "test: nothing new (" in out


def test_a_pipe_gets_no_sentence_and_keeps_the_event(account: Account, tmp_path: Path) -> None:
    account.import_message(make_message(1))
    mirror = Mirror(account, tmp_path)
    done = mirror.cli("--log-format", "console", "sync")
    assert done.stdout == ""
    assert "sync-done" in done.stderr


def test_a_real_sync_creates_private_directories_and_files(
    account: Account, tmp_path: Path
) -> None:
    account.import_message(make_message(1))
    account.jmap().create_mailbox("Deep", account.jmap().create_mailbox("Projects"))
    mirror = Mirror(account, tmp_path / "new-parent")
    old = os.umask(0o022)  # the usual umask; Path.mkdir would make 0755 directories
    try:
        mirror.cli("sync")
    finally:
        os.umask(old)
    dirs = [mirror.maildir, *(p for p in mirror.maildir.rglob("*") if p.is_dir())]
    assert len(dirs) > 10 and (mirror.maildir / "Projects" / "Deep" / "tmp").is_dir()
    assert {stat.S_IMODE(d.stat().st_mode) for d in dirs} == {0o700}
    files = list(message_files(mirror.maildir).values())
    assert files and {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
