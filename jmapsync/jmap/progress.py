"""`timeout` as a progress timeout, like curl's --speed-time / --speed-limit.

A total-time limit fails a 50 MB message on a 6 Mbit/s link on every retry,
and the account never moves again; a per-read timeout never fails a server
that trickles one byte a second.  The rule here is curl's: a transfer is
dropped when, over the last `timeout` seconds, fewer than MIN_RATE bytes per
second moved (either way: request bytes sent count, answer bytes received
count).  A transfer that keeps delivering at least 1 KiB/s is never cut; a
silent or trickling server is dropped within about `timeout` seconds.  The
window starts when the request starts, so waiting for a connection or for
the first answer byte is covered by the same rule.

Usage (one guard per request attempt, in the task that does the I/O)::

    async with Progress(timeout_s, "download G123") as progress:
        ... progress.moved(len(chunk)) for every chunk sent or received ...

On expiry the task is cancelled at its current await (the socket is closed
by whoever owns it) and the guard raises TransportError(stalled=True).
"""

from __future__ import annotations

from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING

from jmapsync.errors import TransportError

if TYPE_CHECKING:  # the blocking fast path (jmap/wire.py) uses Window without asyncio
    import asyncio

MIN_RATE = 1024  # bytes per second, averaged over the window
_BUCKET_S = 0.25  # samples are summed per quarter second: O(4 * timeout) memory


def stalled(what: str, timeout_s: float) -> TransportError:
    """The error of a transfer dropped by the rule (never retried)."""
    return TransportError(
        f"{what}: no progress for {timeout_s:g} s (less than {MIN_RATE // 1024} KiB/s)",
        stalled=True,
    )


class Window:
    """The rule itself, on any clock: bytes moved per quarter second over
    the last `timeout_s` seconds, and the moment the transfer is dropped."""

    def __init__(self, timeout_s: float, start: float, min_rate: float = MIN_RATE) -> None:
        self.timeout_s = timeout_s
        self.need = min_rate * timeout_s  # bytes that must move in every window
        self.start = start
        self.total = 0
        self._buckets: deque[list[float]] = deque()  # [end time, bytes]

    def moved(self, n: int, now: float) -> None:
        self.total += n
        if self._buckets and now <= self._buckets[-1][0]:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([now + _BUCKET_S, float(n)])

    def deadline(self, now: float) -> float:
        """The moment the window would fall below `need` if nothing more moved."""
        window = self.timeout_s
        while self._buckets and self._buckets[0][0] <= now - window:
            self._buckets.popleft()
        acc = 0.0
        for end, n in reversed(self._buckets):
            acc += n
            if acc >= self.need:
                return max(end + window, self.start + window)
        return self.start + window


class Progress:
    """The progress watchdog of one request (see the module docstring)."""

    def __init__(self, timeout_s: float, what: str, min_rate: float = MIN_RATE) -> None:
        self.timeout_s = timeout_s
        self.what = what
        self._min_rate = min_rate
        self._window: Window | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False

    @property
    def total(self) -> int:
        return self._window.total if self._window is not None else 0

    def moved(self, n: int) -> None:
        """`n` bytes went over the wire (sent or received)."""
        if n <= 0 or self._loop is None or self._window is None:
            return
        self._window.moved(n, self._loop.time())

    def _check(self) -> None:
        assert self._loop is not None and self._task is not None  # noqa: S101 - armed in enter
        assert self._window is not None  # noqa: S101
        now = self._loop.time()
        deadline = self._window.deadline(now)
        if deadline <= now:
            self._expired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_at(deadline, self._check)

    async def __aenter__(self) -> Progress:
        import asyncio

        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task
            raise RuntimeError("Progress needs a running task")
        self._task = task
        start = self._loop.time()
        self._window = Window(self.timeout_s, start, self._min_rate)
        self._handle = self._loop.call_at(start + self.timeout_s, self._check)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import asyncio

        if self._handle is not None:
            self._handle.cancel()
        if (
            self._expired
            and self._task is not None
            and self._task.uncancel() == 0
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError | TimeoutError)
        ):
            raise stalled(self.what, self.timeout_s) from None
