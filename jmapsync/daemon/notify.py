"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

The protocol is a few newline-separated KEY=VALUE lines sent to a unix
datagram socket whose path systemd puts in NOTIFY_SOCKET ("@name" is the
abstract namespace).  Outside systemd the variable is unset and every call
does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send "READY=1", "STATUS=...", "WATCHDOG=1", ...; True if sent.

    Never raises: a dead notify socket must not take the daemon down (systemd
    would restart it anyway if it stopped listening on purpose)."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or not lines:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # vsock and other transports: not for a user unit
    payload = "\n".join(line.replace("\n", " ") for line in lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError:
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when
    systemd does not watch this process (unset, or meant for another pid)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
