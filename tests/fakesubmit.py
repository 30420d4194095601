"""An in-process JMAP server for `jmapsync send`, for what Cyrus cannot be made to do.

Cyrus 3.6 deduplicates imports (the same bytes give `alreadyExists`), always
accepts onSuccessUpdateEmail, and keeps or deletes EmailSubmissions only as
its config says.  This fake does each either way:

- `dedupe_imports=False` (the default): every Email/import makes a NEW Email,
  so a second import after a crash would be a second Email -- and a test
  that relies on Cyrus's deduplication fails here;
- `refuse_on_success=True`: EmailSubmission/set with onSuccessUpdateEmail is
  an invalidArguments method error (a server without that argument);
- `delete_on_send=True`: the EmailSubmission is gone right after sending
  (Cyrus's default `jmapsubmission_deleteonsend: yes`);
- `refuse="forbiddenFrom"`: every submission answers that SetError;
- `replay_submission=True`: the first EmailSubmission/set request is
  processed twice, as when an HTTP client repeats a request the server had
  received before the connection broke (the second answer is returned).

EmailSubmission/set honours `ifInState` (a counter), as Cyrus 3.6 does.

`delivered` is what "left the server": one (envelope, bytes) per submission.
It is used IN ADDITION to the Cyrus tests.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from jmapsync.config import AccountConfig, Config, Credentials, Secret
from jmapsync.jmap.client import JmapClient

SESSION_URL = "https://fake.test/jmap/session"
SUBMISSION = "urn:ietf:params:jmap:submission"
DRAFTS, SENT, INBOX = "mb-drafts", "mb-sent", "mb-inbox"


@dataclass
class FakeEmail:
    blob: bytes
    mailbox_ids: set[str]
    keywords: set[str]


@dataclass
class SubmitServer:
    user: str = "me@example.com"
    password: str = "fake-secret-pw"
    identities: list[dict[str, Any]] = field(
        default_factory=lambda: [{"id": "id1", "name": "Me", "email": "me@example.com"}]
    )
    dedupe_imports: bool = False
    refuse_on_success: bool = False
    delete_on_send: bool = False
    refuse: str | None = None
    with_submission: bool = True
    emails: dict[str, FakeEmail] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    delivered: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # method names, in order
    down: bool = False  # every request fails to connect
    replay_submission: bool = False
    sub_state: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # -- HTTP ---------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("fake server is down", request=request)
        auth = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("authorization") != auth:
            return httpx.Response(401)
        path = request.url.path
        if path == "/jmap/session":
            return httpx.Response(200, json=self.session())
        if path.startswith("/jmap/upload/"):
            data = request.content
            blob_id = "B" + hashlib.sha1(data).hexdigest()  # noqa: S324 - an id, not security
            self.blobs[blob_id] = data
            self.calls.append("upload")
            return httpx.Response(201, json={"blobId": blob_id, "size": len(data)})
        if path.startswith("/jmap/download/"):
            blob = self.blobs.get(path.split("/")[4])
            return httpx.Response(200, content=blob) if blob is not None else httpx.Response(404)
        if path == "/jmap/api/":
            body = json.loads(request.content)
            out: list[list[Any]] = []
            results: dict[str, dict[str, Any]] = {}
            for name, raw, cid in body["methodCalls"]:
                self.calls.append(name)
                if name.startswith(("Identity/", "EmailSubmission/")) and (
                    SUBMISSION not in body["using"] or not self.with_submission
                ):
                    out.append(["error", {"type": "unknownMethod"}, cid])
                    continue
                args = {
                    (k[1:] if k.startswith("#") else k): (
                        results[v["resultOf"]][v["path"].strip("/")] if k.startswith("#") else v
                    )
                    for k, v in raw.items()
                }
                try:
                    method = getattr(self, "m_" + name.replace("/", "_"))
                    if name == "EmailSubmission/set" and self.replay_submission:
                        self.replay_submission = False
                        method(args)  # received, done -- and the connection broke
                    answers = method(args)
                except LookupError as exc:
                    out.append(["error", {"type": str(exc.args[0])}, cid])
                    continue
                for answer_name, answer in answers:
                    out.append([answer_name, answer, cid])
                results[cid] = answers[0][1]
            return httpx.Response(200, json={"methodResponses": out, "sessionState": "0"})
        return httpx.Response(404)

    def session(self) -> dict[str, Any]:
        caps: dict[str, Any] = {
            "urn:ietf:params:jmap:core": {"maxCallsInRequest": 16, "maxSizeUpload": 10_000_000},
            "urn:ietf:params:jmap:mail": {},
        }
        acaps: dict[str, Any] = {"urn:ietf:params:jmap:mail": {}}
        if self.with_submission:
            caps[SUBMISSION] = {}
            acaps[SUBMISSION] = {"maxDelayedSend": 0, "submissionExtensions": {}}
        return {
            "capabilities": caps,
            "accounts": {"acc1": {"name": self.user, "accountCapabilities": acaps}},
            "primaryAccounts": {"urn:ietf:params:jmap:mail": "acc1", SUBMISSION: "acc1"},
            "username": self.user,
            "apiUrl": "/jmap/api/",
            "downloadUrl": "/jmap/download/{accountId}/{blobId}/{name}?accept={type}",
            "uploadUrl": "/jmap/upload/{accountId}/",
            "eventSourceUrl": None,
            "state": "0",
        }

    # -- methods ------------------------------------------------------------------

    def _email_json(self, eid: str) -> dict[str, Any]:
        e = self.emails[eid]
        mid = e.blob.split(b"Message-ID: <", 1)[-1].split(b">", 1)[0].decode()
        return {
            "id": eid,
            "blobId": "B" + hashlib.sha1(e.blob).hexdigest(),  # noqa: S324
            "mailboxIds": dict.fromkeys(e.mailbox_ids, True),
            "keywords": dict.fromkeys(e.keywords, True),
            "size": len(e.blob),
            "messageId": [mid],
        }

    def m_Identity_get(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [("Identity/get", {"accountId": "acc1", "state": "1", "list": self.identities})]

    def m_Mailbox_get(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        boxes = [
            {"id": INBOX, "role": "inbox"},
            {"id": DRAFTS, "role": "drafts"},
            {"id": SENT, "role": "sent"},
        ]
        return [("Mailbox/get", {"accountId": "acc1", "state": "1", "list": boxes})]

    def m_Email_import(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        created, failed = {}, {}
        for cid, item in args["emails"].items():
            blob = self.blobs[item["blobId"]]
            same = [i for i, e in self.emails.items() if e.blob == blob]
            if self.dedupe_imports and same:
                failed[cid] = {"type": "alreadyExists", "existingId": same[0]}
                continue
            eid = f"E{next(self._ids)}"
            self.emails[eid] = FakeEmail(blob, set(item["mailboxIds"]), set(item["keywords"]))
            created[cid] = {"id": eid, "blobId": item["blobId"], "size": len(blob)}
        return [("Email/import", {"accountId": "acc1", "created": created, "notCreated": failed})]

    def m_Email_query(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        name, value = args["filter"]["header"]
        assert name == "Message-ID"
        ids = [i for i, e in self.emails.items() if value.encode() in e.blob]
        return [("Email/query", {"accountId": "acc1", "ids": ids})]

    def m_Email_get(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        found = [self._email_json(i) for i in args["ids"] if i in self.emails]
        missing = [i for i in args["ids"] if i not in self.emails]
        return [("Email/get", {"accountId": "acc1", "list": found, "notFound": missing})]

    def _patch(self, eid: str, patch: dict[str, Any]) -> bool:
        e = self.emails.get(eid)
        if e is None:
            return False
        for key, value in patch.items():
            kind, _, name = key.partition("/")
            target = e.mailbox_ids if kind == "mailboxIds" else e.keywords
            if value:
                target.add(name)
            else:
                target.discard(name)
        return True

    def m_Email_set(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        updated, failed = {}, {}
        for eid, patch in (args.get("update") or {}).items():
            if self._patch(eid, patch):
                updated[eid] = None
            else:
                failed[eid] = {"type": "notFound"}
        return [("Email/set", {"accountId": "acc1", "updated": updated, "notUpdated": failed})]

    def m_EmailSubmission_get(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        state = str(self.sub_state)
        return [("EmailSubmission/get", {"accountId": "acc1", "state": state, "list": []})]

    def m_EmailSubmission_set(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if self.refuse_on_success and "onSuccessUpdateEmail" in args:
            raise LookupError("invalidArguments")
        if "ifInState" in args and args["ifInState"] != str(self.sub_state):
            raise LookupError("stateMismatch")
        old = str(self.sub_state)
        created, failed = {}, {}
        for cid, sub in (args.get("create") or {}).items():
            if self.refuse:
                failed[cid] = {"type": self.refuse, "description": "the fake says no"}
                continue
            if sub["emailId"] not in self.emails:
                failed[cid] = {"type": "invalidProperties", "properties": ["emailId"]}
                continue
            sid = f"S{next(self._ids)}"
            self.sub_state += 1
            self.delivered.append((sub["envelope"], self.emails[sub["emailId"]].blob))
            if not self.delete_on_send:
                self.submissions[sid] = sub
            created[cid] = {"id": sid, "undoStatus": "final"}
        answers: list[tuple[str, dict[str, Any]]] = [
            (
                "EmailSubmission/set",
                {
                    "accountId": "acc1",
                    "oldState": old,
                    "newState": str(self.sub_state),
                    "created": created,
                    "notCreated": failed,
                },
            )
        ]
        updates = {}
        for ref, patch in (args.get("onSuccessUpdateEmail") or {}).items():
            if ref.startswith("#") and ref[1:] in created:
                updates[args["create"][ref[1:]]["emailId"]] = patch
        if updates:
            answers += self.m_Email_set({"update": updates})
        return answers

    def m_EmailSubmission_query(self, args: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        want = set(args.get("filter", {}).get("emailIds") or [])
        ids = [s for s, sub in self.submissions.items() if not want or sub["emailId"] in want]
        return [("EmailSubmission/query", {"accountId": "acc1", "ids": ids})]


def config_for(tmp_path: Path, server: SubmitServer, **kw: Any) -> Config:
    account = AccountConfig(
        name="fake",
        session_url=SESSION_URL,
        credentials=Credentials(username=server.user, password=Secret(server.password)),
        maildir=tmp_path / "mail",
        **kw,
    )
    return Config(path=None, state_dir=tmp_path / "state", accounts=(account,))


def client_factory(server: SubmitServer) -> Callable[[AccountConfig], JmapClient]:
    def make(account: AccountConfig) -> JmapClient:
        return JmapClient(account, transport=server.transport())

    return make
