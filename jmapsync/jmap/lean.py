"""A lean HTTP/1.1 keep-alive client for the JMAP hot path (API POSTs, blob GETs).

Why not httpx alone (numbers in docs/DESIGN.md, "Two HTTP stacks"):

* start-up: `import httpx` costs ~0.10 s of CPU alone and ~27 ms on top of
  what jmapsync imports anyway -- a quarter of issue 16's budget for a pass
  with nothing new (within 0.10 s of `python -c pass`), which is ONE API
  POST.  This module imports only the stdlib.
* Cyrus answers on a reused keep-alive connection ~44 ms late: it writes
  headers and body separately, its Nagle holds the body until the headers
  are ACKed, and our kernel delays that ACK.  TCP_QUICKACK after sending
  each request and after reading each answer head removes the stall.
  httpx has no public hook for that (an httpcore network backend wrapping
  every read and write can do it: bench/http_stacks.py); it gets the
  latency right, not the CPU.  (Linux-only; elsewhere the option is skipped.)
* CPU: 2 000 blob downloads cost 0.73 s of client CPU here, 5.5 s with
  httpx (with or without keep-alive or the QUICKACK fix).

It speaks only what the JMAP hot path needs: one request per connection at
a time, Content-Length request bodies, answers framed by Content-Length,
chunked or close.  It knows nothing of proxies (jmap/http.py sends a URL
through httpx whenever a proxy applies), redirects, retries or status codes:
jmap/http.py does those, the same way for both stacks.

Whether a request may be sent again is NOT decided here.  A pooled
connection that the server closed while idle is noticed BEFORE the request
is written (EOF or stray bytes readable on the socket) and replaced; a
failure after the first request byte was written raises
TransportError(sent=True): the server may have processed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Callable

from jmapsync.errors import ProtocolError, TransportError
from jmapsync.jmap.progress import Progress
from jmapsync.jmap.wire import MAX_HEADER_BYTES as _MAX_HEADER_BYTES
from jmapsync.jmap.wire import check_identity, describe, parse_head, request_head

_CHUNK = 256 * 1024
_WRITE_CHUNK = 64 * 1024
_MAX_IDLE = 16  # pooled connections kept

Sink = Callable[[bytes], None]
Choose = Callable[[int, dict[str, str]], Sink]  # (status, headers) -> where the body goes

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _quickack(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and _QUICKACK is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


class _Conn:
    def __init__(self, key: tuple[str, str, int], r: asyncio.StreamReader, w: asyncio.StreamWriter):
        self.key = key
        self.reader = r
        self.writer = w

    def usable(self) -> bool:
        """Still open and quiet: an idle HTTP/1.1 connection has nothing to read.

        Readable EOF means the server closed it; readable bytes are a stray
        answer.  Either way a request written there would be lost, and we
        could not tell whether the server saw it."""
        if self.reader.at_eof() or self.writer.is_closing() or self.reader.exception():
            return False
        sock = self.writer.get_extra_info("socket")
        if sock is None:  # pragma: no cover - asyncio always has one
            return False
        # asyncio's socket wrapper has no recv(): peek through a duplicate,
        # so that a FIN the loop has not processed yet is seen too.
        try:
            with socket.socket(fileno=os.dup(sock.fileno())) as raw:
                raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True  # nothing to read: open and quiet
        except OSError:
            return False
        return False  # EOF (b"") or stray bytes

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all: a graceful close
        would wait for a server that stopped reading, with no timeout."""
        self.writer.transport.abort()


