"""post_sync_command: the user's command after a pass that changed the Maildir.

The usual use is telling an indexer (`notmuch new`, `mu index`) or the
desktop (`notify-send`) that mail arrived.  The rules:

- It runs only after a pass that changed something in the Maildir (one of
  `LOCAL` is non-zero): a pass with nothing new, or one that only sent local
  changes to the server, runs nothing.  A pass that failed runs nothing
  either (its report is lost with it).
- No shell: the command is split like password_command (shlex).  Who wants
  one writes `sh -c '...'`.
- What the pass did travels in JMAPSYNC_* environment variables (`ENV`, and
  `COUNTERS` derived from SyncReport), on top of jmapsync's own environment.
- Bounded by post_sync_timeout: then SIGTERM to the hook's process group
  (a shell's children too), SIGKILL 2 s later.
- Its stdout and stderr go into the log, one event per line, without
  control characters or terminal escapes, capped in length and number.
- Its result (exit status, timeout, could not start) is kept in the
  account's state database for `jmapsync status`.  Whatever it does, the sync
  it follows has already succeeded: a failing hook never fails the sync.

The daemon runs the same `run()` through daemon/posthook.py, debounced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from jmapsync import log
from jmapsync.config import AccountConfig, Config
from jmapsync.errors import JmapsyncError
from jmapsync.state.db import StateDB
from jmapsync.sync.report import SyncReport

if TYPE_CHECKING:
    from jmapsync.log import Logger

# SyncReport counter -> (environment variable, what it counts).  Every change
# counter of SyncReport is listed (tests/unit/test_post_sync_parts.py checks, and that
# config.example.ini documents each variable), so a counter added to the
# report cannot go missing here.  `planned` and `foreign` are not changes.
COUNTERS: dict[str, tuple[str, str]] = {
    "downloaded": ("JMAPSYNC_NEW", "messages downloaded, i.e. new in the Maildir"),
    "bytes": ("JMAPSYNC_BYTES", "bytes downloaded"),
    "renamed": ("JMAPSYNC_RENAMED", "message files renamed: flag changes and moves"),
    "moved": ("JMAPSYNC_MOVED", "of the renamed files, those moved to another folder"),
    "linked": ("JMAPSYNC_LINKED", "hard links added: a message now in one more mailbox"),
    "removed": ("JMAPSYNC_REMOVED", "message files removed (deleted or moved away remotely)"),
    "folders_created": ("JMAPSYNC_FOLDERS_CREATED", "folders created"),
    "folders_moved": ("JMAPSYNC_FOLDERS_MOVED", "folders moved (a renamed mailbox)"),
    "folders_removed": ("JMAPSYNC_FOLDERS_REMOVED", "folders removed"),
    "rewritten": ("JMAPSYNC_REWRITTEN", "files rewritten in the other line_endings form"),
    "adopted": ("JMAPSYNC_ADOPTED", "copies of known messages renamed to jmapsync's names"),
    "superseded": ("JMAPSYNC_SUPERSEDED", "local copies replaced by the server's bytes"),
    "imported": ("JMAPSYNC_IMPORTED", "new local messages uploaded (their files renamed)"),
    "pushed": ("JMAPSYNC_PUSHED", "Emails whose local flag or folder change went to the server"),
    "destroyed": ("JMAPSYNC_DESTROYED", "Emails destroyed on the server (deleted in Trash)"),
    "mailboxes_created": ("JMAPSYNC_MAILBOXES_CREATED", "mailboxes created on the server"),
    "mailboxes_destroyed": ("JMAPSYNC_MAILBOXES_DESTROYED", "mailboxes destroyed on the server"),
}
# The counters that mean "the Maildir changed": the hook runs when one is > 0.
# (An import renames the local file to the Email id; notmuch sees a rename.)
LOCAL = frozenset(
    {
        "downloaded",
        "renamed",
        "linked",
        "removed",
        "folders_created",
        "folders_moved",
        "folders_removed",
        "rewritten",
        "adopted",
        "superseded",
        "imported",
    }
)
# The other variables.
ENV: dict[str, str] = {
    "JMAPSYNC_ACCOUNT": "the account's name (its [account NAME] section)",
    "JMAPSYNC_MAILDIR": "the account's Maildir root",
    "JMAPSYNC_CONFIG": "the config file",
    "JMAPSYNC_PASSES": "passes this run covers: 1 after `jmapsync sync`; the daemon sums"
    " several passes into one run",
    "JMAPSYNC_MODE": "full if one of those passes read the whole account, else incremental",
    "JMAPSYNC_FLAGS_CHANGED": "renamed files that stayed in their folder (flag changes)",
    "JMAPSYNC_WARNINGS": "warnings of the passes (see the log)",
    "JMAPSYNC_SECONDS": "seconds the passes took",
}

KILL_GRACE_S = 2.0  # after SIGTERM at the timeout, before SIGKILL
MAX_LINES = 200  # per stream and run: a chatty hook must not flood the journal
MAX_LINE_CHARS = 500
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
META_KEY = "post_sync"


def has_local_changes(report: SyncReport) -> bool:
    return any(getattr(report, name) for name in LOCAL)


@dataclass
class Totals:
    """What one or more passes did, summed for one run of the hook."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    passes: int = 0
    full: bool = False
    warnings: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, report: SyncReport) -> Totals:
        totals = cls()
        totals.add(report)
        return totals

    def add(self, report: SyncReport) -> None:
        for name in COUNTERS:
            self.counts[name] += int(getattr(report, name))
        self.passes += 1
        self.full = self.full or report.mode == "full"
        self.warnings += len(report.warnings)
        self.seconds += report.seconds


