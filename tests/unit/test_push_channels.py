"""jmap/push.py against small servers on 127.0.0.1 that misbehave on purpose:
refused credentials, no such endpoint, a refused subprotocol, a RequestError,
a stream that ends -- each becomes the typed error the daemon acts on."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from jmapsync.config import parse
from jmapsync.errors import AuthError, ProtocolError, PushUnavailable, TransportError
from jmapsync.jmap import push
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import CORE, MAIL, WEBSOCKET, Session

AUTH = "Basic " + base64.b64encode(b"u:pw").decode()


def _session(port: int) -> Session:
    base = f"http://127.0.0.1:{port}"
    return Session.parse(
        {
            "capabilities": {
                CORE: {},
                MAIL: {},
                WEBSOCKET: {"url": f"ws://127.0.0.1:{port}/ws/", "supportsPush": True},
            },
            "accounts": {"u": {"name": "u"}},
            "primaryAccounts": {MAIL: "u"},
            "apiUrl": "/api/",
            "downloadUrl": "/d/{accountId}/{blobId}/{name}",
            "uploadUrl": "/u/{accountId}/",
            "eventSourceUrl": "/es/?types={types}&closeafter={closeafter}&ping={ping}",
            "state": "1",
        },
        base + "/session",
    )


def _client(port: int) -> JmapClient:
    config = parse(
        f"[account a]\nsession_url = http://127.0.0.1:{port}/session\n"
        "username = u\npassword = pw\nmaildir = /nonexistent\ntimeout = 5\n"
    )
    return JmapClient(config.accounts[0])


async def _collect(events: Any, limit: int = 10) -> list[Any]:
    got: list[Any] = []
    async for event in events:
        got.append(event)
        if len(got) >= limit:
            break
    return got


def _ws_run(
    handler: Callable[[ServerConnection], Awaitable[None]],
    *,
    reject: int | None = None,
    subprotocols: list[str] | None = None,
    push_state: str | None = None,
) -> tuple[list[Any], BaseException | None, list[Any]]:
    """Serve one WebSocket endpoint; run websocket_events against it."""
    received: list[Any] = []

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        received.append(("auth", request.headers.get("Authorization")))
        if reject is not None:
            return conn.respond(HTTPStatus(reject), "no\n")
        return None

    async def wrapped(conn: ServerConnection) -> None:
        received.append(("enable", json.loads(await conn.recv())))
        await handler(conn)

    async def run() -> tuple[list[Any], BaseException | None]:
        protos = [Subprotocol(p) for p in (subprotocols if subprotocols is not None else ["jmap"])]
        async with serve(
            wrapped, "127.0.0.1", 0, subprotocols=protos or None, process_request=process_request
        ) as server:
            port = server.sockets[0].getsockname()[1]
            got: list[Any] = []
            error: BaseException | None = None
            async with _client(port) as client:
                try:
                    async for event in push.websocket_events(client, _session(port), push_state):
                        got.append(event)
                except Exception as exc:
                    error = exc
            return got, error

    got, error = asyncio.run(run())
    return got, error, received


def test_websocket_enable_message_state_changes_then_close() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.send(json.dumps({"@type": "Response", "methodResponses": []}))
        await conn.send(
            json.dumps(
                {"@type": "StateChange", "changed": {"u": {"Email": "7"}}, "pushState": "p7"}
            )
        )
        await conn.close()

    got, error, received = _ws_run(handler, push_state="p3")
    assert got == [push.Opened("websocket"), push.StateChange({"u": {"Email": "7"}}, "p7")]
    assert isinstance(error, TransportError)
    assert ("auth", AUTH) in received
    enable = next(v for k, v in received if k == "enable")
    # an explicit list (Cyrus 3.6 takes null as "no push") and the resume point
    assert enable == {
        "@type": "WebSocketPushEnable",
        "dataTypes": ["Email", "Mailbox"],
        "pushState": "p3",
    }


def test_websocket_refused_credentials_is_an_auth_error() -> None:
    _, error, _ = _ws_run(lambda conn: asyncio.sleep(0), reject=401)
    assert isinstance(error, AuthError)


def test_websocket_not_found_means_the_transport_is_unavailable() -> None:
    _, error, _ = _ws_run(lambda conn: asyncio.sleep(0), reject=404)
    assert isinstance(error, PushUnavailable)


def test_websocket_without_the_jmap_subprotocol_is_a_protocol_error() -> None:
    async def handler(conn: ServerConnection) -> None:
        await asyncio.sleep(0.2)

    got, error, _ = _ws_run(handler, subprotocols=[])
    assert isinstance(error, ProtocolError)
    assert got == []


def test_websocket_request_error_and_bad_state_change_are_protocol_errors() -> None:
    async def request_error(conn: ServerConnection) -> None:
        await conn.send(json.dumps({"@type": "RequestError", "type": "notRequest"}))
        await asyncio.sleep(0.2)

    async def bad_change(conn: ServerConnection) -> None:
        await conn.send(json.dumps({"@type": "StateChange", "changed": {"u": {"Email": 1}}}))
        await asyncio.sleep(0.2)

    for handler in (request_error, bad_change):
        _, error, _ = _ws_run(handler)
        assert isinstance(error, ProtocolError)


def test_websocket_not_offered_by_the_session() -> None:
    session = _session(9)
    bare = Session.parse(
        {
            "capabilities": {CORE: {}, MAIL: {}},
            "accounts": {"u": {}},
            "primaryAccounts": {MAIL: "u"},
            "apiUrl": "/a/",
            "downloadUrl": "/d/{accountId}/{blobId}/{name}",
            "uploadUrl": "/u/",
        },
        session.url,
    )
    assert push.transports(bare) == []
    assert push.transports(session) == ["websocket", "eventsource"]

    async def run() -> None:
        async with _client(9) as client:
            with pytest.raises(PushUnavailable):
                await _collect(push.websocket_events(client, bare))
            with pytest.raises(PushUnavailable):
                await _collect(push.eventsource_events(client, bare))

    asyncio.run(run())


# -- EventSource -------------------------------------------------------------------


def _es_run(raw_response: bytes) -> tuple[list[Any], BaseException | None, bytes]:
    """One HTTP/1.1 exchange: read the request, write raw_response, close."""
    seen = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await reader.readuntil(b"\r\n\r\n"))
        writer.write(raw_response)
        await writer.drain()
        writer.close()

    async def run() -> tuple[list[Any], BaseException | None]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got: list[Any] = []
        error: BaseException | None = None
        async with server, _client(port) as client:
            try:
                async for event in push.eventsource_events(client, _session(port)):
                    got.append(event)
            except Exception as exc:
                error = exc
        return got, error

    got, error = asyncio.run(run())
    return got, error, bytes(seen)


def test_eventsource_events_pings_and_end_of_stream() -> None:
    body = (
        b'event: ping\ndata: {"interval":30}\n\n'
        b"event: state\nid: 9\n"
        b'data: {"@type":"StateChange","changed":{"u":{"Email":"9","Mailbox":"4"}}}\n\n'
    )
    got, error, request = _es_run(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + body
    )
    assert got == [
        push.Opened("eventsource"),
        push.StateChange({"u": {"Email": "9", "Mailbox": "4"}}),
    ]
    assert isinstance(error, TransportError)
    first = request.split(b"\r\n", 1)[0]
    assert first == b"GET /es/?types=Email%2CMailbox&closeafter=no&ping=30 HTTP/1.1"
    headers = {
        k.strip().lower(): v.strip()
        for k, _, v in (line.partition(b":") for line in request.split(b"\r\n")[1:] if line)
    }
    assert headers[b"authorization"] == AUTH.encode()
    assert headers[b"accept"] == b"text/event-stream"


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (b"204 No Content", PushUnavailable),  # Debian's Cyrus httpd without libwslay
        (b"404 Not Found", PushUnavailable),
        (b"401 Unauthorized", AuthError),
    ],
)
def test_eventsource_refusals(status: bytes, error_type: type[Exception]) -> None:
    got, error, _ = _es_run(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
    assert got == []
    assert isinstance(error, error_type)


def test_eventsource_wrong_content_type_is_not_a_push_channel() -> None:
    _, error, _ = _es_run(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi"
    )
    assert isinstance(error, PushUnavailable)
