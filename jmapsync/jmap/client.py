"""One account's JMAP connection: session, API calls, blob download and upload.

`JmapClient` knows the session limits and obeys them: requests never carry
more than maxCallsInRequest calls (longer chains are split, back-references
resolved here), gets never ask for more than maxObjectsInGet ids, no more
than maxConcurrentRequests requests are in flight at once.

Every request goes through jmap/http.py (progress timeout, redirects,
retries of idempotent requests, the lean client or httpx).  What is
idempotent is decided here, from the method names: reads (`*/get`,
`*/changes`, `*/query`, `*/queryChanges`) and `*/set` with `ifInState` (sent
twice, the second answers stateMismatch) may be sent again after a broken
connection; anything else (`Email/import`, `Mailbox/set`, `Email/set`
without ifInState, uploads) never once it may have reached the server.

A session taken from the cache (`use_cached`) may be outdated: when a URL
from it (apiUrl, downloadUrl, uploadUrl) answers 401, 403 or 404, the
session is fetched again ONCE and the request repeated once -- such an
answer means the server did not act on it, so this is safe for every
request.  The new session is then in `session_json` for the caller to store.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:  # httpx is imported on first use: a pass with nothing new never needs it
    import httpx

from jmapsync import log
from jmapsync.config import AccountConfig, Secret
from jmapsync.errors import AuthError, HTTPStatusError, ProtocolError
from jmapsync.jmap.api import (
    MAX_RESPONSE_BYTES,
    Invocation,
    Responses,
    auth_header,
    describe,
    idempotent,
    parse_json,
    request_body,
    responses,
)
from jmapsync.jmap.http import Http, map_transport_errors
from jmapsync.jmap.types import MAX_MESSAGE_BYTES, USING, Session, parse_id

__all__ = [
    "Invocation",
    "JmapClient",
    "Responses",
    "expand_template",
    "map_transport_errors",
    "parse_json",
]

T = TypeVar("T")

_MAX_SESSION_BYTES = 4 * 1024 * 1024
_MAX_UPLOAD_ANSWER = 1024 * 1024


def _rejected(exc: Exception) -> bool:
    """An answer that says "not here / not you", which an outdated session explains."""
    return isinstance(exc, AuthError) or (
        isinstance(exc, HTTPStatusError) and exc.status in (401, 403, 404)
    )


def expand_template(template: str, **values: str) -> str:
    """RFC 6570 level-1 expansion: every value is percent-encoded (no reserved chars)."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", quote(value, safe=""))
    return out


def _resolve_refs(args: dict[str, Any], earlier: Responses) -> dict[str, Any]:
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


