"""The JMAP API: one request (RFC 8620 3) in, its method responses out.

Methods: Core/echo, Mailbox/get|changes|set, Email/get|changes|query|set|import
(mailboxes.py, emails.py).  Back-references (RFC 8620 3.7) with JSON pointers
(`*` included).  Everything is RFC 8620/8621; personality habits come from
`Knobs` (server.py) and are marked where used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .emails import EmailMethods
from .mailboxes import MailboxMethods
from .personality import CORE, MAIL
from .protocol import Ctx, MethodError, RequestError, pointer

if TYPE_CHECKING:
    from .server import Knobs
    from .store import Store

WRITES = {"Mailbox/set", "Email/set", "Email/import"}


class Api(MailboxMethods, EmailMethods):
    def __init__(self, store: Store, knobs: Knobs) -> None:
        self.store = store
        self.knobs = knobs
        self.methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "Core/echo": lambda a: a,
            "Mailbox/get": self.mailbox_get,
            "Mailbox/changes": lambda a: self.changes("Mailbox", a),
            "Mailbox/set": self.mailbox_set,
            "Email/get": self.email_get,
            "Email/changes": lambda a: self.changes("Email", a),
            "Email/query": self.email_query,
            "Email/set": self.email_set,
            "Email/import": self.email_import,
        }

    # -- the request -------------------------------------------------------------------

    def request(self, data: object, ctx: Ctx) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("methodCalls"), list):
            raise RequestError(400, "notRequest", detail="not a JMAP Request object")
        using = data.get("using")
        if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
            raise RequestError(400, "notRequest", detail="using is not a list of strings")
        unknown = sorted(set(using) - ctx.capabilities)
        if unknown:  # RFC 8620 3.6.1; also a capability outside the token's scope
            raise RequestError(400, "unknownCapability", detail=", ".join(unknown))
        calls = data["methodCalls"]
        if len(calls) > self.knobs.limit("maxCallsInRequest"):
            raise RequestError(400, "limit", limit="maxCallsInRequest")
        done: list[list[Any]] = []
        for call in calls:
            if not (
                isinstance(call, list)
                and len(call) == 3
                and isinstance(call[0], str)
                and isinstance(call[1], dict)
                and isinstance(call[2], str)
            ):
                raise RequestError(400, "notRequest", detail="malformed Invocation")
            name, args, cid = call
            try:
                result = self.call(name, args, cid, done, ctx, set(using))
                done.append([name, result, cid])
            except MethodError as exc:
                err = {"type": exc.type} | (
                    {"description": exc.description} if exc.description else {}
                )
                done.append(["error", err, cid])
        return {"methodResponses": done, "sessionState": self.knobs.session_state}

    def call(
        self,
        name: str,
        args: dict[str, Any],
        cid: str,
        done: list[list[Any]],
        ctx: Ctx,
        using: set[str],
    ) -> dict[str, Any]:
        method = self.methods.get(name)
        if method is None or (name != "Core/echo" and MAIL not in using) or CORE not in using:
            raise MethodError("unknownMethod", name)
        resolved: dict[str, Any] = {}
        for key, value in args.items():
            if not key.startswith("#"):
                resolved[key] = value
                continue
            if key[1:] in args or not isinstance(value, dict):
                raise MethodError("invalidArguments", f"bad reference {key}")
            match = [r for r in done if r[2] == value.get("resultOf")]
            if not match or match[-1][0] != value.get("name"):
                raise MethodError("invalidResultReference", f"{key}: no such result")
            resolved[key[1:]] = pointer(match[-1][1], str(value.get("path", "")))
        if name == "Core/echo":
            return resolved
        if resolved.get("accountId") != ctx.account_id:
            raise MethodError("accountNotFound")
        if name in WRITES and ctx.read_only:
            raise MethodError("accountReadOnly")  # RFC 8620 3.6.2
        with self.store.lock:
            return method(resolved)

    # -- shared ------------------------------------------------------------------------
