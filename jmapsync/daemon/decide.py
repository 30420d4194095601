"""The account runner's small decisions, apart from its lifecycle (account.py):
which push transports to try, whether a pushed state is our own echo, which
of a pass's counters are changes."""

from __future__ import annotations

from jmapsync.jmap import push
from jmapsync.sync.report import SyncReport

__all__ = ["change_counts", "is_echo", "transport_order"]


def transport_order(push_key: str) -> list[push.Transport]:
    """The `push` config key -> the transports to try, best first; [] = poll only."""
    if push_key == "auto":
        return ["websocket", "eventsource"]
    if push_key == "websocket":
        return ["websocket"]
    if push_key == "eventsource":
        return ["eventsource"]
    return []


def is_echo(pushed: dict[str, str], known: dict[str, str]) -> bool:
    """True when every pushed state is one we already hold, e.g. the Email
    state our own Email/set produced: nothing to fetch.  A type we hold no
    state for is never an echo."""
    return bool(pushed) and all(known.get(t) == s for t, s in pushed.items())


# SyncReport counters that are not changes (sizes, what was looked at or left
# alone); every other non-zero counter is one.
_NOT_CHANGES = frozenset({"bytes", "foreign", "planned", "warnings"})


def change_counts(report: SyncReport) -> dict[str, int]:
    """The pass's non-zero change counters (downloaded, renamed, pushed,
    imported, ...), whatever counters the engine grows."""
    return {
        k: v for k, v in report.as_dict().items() if type(v) is int and v and k not in _NOT_CHANGES
    }