class JmapClient:
    """One account's connection to its JMAP server."""

    def __init__(
        self,
        account: AccountConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        secret: Secret | None = None,
    ) -> None:
        """`secret`: the password or token, already resolved (the daemon keeps
        one per account so that password_command does not run every pass);
        None runs the configured command on first use.  `transport`: an httpx
        transport (tests with a fake server); every request then goes through
        httpx."""
        self.account = account
        self._secret: Secret | None = secret
        self._web = Http(account.timeout_s, transport)
        self.session: Session | None = None
        self.session_json: tuple[str, object] | None = None  # (url, JSON) just fetched
        self.session_stale = False
        self._from_cache = False  # the session came from use_cached
        self._refetch: asyncio.Future[Session] | None = None
        self._preloaded: tuple[list[Invocation], Responses] | None = None
        self._api_sem = asyncio.Semaphore(1)
        self._log = log.get().bind(account=account.name)

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> JmapClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._web.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client, made on first use (the EventSource push channel)."""
        return self._web.httpx_client

    def _auth_header(self) -> dict[str, str]:
        if self._secret is None:
            # Runs password_command / token_command once per client.
            self._secret = self.account.credentials.resolve()
        return auth_header(self.account.credentials, self._secret)

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header, for a push channel that opens its own
        connection (jmap/push.py).  Never log the result."""
        return self._auth_header()

    # -- session -------------------------------------------------------------------

    async def connect(self) -> Session:
        """Fetch and validate the session resource (RFC 8620 2)."""
        url = well_known_url(self.account.session_url)
        answer = await self._web.request(
            "GET",
            url,
            self._auth_header() | {"Accept": "application/json"},
            what="session",
            idempotent=True,
            limit=_MAX_SESSION_BYTES,
        )
        data = parse_json(answer.body, "session")
        self.session_json = (answer.url, data)
        self.session_stale = False
        self._from_cache = False
        return self._use(Session.parse(data, answer.url))

    def use_cached(self, url: str, data: object) -> Session:
        """Take a session fetched on an earlier run, saving a round trip.

        The server names its session state in every API response: when that
        differs from the cached one, `session_stale` turns True and the
        caller fetches the session again (RFC 8620 3.4, sessionState).  A URL
        of it that answers 401/403/404 makes the client fetch it at once."""
        self.session_json = None
        self.session_stale = False
        self._from_cache = True
        return self._use(Session.parse(data, url))

    def _use(self, session: Session) -> Session:
        self.session = session
        self._api_sem = asyncio.Semaphore(session.limits.max_concurrent_requests)
        self._log.debug("session", api_url=session.api_url, account_id=session.account_id)
        return session

    def _require_session(self) -> Session:
        if self.session is None:
            raise RuntimeError("call connect() first")
        return self.session

    async def _fresh_session_on_reject(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """attempt(); if a cached session's URL rejected it, fetch the session
        (once per client, shared by concurrent requests) and attempt() once
        more -- it reads its URL from the new session."""
        used = self.session
        try:
            return await attempt()
        except (AuthError, HTTPStatusError) as exc:
            if not _rejected(exc):
                raise
            if self.session is used:  # else another request fetched a new one meanwhile
                if self._refetch is None:
                    if not self._from_cache:
                        raise
                    self._log.info("session-refetch", reason=str(exc))
                    self._refetch = asyncio.ensure_future(self.connect())
                await asyncio.shield(self._refetch)
        return await attempt()

    # -- API calls -----------------------------------------------------------------

    def preload(self, calls: Sequence[Invocation], answer: Responses) -> None:
        """The answer to a request this run already made with the same
        session (sync/quick.py's first request of a pass): the first call()
        with exactly these calls returns it instead of asking again; any
        other first call drops it."""
        self._preloaded = (list(calls), answer)

    async def call(self, calls: Sequence[Invocation], using: Sequence[str] = USING) -> Responses:
        """Send the calls, in one request when maxCallsInRequest allows.

        Otherwise they go in consecutive requests, and a back-reference to a
        call of an earlier request is resolved here, from its response -- so
        callers write one request's worth of calls whatever the server's limit.
        """
        preloaded, self._preloaded = self._preloaded, None
        if preloaded is not None and preloaded[0] == list(calls) and tuple(using) == USING:
            return preloaded[1]
        session = self._require_session()
        limit = session.limits.max_calls_in_request
        if len(calls) <= limit:
            return await self._request(calls, using)
        done = Responses([], {})
        for start in range(0, len(calls), limit):
            chunk = [(n, _resolve_refs(a, done), c) for n, a, c in calls[start : start + limit]]
            part = await self._request(chunk, using)
            done.items.extend(part.items)
            done.methods.update(part.methods)
        return done

    async def _request(self, calls: Sequence[Invocation], using: Sequence[str]) -> Responses:
        body = request_body(calls, using)
        if len(body) > self._require_session().limits.max_size_request:
            raise ValueError(f"request of {len(body)} bytes exceeds maxSizeRequest")
        what = describe(calls)
        safe = idempotent(calls)

        async def post() -> Any:
            session = self._require_session()
            async with self._api_sem:
                answer = await self._web.request(
                    "POST",
                    session.api_url,
                    self._auth_header() | {"Content-Type": "application/json"},
                    what=what,
                    idempotent=safe,
                    body=body,
                    limit=MAX_RESPONSE_BYTES,
                )
            return parse_json(answer.body, what)

        data = await self._fresh_session_on_reject(post)
        parsed, state = responses(data, calls)
        if state is not None and state != self._require_session().state:
            self.session_stale = True
        return parsed

    # -- blobs ---------------------------------------------------------------------

    def download_url(self, blob_id: str, name: str = "message.eml") -> str:
        session = self._require_session()
        return expand_template(
            session.download_url,
            accountId=session.account_id,
            blobId=blob_id,
            name=name,
            type="message/rfc822",
        )

    async def stream_blob(
        self, blob_id: str, expected_size: int | None, sink: Callable[[bytes], None]
    ) -> int:
        """Stream a blob into `sink`; return the byte count.

        Refuses (ProtocolError) a blob larger than the Email's declared size or
        than MAX_MESSAGE_BYTES, so a lying server cannot fill the disk.  A
        broken connection is retried and resumed (jmap/http.py); every byte
        reaches `sink` exactly once.
        """
        limit = MAX_MESSAGE_BYTES if expected_size is None else expected_size
        received = 0

        def checked(chunk: bytes) -> None:
            nonlocal received
            received += len(chunk)
            if received > limit:
                raise ProtocolError(
                    f"blob {blob_id} is larger than the {limit} bytes the server declared"
                )
            sink(chunk)

        async def get() -> None:
            await self._web.request(
                "GET",
                self.download_url(blob_id),
                self._auth_header(),
                what=f"download {blob_id}",
                idempotent=True,
                sink=checked,
            )

        await self._fresh_session_on_reject(get)
        if expected_size is not None and received != expected_size:
            raise ProtocolError(
                f"blob {blob_id}: got {received} bytes, the server declared {expected_size}"
            )
        return received

    async def download_to(
        self,
        blob_id: str,
        fd: int,
        expected_size: int | None,
        observe: Callable[[bytes], None] | None = None,
    ) -> int:
        """Stream a blob into an open file descriptor (see stream_blob)."""

        def write(chunk: bytes) -> None:
            if observe is not None:
                observe(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]

        return await self.stream_blob(blob_id, expected_size, write)

    async def fetch_blob(self, blob_id: str, expected_size: int | None = None) -> bytes:
        """A whole blob in memory (for the few messages two-way sync compares)."""
        data = bytearray()
        await self.stream_blob(blob_id, expected_size, data.extend)
        return bytes(data)

    async def upload(self, data: bytes, content_type: str = "message/rfc822") -> str:
        """POST bytes to the uploadUrl (RFC 8620 6.1); the new blob id.

        Never sent twice once it may have reached the server: the caller's
        journal decides what happens after a lost answer."""

        async def post() -> Any:
            session = self._require_session()
            if len(data) > session.limits.max_size_upload:
                raise ValueError(
                    f"{len(data)} bytes exceed the server's maxSizeUpload"
                    f" ({session.limits.max_size_upload})"
                )
            answer = await self._web.request(
                "POST",
                expand_template(session.upload_url, accountId=session.account_id),
                self._auth_header() | {"Content-Type": content_type},
                what="upload",
                idempotent=False,
                body=data,
                limit=_MAX_UPLOAD_ANSWER,
            )
            return parse_json(answer.body, "upload")

        answer = await self._fresh_session_on_reject(post)
        if not isinstance(answer, dict):
            raise ProtocolError("upload: the answer is not a JSON object")
        size = answer.get("size")
        if size is not None and size != len(data):
            raise ProtocolError(f"upload: the server stored {size} bytes of {len(data)}")
        return parse_id(answer.get("blobId"), "blob")
