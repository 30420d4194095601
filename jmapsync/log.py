"""structlog setup: human-readable on a TTY, JSON lines otherwise.

Every event is one line with an `event` name and key/value fields; account
names travel as the `account` key (bound by the engine).  Nothing logs
request headers; and every key and value (a traceback too) passes
scrub.processor: a server's text cannot put terminal controls or a known
secret into a log line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

import structlog

from jmapsync import scrub

LogFormat = Literal["auto", "console", "json"]


def setup(fmt: LogFormat = "auto", verbose: int = 0, hide: Iterable[str] = ()) -> None:
    """Configure structlog to write to stderr.

    `verbose` 0 shows info and up, 1 and more shows debug, -1 errors only
    (`jmapsync send`: a mail program shows sendmail's stderr to the user).
    `hide`: events the console leaves out unless -v, because the CLI says the
    same in words (`sync-done` -> jmapsync/summary.py); JSON logs always carry them.
    """
    level = logging.DEBUG if verbose > 0 else logging.INFO if verbose == 0 else logging.ERROR
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    first: list[structlog.types.Processor] = []
    renderer: structlog.types.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        hidden = frozenset(hide) if verbose == 0 else frozenset()
        if hidden:
            first.append(_Drop(hidden))
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
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class _Drop:
    """A processor that drops the named events."""

    def __init__(self, events: frozenset[str]) -> None:
        self.events = events

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> Any:
        if event.get("event") in self.events:
            raise structlog.DropEvent
        return event


def get(name: str = "jmapsync") -> structlog.stdlib.BoundLogger:
    """A logger; bind `account=` on it before use in per-account code."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
