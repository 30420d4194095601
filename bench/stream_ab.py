#!/usr/bin/env python3
"""A first sync streamed (sync/stream.py) against the same code holding the
whole pass in memory: what streaming costs in time and saves in memory.

Run as ``.venv/bin/python bench/stream_ab.py [--messages N] [--rounds R]``.

Method: a private Cyrus (tools/cyrus.py) with N small messages (~2 KB,
bench/compare.py's ``--loader small``, same seed); then R alternating
rounds of two first syncs into empty mirrors, each one child process timed
by compare.py's ``run_timed`` (wall, CPU, peak RSS by GNU time):

* ``streamed``: ``jmapsync sync``, today's code;
* ``in-memory``: the same code and interpreter with ``stream.applies``
  answering False, so the full pass reads the whole account into the
  remote model, plans and executes it at once (the code before streaming
  did this).

Writes bench/results/stream-ab-N.json.  Not in CI (minutes per round at
100 000).  Earlier single runs under load compared the streamed pass with
the pre-perf code and saw 1.3-1.4x; this pins the streaming alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import compare as C  # noqa: E402 -- bench/ is not a package

IN_MEMORY = (
    "import sys\n"
    "from jmapsync.sync import stream\n"
    "stream.applies = lambda ctx, partial: False\n"
    "from jmapsync.cli import main\n"
    "sys.exit(main())\n"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seed", default="bench")
    args = p.parse_args()
    python = sys.executable
    machine = C.machine_info()
    machine["byte_compiled"] = [C.compile_package(python)]
    print(machine["date"], machine.get("jmapsync_git"), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="jmsab-", dir="/tmp"))
    tmp.chmod(0o755)
    srv = C.CyrusServer(tmp / "cy", http_port=0, imap_port=0)
    runs: dict[str, list[dict[str, float]]] = {"streamed": [], "in-memory": []}
    try:
        srv.start()
        user = f"bench{args.messages}"
        srv.add_user(user)
        acct = C.Account(user, C.DEFAULT_PASSWORD, srv.imap_port, srv.session_url)
        load = C.load_small(acct, args.messages, args.seed)
        print(f"loaded {args.messages} in {load['seconds']:.1f} s", flush=True)
        work = tmp / "w"
        work.mkdir()
        for rnd in range(args.rounds):
            order = ["streamed", "in-memory"] if rnd % 2 == 0 else ["in-memory", "streamed"]
            for mode in order:
                tool = C.Jmapsync(acct, work)
                tool.reset(f"{mode}{rnd}")
                argv = tool.argv()
                if mode == "in-memory":
                    argv = [python, "-c", IN_MEMORY, *argv[1:]]
                run = C.run_timed(argv, tmp / f"{mode}{rnd}.log", 7200)
                files = C.count_mirror(tool.mail, tool.folder_name).files
                if run.rc != 0 or files != args.messages:
                    print((tmp / f"{mode}{rnd}.log").read_text()[-4000:])
                    print(f"{mode}: exit {run.rc}, {files} files of {args.messages}")
                    return 1
                runs[mode].append(
                    {"wall_s": run.wall_s, "cpu_s": run.cpu_s, "maxrss_mb": run.maxrss_mb,
                     "load1": run.load1}
                )  # fmt: skip
                print(
                    f"r{rnd + 1} {mode:9} {run.wall_s:7.1f} s  cpu {run.cpu_s:6.1f} s  "
                    f"rss {run.maxrss_mb:6.1f} MB  load {run.load1:.2f}",
                    flush=True,
                )
                shutil.rmtree(tool.dir, ignore_errors=True)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "maxrss_mb")}
        for m, rs in runs.items()
    }
    ratio = med["streamed"]["wall_s"] / med["in-memory"]["wall_s"]
    for m, v in med.items():
        print(f"{m:9} median {v['wall_s']:.1f} s, cpu {v['cpu_s']:.1f} s, {v['maxrss_mb']:.1f} MB")
    print(f"streamed / in-memory wall: {ratio:.2f}")
    out = HERE / "results" / f"stream-ab-{args.messages}.json"
    doc = {
        "benchmark": "bench/stream_ab.py",
        "messages": args.messages,
        "rounds": args.rounds,
        "machine": machine,
        "load": load,
        "runs": runs,
        "medians": med,
        "streamed_over_in_memory_wall": round(ratio, 3),
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    subprocess.run(["uptime"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
