"""`jmapsync sync` when nothing changed: the engine's answer without the engine.

People run `jmapsync sync` from cron, from mail-program macros, before every
`notmuch new`; most of those runs find nothing new.  The engine
(sync/engine.py) answers such a pass with one API request and one stat()
per folder -- its "unchanged" fast path -- but loading the engine (asyncio,
the stages, the HTTP stack) costs several times that.  This module gives
the same answer, by the same checks, loading only the config, the state
database, jmap/api.py, jmap/changes.py and jmap/wire.py (issue 16).

For each account it checks, before any network:

1. the outbox has nothing waiting (`sync` sends that first: the engine);
2. the account lock (a busy lock: the engine says so);
3. what the engine's fast path needs: no file kept by `direction = archive`
   under another direction (archive.refuse_switch refuses or releases
   them), arrival times stamped (arrival.needs_full), no download left
   to retry (`stamp.retry_downloads`), stored Email and
   Mailbox states, a session cached for this session URL AND user, the
   same account id, and `stamp.local_unchanged` -- no folder's time moved
   since the last pass recorded it (the marker rule of sync/scope.py);

then sends the engine's first request (jmap/changes.py `round_calls`:
Mailbox/changes, Email/changes and its two Email/get) through the blocking
exchange of jmap/wire.py, and accepts only an answer with no change, no
more changes, and the cached session's state.  Then, as the engine does,
the new states and the result are recorded (one transaction) and
`sync-done` is logged with mode "unchanged".  An answer PATIENCE_S late
starts loading the engine on a thread meanwhile (`Handover.preload_engine`).

Anything else -- a changed side, a check that does not hold, an HTTP status
other than 2xx, a broken connection or answer -- leaves the account to the
engine, which starts from scratch (the request is a read: sending it again
is harmless), with what this path learnt (`Handover`): the password or
token (a password_command runs once per run), the answer to its request
(the engine's first request is the same: jmap/client.py `preload`), and a
request to the cached
session's API URL that let the progress timeout expire -- the engine then
does what it does after its own such request (`session-refetch`: it asks
for the session afresh) instead of waiting as long again.  One failure ends
here: a password_command or token_command that fails (run again, it would
prompt again); it is recorded and logged as the engine does.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from jmapsync import log
from jmapsync.errors import JmapsyncError, MethodError, ProtocolError, SecretError, TransportError
from jmapsync.jmap import api, changes, wire
from jmapsync.jmap.types import USING, Session, State
from jmapsync.send import spool
from jmapsync.state import archived
from jmapsync.state.db import StateDB
from jmapsync.state.lock import account_lock
from jmapsync.sync import arrival, stamp
from jmapsync.sync.report import SyncReport

if TYPE_CHECKING:
    import ssl
    import threading

    from jmapsync.config import AccountConfig, Config, Secret

Result = SyncReport | JmapsyncError


class _Engine(Exception):
    """Leave this account to the engine (the reason is for -v debugging)."""


class Handover:
    """What this path learnt, for the engine's pass over the accounts it left."""

    def __init__(self) -> None:
        self.preloading: threading.Thread | None = None  # see preload_engine
        self.secrets: dict[str, Secret] = {}  # account -> password or token
        self.cache_failed: dict[str, str] = {}  # account -> why the cached session failed
        # account -> the first request (calls) and its answer, when the
        # server changed: the engine's first request is the same one.
        self.answers: dict[str, tuple[list[api.Invocation], api.Responses]] = {}

    def preload_engine(self) -> None:
        """Start importing the engine on a thread while the server computes
        its answer (called when the answer is PATIENCE_S late: with
        something to report, Cyrus takes 30-70 ms for 170 changes, with
        nothing ~5 ms).  The import is ~60 ms of work the engine needs
        anyway if the answer hands the account over; the socket wait
        releases the GIL, so it runs meanwhile.  Wasted, on a thread, only
        when a slow answer says "nothing changed".  The caller joins the
        thread (`engine_loaded`) before importing anything itself."""
        if self.preloading is None:
            import threading  # (not before: a pass with nothing new never needs it)

            self.preloading = threading.Thread(
                target=_import_engine, name="jmapsync-preload", daemon=True
            )
            self.preloading.start()

    def engine_loaded(self) -> None:
        """Wait for a preload (if any) to finish: one import at a time."""
        if self.preloading is not None:
            self.preloading.join()


# How late the server's answer must be before the engine is preloaded.
PATIENCE_S = 0.015


def _import_engine() -> None:
    import contextlib
    import importlib

    with contextlib.suppress(Exception):  # the caller's own import reports it
        importlib.import_module("jmapsync.sync.engine")


def sync(config: Config, names: list[str] | None, handover: Handover) -> dict[str, Result]:
    """The accounts this path finished (a report or a failure); the others
    are the engine's."""
    accounts = config.select(names)
    if len({a.name for a in accounts}) != len(accounts):
        return {}  # `--account a --account a`: the engine's business
    done: dict[str, Result] = {}
    for account in accounts:
        result = _account(config, account, handover)
        if result is not None:
            done[account.name] = result
    return done


