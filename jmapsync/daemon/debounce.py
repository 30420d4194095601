"""Coalesce a burst of hints (file events, push messages) into one action.

mutt moving 200 messages makes 400 file events in a few milliseconds; one
pass after the burst does the same work as 400 passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Debouncer:
    """Calls `fire` once `quiet` seconds passed without a hint, and at the
    latest `max_wait` seconds after the first hint of a burst (a steady
    trickle of events must not postpone the pass for ever).

    Must be used from the event loop thread; a watchdog thread hands its
    events over with loop.call_soon_threadsafe(debouncer.hint)."""

    def __init__(
        self,
        fire: Callable[[], None],
        *,
        quiet: float = 0.2,
        max_wait: float = 2.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._fire = fire
        self.quiet = quiet
        self.max_wait = max_wait
        self._loop = loop or asyncio.get_running_loop()
        self._first: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self.hints = 0  # since the last fire: "pending local work" for the status

    @property
    def pending(self) -> bool:
        return self._first is not None

    def hint(self) -> None:
        """Something happened; (re)arm the timer."""
        now = self._loop.time()
        if self._first is None:
            self._first = now
        self.hints += 1
        if self._handle is not None:
            self._handle.cancel()
        when = min(now + self.quiet, self._first + self.max_wait)
        self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._handle = None
        self._first = None
        self.hints = 0
        self._fire()

    def cancel(self) -> None:
        """Drop a pending burst without firing (shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._first = None
        self.hints = 0
