#!/usr/bin/env python3
"""How long `jmapsync send` takes (not a test).

Run as ``.venv/bin/python bench/send.py [--messages 20]``.

Method
------
* A private Cyrus 3.6 (tools/cyrus.py) in a fresh directory under /tmp,
  removed at the end; its sendmail is the fixture's sink (nothing leaves).
* ``online``: N times ``jmapsync send -t`` as a child process with a small
  message on stdin -- the wall time mutt waits for (Python start-up
  included), each one upload + import + submission against a live server.
* ``in_process``: the same through ``send.command.run`` in this process
  (no interpreter start-up): the queue write plus the JMAP round trips.
* ``queue``: N messages queued while the session URL points at a closed
  port (``send`` exits 0 at once), then one ``jmapsync send --flush``
  process sends them all: its wall time, and per message.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.cyrus import CyrusServer  # noqa: E402


def message(tag: str) -> bytes:
    return (
        f"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: bench {tag}\n"
        f"Message-ID: <{tag}@bench.example>\n\n" + "A line of text.\n" * 40
    ).encode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(base: Path, url: str) -> Path:
    path = base / "config.ini"
    path.write_text(
        f"[jmapsync]\nstate_dir = {base / 'state'}\n[account a]\nsession_url = {url}\n"
        f"username = alice\npassword = secret\nmaildir = {base / 'mail'}\n"
    )
    return path


def cli(config: Path, *args: str, stdin: bytes = b"") -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(config), "send", *args],
        input=stdin,
        capture_output=True,
        check=False,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"send {args} exited {done.returncode}: {done.stderr.decode()}")
    return took


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "mean_ms": round(statistics.mean(ms), 1),
        "min_ms": round(ms[0], 1),
        "max_ms": round(ms[-1], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "send.json")
    opts = ap.parse_args()
    from jmapsync import log
    from jmapsync.send import command

    log.setup("console", -1)  # errors only, as `jmapsync send` itself runs

    d = tempfile.mkdtemp(prefix="jmsb-", dir="/tmp")
    os.chmod(d, 0o755)  # noqa: S103 - Cyrus runs as user cyrus
    work = Path(tempfile.mkdtemp(prefix="jmsb-work-"))
    server = CyrusServer(d)
    try:
        server.start()
        config = write_config(work, server.session_url)
        cli(config, "-t", stdin=message("warmup"))
        online = [cli(config, "-t", stdin=message(f"o{i}")) for i in range(opts.messages)]
        in_process = []
        for i in range(opts.messages):
            started = time.perf_counter()
            rc = command.run(config, ["-t"], stdin=io.BytesIO(message(f"p{i}")))
            in_process.append(time.perf_counter() - started)
            if rc != 0:
                raise SystemExit(f"in-process send exited {rc}")
        offline = write_config(work, f"http://127.0.0.1:{closed_port()}/jmap/")
        queued = [cli(offline, "-t", stdin=message(f"q{i}")) for i in range(opts.messages)]
        config = write_config(work, server.session_url)
        flush = cli(config, "--flush")
        left = len(list(Path(server.outbox).glob("*.eml")))
        expected = 1 + 3 * opts.messages
        if left != expected:
            raise SystemExit(f"the sink holds {left} messages, {expected} were sent")
        result = {
            # 2-core machines shared with other work: the figures move with the load
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "online_process": summary(online),
            "online_in_process": summary(in_process),
            "queue_offline_process": summary(queued),
            "flush_process": {
                "messages": opts.messages,
                "seconds": round(flush, 3),
                "per_message_ms": round(flush * 1000 / opts.messages, 1),
            },
        }
        print(json.dumps(result, indent=2))
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