def environment(config: Config, account: AccountConfig, totals: Totals) -> dict[str, str]:
    """The JMAPSYNC_* variables for one run (added to jmapsync's environment)."""
    env = {var: str(totals.counts[name]) for name, (var, _) in COUNTERS.items()}
    env |= {
        "JMAPSYNC_ACCOUNT": account.name,
        "JMAPSYNC_MAILDIR": str(account.maildir),
        "JMAPSYNC_CONFIG": str(config.path or ""),
        "JMAPSYNC_PASSES": str(totals.passes),
        "JMAPSYNC_MODE": "full" if totals.full else "incremental",
        "JMAPSYNC_FLAGS_CHANGED": str(totals.counts["renamed"] - totals.counts["moved"]),
        "JMAPSYNC_WARNINGS": str(totals.warnings),
        "JMAPSYNC_SECONDS": f"{totals.seconds:.3f}",
    }
    return env


@dataclass(frozen=True)
class HookResult:
    """One run, as `jmapsync status` shows it."""

    ok: bool
    detail: str  # "exit status 0", "exit status 3", "timed out after 300 s", ...
    seconds: float
    at: float  # time.time() when it ended


def clean(raw: bytes) -> str:
    """A line of the hook's output fit for a log line: no terminal escapes,
    no control characters (a hook must not forge log lines or recolour a
    terminal), capped."""
    text = _ESCAPES.sub("", raw.decode("utf-8", "replace"))
    text = _CONTROLS.sub("", text).rstrip()
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + "..."
    return text


async def _relay(stream: asyncio.StreamReader | None, name: str, lg: Logger) -> None:
    """Log the stream line by line as it comes (a slow hook's output is seen
    before it ends); read in chunks, so an endless line cannot grow memory."""
    if stream is None:  # pragma: no cover - always a pipe here
        return
    buf = b""
    lines = 0

    def emit(raw: bytes) -> None:
        nonlocal lines
        text = clean(raw)
        if not text:
            return
        lines += 1
        if lines <= MAX_LINES:
            lg.info("post-sync-output", stream=name, line=text)

    while chunk := await stream.read(65536):
        buf += chunk
        *done, buf = buf.split(b"\n")
        for raw in done:
            emit(raw)
        if len(buf) > MAX_LINE_CHARS * 4:
            emit(buf)
            buf = b""
    if buf:
        emit(buf)
    if lines > MAX_LINES:
        lg.info("post-sync-output-cut", stream=name, lines_not_logged=lines - MAX_LINES)


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        # No such group (the hook made its own session): at least the hook.
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the hook's process group; SIGKILL what is left after a grace."""
    _signal_group(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), KILL_GRACE_S)
    except TimeoutError:
        _signal_group(proc, signal.SIGKILL)
        await proc.wait()


