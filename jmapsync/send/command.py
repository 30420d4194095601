"""`jmapsync send`: a sendmail for mutt, neomutt and git send-email; and the outbox hooks.

Exit codes are sendmail's (sysexits.h), because that is what mail programs
read: 0 the message was sent or is safely queued; 64 EX_USAGE a wrong
command line; 65 EX_DATAERR a message we cannot send as it is; 67
EX_NOUSER no Identity (or account) matches its From; 75 EX_TEMPFAIL it could
neither be sent nor queued; 78 EX_CONFIG the config file is wrong.

Once the message is in the outbox (durable, see send/outbox.py) the answer
is 0 whatever happens next -- a non-zero exit would make mutt offer to send
it again, and then it would go twice.  What happened is one line on stderr:
queued (and why), or held (the server refused it; `jmapsync status`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from jmapsync import log
from jmapsync.config import AccountConfig, Config, load
from jmapsync.errors import ConfigError, JmapsyncError, MessageError
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Identity
from jmapsync.send import identity as idmod
from jmapsync.send.args import USAGE, ArgsError, SendArgs, parse
from jmapsync.send.flush import ClientFactory, FlushReport, cached_identities, flush_account
from jmapsync.send.message import Prepared, prepare
from jmapsync.send.outbox import Outbox
from jmapsync.send.spool import outbox_dir

EX_OK, EX_USAGE, EX_DATAERR, EX_NOUSER, EX_UNAVAILABLE = 0, 64, 65, 67, 69
EX_TEMPFAIL, EX_CONFIG = 75, 78
# How long `send` waits for another process (the daemon) that is sending
# this outbox right now, before leaving the message queued for it.
LOCK_WAIT_S = 30.0


def _say(text: str) -> None:
    print(f"jmapsync: {text}", file=sys.stderr)


def run(
    config_path: Path | None,
    argv: list[str],
    *,
    stdin: IO[bytes] | None = None,
    client_factory: ClientFactory = JmapClient,
    config: Config | None = None,
) -> int:
    """The whole `send` command; returns the exit code.  `config` and
    `client_factory` let tests hand in a parsed config and a fake server."""
    try:
        args = parse(argv)
    except ArgsError as exc:
        _say(f"send: {exc}")
        return EX_USAGE
    if args.help:
        print(USAGE, end="")
        return EX_OK
    if args.verbose:  # sendmail -v
        log.setup("auto", 1)
    try:
        config = config or load(config_path)
    except ConfigError as exc:
        _say(str(exc))
        return EX_CONFIG
    if args.account and args.account not in {a.name for a in config.accounts}:
        _say(f"send: no account named {args.account!r} in the config")
        return EX_USAGE
    if args.flush:
        return _flush_command(config, args, client_factory)
    if not args.recipients and not args.from_headers:
        _say("send: no recipients (name them, or -t to read To, Cc and Bcc)")
        return EX_USAGE
    raw = (stdin or sys.stdin.buffer).read()
    try:
        prepared = prepare(
            raw,
            args.recipients,
            from_headers=args.from_headers,
            envelope_from=args.envelope_from,
            full_name=args.full_name,
        )
        account = choose_account(config, args.account, prepared)
    except MessageError as exc:
        _say(f"send: {exc}")
        return EX_DATAERR
    except _NoAccount as exc:
        _say(f"send: {exc}")
        return EX_NOUSER
    dsn = {
        k: v
        for k, v in (("notify", args.dsn_notify), ("ret", args.dsn_return), ("envid", args.envid))
        if v
    }
    return _send(config, account, prepared, args, dsn, client_factory)


class _NoAccount(Exception):
    """No account (or Identity we know of) can send as this From."""


def choose_account(config: Config, name: str | None, prepared: Prepared) -> AccountConfig:
    """--account, else the only account, else the first whose known identities
    or `addresses` match From (an Identity without an address that matches
    anything ranks last).  Known identities: those the last online send cached."""
    if name:
        return config.account(name)
    best: tuple[int, AccountConfig] | None = None
    for account in config.accounts:
        identities, own = _known(config, account)
        score = 0
        if any(idmod.matches(a, prepared.from_address) for a in own):
            score = 2
        elif identities is not None:
            chosen = idmod.choose(identities, prepared.from_address, prepared.from_name, own)
            if chosen is not None:
                score = 2 if chosen.email else 1
        if len(config.accounts) == 1 and identities is None:
            score = max(score, 1)  # nothing known yet: the server will judge
        if score and (best is None or score > best[0]):
            best = (score, account)
    if best is None:
        if len(config.accounts) == 1:
            identities, own = _known(config, config.accounts[0])
            known = idmod.describe(identities or [], own)
            raise _NoAccount(f"no Identity matches From {prepared.from_address} (known: {known})")
        raise _NoAccount(
            f"no account is known to send as {prepared.from_address}: use --account NAME,"
            " or list the address in the account's `addresses`"
        )
    return best[1]


def _known(config: Config, account: AccountConfig) -> tuple[list[Identity] | None, list[str]]:
    """Cached identities (None if never online) and own addresses, without
    creating an outbox that does not exist yet."""
    root = outbox_dir(config.state_dir, account.name)
    if not (root / "journal.sqlite3").exists():
        return None, list(account.addresses)
    outbox = Outbox(root)
    try:
        own = outbox.get_meta("own_addresses")
        return cached_identities(outbox), list(own) if own else list(account.addresses)
    except (sqlite3.Error, JmapsyncError):
        return None, list(account.addresses)
    finally:
        outbox.close()


def _send(
    config: Config,
    account: AccountConfig,
    prepared: Prepared,
    args: SendArgs,
    dsn: dict[str, str],
    client_factory: ClientFactory,
) -> int:
    outbox = Outbox.for_account(config.state_dir, account.name)
    try:
        entry = outbox.add(prepared, args.envelope_from, dsn)
    except (OSError, sqlite3.Error, JmapsyncError) as exc:
        outbox.close()
        return _send_unqueued(config, account, prepared, args, dsn, client_factory, exc)
    outbox.close()
    log.get().debug("send-queued", account=account.name, entry=entry.id)
    try:
        report = asyncio.run(
            flush_account(config, account, client_factory=client_factory, wait=LOCK_WAIT_S)
        )
        outcome, detail = report.outcome(entry.id)
    except Exception as exc:  # noqa: BLE001 - queued is queued: never ask for a resend
        log.get().exception("send-flush-crashed", account=account.name, error=str(exc))
        outcome, detail = "queued", f"internal error: {type(exc).__name__}"
    if outcome == "sent":
        return EX_OK
    if outcome == "held" and _kind(report, entry.id) == "noIdentity":
        _unqueue(outbox, entry.id)
        _say(f"send: {detail}")
        return EX_NOUSER
    if outcome == "held":
        _say(f"the server refused the message ({detail}); it stays in the outbox: jmapsync status")
    else:
        _say(f"message queued, not sent yet: {detail}; jmapsync sync or the daemon sends it")
    return EX_OK


def _kind(report: FlushReport, entry_id: str) -> str | None:
    return next((e.reason_kind for e in report.held if e.id == entry_id), None)


def _unqueue(outbox: Outbox, entry_id: str) -> None:
    """Take back a message we refuse with EX_NOUSER: the caller keeps it."""
    with outbox.lock(LOCK_WAIT_S) as got:
        entry = outbox.get(entry_id) if got else None
        if entry is not None and entry.state == "held":
            outbox.done(entry)
    outbox.close()


def _send_unqueued(
    config: Config,
    account: AccountConfig,
    prepared: Prepared,
    args: SendArgs,
    dsn: dict[str, str],
    client_factory: ClientFactory,
    why: Exception,
) -> int:
    """The outbox cannot be written (disk full, read-only state_dir): send now
    from a private temporary outbox, or give up with EX_TEMPFAIL."""
    log.get().warning("outbox-unwritable", account=account.name, error=str(why))
    try:
        with tempfile.TemporaryDirectory(prefix="jmapsync-send-") as tmp:
            outbox = Outbox(Path(tmp))
            entry = outbox.add(prepared, args.envelope_from, dsn)
            outbox.close()
            report = asyncio.run(
                flush_account(config, account, client_factory=client_factory, outbox=outbox)
            )
            outcome, detail = report.outcome(entry.id)
    except OSError as exc:
        outcome, detail = "queued", str(exc)
    if outcome == "sent":
        return EX_OK
    _say(f"cannot queue the message ({why}) and cannot send it now ({detail})")
    return EX_TEMPFAIL


def _flush_command(config: Config, args: SendArgs, client_factory: ClientFactory) -> int:
    """`send --flush`: every account's outbox now, held messages included."""
    worst = EX_OK
    for account in config.select([args.account] if args.account else None):
        report = asyncio.run(
            flush_account(
                config, account, client_factory=client_factory, retry_held=True, wait=LOCK_WAIT_S
            )
        )
        print(
            f"account {account.name}: {len(report.sent)} sent, {len(report.held)} held,"
            f" {len(report.waiting)} waiting"
        )
        for e in report.held:
            _say(f"account {account.name}: held {e.id} ({e.subject!r}): {e.reason}")
        if report.busy:
            _say(f"account {account.name}: another jmapsync process is sending; try again")
        if report.error:
            _say(f"account {account.name}: stopped: {report.error}")
        if report.busy or report.error:
            worst = EX_TEMPFAIL
        elif report.held and worst == EX_OK:
            worst = EX_UNAVAILABLE
    return worst


