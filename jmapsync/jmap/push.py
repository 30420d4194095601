"""Push channels: the server tells us WHEN something changed, never WHAT.

Two transports, both turned into the same stream of `PushEvent`s:

* WebSocket (RFC 8887): capability ``urn:ietf:params:jmap:websocket``,
  subprotocol ``jmap``, then ``WebSocketPushEnable`` with an explicit
  ``dataTypes`` list (Cyrus 3.6 takes ``null`` -- "all types" in the RFC -- as
  "push off") and the last ``pushState`` we saw, so that the server resends
  what changed while we were away.
* EventSource (RFC 8620 7.3): a long GET of ``eventSourceUrl`` answering
  ``text/event-stream``; ``event: state`` carries a StateChange.

Each stream starts with `Opened` once the channel is up: the caller runs a
pass then, because a push channel only reports changes from its opening on
(and may have lost some before).  A StateChange is a hint; the pass asks the
server what changed (``*/changes``).  This module is the only place besides
client.py that opens network connections.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jmapsync.errors import (
    AuthError,
    HTTPStatusError,
    ProtocolError,
    PushUnavailable,
    TransportError,
)
from jmapsync.jmap.client import JmapClient, expand_template
from jmapsync.jmap.http import map_transport_errors
from jmapsync.jmap.types import WEBSOCKET, Session

Transport = Literal["websocket", "eventsource"]

# What the mirror reads.  Thread is left out on purpose: Cyrus 3.6 never
# pushes it, and a Thread change without an Email change means nothing to us.
PUSH_TYPES: tuple[str, ...] = ("Email", "Mailbox")

# EventSource: the server sends "event: ping" every PING_S seconds; no byte
# for READ_TIMEOUT_S means the connection is dead even if TCP does not know.
PING_S = 30
READ_TIMEOUT_S = 2 * PING_S + 15
# WebSocket: our own pings detect a dead peer within about this long.
WS_PING_S = 30.0
_MAX_MESSAGE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Opened:
    """The channel is up: everything from now on will be pushed."""

    transport: Transport


@dataclass(frozen=True, slots=True)
class StateChange:
    """RFC 8620 7.1: per account id, per type, the type's new state."""

    changed: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    push_state: str | None = None
    typeless: bool = False  # sent without "@type" (Fastmail's event source)

    def states(self, account_id: str) -> dict[str, str]:
        """The pushed states of one account (empty when it did not change)."""
        return dict(self.changed.get(account_id, {}))


PushEvent = Opened | StateChange


def parse_state_change(data: object) -> StateChange | None:
    """A StateChange object, None for any other JMAP push message; a malformed
    StateChange is a ProtocolError (never a crash, never silently ignored).

    An object WITHOUT "@type" that has a `changed` map is taken as one:
    Fastmail's event source sends `{"changed": {...}, "type": "connect" |
    "change"}` (two independent clients type it so: mattwynne/email-tools
    src/infrastructure/emails/PushNotification.ts, smkent/jmapc
    jmapc/models/event.py).  Ignoring it left the daemon on its backstop poll."""
    if not isinstance(data, dict):
        return None
    kind = data.get("@type")
    changed = data.get("changed")
    if kind is None and isinstance(changed, dict):
        typeless = True
    elif kind == "StateChange":
        typeless = False
    else:
        return None
    if not isinstance(changed, dict):
        raise ProtocolError("StateChange without a changed object")
    out: dict[str, dict[str, str]] = {}
    for account_id, types in changed.items():
        if not isinstance(types, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in types.items()
        ):
            raise ProtocolError(f"StateChange: bad type states for account {account_id!r:.40}")
        out[str(account_id)] = dict(types)
    push_state = data.get("pushState")
    return StateChange(out, push_state if isinstance(push_state, str) else None, typeless)


def transports(session: Session) -> list[Transport]:
    """The push transports this session offers, best first."""
    offered: list[Transport] = []
    ws = session.capabilities.get(WEBSOCKET)
    if session.websocket_url and isinstance(ws, dict) and ws.get("supportsPush") is True:
        offered.append("websocket")
    if session.event_source_url:
        offered.append("eventsource")
    return offered


def open_channel(
    transport: Transport, client: JmapClient, session: Session, push_state: str | None = None
) -> AsyncGenerator[PushEvent, None]:
    """The event stream of one transport; it ends or raises when the channel drops."""
    if transport == "websocket":
        return websocket_events(client, session, push_state)
    return eventsource_events(client, session)


# -- WebSocket (RFC 8887) -----------------------------------------------------------


