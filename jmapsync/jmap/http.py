"""Every HTTP request jmapsync makes for a pass, whichever stack carries it.

Two stacks, one behaviour.  jmap/lean.py carries requests to the server
directly (start-up cost, Cyrus's keep-alive stall: see there); httpx carries
them whenever a proxy applies to the URL (HTTPS_PROXY / HTTP_PROXY /
ALL_PROXY, less NO_PROXY: the lean client speaks no proxy protocol) and when
a test hands in an httpx transport.  Both go through the same code here:

* `timeout` is a progress timeout (jmap/progress.py), per attempt.
* Redirects are followed for GET only, at most MAX_REDIRECTS, and a URL seen
  twice is a loop: a one-line ProtocolError, not a traceback.  The
  Authorization header is not sent to another origin (as curl and httpx do).
* Retries: a request marked idempotent (session GET, blob GET, API reads)
  is sent again on a fresh connection after a broken connection or HTTP
  5xx, with backoff, up to len(RETRY_DELAYS) times; a blob GET resumes with
  a Range request (blobs are immutable, RFC 8620 6) or skips what it
  already delivered.  Any other request is sent again only when it
  provably never left (TransportError with sent=False: the connection or
  the TLS handshake failed).  Not retried at all: a stalled transfer
  (`timeout` was how long the user is willing to wait), a refused
  connection (nothing listens: the server is down or restarting) and a
  rejected certificate (TransportError with final=True); the next pass, or
  the daemon's backoff, tries again.
* 429 (the server asks to slow down; it did nothing): the request goes again
  after the pause its Retry-After asks for (jmap/ratelimit.py: a few times,
  never a pause above MAX_WAIT_S), whatever its kind; then RateLimited.
* Status: 2xx is returned; 401/403 raise AuthError; anything else raises
  HTTPStatusError with the server's problem type and detail, made safe for a
  terminal by the log and CLI (jmapsync/scrub.py).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urljoin, urlsplit

from jmapsync import log
from jmapsync.errors import (
    AuthError,
    HTTPStatusError,
    ProtocolError,
    RateLimited,
    TransportError,
)
from jmapsync.jmap import ratelimit
from jmapsync.jmap.lean import LeanHTTP, Sink
from jmapsync.jmap.progress import Progress
from jmapsync.jmap.wire import USER_AGENT, proxy_applies

if TYPE_CHECKING:  # imported on first use: a pass with nothing new never needs it
    import httpx

MAX_REDIRECTS = 5
RETRY_DELAYS = (0.5, 1.5, 4.0)  # pauses before the 2nd, 3rd and 4th try
RETRY_STATUSES = frozenset({500, 502, 503, 504})
_MAX_ERROR_BODY = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Answer(NamedTuple):
    """A 2xx answer: its status, headers (lower-case names), final URL and
    body (empty when it went to a sink)."""

    status: int
    headers: dict[str, str]
    url: str
    body: bytes


@contextmanager
def map_transport_errors(what: str) -> Iterator[None]:
    """Turn httpx's exceptions into ours, in ONE place (httpx does the same for httpcore)."""
    import httpx

    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransportError(f"{what}: timed out ({type(exc).__name__})") from None
    except httpx.ConnectError as exc:
        refused = isinstance(exc.__context__, ConnectionRefusedError) or "refused" in str(exc)
        raise TransportError(f"{what}: ConnectError: {exc}", sent=False, final=refused) from None
    except httpx.TransportError as exc:
        raise TransportError(f"{what}: {type(exc).__name__}: {exc}", sent=True) from None
    except httpx.InvalidURL as exc:
        raise ProtocolError(f"{what}: invalid URL ({exc})") from None


