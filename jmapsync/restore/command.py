"""The `jmapsync restore` command: progress bars, the summary, the exit code.

Exit 0 when every message of the source is in the account afterwards
(imported now or already there); 1 when anything was skipped (each one is
listed with its reason) or the restore failed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from jmapsync.config import Config
from jmapsync.maildir.names import Layout
from jmapsync.restore.execute import Restore
from jmapsync.restore.report import Progress, ProgressFactory, RestoreReport


def progress_bars() -> ProgressFactory | None:
    """tqdm bars on a terminal, nothing otherwise (the log says the rest)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # only on a TTY: keeps start-up light

    class Bar:
        def __init__(self, desc: str, total: int, _nbytes: int) -> None:
            self.bar = tqdm(total=total or None, unit="msg", desc=desc, leave=False)

        def update(self, n: int, nbytes: int = 0) -> None:
            self.bar.update(n)

        def close(self) -> None:
            self.bar.close()

    def make(desc: str, total: int, nbytes: int) -> Progress:
        return Bar(desc, total, nbytes)

    return make


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def print_report(r: RestoreReport, out: TextIO) -> None:
    kind = "a jmapsync mirror" if r.kind == "jmapsync" else "a Maildir"
    if r.mbsync:
        kind += " written by mbsync"
    verb = "would restore" if r.dry_run else "restored"
    print(f"{verb} {r.source} ({kind}, {r.layout} layout) into account {r.account}:", file=out)
    print(
        f"  source:         {r.folders} folders, {r.files} files, {r.messages} messages", file=out
    )
    for folder, role in sorted(r.by_role.items()):
        print(f"  folder {folder or '(root)'} goes to the mailbox with role {role}", file=out)
    if r.dry_run:
        for name in r.created:
            print(f"  would create:   mailbox {name}", file=out)
        print(
            f"  would import:   {r.to_import_messages} messages ({_mb(r.to_import_bytes)})",
            file=out,
        )
        for name, n in sorted(r.to_import.items()):
            print(f"    {name}: {n}", file=out)
    else:
        created = f" ({', '.join(r.created)})" if r.created else ""
        print(f"  created:        {len(r.created)} mailboxes{created}", file=out)
        print(f"  imported:       {r.imported} messages ({_mb(r.imported_bytes)})", file=out)
    recovered = f" ({r.recovered} imported by an interrupted restore)" if r.recovered else ""
    print(f"  already there:  {r.present} messages{recovered}", file=out)
    print(f"  skipped:        {r.skipped_count} files", file=out)
    for s in r.skipped:
        files = f" ({s.count} files)" if s.count != 1 else ""
        print(f"    {s.what}{files}: {s.reason}", file=out)
    for w in r.warnings:
        print(f"  note: {w}", file=out)
    if r.dry_run:
        print("dry run: nothing was sent to the server", file=out)


def cmd_restore(
    config: Config, name: str, source: Path | None, layout: str | None, *, dry_run: bool
) -> int:
    account = config.account(name)
    root = (source or account.maildir).expanduser()
    chosen: Layout = "maildir++" if (layout or account.layout) == "maildir++" else "verbatim"
    restore = Restore(config, account, root, chosen, dry_run=dry_run, progress=progress_bars())
    report = asyncio.run(restore.run())
    print_report(report, sys.stdout)
    return 1 if report.skipped else 0