def _account(config: Config, account: AccountConfig, handover: Handover) -> Result | None:
    state_dir = config.state_dir
    if spool.has_waiting(spool.outbox_dir(state_dir, account.name)):
        return None
    db_path = state_dir / f"{account.name}.sqlite3"
    if not db_path.is_file():
        return None  # never synced
    lg = log.get().bind(account=account.name)
    try:
        with account_lock(state_dir / f"{account.name}.lock"):
            db = StateDB(db_path)
            try:
                return _locked(account, db, handover, lg)
            finally:
                db.close()
    except _Engine as why:
        lg.debug("quick-pass-declined", reason=str(why))
        return None
    except JmapsyncError as exc:  # the lock, the database: the engine says it properly
        lg.debug("quick-pass-declined", reason=str(exc))
        return None


def _locked(account: AccountConfig, db: StateDB, handover: Handover, lg: log.Logger) -> Result:
    started = time.monotonic()
    try:
        email_state, mailbox_state = _unchanged(account, db, handover)
    except SecretError as exc:  # see the module docstring
        db.record_result(False, str(exc))
        log.get().error("sync-failed", account=account.name, error=str(exc), retry=exc.retry.value)
        return exc
    report = SyncReport(account.name, mode="unchanged", email_state=email_state)
    with db.transaction() as conn:
        db.set_meta(conn, "email_state", email_state)
        db.set_meta(conn, "mailbox_state", mailbox_state)
        db.record_result_in(conn, True)
    report.seconds = round(time.monotonic() - started, 3)
    lg.info("sync-done", **report.as_dict())
    return report


def _unchanged(account: AccountConfig, db: StateDB, handover: Handover) -> tuple[State, State]:
    """The new (Email, Mailbox) states when nothing changed on either side;
    _Engine otherwise."""
    if account.direction != "archive" and archived.count(db.conn):
        raise _Engine("files kept by direction = archive")
    if arrival.needs_full(db):
        raise _Engine("arrival times not stamped yet")
    if stamp.retry_downloads(db):
        raise _Engine("downloads that failed wait for a pass")
    email_state, mailbox_state = db.email_state, db.mailbox_state
    session = _cached_session(account, db)
    if not (email_state and mailbox_state) or db.get_meta("account_id") not in (
        None,
        session.account_id,
    ):
        raise _Engine("no states for this account")
    if not stamp.local_unchanged(db, account):
        raise _Engine("a folder changed")
    if wire.proxy_applies(session.api_url) or session.limits.max_calls_in_request < 4:
        raise _Engine("needs the full HTTP client")
    calls = changes.round_calls(
        session.account_id,
        mailbox_state,
        email_state,
        changes.max_changes_of(session.limits.max_objects_in_get),
    )
    body = api.request_body(calls, USING)
    secret = handover.secrets.get(account.name)
    if secret is None:
        secret = handover.secrets[account.name] = account.credentials.resolve()
    headers = {
        "User-Agent": wire.USER_AGENT,
        "Accept-Encoding": "identity",
        **api.auth_header(account.credentials, secret),
        "Content-Type": "application/json",
    }
    what = api.describe(calls)
    try:
        status, _, data = wire.exchange(
            "POST",
            session.api_url,
            headers,
            body,
            timeout_s=account.timeout_s,
            what=what,
            ssl_context=_ssl_context,
            limit=api.MAX_RESPONSE_BYTES,
            while_waiting=(PATIENCE_S, handover.preload_engine),
        )
    except TransportError as exc:
        if exc.fields.get("stalled"):
            handover.cache_failed[account.name] = str(exc)
        raise _Engine(str(exc)) from None
    except ProtocolError as exc:
        raise _Engine(str(exc)) from None
    if not 200 <= status < 300:
        raise _Engine(f"HTTP {status}")
    try:
        r, session_state = api.responses(api.parse_json(data, what), calls)
        if session_state is not None and session_state != session.state:
            raise _Engine("the session changed")
        handover.answers[account.name] = (calls, r)
        mc = changes.parse_changes(r, "mc", "Mailbox")
        ec = changes.parse_changes(r, "ec", "Email")
        got = [r.result(c).get("list") for c in ("e1", "e2")]
    except (ProtocolError, MethodError) as exc:
        raise _Engine(str(exc)) from None
    if mc.has_more or changes.tree_changed(mc):
        raise _Engine("the mailboxes changed")
    if ec.has_more or ec.created or ec.updated or ec.destroyed:
        raise _Engine("the server changed")
    if got != [[], []]:
        raise _Engine("the server changed")
    del handover.answers[account.name]  # nothing for the engine to do with it
    return ec.new_state, mc.new_state


def _cached_session(account: AccountConfig, db: StateDB) -> Session:
    """The session remote.read_changes would take from the cache."""
    raw = db.get_meta("session")
    if raw is None:
        raise _Engine("no cached session")
    entry: dict[str, Any] = json.loads(raw)
    if entry.get("for") != account.session_url or entry.get("user") != account.credentials.username:
        raise _Engine("the cached session is another's")
    try:
        return Session.parse(entry["data"], entry["url"])
    except (ProtocolError, KeyError) as exc:
        raise _Engine(f"cached session: {exc}") from None


_ssl: list[ssl.SSLContext] = []


def _ssl_context() -> ssl.SSLContext:
    """The system trust store, as jmap/http.py builds it (on first https use)."""
    if not _ssl:
        import ssl

        _ssl.append(ssl.create_default_context())
    return _ssl[0]
