"""The only code that speaks HTTP: session discovery, API calls, blob download.

`JmapClient` is one account's connection.  It knows the session limits and
obeys them: requests never carry more than maxCallsInRequest calls (longer
chains are split, back-references resolved here), gets never ask for more
than maxObjectsInGet ids, no more than maxConcurrentRequests requests are in
flight at once.

API calls and blob downloads go through jmap/blobs.py's small keep-alive
client, which ACKs at once (Cyrus answers a reused connection ~44 ms late
otherwise) and costs a fraction of httpx's CPU per request.  httpx, imported
on first use, fetches the session (redirects, /.well-known/jmap) and repeats
any request whose answer is not a plain 200, so that errors are read by a
complete HTTP implementation.  Tests hand in an httpx transport to reach a
fake server; everything then goes through httpx.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:  # httpx is imported on first use: a pass with nothing new never needs it
    import httpx

from jmapsync import log
from jmapsync.config import AccountConfig, Secret
from jmapsync.errors import (
    AuthError,
    HTTPStatusError,
    ProtocolError,
    TransportError,
    method_error,
)
from jmapsync.jmap.blobs import BlobFetcher
from jmapsync.jmap.types import MAX_MESSAGE_BYTES, USING, Session, parse_id

Invocation = tuple[str, dict[str, Any], str]

_MAX_SESSION_BYTES = 4 * 1024 * 1024
_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_CHUNK = 256 * 1024


@contextmanager
def map_transport_errors(what: str) -> Iterator[None]:
    """Turn httpx's exceptions into ours, in ONE place (httpx does the same for httpcore)."""
    import httpx

    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransportError(f"{what}: timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise TransportError(f"{what}: {type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        raise ProtocolError(f"{what}: invalid URL ({exc})") from None


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
        None runs the configured command on first use."""
        self.account = account
        self._secret: Secret | None = secret
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self.session: Session | None = None
        self.session_json: tuple[str, object] | None = None  # (url, JSON) just fetched
        self.session_stale = False
        self._api_sem = asyncio.Semaphore(1)
        self._fetcher = BlobFetcher(account.timeout_s)  # its SSL context: on first https use
        self._log = log.get().bind(account=account.name)

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> JmapClient:
        return self

    def _make_http(self) -> httpx.AsyncClient:
        import httpx

        # Certificates are loaded only for https: building httpx's default SSL
        # context (the certifi bundle) costs ~100 ms, a third of a no-change pass.
        # The system trust store is what a user's other mail tools trust too.
        secure = self.account.session_url.startswith("https:")
        context = ssl.create_default_context() if secure else False
        return httpx.AsyncClient(
            transport=self._transport,
            verify=context,
            timeout=httpx.Timeout(self.account.timeout_s, connect=min(self.account.timeout_s, 15)),
            follow_redirects=True,
            headers={"User-Agent": "jmapsync/0.1"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    async def __aexit__(self, *exc: object) -> None:
        await self._fetcher.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        """The httpx client, made on first use (session fetch, redirects, errors)."""
        if self._http is None:
            self._http = self._make_http()
        return self._http

    def _auth_header(self) -> dict[str, str]:
        if self._secret is None:
            # Runs password_command / token_command once per client.
            self._secret = self.account.credentials.resolve()
        creds = self.account.credentials
        if creds.scheme == "bearer":
            return {"Authorization": "Bearer " + self._secret.reveal()}
        raw = f"{creds.username}:{self._secret.reveal()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header, for a push channel that opens its own
        connection (jmap/push.py).  Never log the result."""
        return self._auth_header()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return self._auth_header() | (extra or {})

    # -- session -------------------------------------------------------------------

    async def connect(self) -> Session:
        """Fetch and validate the session resource (RFC 8620 2)."""
        url = well_known_url(self.account.session_url)
        with map_transport_errors(f"session {url}"):
            response = await self.http.get(url, headers=self._headers())
        self._check_status(response, "session")
        if len(response.content) > _MAX_SESSION_BYTES:
            raise ProtocolError("session resource is larger than 4 MiB")
        data = self._json(response, "session")
        self.session_json = (str(response.url), data)
        self.session_stale = False
        return self._use(Session.parse(data, str(response.url)))

    def use_cached(self, url: str, data: object) -> Session:
        """Take a session fetched on an earlier run, saving a round trip.

        The server names its session state in every API response: when that
        differs from the cached one, `session_stale` turns True and the
        caller fetches the session again (RFC 8620 3.4, sessionState)."""
        self.session_json = None
        self.session_stale = False
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

    # -- API calls -----------------------------------------------------------------

    async def call(self, calls: Sequence[Invocation], using: Sequence[str] = USING) -> Responses:
        """Send the calls, in one request when maxCallsInRequest allows.

        Otherwise they go in consecutive requests, and a back-reference to a
        call of an earlier request is resolved here, from its response -- so
        callers write one request's worth of calls whatever the server's limit.
        """
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
        session = self._require_session()
        body = json.dumps(
            {"using": list(using), "methodCalls": [list(c) for c in calls]},
            separators=(",", ":"),
        ).encode()
        if len(body) > session.limits.max_size_request:
            raise ValueError(f"request of {len(body)} bytes exceeds maxSizeRequest")
        names = ",".join(c[0] for c in calls)
        data = await self._post_api(session.api_url, body, names)
        items = data.get("methodResponses") if isinstance(data, dict) else None
        state = data.get("sessionState") if isinstance(data, dict) else None
        if isinstance(state, str) and state != session.state:
            self.session_stale = True
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
        return Responses(parsed, {c[2]: c[0] for c in calls})

    async def _post_api(self, url: str, body: bytes, names: str) -> Any:
        """POST to the API: the lean client first (keep-alive without the 44 ms
        stall, and no httpx import on a pass with nothing new), httpx for any
        answer but a plain 200."""
        headers = {"Content-Type": "application/json"}
        async with self._api_sem:
            if self._transport is None:
                received = bytearray()

                def sink(chunk: bytes) -> None:
                    received.extend(chunk)
                    if len(received) > _MAX_RESPONSE_BYTES:
                        raise ProtocolError("API response larger than 256 MiB")

                if await self._fetcher.request("POST", url, self._headers(headers), sink, body):
                    try:
                        return json.loads(received)
                    except ValueError:
                        raise ProtocolError(
                            f"API request {names}: the server's answer is not valid JSON"
                        ) from None
            with map_transport_errors(f"API request {names}"):
                response = await self.http.post(url, content=body, headers=self._headers(headers))
        self._check_status(response, f"API request {names}")
        if len(response.content) > _MAX_RESPONSE_BYTES:
            raise ProtocolError("API response larger than 256 MiB")
        return self._json(response, f"API request {names}")

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

    @asynccontextmanager
    async def open_blob(self, blob_id: str) -> AsyncIterator[httpx.Response]:
        url = self.download_url(blob_id)
        with map_transport_errors(f"download {blob_id}"):
            async with self.http.stream("GET", url, headers=self._headers()) as response:
                self._check_status(response, f"download {blob_id}")
                yield response

    async def stream_blob(
        self, blob_id: str, expected_size: int | None, sink: Callable[[bytes], None]
    ) -> int:
        """Stream a blob into `sink`; return the byte count.

        Refuses (ProtocolError) a blob larger than the Email's declared size or
        than MAX_MESSAGE_BYTES, so a lying server cannot fill the disk.
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

        url = self.download_url(blob_id)
        done = False
        if self._transport is None:  # tests with a fake transport go through httpx
            done = await self._fetcher.get(url, self._auth_header(), checked)
        if not done:
            async with self.open_blob(blob_id) as response:
                with map_transport_errors(f"download {blob_id}"):
                    async for chunk in response.aiter_bytes(_CHUNK):
                        checked(chunk)
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
        """POST bytes to the uploadUrl (RFC 8620 6.1); the new blob id."""
        session = self._require_session()
        if len(data) > session.limits.max_size_upload:
            raise ValueError(
                f"{len(data)} bytes exceed the server's maxSizeUpload"
                f" ({session.limits.max_size_upload})"
            )
        url = expand_template(session.upload_url, accountId=session.account_id)
        headers = self._headers({"Content-Type": content_type})
        answer: Any = None
        if self._transport is None:
            # The lean client: an upload through httpx's keep-alive pool waits
            # ~44 ms for Cyrus' delayed answer, a third of a small upload.
            received = bytearray()
            if await self._fetcher.request("POST", url, headers, received.extend, data, (200, 201)):
                try:
                    answer = json.loads(received)
                except ValueError:
                    raise ProtocolError("upload: the server's answer is not valid JSON") from None
        if answer is None:
            with map_transport_errors("upload"):
                response = await self.http.post(url, content=data, headers=headers)
            self._check_status(response, "upload")
            answer = self._json(response, "upload")
        if not isinstance(answer, dict):
            raise ProtocolError("upload: the answer is not a JSON object")
        size = answer.get("size")
        if size is not None and size != len(data):
            raise ProtocolError(f"upload: the server stored {size} bytes of {len(data)}")
        return parse_id(answer.get("blobId"), "blob")

    # -- helpers -------------------------------------------------------------------

    def _check_status(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise AuthError(f"{what}: the server refused the credentials (HTTP {status})")
        if status >= 400 or status < 200:
            detail = ""
            ctype = response.headers.get("content-type", "")
            if "json" in ctype and not response.is_stream_consumed and response.is_closed:
                try:
                    problem = response.json()
                    if isinstance(problem, dict) and "type" in problem:
                        detail = f" ({problem['type']})"
                except ValueError:
                    pass
            raise HTTPStatusError(f"{what}: HTTP {status}{detail}", status=status)

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(f"{what}: the server's answer is not valid JSON") from None
