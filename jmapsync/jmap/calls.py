"""Method calls and their answers, apart from HTTP: a request's Invocations,
the Responses addressed by call id, back-references resolved across requests,
URL templates (RFC 6570 level 1) and session discovery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from jmapsync.errors import ProtocolError, method_error

Invocation = tuple[str, dict[str, Any], str]


def expand_template(template: str, **values: str) -> str:
    """RFC 6570 level-1 expansion: every value is percent-encoded (no reserved chars)."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", quote(value, safe=""))
    return out


def resolve_refs(args: dict[str, Any], earlier: Responses) -> dict[str, Any]:
    """Replace "#name": {resultOf, path} by the value from an earlier response.

    Only the simple JSON pointers jmapsync itself uses ("/ids", "/created")
    are supported; a reference to a call of the same chunk is left for the
    server.  An earlier method error propagates as its typed error."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        source = value.get("resultOf") if isinstance(value, dict) else None
        if key.startswith("#") and source in earlier.methods:
            result: Any = earlier.result(str(source))
            for part in str(value.get("path", "")).strip("/").split("/"):
                if not isinstance(result, dict) or part not in result:
                    raise ProtocolError(f"cannot resolve back-reference {value!r}")
                result = result[part]
            out[key[1:]] = result
        else:
            out[key] = value
    return out


def well_known_url(session_url: str) -> str:
    """`https://host` (no path) means RFC 8620 2.2 discovery at /.well-known/jmap."""
    parts = urlsplit(session_url)
    if parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, "/.well-known/jmap", "", ""))
    return session_url


@dataclass
class Responses:
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
