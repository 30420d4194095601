"""jmap/http.py and the lean client against canned HTTP answers on a local socket.

What Cyrus cannot be made to do on demand (answer with a chunked body and
trailers, speak SMTP, lose an answer at an exact moment) is served here by a
few lines of asyncio.  The same cases through the real Cyrus and the fault
proxy are in tests/integration/test_network_faults.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from jmapsync.errors import AuthError, HTTPStatusError, ProtocolError, TransportError
from jmapsync.jmap import http as jhttp
from jmapsync.jmap.http import Http, proxy_applies

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            head += await reader.readexactly(int(line.split(b":")[1]))
    return head


def run(
    handler: Handler, go: Callable[[Http, str], Awaitable[object]], timeout: float = 5
) -> object:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    async def main() -> object:
        server = await asyncio.start_server(closing, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        web = Http(timeout)
        try:
            return await go(web, f"http://127.0.0.1:{port}")
        finally:
            await web.aclose()
            server.close()

    return asyncio.run(main())


def canned(answer: bytes, seen: list[bytes]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                seen.append(await read_request(reader))
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return handle


def get(answer: bytes) -> tuple[bytes, bytes]:
    seen: list[bytes] = []
    body = bytearray()

    async def go(web: Http, base: str) -> None:
        await web.request(
            "GET",
            f"{base}/dl/a%2Fb?accept=message%2Frfc822",
            {"Authorization": "Basic xyz"},
            what="download",
            idempotent=True,
            sink=body.extend,
        )

    run(canned(answer, seen), go)
    return bytes(body), seen[0]


def test_content_length_body_and_request_shape() -> None:
    body, request = get(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert body == b"hello"
    assert request.startswith(b"GET /dl/a%2Fb?accept=message%2Frfc822 HTTP/1.1\r\n")
    assert b"Connection:" not in request and b"Authorization: Basic xyz\r\n" in request
    assert b"Accept-Encoding: identity\r\n" in request


def test_chunked_body_with_crlf_inside() -> None:
    body, _ = get(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\na\r\nb\r\n3;ext=1\r\nc\r\n\r\n0\r\nX-Trailer: y\r\n\r\n"
    )
    assert body == b"a\r\nbc\r\n"


def test_body_until_close() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nraw \r\r\n bytes")
        await writer.drain()
        writer.close()

    body = bytearray()

    async def go(web: Http, base: str) -> None:
        await web.request("GET", base + "/x", {}, what="d", idempotent=True, sink=body.extend)

    run(handle, go)
    assert body == b"raw \r\r\n bytes"


PROBLEM = b'{"type":"urn:x:notJSON","detail":"\\u001b[31mred\x1b[0m"}'


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", AuthError, "HTTP 401"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", HTTPStatusError, "HTTP 404"),
        (b"SMTP ready\r\n\r\n", ProtocolError, "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\nxx", ProtocolError, "compressed"),
        (
            b"HTTP/1.1 400 Bad\r\nContent-Type: application/problem+json\r\nContent-Length: "
            + str(len(PROBLEM)).encode()
            + b"\r\n\r\n"
            + PROBLEM,
            HTTPStatusError,
            "HTTP 400 (urn:x:notJSON: red)",
        ),
    ],
)
def test_bad_answers_raise_typed_one_line_errors(
    answer: bytes, error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        get(answer)
    assert text in str(info.value) and "\x1b" not in str(info.value)


def test_redirect_is_followed_and_a_loop_is_a_one_line_error() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                req = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            path = req.split(b" ")[1]
            if path == b"/a":
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: /b\r\nContent-Length: 0\r\n\r\n")
            elif path == b"/b":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

    async def go(web: Http, base: str) -> tuple[bytes, str]:
        ok = await web.request("GET", base + "/a", {}, what="session", idempotent=True, limit=99)
        with pytest.raises(ProtocolError) as info:
            await web.request("GET", base + "/loop", {}, what="download G1", idempotent=True)
        return ok.body, str(info.value)

    body, error = run(handle, go)  # type: ignore[misc]
    assert body == b"ok"
    assert error.startswith("download G1: redirect loop at http://127.0.0.1:")


def test_keep_alive_reuses_the_connection_and_survives_an_idle_close() -> None:
    """Two answers on one connection; then the server closes it while idle,
    and the next request -- even a POST that must never be sent twice --
    quietly goes on a new connection: the close was seen before writing."""
    conns: list[int] = []
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        for _ in range(2):
            requests.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()  # idle close after two requests

    async def go(web: Http, base: str) -> list[bytes]:
        out = []
        for _ in range(3):
            answer = await web.request(
                "POST", base + "/api", {}, what="api", idempotent=False, body=b"{}", limit=99
            )
            out.append(answer.body)
            await asyncio.sleep(0.05)
        return out

    assert run(handle, go) == [b"ok", b"ok", b"ok"]
    assert len(conns) == 2 and len(requests) == 3


def lost_answer_server(requests: list[bytes]) -> Handler:
    """Answers the first request of each connection... except the 2nd request
    overall, which it reads (and so processes) and then drops the connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                requests.append(await read_request(reader))
                if len(requests) == 2:
                    writer.transport.abort()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    return handle