async def websocket_events(
    client: JmapClient, session: Session, push_state: str | None = None
) -> AsyncGenerator[PushEvent, None]:
    """Push over the JMAP WebSocket; raises TransportError when it closes."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import (
        ConnectionClosed,
        InvalidHandshake,
        InvalidStatus,
        InvalidURI,
    )
    from websockets.typing import Subprotocol

    if "websocket" not in transports(session) or session.websocket_url is None:
        raise PushUnavailable("the server offers no WebSocket push")
    url = session.websocket_url
    enable: dict[str, Any] = {"@type": "WebSocketPushEnable", "dataTypes": list(PUSH_TYPES)}
    if push_state is not None:
        enable["pushState"] = push_state
    try:
        async with connect(
            url,
            subprotocols=[Subprotocol("jmap")],
            additional_headers=client.auth_headers(),
            open_timeout=client.account.timeout_s,
            ping_interval=WS_PING_S,
            ping_timeout=WS_PING_S,
            close_timeout=2,
            max_size=_MAX_MESSAGE,
            logger=None,  # its debug log would show the upgrade request's headers
        ) as ws:
            if ws.subprotocol != "jmap":
                raise ProtocolError(f"WebSocket {url}: the server did not accept subprotocol jmap")
            await ws.send(json.dumps(enable))
            yield Opened("websocket")
            async for message in ws:
                try:
                    data = json.loads(message)
                except ValueError:
                    raise ProtocolError(f"WebSocket {url}: a message is not JSON") from None
                if isinstance(data, dict) and data.get("@type") == "RequestError":
                    raise ProtocolError(f"WebSocket {url}: RequestError {data.get('type')!r:.80}")
                change = parse_state_change(data)
                if change is not None:
                    yield change
        raise TransportError(f"WebSocket {url}: the server closed the connection")
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthError(f"WebSocket {url}: the server refused the credentials") from None
        if status in (404, 405, 501):
            raise PushUnavailable(f"WebSocket {url}: HTTP {status}") from None
        raise HTTPStatusError(f"WebSocket {url}: HTTP {status}", status=status) from None
    except (InvalidURI, InvalidHandshake) as exc:
        raise ProtocolError(f"WebSocket {url}: {type(exc).__name__}") from None
    except ConnectionClosed as exc:
        raise TransportError(f"WebSocket {url}: closed ({exc.rcvd or 'no close frame'})") from None
    except (OSError, TimeoutError) as exc:
        raise TransportError(f"WebSocket {url}: {type(exc).__name__}: {exc}") from None


# -- EventSource (RFC 8620 7.3) -----------------------------------------------------


@dataclass
class SseParser:
    """text/event-stream lines -> (event, data) pairs (WHATWG "server-sent
    events", the subset JMAP uses: event, data, id; comments ignored)."""

    event: str = ""
    data: list[str] = field(default_factory=list)
    last_id: str | None = None

    def feed(self, line: str) -> tuple[str, str] | None:
        """One line without its end; returns a finished event at a blank line."""
        if not line:
            if not self.data and not self.event:
                return None
            done = (self.event or "message", "\n".join(self.data))
            self.event, self.data = "", []
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.last_id = value
        return None


async def eventsource_events(
    client: JmapClient, session: Session
) -> AsyncGenerator[PushEvent, None]:
    """Push over the event source; raises TransportError when it closes."""
    import httpx

    if session.event_source_url is None:
        raise PushUnavailable("the server offers no eventSourceUrl")
    url = expand_template(
        session.event_source_url, types=",".join(PUSH_TYPES), closeafter="no", ping=str(PING_S)
    )
    headers = client.auth_headers() | {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    timeout = httpx.Timeout(client.account.timeout_s, read=READ_TIMEOUT_S)
    parser = SseParser()
    with map_transport_errors(f"event source {url}"):
        async with client.http.stream("GET", url, headers=headers, timeout=timeout) as response:
            status = response.status_code
            if status in (401, 403):
                raise AuthError(f"event source {url}: the server refused the credentials")
            # Debian's Cyrus 3.6 httpd (built without libwslay) advertises
            # eventSourceUrl but answers every request with 204 No Content.
            if status in (204, 404, 405, 501):
                raise PushUnavailable(f"event source {url}: HTTP {status}")
            if status != 200:
                raise HTTPStatusError(f"event source {url}: HTTP {status}", status=status)
            ctype = response.headers.get("content-type", "")
            if not ctype.startswith("text/event-stream"):
                raise PushUnavailable(f"event source {url}: content type {ctype!r:.60}")
            yield Opened("eventsource")
            async for line in response.aiter_lines():
                if len(line) > _MAX_MESSAGE:
                    raise ProtocolError(f"event source {url}: a line above 1 MiB")
                done = parser.feed(line)
                if done is None or done[0] != "state":
                    continue
                try:
                    data = json.loads(done[1])
                except ValueError:
                    raise ProtocolError(f"event source {url}: a state event is not JSON") from None
                change = parse_state_change(data)
                if change is not None:
                    yield change
    raise TransportError(f"event source {url}: the server closed the stream")
