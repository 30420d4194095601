"""A JMAP server that imports WITHOUT deduplication, for `jmapsync restore` tests.

Cyrus answers an import of bytes it already holds with `alreadyExists`, so a
restore that imported a message twice would look perfect there.  Stalwart has
no such dedup.  This server (tests/fakeserver.py's FakeServer, extended with
blob upload, Email/import, Mailbox/set create, messageId and receivedAt)
gives every import a new Email, so that a duplicate shows.

`serve_http(server)` puts it on a real loopback port (a thread), so that a
`jmapsync restore` subprocess can run against it and be SIGKILLed.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fakeserver import FakeEmail, FakeServer

_MSGID = re.compile(rb"^Message-ID:\s*<([^<>\s]+)>", re.I | re.M)


@dataclass
class ImportingServer(FakeServer):
    """FakeServer plus the writes a restore makes; no dedup anywhere."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    received: dict[str, str] = field(default_factory=dict)  # email id -> receivedAt
    methods: list[str] = field(default_factory=list)  # every method called, in order
    max_size_upload: int = 50_000_000
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self) -> dict[str, Any]:
        s = super().session()
        core = s["capabilities"]["urn:ietf:params:jmap:core"]
        core.update(maxSizeUpload=self.max_size_upload, maxConcurrentUpload=2)
        return s

    def _new_id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id:06d}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            if request.url.path.startswith("/jmap/api/"):
                import json

                for name, _, _ in json.loads(request.content)["methodCalls"]:
                    self.methods.append(name)
            if request.url.path.startswith("/jmap/upload/"):
                self.methods.append("upload")
                self.requests.append(f"{request.method} {request.url.path}")
                if self.override is not None and (answer := self.override(request)) is not None:
                    return answer
                data = request.content
                if len(data) > self.max_size_upload:
                    return httpx.Response(400, json={"type": "urn:ietf:params:jmap:error:limit"})
                blob_id = self._new_id("B")
                self.blobs[blob_id] = data
                return httpx.Response(
                    201,
                    json={
                        "accountId": "acc1",
                        "blobId": blob_id,
                        "type": "message/rfc822",
                        "size": len(data),
                    },
                )
            return super().handle(request)

    def _email_json(self, e: FakeEmail) -> dict[str, Any]:
        out = super()._email_json(e)
        m = _MSGID.search(e.blob.split(b"\r\n\r\n", 1)[0])
        out["messageId"] = [m.group(1).decode()] if m else None
        out["receivedAt"] = self.received.get(e.id, "2024-01-01T00:00:00Z")
        return out

    def m_Email_import(self, args: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = {}
        not_created: dict[str, Any] = {}
        known = {m["id"] for m in self.mailboxes}
        for cid, item in args["emails"].items():
            blob = self.blobs.get(item["blobId"])
            boxes = [k for k, v in item["mailboxIds"].items() if v]
            if blob is None:
                not_created[cid] = {"type": "blobNotFound"}
                continue
            if not boxes or not set(boxes) <= known:
                not_created[cid] = {"type": "invalidProperties", "properties": ["mailboxIds"]}
                continue
            eid = self._new_id("E")
            self.emails.append(
                FakeEmail(
                    eid, blob, boxes, sorted(item.get("keywords") or {}), blob_id=item["blobId"]
                )
            )
            self.received[eid] = item.get("receivedAt", "2024-01-01T00:00:00Z")
            created[cid] = {"id": eid, "blobId": item["blobId"], "size": len(blob)}
        self.state += 1
        return {"accountId": "acc1", "created": created, "notCreated": not_created}

    def m_Mailbox_set(self, args: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = {}
        not_created: dict[str, Any] = {}
        for cid, item in (args.get("create") or {}).items():
            parent = item.get("parentId")
            siblings = {m["name"] for m in self.mailboxes if m["parentId"] == parent}
            if parent is not None and parent not in {m["id"] for m in self.mailboxes}:
                not_created[cid] = {"type": "invalidProperties", "properties": ["parentId"]}
            elif item["name"] in siblings or "/" in item["name"]:
                not_created[cid] = {"type": "invalidProperties", "properties": ["name"]}
            else:
                mid = self._new_id("mb")
                self.add_mailbox(mid, item["name"], parent)
                created[cid] = {"id": mid}
        self.state += 1
        return {"accountId": "acc1", "created": created, "notCreated": not_created}

    # -- what tests look at ----------------------------------------------------

    def path_of(self, mailbox_id: str) -> str:
        by_id = {m["id"]: m for m in self.mailboxes}
        parts = []
        node: dict[str, Any] | None = by_id[mailbox_id]
        while node is not None:
            parts.append("INBOX" if node.get("role") == "inbox" else node["name"])
            node = by_id.get(node["parentId"]) if node["parentId"] else None
        return "/".join(reversed(parts))

    def contents(self) -> Counter[str]:
        """SHA-256 of each Email's bytes -> how many Emails have them."""
        return Counter(hashlib.sha256(e.blob).hexdigest() for e in self.emails)

    def duplicates(self) -> list[str]:
        return [sha for sha, n in self.contents().items() if n > 1]

    def writes(self) -> list[str]:
        return [
            m for m in self.methods if m in ("upload", "Email/import", "Mailbox/set", "Email/set")
        ]


def standard_mailboxes(server: ImportingServer) -> None:
    server.add_mailbox("mbInbox", "Inbox", role="inbox")
    for name in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
        server.add_mailbox(f"mb{name}", name, role=name.lower())


@contextmanager
def serve_http(server: ImportingServer) -> Iterator[str]:
    """The server on 127.0.0.1:<free port>; yields its session URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = f"http://{self.headers.get('Host', 'localhost')}{self.path}"
            request = httpx.Request(self.command, url, headers=dict(self.headers), content=body)
            response = server.handle(request)
            data = response.read()
            self.send_response(response.status_code)
            for k, v in response.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client SIGKILLed mid-request: expected here

    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/jmap/session"
    finally:
        httpd.shutdown()
        httpd.server_close()


def basic_auth(server: ImportingServer) -> str:
    return "Basic " + base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
