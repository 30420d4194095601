"""post_sync_command in `jmapsync daemon` against the real (WebSocket) Cyrus:
passes close together share one run; a failing hook never stops the daemon."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from conftest import new_account
from daemonproc import Acct, DaemonProc, files_of, status, wait_for, write_config
from mailtools import make_message

# Passes that end within this many seconds of each other share one run.  The
# pushes below come ~1 s apart (Cyrus polls its own state once a second);
# 4 s leaves room for a loaded machine.
DELAY_S = 4.0
PUSH_DEADLINE_S = 8.0

RECORD = """\
import json, os, sys
with open(sys.argv[1], "a") as f:
    env = {k: v for k, v in os.environ.items() if k.startswith("JMAPSYNC_")}
    f.write(json.dumps(env) + "\\n")
"""


def _runs(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_daemon_runs_the_hook_once_for_passes_close_together(
    cyrus_ws: Any, tmp_path: Path
) -> None:
    acct = new_account(cyrus_ws)
    acct.import_message(make_message(1))
    script = tmp_path / "record.py"
    script.write_text(RECORD)
    runs = tmp_path / "runs.jsonl"
    hook = {
        "post_sync_command": f"{sys.executable} {script} {runs}",
        "post_sync_delay": str(DELAY_S),
    }
    config = write_config(tmp_path, [Acct("a", acct, extra=hook)], poll_interval="300")
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")
        first = wait_for("the first pass's hook run", lambda: _runs(runs), DELAY_S + 10)
        assert [(r["JMAPSYNC_NEW"], r["JMAPSYNC_PASSES"]) for r in first] == [("1", "1")]
        assert first[0]["JMAPSYNC_ACCOUNT"] == "a"

        # Two messages, each waited for on disk: two passes, ~1 s apart.
        for i in (2, 3):
            eid = acct.import_message(make_message(i))
            wait_for(f"message {i} on disk", lambda e=eid: files_of(maildir, e), PUSH_DEADLINE_S)
        # The first pass and one per message (logged just after the files land).
        wait_for(
            "three passes that downloaded",
            lambda: len([e for e in d.events("sync-done") if e.get("downloaded")]) == 3,
        )
        assert len(_runs(runs)) == 1, "the hook ran before post_sync_delay had passed"
        wait_for("one run for both passes", lambda: len(_runs(runs)) == 2, DELAY_S + 10)
        second = _runs(runs)[1]
        assert (second["JMAPSYNC_NEW"], second["JMAPSYNC_PASSES"]) == ("2", "2")
        assert len(d.events("post-sync-run")) == 2
        assert status(config)["a"]["post_sync"]["ok"] is True
        assert d.stop()[0] == 0
    assert len(_runs(runs)) == 2


def test_a_failing_hook_does_not_stop_the_daemon(cyrus_ws: Any, tmp_path: Path) -> None:
    acct = new_account(cyrus_ws)
    hook = {
        "post_sync_command": f"{sys.executable} -c 'import sys; sys.exit(7)'",
        "post_sync_delay": "0.2",
    }
    config = write_config(tmp_path, [Acct("a", acct, extra=hook)], poll_interval="300")
    maildir = tmp_path / "mail" / "a"
    with DaemonProc(config) as d:
        d.wait_event("daemon-ready")
        eid = acct.import_message(make_message(1))
        wait_for("message on disk", lambda: files_of(maildir, eid), PUSH_DEADLINE_S)
        d.wait_event("post-sync-failed", result="exit status 7")
        live = status(config)["a"]
        assert live["post_sync"]["detail"] == "exit status 7"
        assert live["daemon"]["sync"] == "idle" and live["daemon"]["error"] is None
        eid = acct.import_message(make_message(2))
        wait_for("the daemon still syncs", lambda: files_of(maildir, eid), PUSH_DEADLINE_S)
        assert d.stop()[0] == 0
