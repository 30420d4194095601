"""PURE: the one check that a path below the Maildir root stays below it.

Paths handed between the sync stages are relative to the root and written
with "/" (maildir/files.py).  `inside()` is where one becomes a real path:
maildir/tree.py and maildir/store.py for every file and folder they touch,
sync/stamp.py for the folder times the no-change check reads (a module of
its own so that the check loads no more than pathlib).
"""

from __future__ import annotations

from pathlib import Path

from jmapsync.errors import LocalError


def inside(root: Path, rel: str) -> Path:
    """root/rel, refusing anything that could leave the root."""
    if rel.startswith("/") or "\x00" in rel:
        raise LocalError(f"refusing a path outside the Maildir root: {rel!r}")
    parts = rel.split("/") if rel else []
    if any(p in ("", ".", "..") for p in parts):
        raise LocalError(f"refusing a path outside the Maildir root: {rel!r}")
    return root.joinpath(*parts)