class LeanHTTP:
    """A small pool of keep-alive connections (see the module docstring)."""

    def __init__(self, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        self._ssl = ssl_context
        self._idle: list[_Conn] = []

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _connect(self, key: tuple[str, str, int], progress: Progress) -> _Conn:
        while True:
            for i, conn in enumerate(self._idle):
                if conn.key == key:
                    del self._idle[i]
                    break
            else:
                break
            if conn.usable():
                return conn
            await conn.close()  # closed by the server while idle: the request was never sent
        scheme, host, port = key
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=self._ssl() if scheme == "https" else None,
                limit=_MAX_HEADER_BYTES,
            )
        except ssl.SSLCertVerificationError as exc:
            # Trying again changes nothing: the user must fix the trust store.
            raise TransportError(
                f"{progress.what}: TLS certificate verify failed ({exc.verify_message})",
                final=True,
            ) from None
        except ConnectionRefusedError as exc:
            # Nothing listens: the server is down or restarting.  Seconds of
            # retries inside the pass rarely help; the next pass (the
            # daemon's backoff) tries again.
            raise TransportError(f"{progress.what}: {_describe(exc)}", final=True) from None
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"{progress.what}: {_describe(exc)}", sent=False) from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(key, reader, writer)

    async def exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        progress: Progress,
        choose: Choose,
    ) -> tuple[int, dict[str, str]]:
        """Send one request, stream the answer's body into choose(status, headers).

        Raises TransportError(sent=False) when the request provably never
        left (connection refused, TLS handshake failed), sent=True otherwise."""
        key, head = request_head(method, url, headers, body)
        conn = await self._connect(key, progress)
        try:
            await self._write(conn, head, body, progress)
            status, resp_headers = await self._read_head(conn.reader, progress)
            while 100 <= status < 200 and status != 101:  # 100 Continue, 103 Early Hints
                status, resp_headers = await self._read_head(conn.reader, progress)
            _quickack(conn.writer)
            sink = choose(status, resp_headers)
            if status in (204, 304):
                framed = True
            else:
                framed = await self._read_body(conn.reader, resp_headers, sink, progress)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            conn.abort()
            raise TransportError(f"{progress.what}: {_describe(exc)}", sent=True) from None
        except BaseException:
            conn.abort()
            raise
        if framed and "close" not in resp_headers.get("connection", "").lower():
            self._idle.append(conn)
            if len(self._idle) > _MAX_IDLE:
                await self._idle.pop(0).close()
        else:
            await conn.close()
        return status, resp_headers

    @staticmethod
    async def _write(conn: _Conn, head: bytes, body: bytes | None, progress: Progress) -> None:
        conn.writer.write(head)
        progress.moved(len(head))
        if body:
            view = memoryview(body)
            for start in range(0, len(view), _WRITE_CHUNK):
                piece = view[start : start + _WRITE_CHUNK]
                conn.writer.write(piece)
                await conn.writer.drain()
                progress.moved(len(piece))
        await conn.writer.drain()
        _quickack(conn.writer)

    @staticmethod
    async def _read_head(
        reader: asyncio.StreamReader, progress: Progress
    ) -> tuple[int, dict[str, str]]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"{progress.what}: answer headers larger than 64 KiB") from None
        progress.moved(len(head))
        return parse_head(head, progress.what)

    @staticmethod
    async def _read_body(
        reader: asyncio.StreamReader, headers: dict[str, str], sink: Sink, progress: Progress
    ) -> bool:
        """Read the body into sink; True if it was framed (the connection is reusable)."""
        check_identity(headers, progress.what)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"{progress.what}: bad chunk size") from None
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return True
                await _copy(reader, size, sink, progress)
                if await reader.readexactly(2) != b"\r\n":
                    raise ProtocolError(f"{progress.what}: chunk not followed by CRLF")
        length = headers.get("content-length")
        if length is not None:
            try:
                remaining = int(length)
            except ValueError:
                raise ProtocolError(f"{progress.what}: bad Content-Length") from None
            await _copy(reader, remaining, sink, progress)
            return True
        while data := await reader.read(_CHUNK):  # body ends when the server closes
            progress.moved(len(data))
            sink(data)
        return False


async def _copy(reader: asyncio.StreamReader, size: int, sink: Sink, progress: Progress) -> None:
    remaining = size
    while remaining > 0:
        data = await reader.read(min(remaining, _CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(data)
        progress.moved(len(data))
        sink(data)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the server closed the connection mid-answer"
    return describe(exc)
