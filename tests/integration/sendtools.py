"""Helpers for `jmapsync send` tests: what left the test server, the real
command line, and a TCP proxy that SIGKILLs the sender at a chosen request.

The test Cyrus hands EmailSubmission mail to its sendmail sink (tools/cyrus.py),
which stores each message as DIR/outbox/*.eml with a .json envelope.  The
sink is shared by every account of the server, so a test picks its own
messages by Message-ID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror import ROOT, Mirror

SENDMAIL_EXITS = {"EX_USAGE": 64, "EX_DATAERR": 65, "EX_NOUSER": 67, "EX_TEMPFAIL": 75}


@dataclass(frozen=True)
class Left:
    """One message as it left the server: envelope and bytes."""

    mail_from: str
    mail_params: str
    rcpt_to: tuple[str, ...]
    rcpt_params: tuple[str, ...]
    data: bytes


def _addr(value: str) -> tuple[str, str]:
    m = re.match(r"<([^>]*)>\s*(.*)", value)
    assert m, value
    return m.group(1), m.group(2)


def sink(server: Any, message_id: str | None = None, *, subject: str | None = None) -> list[Left]:
    """Every message with this Message-ID (or Subject) the server's sendmail received."""
    needle = f"<{message_id}>" if message_id else f"Subject: {subject}\r\n"
    out = []
    for eml in sorted(Path(server.outbox).glob("*.eml")):
        data = eml.read_bytes()
        head = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        if needle.encode() not in head:
            continue
        env = json.loads(eml.with_suffix(".json").read_text())
        mail_from, mail_params = _addr(env["from"])
        rcpts = [_addr(r) for r in env["to"]]
        out.append(
            Left(
                mail_from,
                mail_params,
                tuple(a for a, _ in rcpts),
                tuple(p for _, p in rcpts),
                data,
            )
        )
    return out


def send_cli(
    mirror: Mirror, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`python -m jmapsync -c CONFIG send ARGS < stdin`, as a mail program runs it."""
    return subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(mirror.config_path), "send", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        check=False,
        timeout=120,
        env=env,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KillProxy:
    """A loopback TCP proxy to the server that SIGKILLs `victim` at the first
    request containing `marker`: "before" the request reaches the server, or
    "after" the server answered it and before the answer reaches the client
    (the side effect happened, its answer is lost with the process).  Without
    a marker it is a plain proxy; `down = True` makes it drop every new
    connection at once, as an unreachable server does."""

    def __init__(self, target_port: int, marker: bytes = b"", when: str = "after") -> None:
        self.target_port = target_port
        self.marker = marker
        self.when = when
        self.victim: int | None = None
        self.down = False
        self.fired = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._closing = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jmap/"

    def _kill(self) -> None:
        if self.victim is not None and not self.fired.is_set():
            self.fired.set()
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.victim, signal.SIGKILL)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            armed = threading.Event()
            for src, dst, upstream in ((client, server, True), (server, client, False)):
                t = threading.Thread(
                    target=self._pump, args=(src, dst, upstream, armed), daemon=True
                )
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool, armed: Any) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.fired.is_set():
                    break
                if upstream and self.marker and not armed.is_set():
                    if self.marker in tail + data:
                        if self.when == "before":
                            self._kill()
                            break
                        armed.set()
                    tail = (tail + data)[-len(self.marker) :]
                if not upstream and armed.is_set():
                    self._kill()  # the server answered: the answer dies with the client
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self.listener.close()
