"""The fresh-connection blob fetcher against canned HTTP answers on a local socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from jmapsync.errors import AuthError, HTTPStatusError, ProtocolError, TransportError
from jmapsync.jmap.blobs import BlobFetcher


async def serve_once(answer: bytes, seen: list[bytes]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


def fetch(answer: bytes) -> tuple[bool, bytes, bytes]:
    async def go() -> tuple[bool, bytes, bytes]:
        seen: list[bytes] = []
        server, port = await serve_once(answer, seen)
        body = bytearray()
        sink: Callable[[bytes], None] = body.extend
        fetcher = BlobFetcher(5)
        try:
            ok = await fetcher.get(
                f"http://127.0.0.1:{port}/dl/a%2Fb?accept=message%2Frfc822",
                {"Authorization": "Basic xyz"},
                sink,
            )
        finally:
            await fetcher.aclose()
            server.close()
            await server.wait_closed()
        return ok, bytes(body), seen[0]

    return asyncio.run(go())


def test_content_length_body_and_request_shape() -> None:
    ok, body, request = fetch(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert ok and body == b"hello"
    assert request.startswith(b"GET /dl/a%2Fb?accept=message%2Frfc822 HTTP/1.1\r\n")
    assert b"Connection:" not in request and b"Authorization: Basic xyz\r\n" in request
    assert b"Accept-Encoding: identity\r\n" in request


def test_chunked_body_with_crlf_inside() -> None:
    ok, body, _ = fetch(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\na\r\nb\r\n3;ext=1\r\nc\r\n\r\n0\r\nX-Trailer: y\r\n\r\n"
    )
    assert ok and body == b"a\r\nbc\r\n"


def test_body_until_close() -> None:
    ok, body, _ = fetch(b"HTTP/1.0 200 OK\r\n\r\nraw \r\r\n bytes")
    assert ok and body == b"raw \r\r\n bytes"


def test_redirect_is_left_to_httpx() -> None:
    ok, body, _ = fetch(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
    assert not ok and body == b""


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 401 Unauthorized\r\n\r\n", AuthError),
        (b"HTTP/1.1 404 Not Found\r\n\r\n", HTTPStatusError),
        (b"SMTP ready\r\n\r\n", ProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", TransportError),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\nxx", ProtocolError),
    ],
)
def test_bad_answers_raise_typed_errors(answer: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        fetch(answer)


def test_keep_alive_reuses_the_connection_and_survives_a_server_close() -> None:
    """Two answers on one connection; then the server closes it while idle,
    and the next GET quietly opens a new one."""

    async def go() -> tuple[list[int], list[bytes]]:
        conns: list[int] = []
        bodies: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.append(1)
            for _ in range(2):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
            writer.close()  # idle close after two requests

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        fetcher = BlobFetcher(5)
        try:
            for _ in range(3):
                body = bytearray()
                assert await fetcher.get(f"http://127.0.0.1:{port}/x", {}, body.extend)
                bodies.append(bytes(body))
                await asyncio.sleep(0.05)
        finally:
            await fetcher.aclose()
            server.close()
            await server.wait_closed()
        return conns, bodies

    conns, bodies = asyncio.run(go())
    assert bodies == [b"ok", b"ok", b"ok"]
    assert len(conns) == 2