@pytest.mark.parametrize("safe", [False, True])
def test_a_request_whose_answer_was_lost_is_resent_only_if_idempotent(safe: bool) -> None:
    """The old lean client sent ANY request again when its pooled connection
    failed before the answer head -- an Email/import twice.  Now only an
    idempotent request is sent again."""
    requests: list[bytes] = []

    async def go(web: Http, base: str) -> object:
        await web.request(
            "POST", base + "/api", {}, what="api", idempotent=safe, body=b"1", limit=9
        )
        try:
            return await web.request(
                "POST", base + "/api", {}, what="api", idempotent=safe, body=b"2", limit=9
            )
        except TransportError as exc:
            return exc

    result = run(lost_answer_server(requests), go)
    if safe:
        assert isinstance(result, jhttp.Answer) and result.body == b"ok"
        assert [r[-1:] for r in requests] == [b"1", b"2", b"2"]
    else:
        assert isinstance(result, TransportError)
        assert [r[-1:] for r in requests] == [b"1", b"2"]


def test_a_cut_download_resumes_with_range_and_delivers_each_byte_once() -> None:
    blob = bytes(range(256)) * 40
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await read_request(reader)
        seen.append(req)
        if len(seen) == 1:  # the first try is cut after 3000 bytes
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob) + blob[:3000])
            await writer.drain()
            writer.transport.abort()
            return
        if len(seen) == 2:  # the second answers the Range
            writer.write(
                b"HTTP/1.1 206 Partial\r\nContent-Range: bytes 3000-%d/%d\r\n"
                b"Content-Length: %d\r\n\r\n"
                % (len(blob) - 1, len(blob), len(blob) - 3000)
                + blob[3000:]
            )
        await writer.drain()
        writer.close()

    body = bytearray()

    async def go(web: Http, base: str) -> None:
        await web.request("GET", base + "/b", {}, what="d", idempotent=True, sink=body.extend)

    run(handle, go)
    assert bytes(body) == blob
    assert b"Range: bytes=3000-\r\n" in seen[1]


def test_a_retried_download_without_range_support_skips_what_it_had() -> None:
    blob = b"0123456789" * 500
    tries: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        tries.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob))
        writer.write(blob[:1234] if len(tries) == 1 else blob)
        await writer.drain()
        if len(tries) == 1:
            writer.transport.abort()
        else:
            writer.close()

    body = bytearray()

    async def go(web: Http, base: str) -> None:
        await web.request("GET", base + "/b", {}, what="d", idempotent=True, sink=body.extend)

    run(handle, go)
    assert bytes(body) == blob and len(tries) == 2


