#!/usr/bin/env python3
"""`jmapsync restore` throughput next to the first sync, on one throwaway Cyrus.

    .venv/bin/python bench/restore.py                 # N=2000, 3 rounds
    .venv/bin/python bench/restore.py -n 500 --rounds 1

Method
------
* A private Cyrus 3.6 is started with tools/cyrus.py in a fresh /tmp
  directory (removed at the end); $JMAPSYNC_CYRUS_HTTPD is honoured.
* Account ``src`` is loaded with N messages by /work/shared/cyrus/populate.py
  (IMAP MULTIAPPEND; ~60 MB for N=2000, 9 folders, ~3 % of the messages in
  two folders), else by tests/mailtools.py's generator.
* Per round, each a child process timed with time.perf_counter:
  1. *first sync*: ``jmapsync sync`` of src into an empty Maildir (fresh
     state_dir, verbatim, pull);
  2. *restore*: ``jmapsync restore`` of that mirror into a fresh, empty
     account ``dstR`` (its mailboxes created, every message uploaded and
     imported);
  3. *rerun*: the same restore again (everything already there: one listing,
     no upload).
* msgs/s counts messages (Emails: a message in two folders counts once);
  MB/s counts the bytes of the server's blobs (what the sync downloads and
  the restore uploads).
* Results: a table of medians [min-max], bench/results/restore-N.json.

Caveats: loopback on one machine (client and server share the CPUs);
Cyrus answers on a reused keep-alive connection ~44 ms late (see the Cyrus
README), which costs the uploads (httpx, keep-alive) more than the
downloads (jmapsync's own client sets TCP_QUICKACK).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mailtools import Account, make_message  # noqa: E402

from tools.cyrus import CyrusServer  # noqa: E402

POPULATE = Path("/work/shared/cyrus/populate.py")


def load(server: CyrusServer, user: str, n: int) -> None:
    if POPULATE.exists():
        subprocess.run(
            [sys.executable, str(POPULATE), "--dir", server.dir, "--user", user, "-n", str(n)],
            check=True,
            capture_output=True,
        )
        return
    Account.of(server, user).append_many("INBOX", [make_message(i, size=12_000) for i in range(n)])


def totals(account: Account) -> tuple[int, int]:
    j = account.jmap()
    ids = j.email_ids()
    sizes = [e["size"] for e in j.get_emails(ids, ["size"])] if ids else []
    return len(ids), sum(sizes)


def config(base: Path, server: CyrusServer, name: str, user: str) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{name}.ini"
    path.write_text(
        f"[jmapsync]\nstate_dir = {base / 'state'}\n"
        f"[account {name}]\nsession_url = {server.session_url}\nusername = {user}\n"
        f"password = secret\nmaildir = {base / 'mirror'}\ndirection = pull\n"
    )
    return path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jmsc-bench-", dir="/tmp"))
    os.chmod(work, 0o755)  # noqa: S103 - Cyrus runs as user cyrus
    server = CyrusServer(str(work / "cyrus"))
    server.start()
    runs: list[dict[str, float]] = []
    try:
        server.add_user("src", "secret")
        load(server, "src", args.n)
        count, nbytes = totals(Account.of(server, "src"))
        py = [sys.executable, "-m", "jmapsync"]
        for r in range(args.rounds):
            base = work / f"round{r}"
            src_cfg = config(base, server, "src", "src")
            user = f"dst{r}"
            server.add_user(user, "secret")
            dst_cfg = config(base / "dst", server, user, user)
            sync_s = timed([*py, "-c", str(src_cfg), "sync"])
            restore = [*py, "-c", str(dst_cfg), "restore", "--account", user]
            restore += ["--from", str(base / "mirror")]
            restore_s = timed(restore)
            rerun_s = timed(restore)
            got = totals(Account.of(server, user))
            if got != (count, nbytes):
                raise SystemExit(f"round {r}: restored {got}, source has {(count, nbytes)}")
            runs.append({"sync_s": sync_s, "restore_s": restore_s, "rerun_s": rerun_s})
            print(
                f"round {r}: sync {sync_s:.2f} s, restore {restore_s:.2f} s, rerun {rerun_s:.2f} s"
            )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    def row(key: str, label: str) -> dict[str, float]:
        values = [run[key] for run in runs]
        med = statistics.median(values)
        print(
            f"{label:<22} {med:7.2f} s [{min(values):.2f}-{max(values):.2f}]"
            f"  {count / med:7.0f} msgs/s  {nbytes / med / 1e6:6.1f} MB/s"
        )
        return {"median_s": med, "msgs_per_s": count / med, "mb_per_s": nbytes / med / 1e6}

    print(f"\n{count} messages, {nbytes / 1e6:.1f} MB, {len(runs)} rounds (median [min-max])")
    summary = {
        "first sync": row("sync_s", "first sync"),
        "restore": row("restore_s", "restore (empty account)"),
        "rerun": row("rerun_s", "restore rerun (no-op)"),
    }
    out = ROOT / "bench" / "results" / f"restore-{args.n}.json"
    out.write_text(
        json.dumps(
            {
                "n": count,
                "bytes": nbytes,
                "runs": runs,
                "summary": summary,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load": os.getloadavg(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
