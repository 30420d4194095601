"""One account inside the daemon: when to run a pass, and keeping push alive.

Three sources ask for a pass, each with a reason: the push channel
("connect" when it (re)opens, "remote" on a StateChange), the Maildir
watcher ("local", after a short debounce) and timers ("start", "poll",
"full", "retry").  Requests coalesce: at most one pass runs per account, and
everything asked while it runs leads to ONE more pass after it.

A pass is `Engine.sync()` -- a complete two-way check on its own (remote
changes since the stored state, every folder's directory times), so a hint
that was lost, duplicated or caused by our own writes costs latency or one
cheap pass, never correctness.  Echo: a StateChange whose states equal the
ones our last pass ended with (the engine reports the Email state after its
own writes) needs no pass at all; nor do Maildir events after which no
folder's time differs from what the last pass recorded (its own renames).

Failures never leave this class: a failing pass is retried with exponential
backoff and jitter, a dropped push channel is reopened the same way, and
other accounts never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from jmapsync import log
from jmapsync.config import AccountConfig, Config, Secret
from jmapsync.daemon.backoff import Backoff, rate_limit_delay
from jmapsync.daemon.debounce import Debouncer
from jmapsync.daemon.decide import change_counts, is_echo, transport_order
from jmapsync.daemon.posthook import PostSyncHook
from jmapsync.daemon.status import AccountStatus
from jmapsync.daemon.watch import MaildirWatcher
from jmapsync.errors import (
    AuthError,
    JmapsyncError,
    PushUnavailable,
    RateLimited,
    SecretError,
    TransportError,
)
from jmapsync.jmap import push
from jmapsync.jmap.client import JmapClient
from jmapsync.maildir.tree import make_dirs
from jmapsync.send.command import flush_in_daemon
from jmapsync.send.spool import has_waiting, outbox_dir
from jmapsync.state.db import StateDB
from jmapsync.sync import stamp
from jmapsync.sync.engine import Engine

# Local events: a pass this long after the last event of a burst...
DEBOUNCE_QUIET_S = 0.15
# ...and at the latest this long after its first event.
DEBOUNCE_MAX_S = 1.0
# A push channel counts as healthy (its backoff starts again at 1 s) only
# after staying open this long: a server that accepts and at once drops the
# connection must not get a reconnect -- and a pass -- every second.
PUSH_STABLE_S = 30.0
# Passes the server refused with "slow down" (HTTP 429, rateLimit) that are
# retried quietly -- as long as it asked -- before the account shows as failed.
RATE_LIMIT_GRACE = 3


class AccountRunner:
    """Keeps one account mirrored until `stop()`."""

    def __init__(
        self,
        config: Config,
        account: AccountConfig,
        *,
        on_status: Callable[[], None] = lambda: None,
        pass_backoff: Backoff | None = None,
        push_backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.account = account
        self.status = AccountStatus(account.name, account.push)
        self.first_pass_done = asyncio.Event()  # tried once, with or without success
        self.log = log.get().bind(account=account.name)
        self._on_status = on_status
        self._pass_backoff = pass_backoff or Backoff(base=1.0, cap=300.0)
        self._push_backoff = push_backoff or Backoff(base=1.0, cap=60.0)
        self._wanted = asyncio.Event()
        self._reasons: set[str] = set()
        self._secret: Secret | None = None
        self._known: dict[str, str] = {}  # type -> state our last pass ended with
        self._pushed: dict[str, str] = {}  # type -> latest pushed state
        self._push_state: str | None = None  # RFC 8887 resume point
        self._push_opened_at: float | None = None
        self._full_due = False
        self._retry: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pass_task: asyncio.Task[None] | None = None
        self._watcher: MaildirWatcher | None = None
        self._debouncer: Debouncer | None = None
        self._stopping = False
        self._rate_limited = 0  # consecutive passes refused with "slow down"
        self._typeless_noted = False
        self._post_sync: PostSyncHook | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the loops; the first pass runs at once."""
        if self.account.post_sync_command:
            self._post_sync = PostSyncHook(self.config, self.account)
        self.request("start")
        self._tasks = [
            asyncio.create_task(self._sync_loop(), name=f"sync:{self.account.name}"),
            asyncio.create_task(self._push_loop(), name=f"push:{self.account.name}"),
            asyncio.create_task(self._poll_loop(), name=f"poll:{self.account.name}"),
        ]

    async def stop(self, grace: float) -> None:
        """Let a running pass finish for up to `grace` seconds, then cancel it.

        Cancelling a pass is safe: it stops at an await between two actions,
        each action (a rename, an atomic delivery) is complete or not done,
        and the state it did not commit is recomputed by the next pass from
        what is on disk -- a large first sync resumes where it stopped."""
        self._stopping = True
        if self._retry is not None:
            self._retry.cancel()
        if self._debouncer is not None:
            self._debouncer.cancel()
        if self._watcher is not None:
            # joins the observer thread: not on the loop, other accounts stop meanwhile
            await asyncio.to_thread(self._watcher.stop)
        running = self._pass_task
        if running is not None and not running.done():
            self.log.info("stop-waiting-for-pass", grace=grace)
            await asyncio.wait({running}, timeout=grace)
            if not running.done():
                self.log.warning("stop-cancels-pass", reason="grace over; the next start resumes")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._post_sync is not None:
            await self._post_sync.stop()
        self.first_pass_done.set()  # READY=1 must not wait for an account that is gone
        self.status.connection = "stopped"
        self._changed()

    def request(self, reason: str) -> None:
        """Ask for a pass (coalesced with every other request until it starts)."""
        if self._stopping:
            return
        self._reasons.add(reason)
        self._wanted.set()
        if not self.status.pass_pending:
            self.status.pass_pending = True
            self._changed()

    def request_full(self) -> None:
        """The periodic safety net: the next pass reads the whole account."""
        self._full_due = True
        self.request("full")

    def _changed(self) -> None:
        if self._debouncer is not None:
            self.status.pending_local_events = self._debouncer.hints
        self._on_status()

    # -- passes --------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            await self._wanted.wait()
            if self._stopping:
                return  # stop() is waiting for the pass that just ended, not for a new one
            self._wanted.clear()
            reasons, self._reasons = self._reasons, set()
            self.status.pass_pending = False
            if reasons == {"remote"} and is_echo(self._pushed, self._known):
                # our own write, or a change an earlier pass already fetched
                self.log.debug("push-covered", pushed=self._pushed)
                self._changed()
                continue
            if reasons == {"local"} and self._local_unchanged():
                # our own pass's renames and deliveries: it recorded them
                self.log.debug("local-covered")
                self._changed()
                continue
            self._pass_task = asyncio.create_task(self._one_pass(sorted(reasons)))
            await self._pass_task
            self._pass_task = None

    async def _get_secret(self) -> Secret:
        """The secret, running password_command / token_command only when we
        have none yet or the server refused the last one (rotated password,
        expired token)."""
        if self._secret is None:
            self._secret = await asyncio.to_thread(self.account.credentials.resolve)
        return self._secret

    async def _one_pass(self, reasons: list[str]) -> None:
        self.status.sync = "syncing"
        self._changed()
        # Pushed before the pass began: the pass covers these, whatever they were.
        covered = dict(self._pushed)
        try:
            secret = await self._get_secret()
            # The outbox first (`jmapsync send` queued while offline): this pass
            # then brings the Sent copies.  A reconnect runs a pass, so this too.
            await flush_in_daemon(self.config, self.account, lambda a: JmapClient(a, secret=secret))
            if self._full_due:
                self.log.info("full-reconcile")
            engine = Engine(
                self.config,
                self.account,
                client_factory=lambda a: JmapClient(a, secret=secret),
                # A full read compares every Email with every file, catching
                # anything */changes or a lost event missed.
                full=self._full_due,
            )
            report = await engine.sync()
            # And after: a message queued during the pass (or while the server
            # came back: the pass's requests are retried, the outbox's were
            # not) goes now, not at the next pass -- poll_interval away when
            # idle.  Costs one directory listing when nothing is queued.
            await flush_in_daemon(self.config, self.account, lambda a: JmapClient(a, secret=secret))
        except JmapsyncError as exc:
            self._pass_failed(exc, reasons)
            return
        except Exception as exc:  # a bug in one account must not stop the others
            self.log.exception("pass-crashed", error_type=type(exc).__name__)
            self._pass_failed(JmapsyncError(f"internal error: {type(exc).__name__}"), reasons)
            return
        finally:
            self.first_pass_done.set()
        self._full_due = False
        self._rate_limited = 0
        self._pass_backoff.reset()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        now = time.time()
        st = self.status
        st.sync, st.error, st.retry_at = "idle", None, None
        st.passes += 1
        st.last_pass_at, st.last_pass_seconds = now, report.seconds
        changes = change_counts(report)
        if changes:
            st.last_change_at, st.last_change = now, changes
        if self._post_sync is not None:
            self._post_sync.add(report)
        if report.email_state is not None:
            self._known["Email"] = report.email_state
        self._known.update(self._stored_states())
        for t, s in covered.items():
            if self._pushed.get(t) == s:
                del self._pushed[t]  # left: only what was pushed during the pass
        self.log.info("pass", reasons=reasons, mode=report.mode, seconds=report.seconds)
        self._start_watcher()
        self._changed()

    def _pass_failed(self, exc: JmapsyncError, reasons: list[str]) -> None:
        if isinstance(exc, AuthError | SecretError):
            self._secret = None  # the command runs again: it may hand out a new one
        if isinstance(exc, RateLimited):
            # The server is busy, not broken: wait as long as it asked, and do
            # not call the account failed for the first few of these.
            self._rate_limited += 1
            delay = rate_limit_delay(exc.retry_after, self._pass_backoff)
        else:
            delay = self._pass_backoff.next_delay()
        self.status.retry_at = time.time() + delay
        if 0 < self._rate_limited <= RATE_LIMIT_GRACE and isinstance(exc, RateLimited):
            self.status.sync = "rate-limited"
            self.log.info("pass-rate-limited", error=str(exc), retry_in=round(delay, 2))
        else:
            self.status.sync, self.status.error = "backoff", str(exc)
            self.log.warning(
                "pass-failed",
                error=str(exc),
                retry=exc.retry.value,
                retry_in=round(delay, 2),
                reasons=reasons,
            )
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(delay, self.request, "retry")
        self._changed()

    def _local_unchanged(self) -> bool:
        """Did no folder's time move since the last pass recorded them (the
        engine's own "unchanged" test, sync/stamp.py)?  Then the events were
        the pass's own writes, or changed nothing that shows.  False when
        the database cannot be read: one pass too many, no harm.  False
        when a message waits in the outbox (its watch shares the hint): the
        pass sends it."""
        if has_waiting(outbox_dir(self.config.state_dir, self.account.name)):
            return False
        try:
            db = StateDB.for_account(self.config.state_dir, self.account.name)
            try:
                return stamp.local_unchanged(db, self.account)
            finally:
                db.close()
        except (sqlite3.Error, JmapsyncError, OSError, ValueError) as exc:
            self.log.warning("state-read-failed", error=str(exc))
            return False

    def _stored_states(self) -> dict[str, str]:
        """The Mailbox state the engine recorded (its report names only the
        Email state).  Unknown when the database cannot be read: then a pushed
        Mailbox state is never taken for an echo -- one pass too many, no harm."""
        try:
            db = StateDB.for_account(self.config.state_dir, self.account.name)
            try:
                ms = db.mailbox_state
            finally:
                db.close()
        except (sqlite3.Error, JmapsyncError) as exc:
            self.log.warning("state-read-failed", error=str(exc))
            return {}
        return {"Mailbox": ms} if ms else {}

    # -- local changes -------------------------------------------------------------

    def _start_watcher(self) -> None:
        """Watch the Maildir once it exists (after the first good pass)."""
        if self._watcher is not None or self._stopping:
            return
        self._debouncer = Debouncer(
            lambda: self.request("local"), quiet=DEBOUNCE_QUIET_S, max_wait=DEBOUNCE_MAX_S
        )
        debouncer = self._debouncer

        def hint() -> None:
            debouncer.hint()
            self._changed()

        queued = outbox_dir(self.config.state_dir, self.account.name) / "new"
        also: tuple[Path, ...] = (queued,)
        try:
            make_dirs(queued)  # `send` finds it there; 0700 like the rest
        except OSError:
            also = ()  # no outbox watch: the next pass sends the queue
        self._watcher = MaildirWatcher(self.account.maildir, hint, also)
        try:
            self._watcher.start()
        except OSError as exc:  # e.g. inotify watch limit reached
            self.log.warning("watch-failed", error=str(exc), fallback="poll_interval")
            self._watcher = None

    # -- remote changes ------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """The backstop: a pass every poll_interval even while push works
        (a push channel can die silently; the pass is cheap when idle)."""
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            self.request("poll")

    async def _push_loop(self) -> None:
        order = transport_order(self.account.push)
        unavailable: set[str] = set()
        if not order:
            self.status.transport, self.status.connection = "poll", "polling"
            self._changed()
            return
        while True:
            transport: push.Transport | None = None
            try:
                secret = await self._get_secret()
                async with JmapClient(self.account, secret=secret) as client:
                    self.status.connection = "connecting"
                    self._changed()
                    session = await client.connect()
                    offered = [
                        t for t in push.transports(session) if t in order and t not in unavailable
                    ]
                    if not offered:
                        self.log.info("push-unavailable", push=self.account.push, using="poll")
                        self.status.transport, self.status.connection = "poll", "polling"
                        self._changed()
                        return
                    transport = offered[0]
                    self.status.transport = transport
                    events = push.open_channel(transport, client, session, self._push_state)
                    async with contextlib.aclosing(events):
                        async for event in events:
                            if isinstance(event, push.Opened):
                                self._push_opened(event)
                            else:
                                self._on_state_change(event, session.account_id)
            except PushUnavailable as exc:
                self.log.info("push-transport-unavailable", transport=transport, error=str(exc))
                self.status.push_error = str(exc)
                if transport is not None:
                    unavailable.add(transport)
                continue
            except Exception as exc:  # the channel is retried whatever broke it
                if isinstance(exc, AuthError | SecretError):
                    self._secret = None
                if not isinstance(exc, JmapsyncError):
                    self.log.exception("push-crashed", error_type=type(exc).__name__)
                opened, self._push_opened_at = self._push_opened_at, None
                stable = opened is not None and time.monotonic() - opened >= PUSH_STABLE_S
                if stable and isinstance(exc, TransportError):
                    # A long-lived channel the server ended (Cyrus closes an
                    # event stream every 300 s): routine, reopen at once.
                    self._push_backoff.reset()
                    self.log.info("push-reopen", transport=transport, reason=str(exc))
                    continue
                if stable:
                    self._push_backoff.reset()
                delay = self._push_backoff.next_delay()
                self.status.connection, self.status.push_error = "reconnecting", str(exc)
                self._changed()
                self.log.warning(
                    "push-lost", transport=transport, error=str(exc), retry_in=round(delay, 2)
                )
                await asyncio.sleep(delay)

    def _push_opened(self, event: push.Opened) -> None:
        self._push_opened_at = time.monotonic()
        self.status.connection, self.status.push_error = "connected", None
        self.log.info("push-connected", transport=event.transport)
        # Push reports changes from now on only: catch up on what came before.
        self.request("connect")

    def _on_state_change(self, change: push.StateChange, account_id: str) -> None:
        if change.typeless and not self._typeless_noted:
            self._typeless_noted = True
            self.log.info("push-typeless", note="state events without @type (as Fastmail's)")
        if change.push_state is not None:
            self._push_state = change.push_state
        states = {t: s for t, s in change.states(account_id).items() if t in push.PUSH_TYPES}
        if not states:
            return
        self._pushed.update(states)
        if is_echo(states, self._known):
            self.log.debug("push-echo", states=states)
            return
        self.log.debug("push-change", states=states)
        self.request("remote")