class Http:
    """The HTTP side of one JmapClient (see the module docstring)."""

    def __init__(self, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None):
        self.timeout_s = timeout_s
        self._transport = transport
        self._ssl: ssl.SSLContext | None = None
        self._lean = LeanHTTP(self.ssl_context)
        self._httpx: httpx.AsyncClient | None = None
        self._log = log.get()

    def ssl_context(self) -> ssl.SSLContext:
        """The system trust store, built on first https use: building httpx's
        default context (the certifi bundle) costs ~100 ms.  The system store
        is what a user's other mail tools trust too ($SSL_CERT_FILE works)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    @property
    def httpx_client(self) -> httpx.AsyncClient:
        """httpx, made on first use (proxies, tests, the EventSource channel)."""
        if self._httpx is None:
            import httpx

            self._httpx = httpx.AsyncClient(
                transport=self._transport,
                verify=self.ssl_context(),
                timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 15)),
                follow_redirects=False,  # done below, the same way as for the lean client
                headers={"User-Agent": USER_AGENT},
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                trust_env=True,
            )
        return self._httpx

    async def aclose(self) -> None:
        await self._lean.aclose()
        if self._httpx is not None:
            await self._httpx.aclose()
            self._httpx = None

    def uses_httpx(self, url: str) -> bool:
        return self._transport is not None or proxy_applies(url)

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        what: str,
        idempotent: bool,
        body: bytes | None = None,
        sink: Sink | None = None,
        limit: int = 1 << 20,
    ) -> Answer:
        """One request, with redirects and retries (see the module docstring).

        Without `sink` the body is collected (ProtocolError above `limit`
        bytes); with it, the body of a 2xx answer streams there, each byte
        exactly once across retries.  A 429 comes before any body byte."""

        async def once() -> Answer:
            return await self._redirected(method, url, headers, what, idempotent, body, sink, limit)

        return await ratelimit.paced(what, once)

    async def _redirected(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        what: str,
        idempotent: bool,
        body: bytes | None,
        sink: Sink | None,
        limit: int,
    ) -> Answer:
        seen = {url}
        for _hop in range(MAX_REDIRECTS + 1):
            answer = await self._retrying(method, url, headers, what, idempotent, body, sink, limit)
            if answer.status not in _REDIRECTS:
                return answer
            location = answer.headers.get("location")
            if method != "GET" or not location:
                raise HTTPStatusError(f"{what}: HTTP {answer.status}", status=answer.status)
            target = urljoin(url, location)
            if target in seen:
                raise ProtocolError(f"{what}: redirect loop at {target}")
            seen.add(target)
            if _origin(target) != _origin(url):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = target
        raise ProtocolError(f"{what}: more than {MAX_REDIRECTS} redirects")

    async def _retrying(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        what: str,
        idempotent: bool,
        body: bytes | None,
        sink: Sink | None,
        limit: int,
    ) -> Answer:
        delivered = 0  # body bytes already handed to `sink` by earlier tries

        def deliver(chunk: bytes) -> None:
            nonlocal delivered
            delivered += len(chunk)
            assert sink is not None  # noqa: S101 - only used with a sink
            sink(chunk)

        for attempt in range(len(RETRY_DELAYS) + 1):
            hdrs = headers
            if sink is not None and delivered:
                hdrs = headers | {"Range": f"bytes={delivered}-"}
            try:
                return await self._once(
                    method, url, hdrs, what, body, deliver if sink else None, limit, delivered
                )
            except TransportError as exc:
                sent = exc.fields.get("sent", True)
                if (
                    exc.fields.get("stalled")
                    or exc.fields.get("final")
                    or (sent and not idempotent)
                ):
                    raise
                if attempt == len(RETRY_DELAYS):
                    raise
                error: Exception = exc
            except HTTPStatusError as exc:
                if exc.status not in RETRY_STATUSES or not idempotent:
                    raise
                if attempt == len(RETRY_DELAYS):
                    raise
                error = exc
            delay = RETRY_DELAYS[attempt]
            self._log.info(
                "http-retry", what=what, attempt=attempt + 2, delay=delay, error=str(error)
            )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        what: str,
        body: bytes | None,
        sink: Sink | None,
        limit: int,
        offset: int,
    ) -> Answer:
        collected = bytearray()
        kept: dict[str, Any] = {}

        def collect(chunk: bytes) -> None:
            collected.extend(chunk)
            if len(collected) > limit:
                raise ProtocolError(f"{what}: the answer is larger than {limit >> 20} MiB")

        def keep_error(chunk: bytes) -> None:
            if len(collected) < _MAX_ERROR_BODY:
                collected.extend(chunk[: _MAX_ERROR_BODY - len(collected)])

        def choose(status: int, resp_headers: dict[str, str]) -> Sink:
            kept["status"] = status
            if not 200 <= status < 300:
                return keep_error
            if sink is None:
                return collect
            return _resumed(sink, status, resp_headers, offset, what)

        hdrs = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"} | headers
        async with Progress(self.timeout_s, what) as progress:
            if self.uses_httpx(url):
                status, resp_headers = await self._httpx_exchange(
                    method, url, hdrs, body, progress, choose, what
                )
            else:
                status, resp_headers = await self._lean.exchange(
                    method, url, hdrs, body, progress, choose
                )
        if status in (401, 403):
            raise AuthError(
                f"{what}: the server refused the credentials (HTTP {status})", status=status
            )
        if status == 429:
            wait = ratelimit.retry_after(resp_headers.get("retry-after"))
            raise RateLimited(f"{what}: HTTP 429, the server asks to slow down", retry_after=wait)
        if status in _REDIRECTS:
            return Answer(status, resp_headers, url, b"")
        if not 200 <= status < 300:
            detail = _problem(bytes(collected), resp_headers)
            raise HTTPStatusError(f"{what}: HTTP {status}{detail}", status=status)
        return Answer(status, resp_headers, url, bytes(collected))

    async def _httpx_exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        progress: Progress,
        choose: Callable[[int, dict[str, str]], Sink],
        what: str,
    ) -> tuple[int, dict[str, str]]:
        async def upload() -> AsyncIterator[bytes]:
            assert body is not None  # noqa: S101
            for start in range(0, len(body), 64 * 1024):
                piece = body[start : start + 64 * 1024]
                yield piece
                progress.moved(len(piece))

        content = None
        if body is not None:
            headers = headers | {"Content-Length": str(len(body))}
            content = upload()
        with map_transport_errors(what):
            async with self.httpx_client.stream(
                method, url, headers=headers, content=content
            ) as resp:
                resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                sink = choose(resp.status_code, resp_headers)
                async for chunk in resp.aiter_bytes():
                    progress.moved(len(chunk))
                    sink(chunk)
        return resp.status_code, resp_headers


def _resumed(sink: Sink, status: int, headers: dict[str, str], offset: int, what: str) -> Sink:
    """Where a retried GET's body goes: on from `offset` (206 for our Range),
    or the whole body again (200) with the first `offset` bytes dropped."""
    if offset == 0:
        return sink
    if status == 206:
        if not headers.get("content-range", "").startswith(f"bytes {offset}-"):
            raise ProtocolError(f"{what}: the server resumed at another offset")
        return sink
    skip = offset

    def skipping(chunk: bytes) -> None:
        nonlocal skip
        if skip:
            cut = min(skip, len(chunk))
            skip -= cut
            chunk = chunk[cut:]
        if chunk:
            sink(chunk)

    return skipping


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _problem(body: bytes, headers: dict[str, str]) -> str:
    """ " (type: detail)" of an RFC 7807 problem answer, cut short; '' otherwise."""
    if "json" not in headers.get("content-type", ""):
        return ""
    try:
        problem = json.loads(body, strict=False)  # raw controls too: scrubbed later
    except (ValueError, RecursionError):
        return ""
    if not isinstance(problem, dict):
        return ""
    parts = [str(problem[k])[:200] for k in ("type", "detail") if problem.get(k)]
    return f" ({': '.join(parts)})" if parts else ""
