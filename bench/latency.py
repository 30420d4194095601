#!/usr/bin/env python3
"""How fast `jmapsync daemon` mirrors a change, each way (not a test).

Run as ``.venv/bin/python bench/latency.py [--events 20] [--push auto]``.

Method
------
* A private Cyrus 3.6 with a WebSocket-capable httpd (tools/cyrus.py: the
  cached or freshly built ``httpd-wslay``; jmap_pushpoll = 1 s, the minimum)
  is started on 127.0.0.1 in a fresh directory, removed at the end.
* ``jmapsync daemon`` runs as a child process (``push`` as given,
  poll_interval 300 s so that nothing arrives by polling, direction two-way).
* Each of the four series has ``--events`` events, separated by random gaps
  of 0.3-1.3 s so that the events do not phase-lock with Cyrus' 1 s poll:

  1. ``cyrus_statechange``: the server's own push delay, measured without
     jmapsync: a WebSocket client of this script (RFC 8887, push enabled for
     Email) times from the HTTP response of an ``Email/set`` (a flag toggle)
     to the StateChange that names the new state;
  2. ``remote_new``: ``Email/import`` answered -> the file is in the Maildir;
  3. ``remote_flag``: ``Email/set keywords/$flagged`` answered -> the file is
     renamed to carry ``F``;
  4. ``local_rename``: a file renamed to add ``F`` (what mutt does) ->
     ``Email/get`` shows ``$flagged``.  The server is polled every 5 ms (on a
     separate connection), which adds up to ~5 ms plus one request time.

  Local files are polled every 1 ms (listdir of the folder).
* Output: median, p90, min and max per series, and
  ``bench/results/latency.json`` with every sample and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mailtools import Account, make_message  # noqa: E402

from tools.cyrus import CyrusServer  # noqa: E402

POLL_FILE_S = 0.001
POLL_SERVER_S = 0.005


def stats(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[max(0, round(0.9 * len(ms)) - 1)]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(p90, 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
    }


def wait(check: Any, timeout: float, every: float) -> float:
    """Poll until check() is true; the monotonic time it first was."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s")
        time.sleep(every)


def names_in(folder: Path) -> list[str]:
    out: list[str] = []
    for sub in ("new", "cur"):
        with contextlib.suppress(FileNotFoundError):
            out += os.listdir(folder / sub)
    return out


