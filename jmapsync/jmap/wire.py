"""HTTP/1.1 on the wire: request heads, answer heads, and one blocking exchange.

jmap/lean.py (the asyncio client of every pass) and the no-change fast path
(sync/quick.py) build request heads and read answer heads here, the same
way.  The fast path sends ONE API request and must not import asyncio for
it (asyncio alone costs about half of issue 16's start-up budget), so
`exchange()` does that request with a plain blocking socket: a fresh
connection, the request, the whole answer, close.  It follows the progress
rule of jmap/progress.py (the same `Window`) and the failure classes of
lean.py (TransportError with sent/final/stalled), and knows nothing of
redirects, retries, proxies or statuses: its caller falls back to the full
client for anything but a plain 2xx answer.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from jmapsync.errors import ProtocolError, TransportError
from jmapsync.jmap.progress import Window, stalled

if TYPE_CHECKING:
    import ssl

MAX_HEADER_BYTES = 64 * 1024
USER_AGENT = "jmapsync/0.1"
_CHUNK = 256 * 1024

Key = tuple[str, str, int]  # scheme, host, port: what a connection is for


def request_head(
    method: str, url: str, headers: dict[str, str], body: bytes | None
) -> tuple[Key, bytes]:
    """The connection a request goes to, and its head (request line and
    headers, Host and Content-Length added; a caller's Connection dropped)."""
    parts = urlsplit(url)
    key = (
        parts.scheme,
        parts.hostname or "",
        parts.port or (443 if parts.scheme == "https" else 80),
    )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "connection"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return key, "\r\n".join([*lines, "", ""]).encode("latin-1")


def parse_head(head: bytes, what: str) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-case names) of an answer head ending in CRLF CRLF."""
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise ProtocolError(f"{what}: not an HTTP/1.x answer: {lines[0][:80]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise ProtocolError(f"{what}: bad status line {lines[0][:80]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"{what}: malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def check_identity(headers: dict[str, str], what: str) -> None:
    if headers.get("content-encoding", "identity").lower() not in ("identity", ""):
        raise ProtocolError(f"{what}: compressed body although identity was asked")


def describe(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return f"{type(exc).__name__}: {text}"


def _env(name: str) -> str:
    return os.environ.get(name.lower()) or os.environ.get(name.upper()) or ""


def proxy_applies(url: str) -> bool:
    """Would httpx (trust_env) send `url` through a proxy?  Errs towards yes.

    Read from the environment by hand: urllib.request.getproxies() costs
    ~25 ms of imports.  A NO_PROXY entry bypasses only when it matches here
    (the host itself or a parent domain, or `*`); httpx matches at least
    those, so a request we send directly is one httpx would send directly."""
    parts = urlsplit(url)
    if not (_env(f"{parts.scheme}_proxy") or _env("all_proxy")):
        return False
    host = (parts.hostname or "").lower()
    for raw in _env("no_proxy").split(","):
        if raw.strip() == "*":
            return False
        entry = raw.strip().lower().removeprefix("*").removeprefix(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return False
    return True


class _Conn:
    """One blocking connection under the progress rule."""

    def __init__(self, timeout_s: float, what: str) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.window = Window(timeout_s, time.monotonic())
        self.sock: socket.socket | None = None
        self.buf = b""

    def budget(self) -> float:
        """Seconds the next socket call may wait; raises when none are left."""
        now = time.monotonic()
        left = self.window.deadline(now) - now
        if left <= 0:
            raise stalled(self.what, self.timeout_s)
        return left

    def moved(self, n: int) -> None:
        self.window.moved(n, time.monotonic())

    def connect(self, key: Key, ssl_context: Callable[[], ssl.SSLContext]) -> None:
        scheme, host, port = key
        # An ASCII host as bytes: a str would load the idna codec (~2 ms).
        # getaddrinfo() takes bytes; typeshed says str only.
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        try:
            sock = socket.create_connection((name, port), timeout=self.budget())  # type: ignore[arg-type]
        except TimeoutError:
            raise stalled(self.what, self.timeout_s) from None
        except ConnectionRefusedError as exc:
            raise TransportError(f"{self.what}: {describe(exc)}", final=True) from None
        except OSError as exc:
            raise TransportError(f"{self.what}: {describe(exc)}", sent=False) from None
        self.sock = sock
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            import ssl

            try:
                self.sock = ssl_context().wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                raise TransportError(
                    f"{self.what}: TLS certificate verify failed ({exc.verify_message})",
                    final=True,
                ) from None
            except TimeoutError:
                raise stalled(self.what, self.timeout_s) from None
            except (OSError, ssl.SSLError) as exc:
                raise TransportError(f"{self.what}: {describe(exc)}", sent=False) from None

    def send(self, data: bytes) -> None:
        assert self.sock is not None  # noqa: S101 - connected first
        view = memoryview(data)
        while view:
            self.sock.settimeout(self.budget())
            n = self.sock.send(view[:_CHUNK])
            self.moved(n)
            view = view[n:]

    def recv(self) -> bytes:
        """Buffered bytes first, then the socket; b"" at EOF."""
        if self.buf:
            data, self.buf = self.buf, b""
            return data
        assert self.sock is not None  # noqa: S101
        self.sock.settimeout(self.budget())
        data = self.sock.recv(_CHUNK)
        self.moved(len(data))
        return data

    def read_until(self, mark: bytes, limit: int) -> bytes:
        data = b""
        while mark not in data:
            if len(data) > limit:
                raise ProtocolError(f"{self.what}: answer headers larger than 64 KiB")
            more = self.recv()
            if not more:
                raise TransportError(
                    f"{self.what}: the server closed the connection mid-answer", sent=True
                )
            data += more
        end = data.index(mark) + len(mark)
        self.buf = data[end:] + self.buf
        return data[:end]

    def read_exactly(self, n: int, out: bytearray) -> None:
        while n > 0:
            data = self.recv()
            if not data:
                raise TransportError(
                    f"{self.what}: the server closed the connection mid-answer", sent=True
                )
            if len(data) > n:
                self.buf = data[n:]
                data = data[:n]
            out += data
            n -= len(data)


def exchange(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes | None,
    *,
    timeout_s: float,
    what: str,
    ssl_context: Callable[[], ssl.SSLContext],
    limit: int,
    while_waiting: tuple[float, Callable[[], None]] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection, blocking: (status, headers, body).

    `while_waiting` (seconds, callback): when the answer has not begun that
    long after the request was sent, the callback is called (once) before
    waiting on -- sync/quick.py starts loading the engine then.

    Raises TransportError (sent=False when the request provably never left;
    final=True for a refused connection or a rejected certificate;
    stalled=True when the progress rule ran out) or ProtocolError (a broken
    answer, or a body above `limit` bytes)."""
    key, head = request_head(method, url, headers, body)
    conn = _Conn(timeout_s, what)
    conn.connect(key, ssl_context)
    try:
        try:
            conn.send(head + (body or b""))
            if while_waiting is not None:
                patience, callback = while_waiting
                assert conn.sock is not None  # noqa: S101 - connected above
                wait = min(patience, conn.budget())  # (never past the progress timeout)
                if not conn.buf and not select.select([conn.sock], [], [], wait)[0]:
                    callback()
            status, resp = parse_head(conn.read_until(b"\r\n\r\n", MAX_HEADER_BYTES), what)
            while 100 <= status < 200 and status != 101:  # 100 Continue, 103 Early Hints
                status, resp = parse_head(conn.read_until(b"\r\n\r\n", MAX_HEADER_BYTES), what)
            return status, resp, _body(conn, status, resp, limit)
        except TimeoutError:
            raise stalled(what, timeout_s) from None
        except OSError as exc:
            raise TransportError(f"{what}: {describe(exc)}", sent=True) from None
    finally:
        assert conn.sock is not None  # noqa: S101
        conn.sock.close()


