"""post_sync_command in the daemon: one run for passes close together.

The daemon may run a pass every second while mail streams in; `notmuch new`
after each would index the same directories over and over.  The rule:

- a pass that changed the Maildir adds its counts and (re)arms a timer;
- the hook runs once no such pass has come for `post_sync_delay` seconds
  (default 5), and at the latest 60 s after the first pass it waits for (a
  steady trickle of mail still reaches the indexer once a minute);
- that run gets the counts summed over the passes it covers
  (JMAPSYNC_PASSES says how many);
- one run at a time per account: passes that end while the hook runs are
  covered by the next run, after it;
- at shutdown a waiting run starts at once, and a run in progress may
  finish; together they get STOP_WAIT_S, then the hook is stopped (SIGTERM,
  then SIGKILL), so SIGTERM still ends the daemon within systemd's 10 s.
"""

from __future__ import annotations

import asyncio

from jmapsync import hooks, log
from jmapsync.config import AccountConfig, Config
from jmapsync.daemon.debounce import Debouncer
from jmapsync.sync.report import SyncReport

MAX_WAIT_S = 60.0
STOP_WAIT_S = 5.0


class PostSyncHook:
    """Collects the daemon's passes for one account and runs its hook."""

    def __init__(self, config: Config, account: AccountConfig) -> None:
        self.config = config
        self.account = account
        self.log = log.get().bind(account=account.name)
        delay = account.post_sync_delay_s
        self._debouncer = Debouncer(self._due, quiet=delay, max_wait=max(MAX_WAIT_S, delay))
        self._totals = hooks.Totals()
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._stop_timeout: float | None = None

    def add(self, report: SyncReport) -> None:
        """A pass ended well; count it if it changed the Maildir."""
        if not hooks.has_local_changes(report):
            return
        self._totals.add(report)
        self._debouncer.hint()

    def _due(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # after the run in progress
            return
        self._task = asyncio.create_task(self._runs(), name=f"post-sync:{self.account.name}")

    async def _runs(self) -> None:
        while True:
            self._again = False
            totals, self._totals = self._totals, hooks.Totals()
            if totals.passes:
                try:
                    await hooks.run(self.config, self.account, totals, timeout=self._stop_timeout)
                except Exception as exc:  # never the daemon's end
                    self.log.exception("post-sync-crashed", error=type(exc).__name__)
            if not self._again:
                return

    async def stop(self) -> None:
        """Run what waits, let a run finish; at most STOP_WAIT_S in all."""
        self._debouncer.cancel()
        self._stop_timeout = min(self.account.post_sync_timeout_s, STOP_WAIT_S)
        if self._totals.passes:
            self._due()
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if not done:
            self.log.warning("post-sync-stopped", reason="the daemon stops")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
