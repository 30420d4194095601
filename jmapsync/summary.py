"""The one sentence per account that ends `jmapsync sync` on a terminal.

    alice: 2000 new, 3 moved, 12 flags changed (60 MB) in 5.6 s
    alice: nothing new (0.1 s)

The structured `sync-done` event stays what logs and scripts read (JSON
logs, -v); a person at a terminal gets this instead.  Local changes come
first (what the reader sees in the Maildir), then what went to the server.
"""

from __future__ import annotations

from jmapsync.sync.report import SyncReport


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{nbytes} bytes"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 60 else f"{int(s // 60)} min {round(s % 60):d} s"


def parts(report: SyncReport) -> list[str]:
    """What changed, in the words of someone reading mail."""
    r = report
    flags = r.renamed - r.moved
    out = [
        f"{r.downloaded} new" if r.downloaded else "",
        f"{r.moved} moved" if r.moved else "",
        _n(flags, "flag changed", "flags changed") if flags else "",
        f"{r.removed} removed" if r.removed else "",
        f"{r.linked} added to another folder" if r.linked else "",
        _n(r.folders_created, "folder created", "folders created") if r.folders_created else "",
        _n(r.folders_moved, "folder moved", "folders moved") if r.folders_moved else "",
        _n(r.folders_removed, "folder removed", "folders removed") if r.folders_removed else "",
        _n(r.rewritten, "file rewritten", "files rewritten") if r.rewritten else "",
        f"{r.adopted + r.superseded} local copies taken over" if r.adopted + r.superseded else "",
        f"{r.pushed} changes sent" if r.pushed > 1 else ("1 change sent" if r.pushed else ""),
        f"{r.imported} uploaded" if r.imported else "",
        f"{r.destroyed} deleted on the server" if r.destroyed else "",
        _n(r.mailboxes_created, "mailbox created", "mailboxes created")
        if r.mailboxes_created
        else "",
        _n(r.mailboxes_destroyed, "mailbox deleted", "mailboxes deleted")
        if r.mailboxes_destroyed
        else "",
    ]
    return [p for p in out if p]


def sentence(report: SyncReport) -> str:
    """`name: what changed (size) in time`, or `name: nothing new (time)`."""
    said = parts(report)
    tail = f", {_n(len(report.warnings), 'warning')} (see the log)" if report.warnings else ""
    if not said:
        return f"{report.account}: nothing new ({_seconds(report.seconds)}){tail}"
    size = f" ({_size(report.bytes)})" if report.bytes else ""
    return f"{report.account}: {', '.join(said)}{size} in {_seconds(report.seconds)}{tail}"
