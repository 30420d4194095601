#!/usr/bin/env python3
"""jmap/lean.py vs httpx on the real Cyrus: does the lean client earn its keep?

Run as ``.venv/bin/python bench/http_stacks.py [--blobs 2000] [--posts 200]``.
Writes bench/results/http_stacks.json.  Not a test.

Measured:

* start-up: `python -c pass`, `import httpx`, `import jmapsync.cli` (what a
  `jmapsync sync` imports), and a whole `jmapsync sync` with nothing new
  (issue 16: within 0.10 s of `python -c pass`), medians of --runs;
* latency of --posts sequential API POSTs (Email/changes, nothing new) and
  blob GETs (12 KB messages: Cyrus's 44 ms keep-alive stall hits 8-64 KB)
  on one keep-alive connection;
* wall and CPU time (this process's user+sys) for --blobs blob GETs with 8
  concurrent requests.

Stacks: `lean` (jmap/http.py with the lean client, as jmapsync runs),
`httpx` (keep-alive, defaults), `httpx-quickack` (keep-alive, a network
backend that sets TCP_QUICKACK after every read and write, like the lean
client), `httpx-fresh` (a new connection per request), `http-via-httpx`
(jmap/http.py forced onto httpx: the proxy path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from mailtools import Account, make_message  # noqa: E402

from tools.cyrus import CyrusServer  # noqa: E402

PY = sys.executable


def median_run(argv: list[str], runs: int) -> dict[str, float]:
    """Median wall time and median CPU time (user + sys of the child alone:
    far less disturbed than wall time when other jobs share the machine)."""
    walls, cpus = [], []
    for _ in range(runs):
        t = time.perf_counter()
        child = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        walls.append(time.perf_counter() - t)
        cpus.append(usage.ru_utime + usage.ru_stime)
        if child.returncode != 0:
            raise RuntimeError(f"{argv} exited {child.returncode}")
    return {  # the minimum is the best estimate of the cost itself on a busy machine
        "wall_median_s": round(statistics.median(walls), 4),
        "wall_min_s": round(min(walls), 4),
        "cpu_median_s": round(statistics.median(cpus), 4),
        "cpu_min_s": round(min(cpus), 4),
    }


def startup(account: Account, runs: int) -> dict[str, Any]:
    out = {
        "python -c pass": median_run([PY, "-c", "pass"], runs),
        "import httpx": median_run([PY, "-c", "import httpx"], runs),
        "import jmapsync.cli": median_run([PY, "-c", "import jmapsync.cli"], runs),
    }
    base = Path(tempfile.mkdtemp(prefix="bench-http-"))
    try:
        (base / "config.ini").write_text(
            f"[jmapsync]\nstate_dir = {base / 'state'}\n[account b]\n"
            f"session_url = {account.session_url}\nusername = {account.user}\n"
            f"password = {account.password}\nmaildir = {base / 'mail'}\ndirection = pull\n"
        )
        cmd = [PY, "-m", "jmapsync", "-c", str(base / "config.ini"), "sync"]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        out["jmapsync sync, nothing new"] = median_run(cmd, runs)
        out["python -c 'import httpx; import jmapsync.cli'"] = median_run(
            [PY, "-c", "import httpx, jmapsync.cli"], runs
        )
        check = subprocess.run(
            [
                PY,
                "-c",
                "import sys, runpy, atexit\n"
                "atexit.register(lambda: print('httpx' in sys.modules, file=sys.stderr))\n"
                "sys.argv=['jmapsync','-c',sys.argv[1],'sync']\n"
                "runpy.run_module('jmapsync', run_name='__main__')\n",
                str(base / "config.ini"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        out["httpx imported by a no-change pass"] = check.stderr.strip().endswith("True")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out


def quickack_transport() -> Any:
    """httpx keep-alive with TCP_QUICKACK after every socket read and write."""
    import httpcore
    import httpx

    quickack = getattr(socket, "TCP_QUICKACK", None)

    class Stream(httpcore.AsyncNetworkStream):
        def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
            self.inner = inner

        def _ack(self) -> None:
            sock = self.inner.get_extra_info("socket")
            if sock is not None and quickack is not None:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            data = await self.inner.read(max_bytes, timeout)
            self._ack()
            return data

        async def write(self, buffer: bytes, timeout: float | None = None) -> None:
            await self.inner.write(buffer, timeout)
            self._ack()

        async def aclose(self) -> None:
            await self.inner.aclose()

        async def start_tls(self, *a: Any, **kw: Any) -> httpcore.AsyncNetworkStream:
            return Stream(await self.inner.start_tls(*a, **kw))

        def get_extra_info(self, info: str) -> Any:
            return self.inner.get_extra_info(info)

    class Backend(httpcore.AsyncNetworkBackend):
        def __init__(self) -> None:
            self.inner = httpcore.AnyIOBackend()

        async def connect_tcp(self, *a: Any, **kw: Any) -> httpcore.AsyncNetworkStream:
            return Stream(await self.inner.connect_tcp(*a, **kw))

        async def connect_unix_socket(self, *a: Any, **kw: Any) -> httpcore.AsyncNetworkStream:
            return Stream(await self.inner.connect_unix_socket(*a, **kw))

        async def sleep(self, seconds: float) -> None:
            await self.inner.sleep(seconds)

    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(
        max_connections=16, max_keepalive_connections=16, network_backend=Backend()
    )
    return transport


Fetch = Callable[[str], Awaitable[bytes]]
Post = Callable[[str, bytes], Awaitable[bytes]]


async def make_stack(name: str, auth: dict[str, str]) -> tuple[Fetch, Post, Callable[[], Any]]:
    if name in ("lean", "http-via-httpx"):
        from jmapsync.jmap.http import Http

        web = Http(60)
        if name == "http-via-httpx":
            web.uses_httpx = lambda url: True  # type: ignore[method-assign]

        async def fetch(url: str) -> bytes:
            out = bytearray()
            await web.request("GET", url, auth, what="b", idempotent=True, sink=out.extend)
            return bytes(out)

        async def post(url: str, body: bytes) -> bytes:
            headers = auth | {"Content-Type": "application/json"}
            a = await web.request(
                "POST", url, headers, what="a", idempotent=True, body=body, limit=1 << 25
            )
            return a.body

        return fetch, post, web.aclose
    import httpx

    kw: dict[str, Any] = {"timeout": 60, "headers": auth}
    if name == "httpx-quickack":
        kw["transport"] = quickack_transport()
    if name == "httpx-fresh":
        kw["limits"] = httpx.Limits(max_keepalive_connections=0)
    client = httpx.AsyncClient(**kw)

    async def hfetch(url: str) -> bytes:
        return (await client.get(url)).content

    async def hpost(url: str, body: bytes) -> bytes:
        r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
        return r.content

    return hfetch, hpost, client.aclose


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def measure(
    stack: str, account: Account, blob_urls: list[str], posts: int, changes_body: bytes
) -> dict[str, float]:
    j = account.jmap()
    auth = {"Authorization": j._auth}
    api = j._url("apiUrl")
    fetch, post, close = await make_stack(stack, auth)
    try:
        await post(api, changes_body)  # warm: connection open
        t = time.perf_counter()
        for _ in range(posts):
            await post(api, changes_body)
        post_ms = (time.perf_counter() - t) / posts * 1000
        t = time.perf_counter()
        for url in blob_urls[:posts]:
            await fetch(url)
        get_ms = (time.perf_counter() - t) / posts * 1000
        queue = list(blob_urls)
        t, c = time.perf_counter(), cpu()

        async def worker() -> None:
            while queue:
                await fetch(queue.pop())

        await asyncio.gather(*(worker() for _ in range(8)))
        wall, used = time.perf_counter() - t, cpu() - c
    finally:
        await close()
    return {
        "api_post_ms": round(post_ms, 2),
        "blob_get_ms": round(get_ms, 2),
        "blobs_wall_s": round(wall, 2),
        "blobs_cpu_s": round(used, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", type=int, default=2000)
    ap.add_argument("--posts", type=int, default=200)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--startup-only", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="stacks alternate within a round")
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="jmsc-bench-", dir="/tmp")
    os.chmod(d, 0o755)  # noqa: S103 - Cyrus runs as user cyrus
    srv = CyrusServer(d).start()
    try:
        srv.add_user("bench")
        account = Account.of(srv, "bench")
        account.append_many("INBOX", [make_message(i, size=12_000) for i in range(args.blobs)])
        j = account.jmap()
        ids = j.email_ids()
        emails = j.get_emails(ids, ["blobId"])
        blob_urls = [j._url("downloadUrl") for _ in emails]
        blob_urls = [
            u.replace("{accountId}", j.account_id)
            .replace("{blobId}", e["blobId"])
            .replace("{name}", "m.eml")
            .replace("{type}", "message%2Frfc822")
            for u, e in zip(blob_urls, emails, strict=True)
        ]
        state = j.call([["Email/get", {"accountId": j.account_id, "ids": []}, "s"]])
        email_state = state[0][1]["state"]
        body = json.dumps(
            {
                "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                "methodCalls": [
                    ["Email/changes", {"accountId": j.account_id, "sinceState": email_state}, "c"]
                ],
            }
        ).encode()
        result: dict[str, Any] = {"machine": platform.platform(), "cpus": os.cpu_count()}
        if args.startup_only:
            print(json.dumps(startup(account, args.runs), indent=1))
            return
        result["startup_s"] = startup(account, args.runs)
        print(json.dumps(result["startup_s"], indent=1))
        stacks = ("lean", "httpx", "httpx-quickack", "httpx-fresh", "http-via-httpx")
        samples: dict[str, list[dict[str, float]]] = {s: [] for s in stacks}
        for _ in range(args.rounds):  # alternating: a busy moment hits every stack alike
            for stack in stacks:
                samples[stack].append(
                    asyncio.run(measure(stack, account, blob_urls, args.posts, body))
                )
                print(stack, samples[stack][-1], flush=True)
        for stack, runs in samples.items():
            result[stack] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            result[stack]["rounds"] = runs
        result["load_average_after"] = os.getloadavg()
        out = ROOT / "bench" / "results" / "http_stacks.json"
        out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
