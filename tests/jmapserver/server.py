"""`JmapServer`: one in-memory JMAP mail account served over real HTTP on loopback.

It runs on its own thread and event loop, so a test can use it from plain
synchronous code, from `asyncio.run(Engine.sync())`, and from a `jmapsync`
subprocess alike.  The test changes the account directly (`deliver`, `move`,
...: "remote" changes) and sets knobs: a personality (personality.py),
limits, forced `cannotCalculateChanges`, `rateLimit` SetErrors, and transport
faults for the next matching requests (`fault`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .events import EventSourceMixin
from .http import HttpServer, Request, Response
from .methods import Api, Ctx, RequestError
from .personality import CORE, MAIL, PERSONALITIES, SUBMISSION, IdMaker, Personality
from .remote import RemoteOps
from .store import Store


@dataclass
class Knobs:
    """What a test may turn; read by methods.py at every call."""

    personality: Personality
    limits: dict[str, Any]
    query_max: int | None
    dedup_imports: bool
    stalwart_limit_rule: bool
    changes_max: int = 5000  # [STALWART] settings.rs changes max-results default
    cannot_calculate: bool = False  # every */changes answers cannotCalculateChanges
    rate_limit_records: int = 0  # the next N written records fail with rateLimit
    session_state: str = "0"
    chunked: str = "alternate"  # answers framed "always" | "never" | "alternate" chunked

    def limit(self, name: str) -> int:
        return int(self.limits[name])


@dataclass
class Fault:
    """A transport fault for the next `times` requests of a kind.

    kind: "lose" (the work is done, then the connection closes without an
    answer), "cut" (the answer stops half-way), "429" (refused with
    Retry-After, nothing done), "500".  where: "session", "api",
    "api:<Method/name>", "upload", "download", "events", or "*"."""

    kind: str
    where: str = "*"
    times: int = 1
    retry_after: str = "1"


@dataclass
class Seen:
    """One request, as the server saw it (tests assert on these)."""

    host: str
    method: str
    path: str
    kind: str
    auth: str  # "bearer" | "basic" | "bearer-readonly" | "none" | "refused"
    calls: list[str] = field(default_factory=list)
    fault: str | None = None


class JmapServer(RemoteOps, EventSourceMixin):
    """Start with `start()` (or as a context manager); `session_url` then works."""

    def __init__(
        self,
        personality: str | Personality = "stalwart",
        *,
        user: str = "alice@example.test",
        password: str = "app-password",  # noqa: S107 - a test account
        token: str = "tok-rw-0123456789",  # noqa: S107
        readonly_token: str | None = "tok-ro-9876543210",  # noqa: S107
        seed: int = 0,
        mailboxes: Iterable[tuple[str, str | None]] = (
            ("Inbox", "inbox"),
            ("Archive", "archive"),
            ("Drafts", "drafts"),
            ("Sent", "sent"),
            ("Trash", "trash"),
            ("Junk", "junk"),
        ),
    ) -> None:
        p = PERSONALITIES[personality] if isinstance(personality, str) else personality
        self.personality = p
        self.user, self.password, self.token, self.readonly_token = (
            user,
            password,
            token,
            readonly_token,
        )
        self.account_id = "u" + format(seed + 0x2A1F, "07x") if p.hash_ids else "b"
        self.knobs = Knobs(
            p,
            dict(p.limits),
            p.query_max,
            p.dedup_imports,
            stalwart_limit_rule=p.name == "stalwart",
        )
        self.scopes = frozenset({CORE, MAIL, SUBMISSION})
        self._clock = itertools.count()
        self.store = Store(IdMaker(p, seed), self._now)
        self.api = Api(self.store, self.knobs)
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._answers = itertools.count()
        for name, role in mailboxes:
            self.store.add_mailbox(name, None, role)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self.api_http = HttpServer("127.0.0.1", "api", self._handle)
        self.download_http = HttpServer("127.0.0.2", "download", self._handle)

    def _now(self) -> str:
        """receivedAt of deliveries: a fixed clock, a minute per message."""
        start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        return (start + dt.timedelta(minutes=next(self._clock))).strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> JmapServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failed: list[BaseException] = []

        async def boot() -> None:
            self._stopping = asyncio.Event()
            await self.api_http.start()
            if self.personality.second_download_host:
                try:
                    await self.download_http.start()
                except OSError:  # no 127.0.0.2 here: another port is another origin too
                    self.download_http.host = "127.0.0.1"
                    await self.download_http.start()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as exc:  # reported to start()
                failed.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(
            target=run, name=f"jmapserver-{self.personality.name}", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            assert self._stopping is not None
            self._stopping.set()
            self.store.changed()  # wakes the event streams: they see _stopping and end
            await self.api_http.stop()
            await self.download_http.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        loop.close()

    def __enter__(self) -> JmapServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- URLs ------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.api_http.port}"

    @property
    def download_base(self) -> str:
        if not self.personality.second_download_host:
            return self.base
        return f"http://{self.download_http.host}:{self.download_http.port}"

    @property
    def session_url(self) -> str:
        return self.base + self.personality.session_path

    def session(self, read_only: bool) -> dict[str, Any]:
        p = self.personality
        scopes = {CORE, MAIL} if read_only else set(self.scopes)
        caps: dict[str, Any] = {CORE: dict(self.knobs.limits)}
        if MAIL in scopes:
            caps[MAIL] = {}
        if SUBMISSION in scopes:
            caps[SUBMISSION] = {}
        mail_caps = {
            "maxMailboxesPerEmail": None,
            "maxMailboxDepth": None,
            "maxSizeMailboxName": 490,
            "maxSizeAttachmentsPerEmail": 50_000_000,
            "emailQuerySortOptions": ["receivedAt", "size"],
            "mayCreateTopLevelMailbox": True,
        }
        return {
            "capabilities": caps,
            "accounts": {
                self.account_id: {
                    "name": self.user,
                    "isPersonal": True,
                    "isReadOnly": read_only,
                    "accountCapabilities": {
                        c: (mail_caps if c == MAIL else {}) for c in caps if c != CORE
                    },
                }
            },
            "primaryAccounts": {c: self.account_id for c in caps if c != CORE},
            "username": self.user,
            "apiUrl": self.base + p.api_path,
            "downloadUrl": self.download_base + p.download_path,
            "uploadUrl": self.base + p.upload_path,
            "eventSourceUrl": self.base + p.event_path,
            "state": self.knobs.session_state,
        }

    # -- HTTP --------------------------------------------------------------------------

    def fault(self, kind: str, where: str = "*", times: int = 1, retry_after: str = "1") -> None:
        """Inject a transport fault into the next `times` matching requests."""
        with self.store.lock:
            self.faults.append(Fault(kind, where, times, retry_after))

    def _take_fault(self, kind: str, calls: list[str]) -> Fault | None:
        with self.store.lock:
            for f in self.faults:
                head, _, method = f.where.partition(":")
                if head in ("*", kind) and (not method or method in calls):
                    f.times -= 1
                    if f.times <= 0:
                        self.faults.remove(f)
                    return f
            return None

    def _auth(self, req: Request) -> str:
        value = req.headers.get("authorization", "")
        scheme, _, cred = value.partition(" ")
        if scheme.lower() == "bearer":
            if cred == self.token:
                return "bearer"
            if self.readonly_token is not None and cred == self.readonly_token:
                return "bearer-readonly"
            return "refused"
        if scheme.lower() == "basic":
            if self.personality.bearer_only:
                return "refused"  # [FASTMAIL-DEV] Bearer only
            try:
                user, _, pw = base64.b64decode(cred).decode().partition(":")
            except ValueError:
                return "refused"
            return "basic" if (user, pw) == (self.user, self.password) else "refused"
        return "none"

    def _kind(self, req: Request) -> str:
        p = self.personality
        path = req.path
        if req.host == "download":
            return "download" if path.startswith("/jmap/download/") else "unknown"
        if path in (p.session_path, "/.well-known/jmap", "/jmap/session") and req.method == "GET":
            return "session"
        if path == p.api_path and req.method == "POST":
            return "api"
        if path.startswith("/jmap/upload/") and req.method == "POST":
            return "upload"
        if path.startswith("/jmap/download/") and req.method == "GET":
            return "unknown" if p.second_download_host else "download"
        if path == p.event_path.split("?")[0] and req.method == "GET":
            return "events"
        return "unknown"

    def _json(self, status: int, data: object, **headers: str) -> Response:
        return Response(
            status, json.dumps(data).encode(), {"Content-Type": "application/json"} | headers
        )

    def _framed(self, resp: Response) -> Response:
        mode = self.knobs.chunked
        resp.chunked = mode == "always" or (mode == "alternate" and next(self._answers) % 2 == 1)
        return resp

    async def _handle(self, req: Request) -> Response:
        kind = self._kind(req)
        auth = self._auth(req)
        seen = Seen(req.host, req.method, req.path, kind, auth)
        self.seen.append(seen)
        if kind == "unknown":
            return self._json(404, {"type": "about:blank", "status": 404})
        if auth in ("none", "refused"):
            scheme = "Bearer" if self.personality.bearer_only else "Basic"
            return self._json(
                401,
                {"type": "about:blank", "status": 401},
                **{"WWW-Authenticate": f'{scheme} realm="jmap"'},
            )
        read_only = auth == "bearer-readonly"
        body: object = None
        if kind == "api":
            if len(req.body) > self.knobs.limit("maxSizeRequest"):
                return self._json(400, RequestError(400, "limit", limit="maxSizeRequest").problem)
            try:
                body = json.loads(req.body)
            except ValueError:
                return self._json(400, RequestError(400, "notJSON").problem)
            calls = body.get("methodCalls") if isinstance(body, dict) else None
            seen.calls = (
                [c[0] for c in calls if isinstance(c, list) and c]
                if isinstance(calls, list)
                else []
            )
        fault = self._take_fault(kind, seen.calls)
        seen.fault = fault.kind if fault else None
        if fault is not None and fault.kind in ("429", "500"):
            return self._json(
                int(fault.kind),
                {"type": "about:blank", "status": int(fault.kind)},
                **({"Retry-After": fault.retry_after} if fault.kind == "429" else {}),
            )
        resp = self._answer(kind, req, body, read_only)
        if fault is not None:
            resp.fault = "lose" if fault.kind == "lose" else "cut"
            resp.stream = None
        return resp

    def _answer(self, kind: str, req: Request, body: object, read_only: bool) -> Response:
        if kind == "session":
            return self._framed(self._json(200, self.session(read_only)))
        if kind == "api":
            caps = frozenset(self.session(read_only)["capabilities"])
            try:
                out = self.api.request(body, Ctx(self.account_id, read_only, caps))
            except RequestError as exc:
                return self._json(exc.status, exc.problem)
            return self._framed(self._json(200, out))
        if kind == "upload":
            if not req.path.startswith(f"/jmap/upload/{self.account_id}/"):
                return self._json(404, {"type": "about:blank", "status": 404})
            if read_only:
                return self._json(403, {"type": "about:blank", "status": 403})
            if len(req.body) > self.knobs.limit("maxSizeUpload"):
                return self._json(400, RequestError(400, "limit", limit="maxSizeUpload").problem)
            blob_id = self.store.put_blob(req.body)
            return self._json(
                201,
                {
                    "accountId": self.account_id,
                    "blobId": blob_id,
                    "type": req.headers.get("content-type", ""),
                    "size": len(req.body),
                },
            )
        if kind == "download":
            parts = req.path.split("/")  # /jmap/download/{accountId}/{blobId}/{name}
            with self.store.lock:
                raw = self.store.blobs.get(parts[4]) if len(parts) > 4 else None
            if raw is None or parts[3] != self.account_id:
                return self._json(404, {"type": "about:blank", "status": 404})
            ctype = req.query.get("type") or req.query.get("accept") or "application/octet-stream"
            return self._framed(Response(200, raw, {"Content-Type": ctype}))
        return self._events(req)
