"""The event source (RFC 8620 7.3): `state` events and pings, typed or not.

Mixed into JmapServer.  A stream registers a listener with the store; every
change wakes it, and it sends the types whose state moved since its last
event (coalesced, as RFC 8620 7.1 allows).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from .http import Request, Response
from .store import TYPES

if TYPE_CHECKING:
    from .personality import Personality
    from .store import Store


class EventSourceMixin:
    store: Store
    personality: Personality
    account_id: str
    _stopping: asyncio.Event | None

    def _json(self, status: int, data: object, **headers: str) -> Response:
        raise NotImplementedError

    # -- EventSource (RFC 8620 7.3) ----------------------------------------------------

    def _events(self, req: Request) -> Response:
        q = req.query
        wanted = q.get("types", "*")
        types = list(TYPES) if wanted == "*" else wanted.split(",")
        if not set(types) <= set(TYPES) or q.get("closeafter", "no") not in ("no", "state"):
            return self._json(400, {"type": "about:blank", "status": 400})
        try:
            ping = max(0, int(q.get("ping", "0") or 0))
        except ValueError:
            return self._json(400, {"type": "about:blank", "status": 400})
        # The states the stream starts from are taken now, before the answer's
        # head goes out: a change right after the client sees 200 is pushed.
        now = self.store.states()
        start = {t: now[t] for t in types}
        return Response(
            200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            stream=self._stream(start, q.get("closeafter") == "state", ping),
        )

    def state_event(self, changed: dict[str, str], first: bool) -> bytes:
        data: dict[str, Any] = {"changed": {self.account_id: changed}}
        if self.personality.typeless_push:  # [FASTMAIL-PUSH]
            data["type"] = "connect" if first else "change"
        else:
            data = {"@type": "StateChange"} | data
        return f"event: state\ndata: {json.dumps(data)}\n\n".encode()

    async def _stream(
        self, last: dict[str, str], close_after: bool, ping: int
    ) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def listener() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake.set)

        self.store.listeners.append(listener)
        wake.set()  # look once at once: something may have changed since `last`
        try:
            if self.personality.connect_event:
                yield self.state_event(last, first=True)
                if close_after:
                    return
            assert self._stopping is not None
            while not self._stopping.is_set():
                try:
                    await asyncio.wait_for(wake.wait(), ping or None)
                except TimeoutError:
                    interval = ping * 1000 if self.personality.ping_in_ms else ping
                    yield f"event: ping\ndata: {json.dumps({'interval': interval})}\n\n".encode()
                    continue
                wake.clear()
                now = self.store.states()
                changed = {t: now[t] for t in last if now[t] != last[t]}
                if changed:
                    last.update(changed)
                    yield self.state_event(changed, first=False)
                    if close_after:
                        return
        finally:
            self.store.listeners.remove(listener)
