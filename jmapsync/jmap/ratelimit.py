"""Slowing down when the server asks: HTTP 429 with Retry-After, and the
per-record `rateLimit` SetError (RFC 8620 5.3: "It may work if tried again
later").

Fastmail publishes no rate limits, but both kinds have been reported from it
(clients retry its 429 with Retry-After: elie222/inbox-zero pull request 1110,
apps/web/utils/fastmail/client.ts; its developer page names `rateLimit`
SetErrors); Stalwart answers 429 above `http.rate-limit.account`
(stalwartlabs/mail-server crates/jmap-proto/src/error/request.rs).

A refused request was not carried out, so repeating it is safe.  A few paced
tries happen inside the call (the pass goes on); a wait longer than
MAX_WAIT_S, or a refusal that outlasts the tries, raises `RateLimited` and
the caller retries the whole pass later -- `sync` reports the account as
failed, the daemon waits as long as the server asked (daemon/account.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from jmapsync import log
from jmapsync.errors import RateLimited

T = TypeVar("T")

# Pauses between tries when the server names none (a SetError carries no
# Retry-After).  Tests shorten these.
DELAYS_S: tuple[float, ...] = (1.0, 2.0, 4.0)
# A longer Retry-After is not slept through inside a pass.
MAX_WAIT_S = 30.0


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date
    (RFC 9110 10.2.3); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    # Here, not at the top: email.utils (random, calendar, email.charset)
    # costs every pass ~4.5 ms of start-up for a header few servers send.
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def delay(attempt: int, asked: float | None) -> float:
    """The pause before try `attempt + 1`: what the server asked, else ours."""
    if asked is not None:
        return asked
    return DELAYS_S[min(attempt, len(DELAYS_S) - 1)]


async def paced(what: str, send: Callable[[], Awaitable[T]]) -> T:
    """`send()`, repeated after the pause the server asks for while it answers
    429 -- up to len(DELAYS_S) more times, and never a pause above MAX_WAIT_S."""
    attempt = 0
    while True:
        try:
            return await send()
        except RateLimited as exc:
            pause = delay(attempt, exc.retry_after)
            if attempt >= len(DELAYS_S) or pause > MAX_WAIT_S:
                raise
            attempt += 1
            log.get().info("rate-limited", what=what, retry_in=round(pause, 2), attempt=attempt)
            await asyncio.sleep(pause)
