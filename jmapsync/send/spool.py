"""Where an account's outbox lives, and whether anything waits in it.

`jmapsync sync` and the daemon ask before every pass (a queued message is
sent first, so that the pass brings its Sent copy back); the answer is one
scandir of new/, without the outbox's database or its module (send/outbox.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def outbox_dir(state_dir: Path, account: str) -> Path:
    return state_dir / "outbox" / account


def has_waiting(root: Path) -> bool:
    """True when new/ holds a file (no database is opened for an empty outbox)."""
    try:
        with os.scandir(root / "new") as it:
            return any(True for _ in it)
    except FileNotFoundError:
        return False
