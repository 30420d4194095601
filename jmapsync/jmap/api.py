"""The JMAP API envelope (RFC 8620 3.3, 3.4): request bodies, answers, auth.

Shared by `JmapClient` (jmap/client.py) and the no-change fast path
(sync/quick.py), so that both send the same bytes and read answers by the
same rules.  Stdlib only (json, base64): the fast path must not pay for
asyncio or httpx to build a request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from jmapsync import scrub
from jmapsync.errors import ProtocolError, method_error

if TYPE_CHECKING:
    from jmapsync.config import Credentials, Secret

Invocation = tuple[str, dict[str, Any], str]

# Real answers are far smaller: maxObjectsInGet (4096 at Cyrus and Fastmail)
# Emails of sync properties are ~1.2 MB; Fastmail caps requests at 10 MB.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_READS = ("/get", "/changes", "/query", "/queryChanges")


def parse_json(data: bytes, what: str) -> Any:
    """json.loads with a cheap guard against answers built to exhaust memory.

    Each JSON array or object costs Python 56-200 bytes however small it is
    on the wire ("[]," is 3 bytes): 72 MB of nested empty arrays parse into
    more than 1 GiB.  Real JMAP answers hold one container per 80 bytes or
    more (an Email of sync properties is ~250 bytes with three); one per 32
    is refused before parsing, which keeps a parse under ~40 bytes of memory
    per byte of answer.  Deep nesting ends in RecursionError: also refused."""
    containers = data.count(b"[") + data.count(b"{")
    if containers > 4096 + len(data) // 32:
        raise ProtocolError(
            f"{what}: the answer holds {containers} arrays and objects in {len(data)} bytes;"
            " refused as absurd"
        )
    try:
        return json.loads(data)
    except RecursionError:
        raise ProtocolError(f"{what}: the answer is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(f"{what}: the server's answer is not valid JSON") from None


def idempotent(calls: Sequence[Invocation]) -> bool:
    """May this request be sent twice without harm (see jmap/client.py)?"""
    return all(
        name.endswith(_READS) or (name.endswith("/set") and "ifInState" in args)
        for name, args, _ in calls
    )


def request_body(calls: Sequence[Invocation], using: Sequence[str]) -> bytes:
    return json.dumps(
        {"using": list(using), "methodCalls": [list(c) for c in calls]},
        separators=(",", ":"),
    ).encode()


def describe(calls: Sequence[Invocation]) -> str:
    """What a request is called in errors and logs: "API request Email/get,..."."""
    return "API request " + ",".join(c[0] for c in calls)


def auth_header(credentials: Credentials, secret: Secret) -> dict[str, str]:
    """The Authorization header; registers the secret with scrub first.
    Never log the result."""
    value = secret.reveal()
    if credentials.scheme == "bearer":
        scrub.add_secret(value)
        return {"Authorization": "Bearer " + value}
    scrub.add_basic_auth(credentials.username or "", value)
    raw = f"{credentials.username}:{value}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}


class Responses(NamedTuple):
    """The method responses of one request, addressable by call id."""

    items: list[tuple[str, dict[str, Any], str]]
    methods: dict[str, str]  # call id -> method name of the request

    def result(self, call_id: str) -> dict[str, Any]:
        """The arguments of the response to `call_id`; a method error raises typed.

        A call id answered twice (a method with implicit calls) yields the last
        answer, which per RFC 8620 3.4 is the one for the call itself."""
        found = None
        for name, args, cid in self.items:
            if cid == call_id:
                if name == "error":
                    raise method_error(self.methods.get(call_id, "?"), args)
                found = args
        if found is None:
            raise ProtocolError(f"no response for method call {call_id}")
        return found


def responses(data: Any, calls: Sequence[Invocation]) -> tuple[Responses, str | None]:
    """The parsed answer to `calls`, and the sessionState it names (None: none)."""
    names = ",".join(c[0] for c in calls)
    items = data.get("methodResponses") if isinstance(data, dict) else None
    state = data.get("sessionState") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ProtocolError(f"API response to {names} has no methodResponses list")
    parsed: list[tuple[str, dict[str, Any], str]] = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not isinstance(item[1], dict)
            or not isinstance(item[2], str)
        ):
            raise ProtocolError(f"malformed method response in reply to {names}")
        parsed.append((item[0], item[1], item[2]))
    return Responses(parsed, {c[2]: c[0] for c in calls}), (
        state if isinstance(state, str) else None
    )