def trickle_server(chunk: int, every: float, total: int) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        sent = 0
        try:
            while sent < total:
                writer.write(b"x" * chunk)
                await writer.drain()
                sent += chunk
                await asyncio.sleep(every)
        except ConnectionError:
            pass
        writer.close()

    return handle


def test_progress_timeout_drops_a_trickle_and_is_not_retried() -> None:
    """4 bytes per 0.2 s (20 B/s) with timeout = 1: dropped after about 1 s,
    once (a stall is not retried), although bytes never stopped."""

    async def go(web: Http, base: str) -> tuple[str, float]:
        started = time.monotonic()
        with pytest.raises(TransportError) as info:
            await web.request(
                "GET", base + "/b", {}, what="download G1", idempotent=True, sink=print
            )
        return str(info.value), time.monotonic() - started

    text, took = run(trickle_server(4, 0.2, 10_000), go, timeout=1)  # type: ignore[misc]
    assert text == "download G1: no progress for 1 s (less than 1 KiB/s)"
    assert took < 5


def test_progress_timeout_never_cuts_a_transfer_that_keeps_its_rate() -> None:
    """4 KiB every 0.25 s (16 KiB/s) for 3 s with timeout = 1: completes,
    although it takes three times `timeout`."""
    body = bytearray()

    async def go(web: Http, base: str) -> None:
        await web.request("GET", base + "/b", {}, what="d", idempotent=True, sink=body.extend)

    run(trickle_server(4096, 0.25, 4096 * 12), go, timeout=1)
    assert len(body) == 4096 * 12


@pytest.mark.parametrize(
    ("env", "url", "applies"),
    [
        ({}, "https://mail.example/jmap", False),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://mail.example/jmap", True),
        ({"https_proxy": "http://p:3128"}, "http://mail.example/jmap", False),
        ({"HTTP_PROXY": "http://p:3128"}, "http://mail.example/jmap", True),
        ({"ALL_PROXY": "socks5://p"}, "http://mail.example/jmap", True),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "example"}, "https://mail.example/", False),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": ".example"}, "https://mail.example/", False),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "mail.example"}, "https://mail.example/", False),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "xample"}, "https://mail.example/", True),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "a, *"}, "https://mail.example/", False),
        ({"HTTPS_PROXY": "http://p", "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3/", True),
        ({"HTTPS_PROXY": "http://p", "no_proxy": "127.0.0.1"}, "https://127.0.0.1:8/", False),
    ],
)
def test_proxy_applies_like_httpx_or_errs_towards_the_proxy(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str, applies: bool
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_applies(url) is applies


def test_an_upload_the_server_stops_reading_is_dropped_within_timeout() -> None:
    """Request bytes count as progress too: a server that stops reading a
    32 MB upload (socket buffers full) leaves the client stuck in write(),
    and after ~timeout it is dropped -- once: an upload is never re-sent."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)  # never reads the body

    async def go(web: Http, base: str) -> str:
        with pytest.raises(TransportError) as info:
            await web.request(
                "POST", base + "/up", {}, what="upload", idempotent=False, body=b"x" * (32 << 20)
            )
        return str(info.value)

    assert run(handle, go, timeout=1) == "upload: no progress for 1 s (less than 1 KiB/s)"
    assert connections == [1]


def test_a_refused_connection_is_not_retried() -> None:
    """Nothing listens: the server is down.  One line, no retries inside the
    pass (the daemon's backoff decides when to come back)."""
    from structlog.testing import capture_logs

    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # a port nobody listens on

    async def go() -> str:
        web = Http(5)
        try:
            with pytest.raises(TransportError) as info:
                await web.request(
                    "GET", f"http://127.0.0.1:{port}/s", {}, what="session", idempotent=True
                )
            return str(info.value)
        finally:
            await web.aclose()

    with capture_logs() as logs:
        text = asyncio.run(go())
    assert text.startswith("session: ConnectionRefusedError")
    assert [e for e in logs if e["event"] == "http-retry"] == []
