"""An in-process JMAP server on httpx.MockTransport, for what Cyrus cannot be made to send.

It answers just enough of RFC 8620/8621 for a pull sync (session, Mailbox/get,
Mailbox/changes, Email/get, Email/query, Email/changes, blob download), and
lets a test corrupt any of it: hostile mailbox names, lying sizes, broken
JSON, missing capabilities.  It is used IN ADDITION to the real Cyrus tests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from jmapsync.config import AccountConfig, Credentials, Secret
from jmapsync.jmap.client import JmapClient

SESSION_URL = "https://fake.test/jmap/session"


@dataclass
class FakeEmail:
    id: str
    blob: bytes
    mailbox_ids: list[str]
    keywords: list[str] = field(default_factory=list)
    size: int | None = None  # None: len(blob)
    blob_id: str | None = None


@dataclass
class FakeServer:
    mailboxes: list[dict[str, Any]] = field(default_factory=list)
    emails: list[FakeEmail] = field(default_factory=list)
    state: int = 1
    user: str = "fake"
    password: str = "fake-secret-pw"
    capabilities: dict[str, Any] | None = None
    # hooks to misbehave: (request) -> response or None to answer normally
    override: Callable[[httpx.Request], httpx.Response | None] | None = None
    requests: list[str] = field(default_factory=list)
    token: str | None = None  # if set, Bearer auth with this token is expected
    mismatch_sets: int = 0  # answer this many Email/set calls with stateMismatch
    session_state: str = "0"
    api_path: str = "/jmap/api/"
    max_calls: int = 16

    def add_mailbox(self, mid: str, name: str, parent: str | None = None, role: str | None = None):
        self.mailboxes.append(
            {"id": mid, "name": name, "parentId": parent, "role": role, "totalEmails": 0}
        )

    # -- HTTP ---------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if self.override is not None:
            answer = self.override(request)
            if answer is not None:
                return answer
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if self.token is not None:
            expected = "Bearer " + self.token
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, text="unauthorized")
        path = request.url.path
        if path == "/jmap/session":
            return httpx.Response(200, json=self.session())
        if path == self.api_path:
            body = json.loads(request.content)
            if len(body["methodCalls"]) > self.max_calls:
                return httpx.Response(
                    400,
                    json={"type": "urn:ietf:params:jmap:error:limit", "limit": "maxCallsInRequest"},
                )
            out = []
            results: dict[str, Any] = {}
            for name, raw_args, cid in body["methodCalls"]:
                try:
                    args = self._resolve(raw_args, results)
                    res = getattr(self, "m_" + name.replace("/", "_"))(args)
                    out.append([name, res, cid])
                    results[cid] = (name, res)
                except LookupError as exc:
                    out.append(["error", {"type": str(exc.args[0])}, cid])
            return httpx.Response(
                200, json={"methodResponses": out, "sessionState": self.session_state}
            )
        if path.startswith("/jmap/download/"):
            blob_id = path.split("/")[4]
            for e in self.emails:
                if (e.blob_id or f"G{e.id}") == blob_id:
                    return httpx.Response(200, stream=httpx.ByteStream(e.blob))
            return httpx.Response(404)
        return httpx.Response(404)

    def session(self) -> dict[str, Any]:
        caps = self.capabilities
        if caps is None:
            caps = {
                "urn:ietf:params:jmap:core": {
                    "maxConcurrentRequests": 2,
                    "maxCallsInRequest": self.max_calls,
                    "maxObjectsInGet": 50,
                    "maxObjectsInSet": 50,
                },
                "urn:ietf:params:jmap:mail": {},
            }
        return {
            "capabilities": caps,
            "accounts": {
                "acc1": {
                    "name": "fake",
                    "isPersonal": True,
                    "isReadOnly": False,
                    "accountCapabilities": {},
                }
            },
            "primaryAccounts": {"urn:ietf:params:jmap:mail": "acc1"},
            "username": self.user,
            "apiUrl": self.api_path,
            "downloadUrl": "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
            "uploadUrl": "/jmap/upload/{accountId}/",
            "eventSourceUrl": None,
            "state": self.session_state,
        }

    def _resolve(self, args: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in args.items():
            if k.startswith("#"):
                if v["resultOf"] not in results:
                    raise LookupError("invalidResultReference")
                _, res = results[v["resultOf"]]
                out[k[1:]] = res[v["path"].strip("/")]
            else:
                out[k] = v
        return out

    # -- methods ------------------------------------------------------------------

    def _email_json(self, e: FakeEmail) -> dict[str, Any]:
        return {
            "id": e.id,
            "blobId": e.blob_id or f"G{e.id}",
            "mailboxIds": dict.fromkeys(e.mailbox_ids, True),
            "keywords": dict.fromkeys(e.keywords, True),
            "size": len(e.blob) if e.size is None else e.size,
            "receivedAt": "2024-01-01T00:00:00Z",
        }

    def m_Mailbox_get(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "accountId": "acc1",
            "state": str(self.state),
            "list": self.mailboxes,
            "notFound": [],
        }

    def m_Email_get(self, args: dict[str, Any]) -> dict[str, Any]:
        ids = args["ids"]
        found = [self._email_json(e) for e in self.emails if e.id in ids]
        return {"accountId": "acc1", "state": str(self.state), "list": found, "notFound": []}

    def m_Email_query(self, args: dict[str, Any]) -> dict[str, Any]:
        ids = [e.id for e in self.emails]
        start = 0
        if "anchor" in args:
            start = ids.index(args["anchor"]) + args.get("anchorOffset", 0)
        limit = args.get("limit", len(ids))
        page = ids[start : start + limit]
        return {
            "accountId": "acc1",
            "queryState": "q",
            "ids": page,
            "position": start,
            "total": len(ids),
        }

    def m_Email_changes(self, args: dict[str, Any]) -> dict[str, Any]:
        if args["sinceState"] == str(self.state):
            return {
                "accountId": "acc1",
                "oldState": str(self.state),
                "newState": str(self.state),
                "hasMoreChanges": False,
                "created": [],
                "updated": [],
                "destroyed": [],
            }
        raise LookupError("cannotCalculateChanges")

    def m_Email_set(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.mismatch_sets > 0 or args.get("ifInState") not in (None, str(self.state)):
            self.mismatch_sets = max(0, self.mismatch_sets - 1)
            self.state += 1  # "someone else" changed something
            raise LookupError("stateMismatch")
        old = self.state
        updated = {}
        for eid, patch in args.get("update", {}).items():
            [e] = [e for e in self.emails if e.id == eid]
            for key, value in patch.items():
                assert key.startswith("keywords/"), key  # single keys, never the whole map
                kw = key.split("/", 1)[1]
                if value is True and kw not in e.keywords:
                    e.keywords.append(kw)
                if value is None and kw in e.keywords:
                    e.keywords.remove(kw)
            updated[eid] = None
        self.state += 1
        return {
            "accountId": "acc1",
            "oldState": str(old),
            "newState": str(self.state),
            "updated": updated,
            "notUpdated": {},
        }

    def m_Mailbox_changes(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.m_Email_changes(args)


def account_config(tmp_path: Any, server: FakeServer, **kw: Any) -> AccountConfig:
    return AccountConfig(
        name="fake",
        session_url=SESSION_URL,
        credentials=Credentials(username=server.user, password=Secret(server.password)),
        maildir=tmp_path / "mail",
        **({"line_endings": "exact"} | kw),
    )


def client_factory(server: FakeServer) -> Callable[[AccountConfig], JmapClient]:
    def make(account: AccountConfig) -> JmapClient:
        return JmapClient(account, transport=server.transport())

    return make
