"""Maildir tmp/ cleanup: files older than 36 hours are abandoned deliveries.

The Maildir specification (cr.yp.to/proto/maildir.html) tells readers to
remove tmp/ files not accessed for 36 hours; a writer that crashed leaves
them behind, and nobody else removes them.  Our own `.jmapsync-part` files
are removed by every pass already; this catches other writers' leftovers.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

MAX_AGE_S = 36 * 3600


def clean_tmp(root: Path, *, now: float | None = None, max_age: float = MAX_AGE_S) -> list[Path]:
    """Remove regular files in any `tmp/` under root whose atime and mtime are
    both older than max_age; return what was removed.  Never follows
    symlinks, never removes a directory."""
    cutoff = (time.time() if now is None else now) - max_age
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here.name != "tmp":
            continue
        dirnames.clear()  # a tmp/ has no Maildir folders inside
        for name in filenames:
            path = here / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if max(st.st_atime, st.st_mtime) < cutoff:
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
    return removed