class StateChangeClock:
    """A WebSocket push client in a thread: when did each Email state arrive?"""

    def __init__(self, acct: Account) -> None:
        self.acct = acct
        self.seen: dict[str, float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise SystemExit("WebSocket push client did not start")

    async def _run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.typing import Subprotocol

        auth = base64.b64encode(f"{self.acct.user}:{self.acct.password}".encode()).decode()
        url = f"ws://127.0.0.1:{self.acct.http_port}/jmap/ws/"
        async with connect(
            url,
            subprotocols=[Subprotocol("jmap")],
            additional_headers={"Authorization": "Basic " + auth},
        ) as ws:
            await ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]}))
            self.ready.set()
            while not self.stop.is_set():
                try:
                    msg = await asyncio.wait_for(ws.recv(), 0.2)
                except TimeoutError:
                    continue
                now = time.monotonic()
                data = json.loads(msg)
                if data.get("@type") == "StateChange":
                    state = data["changed"].get(self.acct.user, {}).get("Email")
                    if state:
                        self.seen.setdefault(state, now)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--push", default="auto", choices=("auto", "websocket", "eventsource", "poll"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="jmlat-", dir="/tmp"))
    os.chmod(work, 0o755)  # noqa: S103 - Cyrus runs as user cyrus
    srv = CyrusServer(work / "cyrus", websocket=True)
    srv.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        srv.add_user("lat")
        acct = Account.of(srv, "lat")
        j = acct.jmap()
        inbox = j.mailbox_id("INBOX")
        seed_ids = [j.import_message(make_message(i), [inbox]) for i in range(args.events)]
        config = work / "config.ini"
        maildir = work / "mail"
        config.write_text(
            f"[jmapsync]\nstate_dir = {work / 'state'}\npoll_interval = 300\n"
            f"[account lat]\nsession_url = {acct.session_url}\nusername = lat\n"
            f"password = secret\nmaildir = {maildir}\ndirection = two-way\npush = {args.push}\n"
        )
        log = (work / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "jmapsync", "-c", str(config), "--log-format", "json", "daemon"],
            stderr=log,
            cwd=ROOT,
        )
        wait(lambda: b'"daemon-ready"' in (work / "daemon.log").read_bytes(), 60, 0.05)
        if args.push != "poll":
            wait(lambda: b'"push-connected"' in (work / "daemon.log").read_bytes(), 30, 0.05)
        time.sleep(0.5)
        folder = maildir / "INBOX"
        results: dict[str, list[float]] = {
            "cyrus_statechange": [],
            "remote_new": [],
            "remote_flag": [],
            "local_rename": [],
        }

        clock = StateChangeClock(acct)
        for i in range(args.events):
            time.sleep(rng.uniform(0.3, 1.3))
            eid = seed_ids[i]
            seen = "$seen" in j.get_email(eid, ["keywords"])["keywords"]
            patch = {"keywords/$seen": None if seen else True}  # a toggle: always a change
            res = j.call1("Email/set", {"accountId": j.account_id, "update": {eid: patch}})
            t0 = time.monotonic()
            state = res["newState"]
            wait(lambda s=state: s in clock.seen, 10, 0.001)
            results["cyrus_statechange"].append(clock.seen[state] - t0)
        clock.stop.set()
        time.sleep(1.5)  # let the daemon mirror the toggles before the next series

        for i in range(args.events):
            time.sleep(rng.uniform(0.3, 1.3))
            eid = j.import_message(make_message(10_000 + i), [inbox])
            t0 = time.monotonic()
            t1 = wait(lambda e=eid: any(n.startswith(e) for n in names_in(folder)), 15, POLL_FILE_S)
            results["remote_new"].append(t1 - t0)

        for i in range(args.events):
            time.sleep(rng.uniform(0.3, 1.3))
            eid = seed_ids[i]
            j.add_keyword(eid, "$flagged")
            t0 = time.monotonic()

            def renamed(e: str = eid) -> bool:
                return any(
                    n.startswith(e) and ":2," in n and "F" in n.split(":2,")[1]
                    for n in names_in(folder)
                )

            t1 = wait(renamed, 15, POLL_FILE_S)
            results["remote_flag"].append(t1 - t0)

        time.sleep(1.5)
        news = [n for n in names_in(folder) if n.startswith("M") and ":2," not in n]
        for i in range(min(args.events, len(news))):
            time.sleep(rng.uniform(0.3, 1.3))
            name = news[i]
            eid = name.split(".", 1)[0]
            src = folder / "new" / name
            if not src.exists():
                src = folder / "cur" / name
            dst = folder / "cur" / f"{eid}.jmapsync:2,F"
            t0 = time.monotonic()
            os.rename(src, dst)
            t1 = wait(
                lambda e=eid: "$flagged" in j.get_email(e, ["keywords"])["keywords"],
                15,
                POLL_SERVER_S,
            )
            results["local_rename"].append(t1 - t0)

        summary = {k: stats(v) for k, v in results.items() if v}
        print(f"push = {args.push}, {args.events} events per series, Cyrus jmap_pushpoll = 1 s")
        print(f"{'series':<20} {'median':>9} {'p90':>9} {'min':>9} {'max':>9}")
        for k, s in summary.items():
            print(
                f"{k:<20} {s['median_ms']:>7.0f}ms {s['p90_ms']:>7.0f}ms"
                f" {s['min_ms']:>7.0f}ms {s['max_ms']:>7.0f}ms"
            )
        passes = sum(
            1
            for line in (work / "daemon.log").read_text().splitlines()
            if '"event": "pass"' in line
        )
        print(f"daemon passes during the run: {passes}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        ).stdout.strip()
        args.out.write_text(
            json.dumps(
                {
                    "push": args.push,
                    "events": args.events,
                    "commit": commit,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "kernel": platform.release(),
                    },
                    "summary": summary,
                    "samples_s": results,
                    "daemon_passes": passes,
                },
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {args.out}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
