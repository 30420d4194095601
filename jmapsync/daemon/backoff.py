"""Exponential backoff with jitter, for a failing account or push channel.

Jitter matters when one server serves several accounts (or a restart hits
many users): without it every client retries in lock-step and the server
sees the thundering herd the moment it comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays base, 2*base, 4*base, ... up to cap, each drawn uniformly from
    its upper half ("equal jitter": never less than half the nominal delay,
    so a broken server is not hammered, never more, so recovery is seen)."""

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def nominal(self) -> float:
        """The delay before jitter for the next failure."""
        # 2**60 overflows nothing and is far above any cap.
        return min(self.cap, self.base * 2.0 ** min(self.failures, 60))

    def next_delay(self) -> float:
        """Count a failure and return how long to wait before the next try."""
        upper = self.nominal()
        self.failures += 1
        return self.rng.uniform(upper / 2, upper)

    def reset(self) -> None:
        """After a success: the next failure starts again at `base`."""
        self.failures = 0


# A server's Retry-After is honoured up to this (a broken header must not
# park an account for a week).
MAX_RETRY_AFTER_S = 3600.0


def rate_limit_delay(retry_after: float | None, backoff: Backoff) -> float:
    """How long to wait after the server said "slow down": as long as it
    asked (Retry-After), else the growing backoff delay."""
    if retry_after is not None:
        backoff.failures += 1
        return min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
    return backoff.next_delay()
