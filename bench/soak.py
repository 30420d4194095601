#!/usr/bin/env python3
"""Soak the daemon: random changes on both sides, then the mirror must be exact.

Run as ``.venv/bin/python bench/soak.py [--seconds 60] [--seed 1] [--push auto]``
(not a test: it takes minutes and its operations are random).

A private Cyrus 3.6 with a WebSocket-capable httpd is started (tools/cyrus.py),
an account gets 40 messages in INBOX and Work, and ``jmapsync daemon`` runs on
it (two-way).  For ``--seconds`` this script does, at random moments 0-0.4 s
apart, one of: set or clear a flag on the server, import a message, move a
message on the server, rename a file locally to set or clear a flag (as mutt
does), move a file to the other folder locally.  Local operations race the
daemon's own renames on purpose (a vanished file is skipped, as a user's
mail reader would).  Then it waits 4 s, stops the daemon with SIGTERM and
checks, independently of jmapsync's state: every Email in the folder of each
of its mailboxes, once, with the flags of its keywords and the server's
bytes, nothing else (tests/integration/mirror.py's assert_exact_mirror), and
``jmapsync verify``.  Exit 0 only if all that holds and no pass failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from mailtools import Account, make_message  # noqa: E402
from mirror import Mirror, assert_exact_mirror, message_files  # noqa: E402

from tools.cyrus import CyrusServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--push", default="auto", choices=("auto", "websocket", "eventsource", "poll"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="jmsoak-", dir="/tmp"))
    os.chmod(work, 0o755)  # noqa: S103 - Cyrus runs as user cyrus
    srv = CyrusServer(work / "cyrus", websocket=True).start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        srv.add_user("soak")
        acct = Account.of(srv, "soak")
        j = acct.jmap()
        acct.create_folder("Work")
        inbox, other = j.mailbox_id("INBOX"), j.mailbox_id("Work")
        ids = [j.import_message(make_message(k), [inbox if k % 2 else other]) for k in range(40)]
        mirror = Mirror(acct, work / "m", direction="two-way", name="soak")
        mirror.set("push", args.push)
        log_path = work / "daemon.log"
        with log_path.open("wb") as log:
            argv = [sys.executable, "-m", "jmapsync", "-c", str(mirror.config_path)]
            proc = subprocess.Popen(
                [*argv, "--log-format", "json", "daemon"],
                stderr=log,
                cwd=ROOT,
            )
        while b"daemon-ready" not in log_path.read_bytes():
            time.sleep(0.05)
        ops = dict.fromkeys(
            ("remote_flag", "remote_import", "remote_move", "local_flag", "local_move"), 0
        )
        n = 1000
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            op = rng.choice(list(ops))
            try:
                if op == "remote_flag":
                    eid = rng.choice(ids)
                    kw = rng.choice(["$seen", "$flagged", "$answered"])
                    if kw in j.get_email(eid, ["keywords"])["keywords"]:
                        j.remove_keyword(eid, kw)
                    else:
                        j.add_keyword(eid, kw)
                elif op == "remote_import":
                    n += 1
                    ids.append(j.import_message(make_message(n), [rng.choice([inbox, other])]))
                elif op == "remote_move":
                    j.set_mailboxes(rng.choice(ids), [rng.choice([inbox, other])])
                elif op == "local_flag":
                    p = rng.choice(list(message_files(mirror.maildir).values()))
                    stem, _, flags = p.name.partition(":2,")
                    flags = "".join(sorted(set(flags) ^ {rng.choice("FRS")}))
                    os.rename(p, p.parent.parent / "cur" / f"{stem}:2,{flags}")
                else:
                    p = rng.choice(list(message_files(mirror.maildir).values()))
                    there = "Work" if p.parent.parent.name == "INBOX" else "INBOX"
                    dst = mirror.maildir / there / p.parent.name / p.name
                    if not dst.exists():
                        os.rename(p, dst)
                ops[op] += 1
            except (FileNotFoundError, IndexError):
                pass  # the daemon renamed it under us: a race a user has too
            time.sleep(rng.uniform(0.0, 0.4))
        time.sleep(4)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
        events = [
            json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
        ]
        failed = [e for e in events if e.get("event") in ("pass-failed", "pass-crashed")]
        passes = sum(1 for e in events if e.get("event") == "pass")
        print(f"push = {args.push}, {args.seconds:.0f} s, seed {args.seed}: {ops}")
        print(f"daemon: {passes} passes, {len(failed)} failed, exit {rc}")
        for e in failed[:5]:
            print("  failed:", e.get("error"))
        print("mirror exact:", assert_exact_mirror(mirror))
        verify = mirror.cli("verify", check=False)
        print("jmapsync verify:", verify.returncode, verify.stdout.strip().splitlines()[0])
        return 0 if (rc == 0 and not failed and verify.returncode == 0) else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
