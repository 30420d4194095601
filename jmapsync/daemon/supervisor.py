"""The daemon process: accounts, signals, schedules, systemd, the status file.

    Daemon.run()
      ├── AccountRunner per account (account.py): passes, push, watcher, backoff
      ├── AsyncIOScheduler (APScheduler 3): full reconcile every
      │   full_sync_interval, tmp/ cleanup every hour
      ├── signals: SIGTERM / SIGINT stop, SIGHUP reloads the config
      ├── sd_notify: READY=1 once every account tried its first pass,
      │   STATUS= on changes, WATCHDOG=1 when WatchdogSec is set
      └── <state_dir>/daemon-status.json for `jmapsync status`

Everything runs on one asyncio loop in one thread (watchdog's observer
threads only hand events over).  A failing account is that runner's business:
nothing here ever waits for one account to succeed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from jmapsync import log
from jmapsync.config import AccountConfig, Config, load
from jmapsync.daemon.account import AccountRunner
from jmapsync.daemon.notify import notify, watchdog_interval
from jmapsync.daemon.status import remove_status, status_path, write_status
from jmapsync.daemon.tmpclean import clean_tmp
from jmapsync.errors import ConfigError
from jmapsync.state.lock import PidLock

# SIGTERM: a running pass gets this long to finish before it is cancelled;
# the rest of systemd's 10 s is for closing sockets and threads.
STOP_GRACE_S = 2.0
# Status file and STATUS= line: written at most this often.
STATUS_DELAY_S = 0.1
TMP_CLEAN_INTERVAL_S = 3600.0


def _global_part(config: Config) -> tuple[Any, ...]:
    """What every runner depends on besides its own account section."""
    return (config.state_dir, config.poll_interval_s)


class Daemon:
    """`jmapsync daemon`: returns the exit code (0 after SIGTERM / SIGINT)."""

    def __init__(self, config: Config, names: list[str] | None = None) -> None:
        self.config = config
        self.names = names
        self.log = log.get()
        self.runners: dict[str, AccountRunner] = {}
        self._stop = asyncio.Event()
        self._status_handle: asyncio.TimerHandle | None = None
        self._reload_lock = asyncio.Lock()
        self._ready_sent = False
        self._started = time.time()
        self._background: set[asyncio.Task[Any]] = set()
        self._scheduler: Any = None

    # -- run -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload()))
        accounts = self.config.select(self.names)
        self.log.info(
            "daemon-start",
            pid=os.getpid(),
            accounts=[a.name for a in accounts],
            config=str(self.config.path),
        )
        self._start_scheduler()
        for account in accounts:
            self._add(account)
        self._spawn(self._announce_ready(list(self.runners.values())))
        interval = watchdog_interval()
        if interval is not None:
            self._spawn(self._watchdog(interval))
        self._write_status()
        await self._stop.wait()
        await self._shutdown()
        return 0

    def _spawn(self, coro: Any) -> None:
        """A background task we keep a reference to (asyncio keeps only weak ones)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_stop_signal(self, sig: int) -> None:
        self.log.info("daemon-stop", signal=signal.Signals(sig).name)
        notify("STOPPING=1", "STATUS=stopping")
        self._stop.set()

    async def _shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)  # does not wait for running jobs
        await asyncio.gather(*(r.stop(STOP_GRACE_S) for r in self.runners.values()))
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._status_handle is not None:
            self._status_handle.cancel()
        remove_status(status_path(self.config.state_dir), os.getpid())
        self.log.info("daemon-stopped")

    # -- accounts ------------------------------------------------------------------

    def _add(self, account: AccountConfig) -> None:
        if self._stop.is_set():
            return  # a reload racing with SIGTERM
        runner = AccountRunner(self.config, account, on_status=self._status_soon)
        self.runners[account.name] = runner
        runner.start()

    async def _remove(self, name: str) -> None:
        runner = self.runners.pop(name)
        await runner.stop(STOP_GRACE_S)

    async def _reload(self) -> None:
        """SIGHUP: read the config again; start added accounts, stop removed
        ones, restart changed ones.  A broken file changes nothing (the error
        is logged) -- a typo must not stop a running mirror."""
        async with self._reload_lock:
            try:
                new = load(self.config.path)
                accounts = {a.name: a for a in new.select(self.names)}
            except ConfigError as exc:
                self.log.error(  # noqa: TRY400 - the message is all; no traceback
                    "reload-failed", error=str(exc), action="keeping the old config"
                )
                return
            restart_all = _global_part(new) != _global_part(self.config)
            old = {name: r.account for name, r in self.runners.items()}
            removed = [n for n in old if n not in accounts]
            changed = [n for n in old if n in accounts and (restart_all or accounts[n] != old[n])]
            added = [n for n in accounts if n not in old]
            self.log.info("reload", added=added, removed=removed, changed=changed)
            await asyncio.gather(*(self._remove(n) for n in removed + changed))
            full_changed = new.full_sync_interval_s != self.config.full_sync_interval_s
            self.config = new
            for name in changed + added:
                self._add(accounts[name])
            if full_changed and self._scheduler is not None:
                self._scheduler.reschedule_job(
                    "full", trigger="interval", seconds=new.full_sync_interval_s
                )
            self._status_soon()

    # -- schedules -----------------------------------------------------------------

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        # Its INFO/WARNING lines (job added, run missed) are not ours to show
        # in a JSON log; errors still come through.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        # coalesce: after a suspend, one reconcile, not one per missed interval
        options = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        scheduler.add_job(
            self._full_reconcile,
            "interval",
            seconds=self.config.full_sync_interval_s,
            id="full",
            **options,
        )
        scheduler.add_job(
            self._clean_tmp,
            "interval",
            seconds=TMP_CLEAN_INTERVAL_S,
            id="tmp",
            next_run_time=None,
            **options,
        )
        scheduler.start()
        # first tmp/ cleanup a minute after start, not during the first passes
        scheduler.modify_job("tmp", next_run_time=_in_seconds(60))
        self._scheduler = scheduler

    async def _full_reconcile(self) -> None:
        for runner in self.runners.values():
            runner.request_full()

    async def _clean_tmp(self) -> None:
        for runner in list(self.runners.values()):
            root = runner.account.maildir
            removed = await asyncio.to_thread(clean_tmp, root)
            if removed:
                self.log.info("tmp-cleaned", account=runner.account.name, files=len(removed))

    # -- systemd and status --------------------------------------------------------

    async def _announce_ready(self, runners: list[AccountRunner]) -> None:
        """READY=1 once every account has finished its first pass (good or
        failed: an account with a wrong password must not keep the unit in
        "activating" for ever -- its failure shows in STATUS= and the logs)."""
        await asyncio.gather(*(r.first_pass_done.wait() for r in runners))
        self._ready_sent = True
        notify("READY=1", "STATUS=" + self.status_line())
        self.log.info("daemon-ready", accounts=len(runners))

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 while the event loop turns: a loop stuck in a blocking
        call stops pinging and systemd restarts us (Restart=on-failure)."""
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def status_line(self) -> str:
        parts = []
        for name, r in sorted(self.runners.items()):
            st = r.status
            state = st.sync if st.sync != "idle" else st.connection
            parts.append(f"{name}: {st.transport} {state}")
        return "; ".join(parts) or "no accounts"

    def _status_soon(self) -> None:
        if self._status_handle is None and not self._stop.is_set():
            loop = asyncio.get_running_loop()
            self._status_handle = loop.call_later(STATUS_DELAY_S, self._write_status)

    def _write_status(self) -> None:
        self._status_handle = None
        data = {
            "pid": os.getpid(),
            "started_at": self._started,
            "updated_at": time.time(),
            "config": str(self.config.path),
            "ready": self._ready_sent,
            "accounts": {n: r.status.as_dict() for n, r in sorted(self.runners.items())},
        }
        try:
            write_status(status_path(self.config.state_dir), data)
        except OSError as exc:
            self.log.warning("status-write-failed", error=str(exc))
        if self._ready_sent:
            notify("STATUS=" + self.status_line())


def _in_seconds(seconds: float) -> Any:
    import datetime as dt

    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def _state_dir_lock(state_dir: Path) -> PidLock:
    """One daemon per state_dir: a second one would fight the first over
    every account lock (each retrying with backoff for ever) and over the
    status file.  flock: released by the kernel when the process dies."""
    return PidLock(
        state_dir / "daemon.lock",
        f"another jmapsync daemon (pid {{pid}}) uses the state directory {state_dir}",
    )


def run(config: Config, names: list[str] | None = None) -> int:
    """Entry point for the CLI."""
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _state_dir_lock(config.state_dir):
        return asyncio.run(Daemon(config, names).run())
