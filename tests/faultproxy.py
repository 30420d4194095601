"""A fault-injecting TCP proxy in front of the real Cyrus, for network fault tests.

It runs its own asyncio loop on a thread, so that in-process sync code (which
runs its own loop with asyncio.run) and a `jmapsync` CLI in a subprocess can
both go through it.  It listens on 127.0.0.1 only.

Byte mode (the default) pipes bytes both ways and disturbs the server->client
direction of the selected connections:

* ``rate``         bytes per second (``trickle()`` = 1 byte/s)
* ``cut_after``    close both sides after N answer bytes (a cut link)
* ``stall_after``  stop forwarding after N answer bytes and hold the
                   connection open (a server that goes silent; 0 = silent
                   from the start)
* ``drop_answer``  forward the request, then close the client side before
                   any answer byte (the server did the work; the answer is lost)
* ``every``        only every Nth connection (1-based: 2 -> the 2nd, 4th, ...)
                   is disturbed; ``faults_left`` caps how many are

HTTP mode (``http=True``, implied by ``hook`` or ``rewrite``) parses each
request (Content-Length bodies; jmapsync sends no chunked requests) and
forwards it on a fresh upstream connection with ``Connection: close``, reads
Cyrus's whole answer (Content-Length, chunked or until close), and sends it
on re-framed with a Content-Length -- through the same faults.  ``hook(req)``
may answer instead of Cyrus (or change ``req.body`` and return None: Cyrus
then answers the changed request); ``rewrite(req, resp)`` may replace Cyrus's real
answer; ``drop_if(req)`` forwards the request, lets Cyrus act on it, and then
drops the answer (the client side is closed before any answer byte) -- per
request, also on a connection that was opened before.  ``requests`` lists
every (method, target) the proxy forwarded or answered, ``calls`` the JMAP
method names of every API request: a server that counts requests.

``tls=ssl_context`` makes the proxy a TLS endpoint (certificates from
trustme) in front of Cyrus's plain HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reason: str = "X"

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def encode(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}"]
        for k, v in self.headers:
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


Hook = Callable[[Request], Response | None]
Rewrite = Callable[[Request, Response], Response | None]


class FaultProxy:
    """See the module docstring.  Knobs may be changed while it runs (they are
    read when a connection opens or a chunk passes)."""

    def __init__(self, upstream_url: str, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(upstream_url)
        self.upstream_url = upstream_url
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rate: float | None = None
        self.cut_after: int | None = None
        self.stall_after: int | None = None
        self.drop_answer = False
        self.every = 1
        self.faults_left: int | None = None
        self.http = False
        self.hook: Hook | None = None
        self.rewrite: Rewrite | None = None
        self.drop_if: Callable[[Request], bool] | None = None
        self.calls: list[str] = []
        self.tls = tls
        self.connections = 0
        self.faulted = 0
        self.requests: list[tuple[str, str]] = []
        self.answer_bytes = 0  # server->client bytes delivered
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.tls), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, url: str | None = None) -> str:
        """`url` (default: the upstream session URL) with this proxy's port."""
        parts = urlsplit(url or self.upstream_url)
        scheme, host = ("https", "localhost") if self.tls else (parts.scheme, "127.0.0.1")
        return urlunsplit((scheme, f"{host}:{self.port}", parts.path, parts.query, parts.fragment))

    def clear(self) -> None:
        """No faults (counters stay)."""
        self.rate = self.cut_after = self.stall_after = self.faults_left = None
        self.drop_answer = False
        self.every = 1
        self.hook = self.rewrite = None
        self.drop_if = None

    def trickle(self) -> None:
        self.rate = 1

    # -- one client connection ----------------------------------------------------------

    def _select(self) -> bool:
        self.connections += 1
        if self.connections % self.every != 0:
            return False
        if self.faults_left is not None:
            if self.faults_left <= 0:
                return False
            self.faults_left -= 1
        self.faulted += 1
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        faulty = self._select()
        out = _Out(self, writer, faulty)
        try:
            if self.http or self.hook or self.rewrite or self.drop_if:
                await self._http(reader, out)
            else:
                await self._bytes(reader, out)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, _Closed):
            pass
        except asyncio.CancelledError:
            pass  # stop(): this connection's task ends here anyway
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _bytes(self, reader: asyncio.StreamReader, out: _Out) -> None:
        up_r, up_w = await asyncio.open_connection(*self.upstream)

        async def upstream() -> None:
            try:
                while data := await reader.read(65536):
                    up_w.write(data)
                    await up_w.drain()
            finally:
                with contextlib.suppress(OSError):
                    up_w.write_eof()

        pump = asyncio.create_task(upstream())
        try:
            while data := await up_r.read(65536):
                await out.send(data)
            await out.hold_if_stalled()
        finally:
            pump.cancel()
            up_w.close()

    async def _http(self, reader: asyncio.StreamReader, out: _Out) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            req = Request(method, target, headers, body)
            self.requests.append((method, target))
            if method == "POST" and headers.get("content-type") == "application/json":
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.calls += [c[0] for c in json.loads(body)["methodCalls"]]
            resp = self.hook(req) if self.hook else None
            if resp is None:
                resp = await self._forward(req, lines)
                if self.rewrite:
                    resp = self.rewrite(req, resp) or resp
            if self.drop_if is not None and self.drop_if(req):
                out.closed = True
                out.w.transport.abort()
                return
            await out.send(resp.encode())
            if out.closed:
                return

    async def _forward(self, req: Request, lines: list[str]) -> Response:
        """Cyrus's answer to `req` -- whose body a hook may have changed."""
        up_r, up_w = await asyncio.open_connection(*self.upstream)
        try:
            keep = [
                ln
                for ln in lines[1:]
                if ln and not ln.lower().startswith(("connection:", "content-length:"))
            ]
            keep.append(f"Content-Length: {len(req.body)}")
            first = f"{req.method} {req.target} HTTP/1.1"  # a hook may have moved the target
            head = "\r\n".join([first, *keep, "Connection: close", "", ""])
            up_w.write(head.encode("latin-1") + req.body)
            await up_w.drain()
            raw = await up_r.read(-1)
        finally:
            up_w.close()
        return parse_response(raw)


