"""jmap/wire.py's blocking exchange (the no-change fast path's one request)
against canned answers on a local socket: framing, limits, and the failure
classes jmap/http.py acts on (sent / final / stalled)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from jmapsync.errors import ProtocolError, TransportError
from jmapsync.jmap import changes, wire
from jmapsync.jmap.types import Changes, State

Serve = Callable[[socket.socket, bytes], None]


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-")),
        0,
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def server() -> Iterator[Callable[[Serve], str]]:
    """serve(handler) -> base URL; handler(conn, request) answers one request."""
    sock = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def serve(handler: Serve) -> str:
        def run() -> None:
            conn, _ = sock.accept()
            with conn:
                handler(conn, _read_request(conn))

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield serve
    sock.close()
    for t in threads:
        t.join(5)


def _ssl() -> ssl.SSLContext:
    raise AssertionError("not for http://")


def post(base: str, timeout: float = 5, limit: int = 1 << 20) -> tuple[int, dict[str, str], bytes]:
    return wire.exchange(
        "POST",
        base + "/jmap/?x=1",
        {"Authorization": "Basic abc", "Connection": "keep-alive"},
        b'{"a":1}',
        timeout_s=timeout,
        what="API request X",
        ssl_context=_ssl,
        limit=limit,
    )


def canned(answer: bytes, seen: list[bytes] | None = None, pieces: int = 0) -> Serve:
    def handle(conn: socket.socket, request: bytes) -> None:
        if seen is not None:
            seen.append(request)
        if pieces:
            for i in range(0, len(answer), pieces):
                conn.sendall(answer[i : i + pieces])
                time.sleep(0.001)
        else:
            conn.sendall(answer)

    return handle


def test_request_shape_and_content_length(server: Callable[[Serve], str]) -> None:
    seen: list[bytes] = []
    base = server(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", seen))
    status, headers, body = post(base)
    assert (status, body) == (200, b"hello")
    assert headers["content-length"] == "5"
    request = seen[0]
    assert request.startswith(b"POST /jmap/?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Authorization: Basic abc\r\n" in request
    assert b"Content-Length: 7\r\n" in request and request.endswith(b'\r\n\r\n{"a":1}')
    assert b"Connection:" not in request  # the caller's is dropped, as lean.py does


def test_chunked_in_small_pieces_after_100_continue(server: Callable[[Serve], str]) -> None:
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\na\r\nb\r\n3;ext=1\r\nc\r\n\r\n0\r\nX-Trailer: y\r\n\r\n"
    )
    base = server(canned(answer, pieces=3))
    assert post(base)[2] == b"a\r\nbc\r\n"


def test_body_until_close(server: Callable[[Serve], str]) -> None:
    base = server(canned(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"))
    assert post(base)[2] == b"all of it"


def test_an_error_status_is_returned_for_the_caller(server: Callable[[Serve], str]) -> None:
    base = server(canned(b"HTTP/1.1 503 Busy\r\nContent-Length: 2\r\n\r\nno"))
    assert post(base)[:1] == (503,)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, "larger than"),
        (b"SMTP ready\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx", "compressed"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
    ],
)
def test_broken_or_oversized_answers_are_protocol_errors(
    server: Callable[[Serve], str], answer: bytes, message: str
) -> None:
    base = server(canned(answer))
    with pytest.raises(ProtocolError, match=message):
        post(base, limit=64)


def test_a_cut_answer_may_have_been_acted_on(server: Callable[[Serve], str]) -> None:
    base = server(canned(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly this"))
    with pytest.raises(TransportError, match="closed the connection mid-answer") as info:
        post(base)
    assert info.value.fields["sent"] is True


def test_a_silent_server_stalls_within_the_timeout(server: Callable[[Serve], str]) -> None:
    gate = threading.Event()
    base = server(lambda conn, req: gate.wait(10))
    started = time.monotonic()
    try:
        with pytest.raises(TransportError, match=r"API request X: no progress for 0\.5 s") as info:
            post(base, timeout=0.5)
    finally:
        gate.set()
    assert info.value.fields["stalled"] is True
    assert time.monotonic() - started < 5


def test_a_refused_connection_is_final() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError) as info:
        post(f"http://127.0.0.1:{port}")
    assert info.value.fields["final"] is True


def test_mailbox_count_changes_leave_the_tree_as_it_was() -> None:
    def c(**kw: object) -> Changes:
        base: dict[str, object] = {"oldState": "1", "newState": "2", "created": []}
        base |= {"updated": [], "destroyed": []}
        return Changes.parse(base | kw, "Mailbox")

    assert not changes.tree_changed(c())
    counts = ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
    assert not changes.tree_changed(c(updated=["m1"], updatedProperties=counts))
    assert changes.tree_changed(c(updated=["m1"], updatedProperties=[*counts, "name"]))
    assert changes.tree_changed(c(updated=["m1"]))  # null: anything may have changed
    assert changes.tree_changed(c(updated=["m1"], updatedProperties="totalEmails"))
    assert changes.tree_changed(c(created=["m2"], updatedProperties=counts))
    assert changes.tree_changed(c(destroyed=["m1"]))
    calls = changes.round_calls("A", State("m"), State("e"), 500)
    assert [x[0] for x in calls] == ["Mailbox/changes", "Email/changes", "Email/get", "Email/get"]
    assert changes.round_calls("A", None, State("e"), 9)[0][0] == "Email/changes"
