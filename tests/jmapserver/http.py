"""A small HTTP/1.1 server on asyncio streams: keep-alive, Content-Length and
chunked bodies both ways, a streamed answer for the event source, and the
transport faults a test asks for (an answer lost after the work was done, a
body cut in the middle).

Real sockets on loopback, so that jmapsync's two HTTP stacks (its lean
keep-alive client in jmap/lean.py and httpx) meet a real peer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
CHUNK = 4096  # chunked answers come in several chunks, as from a real server

REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    host: str  # which listener ("api" or "download")

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    # "lose": close without one byte of answer (the work is done);
    # "cut": send the head and part of the body, then close.
    fault: str | None = None
    stream: AsyncGenerator[bytes, None] | None = None  # a chunked answer that lasts


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    pass


async def read_request(reader: asyncio.StreamReader, host: str) -> Request | None:
    """One request, or None when the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise BadRequest("truncated head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest("head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0][:60]!r}")
    headers: dict[str, str] = {"_version": parts[2]}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest("bad header line")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        data = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            data += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(data) > MAX_BODY:
                raise BadRequest("body too large")
        body = bytes(data)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise BadRequest("body too large")
        body = await reader.readexactly(length)
    return Request(parts[0], parts[1], headers, body, host)


def _head(resp: Response, keep: bool, framing: str) -> bytes:
    lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    lines.append(framing)
    lines.append("Connection: " + ("keep-alive" if keep else "close"))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def write_response(writer: asyncio.StreamWriter, resp: Response, keep: bool) -> bool:
    """Send the answer; False when the connection must close after it."""
    if resp.fault == "lose":
        return False
    if resp.stream is not None:
        writer.write(_head(resp, False, "Transfer-Encoding: chunked"))
        await writer.drain()
        async with contextlib.aclosing(resp.stream) as pieces:
            async for piece in pieces:
                writer.write(_chunk(piece))
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return False
    keep = keep and resp.fault is None
    if resp.chunked:
        writer.write(_head(resp, keep, "Transfer-Encoding: chunked"))
        if resp.fault == "cut":  # one chunk announced whole, half of it sent
            writer.write(f"{len(resp.body):x}\r\n".encode() + resp.body[: len(resp.body) // 2])
        else:
            pieces = [resp.body[i : i + CHUNK] for i in range(0, len(resp.body), CHUNK)]
            writer.write(b"".join(_chunk(p) for p in pieces) + b"0\r\n\r\n")
    else:
        writer.write(_head(resp, keep, f"Content-Length: {len(resp.body)}"))
        writer.write(resp.body[: len(resp.body) // 2] if resp.fault == "cut" else resp.body)
    await writer.drain()
    return keep


class HttpServer:
    """One listener.  `handler` answers each request; connections stay open
    until the client closes them or `idle_s` passes without a request."""

    def __init__(self, host: str, name: str, handler: Handler, idle_s: float = 30.0) -> None:
        self.host = host
        self.name = name
        self.handler = handler
        self.idle_s = idle_s
        self.port = 0
        self.connections = 0  # accepted so far (tests look at keep-alive with it)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and every connection; wait for the handlers to
        end (cancelling one makes asyncio 3.11 log a spurious traceback)."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=5)
            for t in pending:
                t.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    req = await asyncio.wait_for(read_request(reader, self.name), self.idle_s)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                except (BadRequest, ValueError):
                    writer.write(_head(Response(400), False, "Content-Length: 0"))
                    with contextlib.suppress(ConnectionError):
                        await writer.drain()
                    return
                if req is None:
                    return
                resp = await self.handler(req)
                keep = (
                    req.headers.get("connection", "").lower() != "close"
                    and req.headers.get("_version") == "HTTP/1.1"
                )
                if not await write_response(writer, resp, keep):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
