"""Shared by the method modules: errors, dates, JSON pointers, and the
argument checks every standard method makes (RFC 8620 5)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Knobs
    from .store import Store


class MethodError(Exception):
    """["error", {"type": ...}] for one call."""

    def __init__(self, type_: str, description: str | None = None) -> None:
        super().__init__(type_)
        self.type = type_
        self.description = description


class RequestError(Exception):
    """The whole request refused: HTTP status and an RFC 7807 problem object."""

    def __init__(self, status: int, type_: str, **extra: Any) -> None:
        super().__init__(type_)
        self.status = status
        self.problem = {"type": f"urn:ietf:params:jmap:error:{type_}", "status": status} | extra


def utc(value: object) -> str:
    """A UTCDate in one canonical form (so that string order is time order)."""
    if not isinstance(value, str):
        raise MethodError("invalidArguments", "receivedAt is not a string")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise MethodError("invalidArguments", f"bad date {value!r}") from None
    if when.tzinfo is None:
        raise MethodError("invalidArguments", "a UTCDate needs a time zone")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pointer(value: Any, path: str) -> Any:
    """RFC 8620 3.7: a JSON pointer where `*` maps over an array (and flattens)."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]

    def walk(v: Any, rest: list[str]) -> Any:
        if not rest:
            return v
        head, tail = rest[0], rest[1:]
        if isinstance(v, list):
            if head == "*":
                out: list[Any] = []
                for item in v:
                    got = walk(item, tail)
                    out.extend(got if isinstance(got, list) else [got])
                return out
            if head.isdigit() and int(head) < len(v):
                return walk(v[int(head)], tail)
        elif isinstance(v, dict) and head in v:
            return walk(v[head], tail)
        raise MethodError("invalidResultReference", f"no {path!r} in the result")

    return walk(value, parts)


@dataclass
class Ctx:
    """Who asks: the account, what the token may do."""

    account_id: str
    read_only: bool
    capabilities: frozenset[str]


class MethodsBase:
    """The store, the knobs, and the checks all methods share."""

    store: Store
    knobs: Knobs

    def _if_in_state(self, type_: str, args: dict[str, Any]) -> None:
        want = args.get("ifInState")
        if want is not None and want != self.store.state(type_):
            raise MethodError("stateMismatch")

    def _ids(self, args: dict[str, Any], key: str = "ids") -> list[str] | None:
        ids = args.get(key)
        if ids is None:
            return None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise MethodError("invalidArguments", f"{key} is not a list of ids")
        return list(dict.fromkeys(ids))

    def _properties(self, args: dict[str, Any], known: tuple[str, ...]) -> list[str]:
        props = args.get("properties")
        if props is None:
            return list(known)
        if not isinstance(props, list) or not set(props) <= set(known):
            raise MethodError("invalidArguments", f"unknown properties {props!r}")
        return list(dict.fromkeys(["id", *props]))

    def _rate_limited(self) -> bool:
        """The personality's `rateLimit` SetError on this record (a knob)."""
        if self.knobs.rate_limit_records > 0:
            self.knobs.rate_limit_records -= 1
            return True
        return False

    def changes(self, type_: str, args: dict[str, Any]) -> dict[str, Any]:
        since = args.get("sinceState")
        max_changes = args.get("maxChanges")
        if max_changes is not None and (not isinstance(max_changes, int) or max_changes < 1):
            raise MethodError("invalidArguments", "maxChanges must be a positive integer")
        limit = min(max_changes or self.knobs.changes_max, self.knobs.changes_max)
        start = self.store.ids.parse_state(since)
        got = (
            None
            if start is None or self.knobs.cannot_calculate
            else (self.store.logs[type_].since(start, limit))
        )
        if got is None:
            raise MethodError("cannotCalculateChanges", f"{type_} state {since!r}")
        end, ids = got
        return {
            "accountId": args["accountId"],
            "oldState": since,
            "newState": self.store.ids.state(end),
            "hasMoreChanges": end != self.store.logs[type_].n,
            "created": [i for i, k in ids.items() if k == "created"],
            "updated": [i for i, k in ids.items() if k == "updated"],
            "destroyed": [i for i, k in ids.items() if k == "destroyed"],
            **({"updatedProperties": None} if type_ == "Mailbox" else {}),
        }

    # -- Mailbox -----------------------------------------------------------------------
