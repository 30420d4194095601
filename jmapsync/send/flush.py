"""Sending the outbox of an account: lock, order, what stops a flush, the report.

send/submit.py takes each message from its journaled state to sent (and says
why that never sends a message twice).  Here: `flush_account` holds the
outbox's flush.lock (one flusher per account), drops rows whose file the
user removed, keeps held messages out unless asked (`send --flush`), sends
the rest oldest first over one connection -- also messages queued while it
runs -- and stops at the first network or server failure, recording why on
the messages left.  It never raises for them: `sync` and the daemon call it
before their pass, and a failure here must not stop the pass.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jmapsync import log
from jmapsync.config import AccountConfig, Config
from jmapsync.errors import (
    JmapsyncError,
    LocalError,
    SubmissionRefused,
)
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Identity
from jmapsync.send.outbox import Entry, Outbox
from jmapsync.send.submit import MessageSender

ClientFactory = Callable[[AccountConfig], JmapClient]


@dataclass
class FlushReport:
    """What one flush of one account did."""

    account: str
    sent: list[Entry] = field(default_factory=list)
    held: list[Entry] = field(default_factory=list)  # refused now (not the ones held before)
    waiting: list[Entry] = field(default_factory=list)  # still queued: `error` says why
    error: str | None = None  # why the flush stopped early (server unreachable, ...)
    busy: bool = False  # another process held the outbox lock

    def outcome(self, entry_id: str) -> tuple[str, str]:
        """("sent" | "held" | "queued", detail) for one message."""
        for e in self.sent:
            if e.id == entry_id:
                return "sent", e.submission_id or ""
        for e in self.held:
            if e.id == entry_id:
                return "held", e.reason or ""
        if self.busy:
            return "queued", "another jmapsync process is sending this outbox"
        return "queued", self.error or "not sent yet"


def cached_identities(outbox: Outbox) -> list[Identity] | None:
    cached = outbox.get_meta("identities")
    if not isinstance(cached, list):
        return None
    return [Identity(str(i["id"]), str(i["name"]), str(i["email"])) for i in cached]


async def flush_account(
    config: Config,
    account: AccountConfig,
    *,
    client_factory: ClientFactory = JmapClient,
    retry_held: bool = False,
    wait: float = 0.0,
    outbox: Outbox | None = None,
) -> FlushReport:
    """Send what waits in the account's outbox.  Never raises a JmapsyncError:
    the report says what happened (the daemon and `sync` call this before
    their pass; a failure here must not stop the pass)."""
    report = FlushReport(account.name)
    outbox = outbox or Outbox.for_account(config.state_dir, account.name)
    if not retry_held and not outbox.has_waiting():
        return report  # nothing queued: no database, no network
    try:
        with outbox.lock(wait) as got:
            if not got:
                report.busy = True
                return report
            await _flush_locked(account, outbox, client_factory, retry_held, report)
    except JmapsyncError as exc:
        report.error = str(exc)
    except (OSError, sqlite3.Error) as exc:  # the outbox's own disk: full, read-only, gone
        report.error = f"outbox {outbox.root}: {exc}"
        log.get().warning("send-outbox-failed", account=account.name, error=str(exc))
    finally:
        outbox.close()
    return report


def _ready(outbox: Outbox, retry_held: bool, log_: Any) -> list[Entry]:
    """The rows to work on, oldest first; rows whose file is gone are dropped."""
    todo = []
    for entry in outbox.entries():
        if outbox.path_of(entry.id) is None:
            if entry.state != "sent":
                log_.warning("send-dropped", entry=entry.id, reason="its file was removed")
            outbox.drop_row(entry)
            continue
        if entry.state == "held":
            if not retry_held:
                outbox.park(entry)
                continue
            todo.append(outbox.release(entry))
            continue
        todo.append(entry)
    return todo


async def _flush_locked(
    account: AccountConfig,
    outbox: Outbox,
    client_factory: ClientFactory,
    retry_held: bool,
    report: FlushReport,
) -> None:
    log_ = log.get().bind(account=account.name)
    todo = _ready(outbox, retry_held, log_)
    if not todo:
        return
    async with client_factory(account) as client:
        flush = MessageSender(account, outbox, client)
        try:
            await flush.start()
        except SubmissionRefused as exc:  # no submission capability: nothing can go
            for entry in todo:
                report.held.append(outbox.hold(entry, str(exc), exc.kind))
            log_.warning("send-refused", entries=len(todo), reason=str(exc))
            return
        except JmapsyncError as exc:
            _deferred(outbox, todo, exc, report, log_)
            return
        done: set[str] = set()
        while todo:
            for i, entry in enumerate(todo):
                done.add(entry.id)
                try:
                    report.sent.append(await flush.send(entry))
                except SubmissionRefused as exc:
                    row = outbox.get(entry.id) or entry
                    report.held.append(outbox.hold(row, str(exc), exc.kind))
                    log_.warning("send-refused", entry=entry.id, kind=exc.kind, reason=str(exc))
                except LocalError as exc:
                    log_.warning("send-local-problem", entry=entry.id, error=str(exc))
                    row = outbox.get(entry.id) or entry
                    report.held.append(outbox.hold(row, str(exc), "local"))
                except JmapsyncError as exc:
                    _deferred(outbox, todo[i:], exc, report, log_)
                    return
            # Messages queued while we were sending (mutt, a second `send`).
            todo = [e for e in _ready(outbox, False, log_) if e.id not in done]


def _deferred(
    outbox: Outbox, rest: list[Entry], exc: JmapsyncError, report: FlushReport, log_: Any
) -> None:
    report.error = str(exc)
    for entry in rest:
        row = outbox.get(entry.id) or entry
        report.waiting.append(outbox.update(row, reason=str(exc), last_try=time.time()))
    log_.warning("send-deferred", entries=len(rest), error=str(exc), retry=exc.retry.value)
