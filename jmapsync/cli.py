"""Command line: argparse, and the ONE place where errors become messages and exit codes.

Everything printed goes through jmapsync/scrub.py: stdout is wrapped (check,
status and verify print what servers named), error lines are scrubbed, and
an unexpected traceback is printed scrubbed -- no terminal controls from a
server, no password, token or Basic header in any output.

Exit codes: 0 everything succeeded; 1 at least one account failed (one line
per account on stderr); 2 the command line or the config is wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from jmapsync import log, scrub
from jmapsync.config import Config, load
from jmapsync.errors import ConfigError, JmapsyncError
from jmapsync.parser import build_parser

if TYPE_CHECKING:
    from jmapsync.sync.report import SyncReport

# Everything else is imported by the command that needs it: `jmapsync sync`
# with nothing new must not pay for the engine, asyncio or the daemon
# (sync/quick.py; tests/integration/test_quick.py checks what loads).

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _ScrubbedOut:
    """A text stream that scrubs what is written to it (see the module docstring)."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(scrub.text(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A bug's traceback, scrubbed: its frames may hold a server's text or a secret."""
    import traceback

    sys.stderr.write(scrub.text("".join(traceback.format_exception(kind, value, tb))))


_quick_exit = False  # set for `sync`: see run()


def run() -> None:
    """The `jmapsync` command (console script, `python -m jmapsync`): main(),
    then, after a `sync`, exit without tearing the interpreter down.

    Clearing ~300 modules and collecting their objects takes a `sync` 10-20
    ms -- a tenth of a pass with nothing new (issue 16).  Nothing of a sync
    needs it: every database is closed, every file written, flushed and
    fsynced, asyncio.run() has joined its threads.  Standard streams are
    flushed and atexit handlers run before os._exit.  Other commands exit
    as usual."""
    code = main()
    if not _quick_exit:
        sys.exit(code)
    import atexit
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or EXIT_FAILED  # as the interpreter would report a failed flush
    atexit._run_exitfuncs()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    sys.excepthook = _excepthook
    stdout = sys.stdout
    sys.stdout = _ScrubbedOut(stdout)
    try:
        return _main(argv)
    finally:
        sys.stdout = stdout


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "send":  # its own config errors and exit codes (sendmail's)
        from jmapsync.send import command as send

        log.setup(args.log_format or "auto", args.verbose or -1)
        return send.run(args.config, args.sendmail_args)
    # On a terminal `sync` ends with a sentence per account (_report_results)
    # instead of the sync-done event, which -v and JSON logs keep.
    hide = ("sync-done",) if args.command == "sync" and sys.stdout.isatty() else ()
    log.setup(args.log_format or "auto", args.verbose, hide)
    try:
        if args.command == "init":  # before load(): there may be no config yet
            from jmapsync import init

            return init.run(args)
        config = load(args.config)
        if args.log_format is None and config.log_format != "auto":
            log.setup(config.log_format, args.verbose, hide)
        if args.command == "sync" and args.json and not args.dry_run:
            print("jmapsync: sync --json needs --dry-run", file=sys.stderr)
            return EXIT_USAGE
        if args.command == "sync" and args.dry_run:
            return cmd_dry_run(
                config, args.account, as_json=args.json, force_deletes=args.force_deletes
            )
        if args.command == "sync":
            global _quick_exit  # noqa: PLW0603 - read once, by run()
            _quick_exit = True
            return cmd_sync(
                config, args.account, force_deletes=args.force_deletes, quick=args.verbose == 0
            )
        if args.command == "check":
            return cmd_check(config, args.account)
        if args.command == "status":
            return cmd_status(config, args.account, as_json=args.json)
        if args.command == "verify":
            return cmd_verify(config, args.account, download=args.download)
        if args.command == "daemon":
            return cmd_daemon(config, args.account)
        if args.command == "restore":
            from jmapsync.restore.command import cmd_restore

            return cmd_restore(config, args.account, args.source, args.layout, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"jmapsync: {scrub.line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except JmapsyncError as exc:
        print(f"jmapsync: {scrub.line(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("jmapsync: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE  # pragma: no cover - argparse requires a command


def _report_results(results: dict[str, SyncReport | JmapsyncError]) -> int:
    failed = 0
    for name, result in results.items():
        if isinstance(result, JmapsyncError):
            failed += 1
            print(f"jmapsync: account {name}: {scrub.line(str(result))}", file=sys.stderr)
        elif sys.stdout.isatty():
            from jmapsync.summary import sentence

            print(sentence(result))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_sync(
    config: Config, names: list[str] | None, *, force_deletes: bool = False, quick: bool = True
) -> int:
    """`quick`: accounts with nothing new are answered by sync/quick.py
    (not with --force-deletes, nor with -v, which wants the engine's debug
    events); the engine syncs the others."""
    from jmapsync.sync import quick as fast

    handover = fast.Handover()
    results: dict[str, SyncReport | JmapsyncError] = {}
    if quick and not force_deletes:
        results = fast.sync(config, names, handover)
    rest = [a.name for a in config.select(names) if a.name not in results]
    if rest:
        handover.engine_loaded()  # (a preload started while the server answered)
        import asyncio

        from jmapsync.send import spool
        from jmapsync.sync.engine import sync_accounts
        from jmapsync.sync.report import progress_bar_factory

        queued = [n for n in rest if spool.has_waiting(spool.outbox_dir(config.state_dir, n))]
        if queued:  # (sending needs much that a pass does not: loaded only then)
            from jmapsync.send.command import flush_before_sync

            flush_before_sync(config, queued)  # the pass then brings the Sent copies
        results |= asyncio.run(
            sync_accounts(
                config,
                rest,
                progress_bar_factory(),
                force_deletes=force_deletes,
                secrets=handover.secrets,
                cache_failed=handover.cache_failed,
                answers=handover.answers,
            )
        )
    return _report_results({a.name: results[a.name] for a in config.select(names)})


def cmd_dry_run(
    config: Config, names: list[str] | None, *, as_json: bool, force_deletes: bool = False
) -> int:
    """`sync --dry-run`: one block per account on stdout (sync/dryrun.py)."""
    import asyncio
    import json

    from jmapsync.sync.dryrun import render
    from jmapsync.sync.engine import sync_accounts

    results = asyncio.run(sync_accounts(config, names, dry_run=True, force_deletes=force_deletes))
    if as_json:
        out = {
            name: {"error": str(r)}
            if isinstance(r, JmapsyncError)
            else r.as_dict() | {"would": r.would, "warnings": r.warnings}
            for name, r in results.items()
        }
        print(json.dumps(out, indent=2))
    else:
        for name, r in results.items():
            if isinstance(r, JmapsyncError):
                print(f"account {name}: dry run: the pass would fail: {r}")
            else:
                print(render(r))
    return _report_results(results)


def cmd_daemon(config: Config, names: list[str] | None) -> int:
    """Runs until SIGTERM / SIGINT (exit 0); jmapsync/daemon/ has the rest."""
    from jmapsync.daemon import supervisor

    config.select(names)  # an unknown --account is a usage error, before anything starts
    return supervisor.run(config, names)


def cmd_check(config: Config, names: list[str] | None) -> int:
    import asyncio

    from jmapsync import check

    async def run() -> list[bool]:
        return [await check.show(a) for a in config.select(names)]

    oks = asyncio.run(run())
    print(f"config {config.path}: OK")
    return EXIT_OK if all(oks) else EXIT_FAILED


def cmd_verify(config: Config, names: list[str] | None, *, download: bool) -> int:
    """Exit 0 only if every account's mirror matches its state (and the server)."""
    import asyncio

    from jmapsync.state.db import StateDB
    from jmapsync.sync import verify

    all_ok = True
    for account in config.select(names):
        db_path = config.state_dir / f"{account.name}.sqlite3"
        if not db_path.exists():
            print(f"account {account.name}: never synced, nothing to verify")
            all_ok = False
            continue
        db = StateDB(db_path)
        try:
            found = verify.check(account, db)
            if download:
                asyncio.run(verify.check_downloads(account, db, found))
        finally:
            db.close()
        verdict = "OK" if found.ok else "PROBLEMS"
        kept = f" ({found.archived} kept by direction = archive)" if found.archived else ""
        print(f"account {account.name}: {found.checked} files checked{kept}: {verdict}")
        for line in found.lines():
            print(f"  {line}")
        all_ok = all_ok and found.ok
    return EXIT_OK if all_ok else EXIT_FAILED


def _when(value: str | None) -> str:
    import datetime as dt

    if not value:
        return "never"
    return dt.datetime.fromtimestamp(float(value), tz=dt.UTC).isoformat(timespec="seconds")


def cmd_status(config: Config, names: list[str] | None, *, as_json: bool) -> int:
    import json

    from jmapsync import hooks
    from jmapsync.daemon.status import read_status, status_path
    from jmapsync.send.command import outbox_status, print_outbox
    from jmapsync.state.db import StateDB

    out: dict[str, Any] = {}
    daemon = read_status(status_path(config.state_dir))
    live: dict[str, Any] = daemon.get("accounts", {}) if daemon else {}
    for account in config.select(names):
        db_path = config.state_dir / f"{account.name}.sqlite3"
        outbox = outbox_status(config, account.name)
        if not db_path.exists():
            out[account.name] = {"synced": False} | ({"outbox": outbox} if outbox else {})
            if account.name in live:
                out[account.name]["daemon"] = live[account.name]
            continue
        db = StateDB(db_path)
        try:
            summary = db.summary()
            summary["post_sync"] = hooks.last_result(db)
        finally:
            db.close()
        summary["maildir"] = str(account.maildir)
        summary["local_files"] = _count_files(account.maildir)
        if account.name in live:
            summary["daemon"] = live[account.name]
        if outbox:
            summary["outbox"] = outbox
        out[account.name] = summary
    if as_json:
        print(json.dumps(out, indent=2, default=str))
        return EXIT_OK
    if daemon:
        print(f"daemon: running, pid {daemon['pid']}, since {_when(str(daemon['started_at']))}")
    else:
        print("daemon: not running")
    for name, s in out.items():
        print(f"account {name}:")
        if "daemon" in s:
            _print_daemon_status(s["daemon"])
        if "outbox" in s:
            print_outbox(s["outbox"])
        if not s.get("synced", True):
            print("  never synced")
            continue
        counts = s["counts"]
        print(f"  last sync:      {_when(s['last_sync_at'])} ({s['last_result'] or 'n/a'})")
        print(f"  email state:    {s['email_state']}")
        print(f"  mailbox state:  {s['mailbox_state']}")
        print(f"  mailboxes:      {counts['mailboxes']}")
        print(f"  emails:         {counts['emails']}")
        print(f"  files (state):  {counts['files']}")
        print(f"  files (disk):   {s['local_files']} under {s['maildir']}")
        print(f"  pending:        {counts['journal']} journaled intent(s)")
        if s.get("post_sync"):
            print(f"  post_sync:      {hooks.describe(s['post_sync'])}")
        for item in s.get("skipped") or []:
            print(f"  skipped:        {item}")
        if counts.get("archived"):
            print(f"  archived:       {counts['archived']} file(s) the server no longer has there")
    return EXIT_OK


def _print_daemon_status(d: dict[str, Any]) -> None:
    """The live part of `status`: what the running daemon does for the account."""
    print(f"  push:           {d.get('transport')} ({d.get('connection')}; push = {d.get('push')})")
    sync = d.get("sync")
    if d.get("error"):
        sync = f"{sync}: {d['error']}; retry at {_when(str(d.get('retry_at') or ''))}"
    print(f"  daemon:         {sync}, {d.get('passes')} pass(es)")
    change = ", ".join(f"{k} {v}" for k, v in sorted((d.get("last_change") or {}).items()))
    when = _when(str(d["last_change_at"])) if d.get("last_change_at") else "none yet"
    print(f"  last change:    {when}" + (f" ({change})" if change else ""))
    pending = []
    if d.get("pending_local_events"):
        pending.append(f"{d['pending_local_events']} local event(s) waiting")
    if d.get("pass_pending"):
        pending.append("a pass is queued")
    print("  pending work:   " + ("; ".join(pending) or "none"))


def _count_files(root: Path) -> int:
    total = 0
    for sub in ("cur", "new"):
        total += sum(1 for p in root.rglob(sub) if p.is_dir() for _ in p.iterdir())
    return total