async def run(
    config: Config, account: AccountConfig, totals: Totals, *, timeout: float | None = None
) -> HookResult:
    """Run the account's post_sync_command once; never raises for the hook's
    own failures (they are the result).  `timeout` overrides the account's."""
    command = account.post_sync_command
    if command is None:  # pragma: no cover - callers check
        raise ValueError("no post_sync_command")
    limit = account.post_sync_timeout_s if timeout is None else timeout
    lg = log.get().bind(account=account.name)
    argv = shlex.split(command)
    env = {**os.environ, **environment(config, account, totals)}
    # Only the program: its arguments may hold anything (a URL with a token).
    lg.info("post-sync-run", program=argv[0], passes=totals.passes)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: the timeout ends all of it
        )
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        result = HookResult(False, f"could not start {argv[0]}: {why}", 0.0, time.time())
    else:
        readers = [
            asyncio.create_task(_relay(proc.stdout, "stdout", lg)),
            asyncio.create_task(_relay(proc.stderr, "stderr", lg)),
        ]
        try:
            try:
                rc: int | None = await asyncio.wait_for(proc.wait(), limit)
            except TimeoutError:
                rc = None
                await _end(proc)
        except asyncio.CancelledError:  # the daemon stops: the hook goes with it
            await asyncio.shield(_end(proc))
            raise
        finally:
            # A child that escaped the group may hold the pipes open: do not
            # wait for it for ever.
            await asyncio.wait(readers, timeout=1.0)
            for r in readers:
                r.cancel()
        seconds = round(time.monotonic() - started, 3)
        if rc is None:
            result = HookResult(False, f"timed out after {limit:g} s", seconds, time.time())
        elif rc < 0:
            result = HookResult(False, f"killed by signal {-rc}", seconds, time.time())
        else:
            result = HookResult(rc == 0, f"exit status {rc}", seconds, time.time())
    if result.ok:
        lg.info("post-sync-done", result=result.detail, seconds=result.seconds)
    else:
        lg.warning("post-sync-failed", result=result.detail, seconds=result.seconds)
    record(config, account, result, lg)
    return result


async def after_pass(config: Config, account: AccountConfig, report: SyncReport) -> None:
    """`jmapsync sync`: the hook after this pass, if it changed the Maildir.
    Never raises: the pass has succeeded, whatever happens here."""
    if account.post_sync_command is None or not has_local_changes(report):
        return
    try:
        await run(config, account, Totals.of(report))
    except Exception as exc:  # noqa: BLE001 - a bug here must not fail a good sync; logged:
        log.get().exception("post-sync-crashed", account=account.name, error=type(exc).__name__)


def record(config: Config, account: AccountConfig, result: HookResult, lg: Logger) -> None:
    """Keep the result for `jmapsync status` (the daemon's runs too)."""
    try:
        db = StateDB.for_account(config.state_dir, account.name)
        try:
            with db.transaction() as conn:
                db.set_meta(conn, META_KEY, json.dumps(asdict(result)))
        finally:
            db.close()
    except (sqlite3.Error, JmapsyncError) as exc:
        lg.warning("post-sync-not-recorded", error=str(exc))


def last_result(db: StateDB) -> dict[str, Any] | None:
    raw = db.get_meta(META_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def describe(result: dict[str, Any]) -> str:
    """One line for `jmapsync status`: `FAILED: exit status 3 (0.2 s, 2026-...)`."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(result.get("at", 0))))
    verdict = "ok" if result.get("ok") else "FAILED"
    return f"{verdict}: {result.get('detail')} ({result.get('seconds')} s, {when})"
