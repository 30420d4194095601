"""jmapsync/log.py: the JSON line written without structlog is the line
structlog writes with setup()'s chain, and what the chain drops is dropped
without importing anything."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jmapsync import log, scrub

ROOT = Path(__file__).resolve().parents[2]


class _File(io.StringIO):
    def isatty(self) -> bool:
        return False


def _structlog_line(method: str, event: str, context: dict[str, Any], kw: dict[str, Any]) -> str:
    import structlog

    out = _File()
    settings = log._Settings("json", 0, ())
    settings.file = out
    try:
        log._configure(settings)
        getattr(structlog.get_logger("jmapsync").bind(**context), method)(event, **kw)
    finally:
        structlog.reset_defaults()
    return out.getvalue()


def _own_line(method: str, event: str, context: dict[str, Any], kw: dict[str, Any]) -> str:
    out = _File()
    log._json_line(out, method, event, {**context, **kw})
    return out.getvalue()


def _same(a: str, b: str) -> None:
    """Equal but for the time stamp (taken a moment apart)."""
    da, db = json.loads(a), json.loads(b)
    assert list(da) == list(db), (a, b)  # key order too
    da.pop("timestamp")
    db.pop("timestamp")
    assert da == db
    assert a.endswith("\n") and b.endswith("\n") and a.count("\n") == 1


@pytest.mark.parametrize(
    ("method", "event", "context", "kw"),
    [
        ("info", "sync-done", {"account": "a"}, {"mode": "unchanged", "seconds": 0.01}),
        ("warning", "w", {}, {"path": Path("/x/y"), "n": 3, "ok": True, "none": None}),
        ("error", "e", {"account": "a"}, {"items": [1, "b", {"c": 2}], "s": {"x"}}),
        ("info", "ctl", {}, {"text": "bad \x1b[31m red \x07 bell", "ümlaut": "ø"}),
        ("info", "lvl", {"level": "mine"}, {"event_x": 1}),
    ],
)
def test_json_line_is_structlogs(
    method: str, event: str, context: dict[str, Any], kw: dict[str, Any]
) -> None:
    _same(_own_line(method, event, context, kw), _structlog_line(method, event, context, kw))


def _boom() -> None:
    raise ValueError("boom with a secret: hunter2")


def test_exception_line_is_structlogs() -> None:
    try:
        _boom()
    except ValueError:
        scrub.add_secret("hunter2")
        own = _own_line("exception", "crashed", {"account": "a"}, {"error": "x"})
        theirs = _structlog_line("exception", "crashed", {"account": "a"}, {"error": "x"})
    _same(own, theirs)
    assert "hunter2" not in own
    assert json.loads(own)["level"] == "error"
    assert "ValueError: boom" in json.loads(own)["exception"]


def test_events_the_chain_drops_load_no_structlog_and_json_needs_none() -> None:
    code = (
        "import sys\n"
        "from jmapsync import log\n"
        "log.setup('json', 0, ('sync-done',))\n"
        "lg = log.get().bind(account='a')\n"
        "lg.debug('hidden-by-level', x=1)\n"
        "lg.info('sync-done', mode='unchanged')\n"  # hidden on a console only: written here
        "lg.warning('w', n=2)\n"
        "print('structlog' in sys.modules, 'asyncio' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.split() == ["False", "False"]
    events = [json.loads(x) for x in done.stderr.splitlines()]
    assert [(e["event"], e["level"], e["account"]) for e in events] == [
        ("sync-done", "info", "a"),
        ("w", "warning", "a"),
    ]


def test_console_events_go_through_structlog_and_hidden_ones_are_dropped() -> None:
    code = (
        "import sys\n"
        "from jmapsync import log\n"
        "log.setup('console', 0, ('sync-done',))\n"
        "log.get().info('sync-done', mode='unchanged')\n"
        "print('structlog' in sys.modules)\n"
        "log.get().info('shown', n=1)\n"
        "print('structlog' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.split() == ["False", "True"]
    assert "shown" in done.stderr and "sync-done" not in done.stderr
