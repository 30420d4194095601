"""structlog setup: human-readable on a TTY, JSON lines otherwise.

Every event is one line with an `event` name and key/value fields; account
names travel as the `account` key (bound by the engine).  Nothing logs
request headers; and every key and value (a traceback too) passes
scrub.processor: a server's text cannot put terminal controls or a known
secret into a log line.

structlog is imported on the first event that the console writes, not
before: importing it (it loads asyncio) costs several times what a
`jmapsync sync` with nothing new spends on its pass (issue 16).  `get()`
hands out a small `Logger` that drops what the configured chain would drop
(below the level, or hidden) without importing anything.  A JSON line is
written by `_json_line`, the same chain as setup()'s for JSON in a few lines
of stdlib -- unless structlog is loaded already (tests, capture_logs()):
then structlog writes, configured as setup() asked.
tests/unit/test_log.py holds the two to the same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, MutableMapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TextIO

from jmapsync import scrub

if TYPE_CHECKING:
    import structlog

LogFormat = Literal["auto", "console", "json"]
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40, "critical": 50}


class _Settings:
    """What setup() asked for, until structlog is configured with it."""

    def __init__(self, fmt: LogFormat, verbose: int, hide: Iterable[str]) -> None:
        self.level = 10 if verbose > 0 else 20 if verbose == 0 else 40
        self.hidden = frozenset(hide) if verbose == 0 else frozenset()
        self.file = sys.stderr  # as structlog's PrintLoggerFactory(file=sys.stderr) takes it
        self.console = fmt == "console" or (fmt == "auto" and self.file.isatty())
        self.colors = self.file.isatty()

    def drops(self, method: str, event: str) -> bool:
        """Would the chain _configure() builds drop this event?"""
        if _LEVELS.get(method, 20) < self.level:
            return True
        return event in self.hidden and self.console


_pending: _Settings | None = None  # setup() was called; structlog not configured yet


def setup(fmt: LogFormat = "auto", verbose: int = 0, hide: Iterable[str] = ()) -> None:
    """Configure logging to stderr (structlog: now if it is loaded, else on
    the first event written).

    `verbose` 0 shows info and up, 1 and more shows debug, -1 errors only
    (`jmapsync send`: a mail program shows sendmail's stderr to the user).
    `hide`: events the console leaves out unless -v, because the CLI says the
    same in words (`sync-done` -> jmapsync/summary.py); JSON logs always carry them.
    """
    global _pending  # noqa: PLW0603 - one logging set-up per process
    _pending = _Settings(fmt, verbose, hide)
    if "structlog" in sys.modules:  # cheap now; and a test's capture_logs() comes after
        _configure(_pending)
        _pending = None


def _configure(settings: _Settings) -> None:
    import structlog

    first: list[structlog.types.Processor] = []
    renderer: structlog.types.Processor
    if settings.console:
        renderer = structlog.dev.ConsoleRenderer(colors=settings.colors)
        if settings.hidden:
            first.append(_Drop(settings.hidden))
    else:
        # A traceback becomes one "exception" string field: still one line.
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            *first,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub.processor,  # after the traceback is text, before colours are added
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        logger_factory=structlog.PrintLoggerFactory(file=settings.file),
        cache_logger_on_first_use=False,
    )


class _Drop:
    """A processor that drops the named events."""

    def __init__(self, events: frozenset[str]) -> None:
        self.events = events

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> Any:
        if event.get("event") in self.events:
            import structlog

            raise structlog.DropEvent
        return event


class Logger:
    """A structlog bound logger in waiting: `bind()` and the level methods
    of structlog's, structlog itself loaded only for an event it writes."""

    __slots__ = ("_context", "_name")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}

    def bind(self, **values: Any) -> Logger:
        return Logger(self._name, {**self._context, **values})

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, kw)

    def exception(self, event: str, **kw: Any) -> None:
        """An error with the exception being handled (its traceback, scrubbed)."""
        self._emit("exception", event, kw)

    def _emit(self, method: str, event: str, kw: dict[str, Any]) -> None:
        global _pending  # noqa: PLW0603
        if _pending is not None:
            if _pending.drops(method, event):
                return
            if not _pending.console and "structlog" not in sys.modules:
                _json_line(_pending.file, method, event, {**self._context, **kw})
                return
            _configure(_pending)
            _pending = None
        import structlog

        bound = structlog.get_logger(self._name)
        if self._context:
            bound = bound.bind(**self._context)
        getattr(bound, method)(event, **kw)


def _json_line(file: TextIO, method: str, event: str, fields: dict[str, Any]) -> None:
    """What structlog writes for the event with setup()'s JSON chain:
    merge_contextvars (nothing: no code binds context variables),
    add_log_level, TimeStamper(fmt="iso", utc=True), format_exc_info,
    scrub.processor, JSONRenderer, PrintLogger."""
    import datetime
    import json

    if method == "exception":  # structlog: error(..., exc_info=True)
        fields.setdefault("exc_info", True)
        method = "error"
    fields["event"] = event
    fields["level"] = method
    now = datetime.datetime.now(tz=datetime.timezone.utc)  # noqa: UP017 - structlog's words
    fields["timestamp"] = now.isoformat().replace("+00:00", "Z")
    exc_info = _exc_info(fields.pop("exc_info", None))
    if exc_info is not None:
        import traceback

        text = "".join(traceback.format_exception(*exc_info))
        fields["exception"] = text.removesuffix("\n")
    line = json.dumps(scrub.processor(None, method, fields), default=repr)
    print(line, file=file, flush=True)


def _exc_info(
    value: Any,
) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
    """structlog's reading of an `exc_info` field."""
    if isinstance(value, BaseException):
        return (value.__class__, value, value.__traceback__)
    if (
        isinstance(value, tuple)
        and len(value) == 3
        and isinstance(value[0], type)
        and issubclass(value[0], BaseException)
        and isinstance(value[1], BaseException)
        and (value[2] is None or isinstance(value[2], TracebackType))
    ):
        return (value[0], value[1], value[2])
    if value:
        kind, exc, tb = sys.exc_info()
        if kind is not None and exc is not None:
            return (kind, exc, tb)
    return None


def get(name: str = "jmapsync") -> Logger:
    """A logger; bind `account=` on it before use in per-account code."""
    return Logger(name)