# -- hooks for `sync`, the daemon and `status` ---------------------------------------


def flush_before_sync(config: Config, names: list[str] | None) -> None:
    """`jmapsync sync` sends the outboxes first, so the pass brings the Sent copies."""
    for account in config.select(names):
        asyncio.run(flush_account(config, account))


async def flush_in_daemon(config: Config, account: AccountConfig, factory: ClientFactory) -> None:
    """Before and after each daemon pass (a reconnect runs one too).  Never
    raises: a bug here must not stop the account's sync."""
    try:
        await flush_account(config, account, client_factory=factory)
    except Exception as exc:  # noqa: BLE001 - logged; the pass goes on
        log.get().exception("outbox-flush-crashed", account=account.name, error=str(exc))


def outbox_status(config: Config, name: str) -> dict[str, Any]:
    """What `jmapsync status` shows: queued and held messages, and files that
    were never acknowledged.  Empty when the account has no outbox."""
    root = outbox_dir(config.state_dir, name)
    if not (root / "journal.sqlite3").exists():
        return {}
    outbox = Outbox(root)
    try:
        rows = [
            {
                "id": e.id,
                "state": e.state,
                "subject": e.subject,
                "to": list(e.rcpt_to),
                "queued_at": e.created_at,
                "reason": e.reason,
            }
            for e in outbox.entries()
        ]
        orphans = outbox.orphans()
    finally:
        outbox.close()
    if not rows and not orphans:
        return {}
    return {"messages": rows, "not_queued": orphans, "path": str(root)}


def print_outbox(status: dict[str, Any]) -> None:
    rows = status.get("messages", [])
    held = sum(1 for r in rows if r["state"] == "held")
    print(f"  outbox:         {len(rows) - held} queued, {held} held ({status['path']})")
    for r in rows:
        to = ", ".join(r["to"][:3]) + (" ..." if len(r["to"]) > 3 else "")
        what = "held" if r["state"] == "held" else f"queued ({r['state']})"
        line = f"    {r['id']}  {what}  to {to}  {r['subject']!r}"
        if r.get("reason"):
            line += f"  -- {r['reason']}"
        print(line)
    for name in status.get("not_queued", []):
        print(f"    {name}  not queued: `send` was interrupted before it acknowledged it")
