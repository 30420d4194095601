"""The daemon's status file: what `jmapsync status` shows while it runs.

The daemon rewrites `<state_dir>/daemon-status.json` whenever an account's
state changes (atomically: a temp file renamed over the old one, so a reader
never sees half a file).  A reader trusts it only if the pid in it is alive:
a daemon killed with -9 leaves a stale file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "daemon-status.json"


@dataclass
class AccountStatus:
    """What `jmapsync status` shows about this account (JSON-able)."""

    name: str
    push: str
    transport: str = "none"  # websocket | eventsource | poll | none (not yet known)
    connection: str = "starting"  # connecting | connected | reconnecting | polling | stopped
    sync: str = "idle"  # idle | syncing | backoff | rate-limited
    passes: int = 0
    last_pass_at: float | None = None
    last_pass_seconds: float | None = None
    last_change_at: float | None = None
    last_change: dict[str, int] = field(default_factory=dict)
    pending_local_events: int = 0
    pass_pending: bool = False
    error: str | None = None
    push_error: str | None = None
    retry_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def status_path(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def write_status(path: Path, data: dict[str, Any]) -> None:
    """Atomic replace.  No fsync: after a crash a stale or missing status file
    costs nothing, and the daemon writes it often."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".daemon-status.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def remove_status(path: Path, pid: int) -> None:
    """Remove the file at shutdown, if it is still ours."""
    current = read_status(path, check_pid=False)
    if current is not None and current.get("pid") == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def read_status(path: Path, *, check_pid: bool = True) -> dict[str, Any] | None:
    """The daemon's status, or None when no daemon (or only a dead one's file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    if check_pid and not pid_alive(data["pid"]):
        return None
    return data
