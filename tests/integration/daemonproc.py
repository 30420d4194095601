"""Run the real `jmapsync daemon` as a process and read its JSON log.

Tests wait for conditions with a deadline (`wait_for`), never for a fixed
time, so that they take as long as the daemon needs and no longer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mailtools import Account

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float = 10.0, every: float = 0.02) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(every)


@dataclass
class Acct:
    """One [account] section of a daemon test config."""

    name: str
    account: Account
    password: str | None = None  # None: the account's real one
    extra: dict[str, str] = field(default_factory=dict)
    password_command: str | None = None  # instead of password


def write_config(base: Path, accounts: Sequence[Acct], **global_keys: str) -> Path:
    path = base / "config.ini"
    lines = ["[jmapsync]", f"state_dir = {base / 'state'}"]
    lines += [f"{k} = {v}" for k, v in global_keys.items()]
    for a in accounts:
        lines += [
            f"[account {a.name}]",
            f"session_url = {a.account.session_url}",
            f"username = {a.account.user}",
            f"password_command = {a.password_command}"
            if a.password_command
            else f"password = {a.password if a.password is not None else a.account.password}",
            f"maildir = {base / 'mail' / a.name}",
            "direction = two-way",
        ]
        lines += [f"{k} = {v}" for k, v in a.extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProc:
    """`python -m jmapsync -c CONFIG --log-format json daemon`, logging to a file."""

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        argv = [sys.executable, "-m", "jmapsync", "-c", str(config), "--log-format", "json"]
        self.proc = subprocess.Popen(
            [*argv, "daemon", *extra],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )

    def events(self, name: str | None = None, **match: Any) -> list[dict[str, Any]]:
        """Log events so far (optionally of one name and with these fields)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict):
                continue
            if name is not None and e.get("event") != name:
                continue
            if all(e.get(k) == v for k, v in match.items()):
                out.append(e)
        return out

    def wait_event(self, name: str, timeout: float = 10.0, count: int = 1, **match: Any) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            return len(self.events(name, **match)) >= count

        wait_for(f"log event {name} {match} x{count}", seen, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds it took)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon ignored SIGTERM for {timeout} s:\n{self.log()}") from None
        finally:
            self._log.close()
        return rc, time.monotonic() - started

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def status(config: Path) -> dict[str, Any]:
    """`jmapsync status --json`."""
    data: dict[str, Any] = json.loads(status_text(config, "--json"))
    return data


def status_text(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(config), "status", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return done.stdout


def files_of(root: Path, prefix: str = "") -> list[Path]:
    """Message files (cur/ and new/) under root whose name starts with prefix."""
    if not root.exists():
        return []
    return [
        p
        for sub in ("cur", "new")
        for d in root.rglob(sub)
        if d.is_dir()
        for p in d.iterdir()
        if p.name.startswith(prefix)
    ]