class _Closed(Exception):
    pass


class _Out:
    """The server->client direction of one connection, with its faults."""

    def __init__(self, proxy: FaultProxy, writer: asyncio.StreamWriter, faulty: bool) -> None:
        self.p = proxy
        self.w = writer
        self.faulty = faulty
        self.sent = 0
        self.closed = False
        self.stalled = False

    async def send(self, data: bytes) -> None:
        p = self.p
        if not self.faulty:
            self.w.write(data)
            await self.w.drain()
            p.answer_bytes += len(data)
            return
        if p.drop_answer:
            self.closed = True
            self.w.transport.abort()  # no answer byte, and no polite FIN wait
            raise _Closed
        view = memoryview(data)
        while view:
            n = len(view)
            if p.cut_after is not None:
                n = min(n, p.cut_after - self.sent)
            if p.stall_after is not None:
                n = min(n, p.stall_after - self.sent)
            if p.rate is not None:
                n = min(n, max(1, int(p.rate / 10)))
            if n <= 0:
                if p.stall_after is not None and self.sent >= p.stall_after:
                    self.stalled = True
                    await self.hold_if_stalled()
                self.closed = True
                self.w.transport.abort()
                raise _Closed
            self.w.write(bytes(view[:n]))
            await self.w.drain()
            self.sent += n
            p.answer_bytes += n
            view = view[n:]
            if p.rate is not None and view:
                await asyncio.sleep(n / p.rate)

    async def hold_if_stalled(self) -> None:
        if self.faulty and self.p.stall_after is not None:
            await asyncio.sleep(3600)  # cancelled by stop() or the client's close


def parse_response(raw: bytes) -> Response:
    """An HTTP/1.1 answer read until close: status, headers, de-chunked body."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.append((k.strip(), v.strip()))
    resp = Response(int(parts[1]), headers, b"", parts[2] if len(parts) > 2 else "")
    if "chunked" in (resp.header("transfer-encoding") or "").lower():
        body = bytearray()
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        resp.body = bytes(body)
    elif resp.header("content-length") is not None:
        resp.body = rest[: int(resp.header("content-length") or 0)]
    else:
        resp.body = rest
    return resp


@contextlib.contextmanager
def proxy_for(session_url: str) -> Iterator[FaultProxy]:
    """A running FaultProxy in front of the server of `session_url`."""
    p = FaultProxy(session_url).start()
    try:
        yield p
    finally:
        p.stop()