def _body(conn: _Conn, status: int, headers: dict[str, str], limit: int) -> bytes:
    out = bytearray()
    if status in (204, 304):
        return b""
    check_identity(headers, conn.what)

    def check() -> None:
        if len(out) > limit:
            raise ProtocolError(f"{conn.what}: the answer is larger than {limit >> 20} MiB")

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = conn.read_until(b"\r\n", MAX_HEADER_BYTES)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"{conn.what}: bad chunk size") from None
            if size == 0:
                while conn.read_until(b"\r\n", MAX_HEADER_BYTES) != b"\r\n":  # trailers
                    pass
                return bytes(out)
            if len(out) + size > limit:
                raise ProtocolError(f"{conn.what}: the answer is larger than {limit >> 20} MiB")
            conn.read_exactly(size, out)
            crlf = bytearray()
            conn.read_exactly(2, crlf)
            if crlf != b"\r\n":
                raise ProtocolError(f"{conn.what}: chunk not followed by CRLF")
    length = headers.get("content-length")
    if length is not None:
        try:
            remaining = int(length)
        except ValueError:
            raise ProtocolError(f"{conn.what}: bad Content-Length") from None
        if remaining > limit:
            raise ProtocolError(f"{conn.what}: the answer is larger than {limit >> 20} MiB")
        conn.read_exactly(remaining, out)
        return bytes(out)
    while data := conn.recv():  # body ends when the server closes
        out += data
        check()
    return bytes(out)
