#!/usr/bin/env python3
"""A private, throwaway Cyrus IMAP 3.6 (Debian 12) server for jmapsync's tests.

Everything of one instance (config, sasldb, databases, spool, sockets, pid
file, logs, submitted mail) lives in one directory DIR; several instances can
run side by side on different ports.  Nothing listens anywhere but 127.0.0.1
(IMAP and HTTP/JMAP on TCP, LMTP on a unix socket in DIR).

From Python::

    from tools.cyrus import CyrusServer
    srv = CyrusServer("/tmp/jmsc-x").start()      # free ports picked
    srv.add_user("carol")                           # password "secret"
    print(srv.session_url)                          # http://127.0.0.1:PORT/jmap/
    srv.stop()

From a shell (run from the repo root, as root on a fresh Debian 12)::

    python3 tools/cyrus.py start DIR [--http-port N] [--imap-port N]
    python3 tools/cyrus.py adduser DIR NAME [--password PW]
    python3 tools/cyrus.py stop DIR

``start`` prints the JMAP session URL as its last stdout line and leaves
``DIR/instance.env`` (shell-sourceable) and ``DIR/instance.json`` behind.

Packages (cyrus-common cyrus-imapd cyrus-caldav cyrus-admin sasl2-bin
libwslay1, plus dma when there is no /usr/sbin/sendmail) are apt-get
installed on first use when running as root, with a policy-rc.d that keeps
the system-wide daemons from starting.

WebSocket (RFC 8887): Debian's httpd is built without it (and then also
answers the advertised eventSourceUrl with 204).  If the env var
JMAPSYNC_CYRUS_HTTPD names an httpd rebuilt with libwslay and the file
"<that path>.version" equals the installed cyrus-common version, that httpd
is used (copied into DIR/bin) -- see ``websocket`` below.  Without the
variable, ``websocket=True`` (``--websocket``) uses the build cached in
~/.cache/jmapsync/httpd-wslay, making it first from Debian's source package
with tools/build-httpd-wslay.sh when missing (root, 2-5 minutes, once per
cyrus-common version).

Users: ``alice`` and ``bob`` (password ``secret``), admin ``admin``
(password ``secret``), each with INBOX and the special-use folders Sent,
Drafts, Trash, Junk, Archive (subscribed).  Processes of an instance carry
CYRUS_TEST_INSTANCE=DIR in their environment; ``stop`` finds leftovers by it,
never by process name.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import grp
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ADMIN",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERS",
    "HTTPD_ENV",
    "INSTANCE_ENV",
    "PACKAGES",
    "SPECIAL_FOLDERS",
    "CyrusError",
    "CyrusServer",
    "add_user",
    "ensure_packages",
    "free_port",
    "installed_version",
    "main",
    "start",
    "stop",
]

BIN = Path("/usr/lib/cyrus/bin")
SASLPASSWD2 = "/usr/sbin/saslpasswd2"
PACKAGES = ("cyrus-common", "cyrus-imapd", "cyrus-caldav", "cyrus-admin", "sasl2-bin", "libwslay1")
HTTPD_ENV = "JMAPSYNC_CYRUS_HTTPD"
BUILD_SCRIPT = Path(__file__).resolve().parent / "build-httpd-wslay.sh"
INSTANCE_ENV = "CYRUS_TEST_INSTANCE"
SERVERNAME = "localhost"  # also the sasldb realm
ADMIN = "admin"
DEFAULT_USERS = ("alice", "bob")
DEFAULT_PASSWORD = "secret"  # noqa: S105 - throwaway loopback test server
SPECIAL_FOLDERS = (
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
MAX_DIR_LEN = 80  # unix socket paths (DIR/run/socket/lmtp) are limited to 107 bytes
HOST = "127.0.0.1"
_USER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

# SMTP-on-stdio stand-in for sendmail (imapd.conf "sendmail:").  Cyrus runs
# "sendmail -bs" for the JMAP submission capabilities and EmailSubmission/set.
# Every message is stored as DIR/outbox/<ns>-<pid>-<n>.eml plus a .json
# envelope {"from": "<addr> PARAMS", "to": ["<addr> PARAMS", ...]}; nothing
# leaves the machine.  To let tests see real server refusals, the sink
# refuses on purpose: a RCPT TO address starting with "refuse-" gets 550
# (Cyrus 3.6 answers EmailSubmission/set with invalidRecipients), one starting
# with "tempfail-" gets 451 (Cyrus: forbiddenToSend), a MAIL FROM address
# starting with "refuse-" gets 553 (Cyrus: smtpProtocolError).
_SENDMAIL_SINK = r'''
"""sendmail stand-in of a jmapsync Cyrus test instance (tools/cyrus.py)."""
import json, os, sys, time

outbox = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "outbox")
rd, wr = sys.stdin.buffer, sys.stdout.buffer


def say(line):
    wr.write(line.encode() + b"\r\n")
    wr.flush()


say("220 localhost ESMTP jmapsync test sendmail sink")
mail_from, rcpts, n = None, [], 0
while True:
    line = rd.readline()
    if not line:
        break
    cmd = line.decode("utf-8", "replace").strip()
    up = cmd.upper()
    if up.startswith("EHLO"):
        for ext in ("localhost", "PIPELINING", "8BITMIME", "SIZE 52428800", "DSN",
                    "ENHANCEDSTATUSCODES", "SMTPUTF8"):
            wr.write(b"250-" + ext.encode() + b"\r\n")
        say("250 HELP")
    elif up.startswith("HELO"):
        say("250 localhost")
    elif up.startswith("MAIL FROM:"):
        if up[10:].strip().startswith("<REFUSE-"):
            say("553 5.7.1 Sender address rejected: refused by the test sink")
        else:
            mail_from, rcpts = cmd[10:].strip(), []
            say("250 2.1.0 Ok")
    elif up.startswith("RCPT TO:"):
        if up[8:].strip().startswith("<REFUSE-"):
            say("550 5.1.1 Recipient address rejected: refused by the test sink")
        elif up[8:].strip().startswith("<TEMPFAIL-"):
            say("451 4.3.0 test sink: try again later")
        else:
            rcpts.append(cmd[8:].strip())
            say("250 2.1.5 Ok")
    elif up == "DATA":
        say("354 End data with <CR><LF>.<CR><LF>")
        data = []
        while True:
            l = rd.readline()
            if not l or l.rstrip(b"\r\n") == b".":
                break
            data.append(l[1:] if l.startswith(b"..") else l)
        n += 1
        os.makedirs(outbox, exist_ok=True)
        base = os.path.join(outbox, "%d-%d-%d" % (time.time_ns(), os.getpid(), n))
        with open(base + ".tmp", "wb") as f:
            f.writelines(data)
        with open(base + ".json", "w") as f:
            json.dump({"from": mail_from, "to": rcpts}, f)
        os.rename(base + ".tmp", base + ".eml")
        say("250 2.0.0 Ok: queued")
    elif up == "RSET":
        mail_from, rcpts = None, []
        say("250 2.0.0 Ok")
    elif up == "NOOP":
        say("250 2.0.0 Ok")
    elif up == "QUIT":
        say("221 2.0.0 Bye")
        break
    else:
        say("502 5.5.2 Command not recognized")
'''


class CyrusError(RuntimeError):
    """The test server could not be installed, started, stopped or changed."""


def _log(msg: str) -> None:
    print(f"[cyrus] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- packages --


def installed_version(package: str = "cyrus-common") -> str | None:
    """Version of an installed Debian package per dpkg-query, or None."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
    except FileNotFoundError:
        return None
    if len(out) == 2 and out[0] == "installed":
        return out[1]
    return None


def _packages_missing() -> list[str]:
    try:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *PACKAGES],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return list(PACKAGES)
    ok = {
        line.split()[0].split(":")[0]
        for line in res.stdout.splitlines()
        if line.endswith(" installed")
    }
    missing = [p for p in PACKAGES if p not in ok]
    for tool in ("master", "imapd", "httpd", "lmtpd"):
        if not (BIN / tool).exists() and "cyrus-common" not in missing:
            missing.append("cyrus-common")
    return missing


CYRUS_SOURCE_PACKAGES = ("cyrus-common", "cyrus-imapd", "cyrus-caldav", "cyrus-admin")


def _prebuilt_version() -> str | None:
    """The cyrus-common version $JMAPSYNC_CYRUS_HTTPD was built for, if any."""
    path = os.environ.get(HTTPD_ENV, "")
    if not path:
        return None
    try:
        return Path(path + ".version").read_text().strip() or None
    except OSError:
        return None


def align_with_prebuilt(log_path: str | os.PathLike[str] | None = None) -> None:
    """Install the Cyrus packages at the version the prebuilt WebSocket httpd
    ($JMAPSYNC_CYRUS_HTTPD) was built for, when the machine has another one.

    Why: a machine whose package lists predate a security update installs
    e.g. 3.6.1-4+deb12u4 while the workplace's prebuilt httpd is for
    +deb12u5; the httpd links against Debian's libcyrus of its own version,
    so without this the WebSocket tests would need a 2-5 minute source build
    (and deb-src access).  Does nothing without root, without the variable,
    or when apt cannot offer that version (the caller then builds)."""
    want = _prebuilt_version()
    have = installed_version("cyrus-common")
    if want is None or have is None or want == have or os.geteuid() != 0:
        return
    if os.environ.get("JMAPSYNC_CYRUS_NO_INSTALL") == "1":
        return
    pkgs = [f"{p}={want}" for p in CYRUS_SOURCE_PACKAGES]
    if installed_version("libcyrus-imap-perl") is not None:
        pkgs.append(f"libcyrus-imap-perl={want}")
    _log(f"installing Cyrus {want} to match {os.environ[HTTPD_ENV]} (installed: {have})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "--allow-downgrades", *pkgs]
    output = b""

    def run(argv: list[str]) -> bool:
        nonlocal output
        res = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        output += res.stdout
        return res.returncode == 0

    # the package lists may predate the version: update once, then retry
    if not run(cmd) and not (run(["apt-get", "update", "-q"]) and run(cmd)):
        _log(f"could not install Cyrus {want}; the WebSocket httpd will be built instead")
    if log_path:
        with open(log_path, "ab") as f:
            f.write(output)


def ensure_packages(log_path: str | os.PathLike[str] | None = None) -> None:
    """apt-get install the Cyrus packages if any is missing (root only).

    Adds ``dma`` when /usr/sbin/sendmail is missing (cyrus-common needs an
    MTA; never replaces an existing one).  A temporary /usr/sbin/policy-rc.d
    (exit 101) keeps the packages' init scripts from starting the system-wide
    daemons; an existing policy-rc.d is left alone.
    """
    missing = _packages_missing()
    if not missing:
        align_with_prebuilt(log_path)
        return
    if os.geteuid() != 0:
        raise CyrusError(
            f"Cyrus packages missing ({' '.join(missing)}); run once as root "
            f"or: apt-get install {' '.join(PACKAGES)}"
        )
    if os.environ.get("JMAPSYNC_CYRUS_NO_INSTALL") == "1":
        raise CyrusError(f"Cyrus packages missing ({' '.join(missing)}) and no install wanted")
    pkgs = list(PACKAGES)
    if not Path("/usr/sbin/sendmail").exists():
        pkgs.append("dma")
    _log(f"installing Debian packages: {' '.join(pkgs)}")
    t0 = time.monotonic()
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = False
    if not policy.exists() and not policy.is_symlink():
        policy.write_text("#!/bin/sh\n# tools/cyrus.py: no daemons during apt-get\nexit 101\n")
        policy.chmod(0o755)
        made_policy = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs]
    output = b""

    def run(argv: list[str]) -> bool:
        nonlocal output
        res = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        output += res.stdout
        return res.returncode == 0

    try:
        # a fresh machine may have no package lists yet: update, then retry
        if not run(cmd) and not (run(["apt-get", "update", "-q"]) and run(cmd)):
            tail = b"\n".join(output.splitlines()[-20:]).decode(errors="replace")
            raise CyrusError(f"apt-get install {' '.join(pkgs)} failed:\n{tail}")
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)
        if log_path:
            with open(log_path, "ab") as f:
                f.write(output)
    _log(f"apt-get install took {time.monotonic() - t0:.1f} s")
    still = _packages_missing()
    if still:
        raise CyrusError(f"packages still missing after apt-get install: {' '.join(still)}")
    align_with_prebuilt(log_path)


# ------------------------------------------------------------------ helpers --


def httpd_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jmapsync"


def _httpd_unusable(path: str) -> str | None:
    """Why the WebSocket httpd at path cannot run here, or None if it can."""
    have = installed_version("cyrus-common")
    try:
        built_for = Path(path + ".version").read_text().strip()
    except OSError:
        built_for = None
    if not os.access(path, os.X_OK):
        return f"{path} is not an executable file"
    if built_for != have:
        return f"{path} is built for cyrus {built_for!r}, installed is {have!r}"
    return None


def build_websocket_httpd(out: Path | None = None) -> str:
    """Build httpd with libwslay from Debian's source package into the cache
    (tools/build-httpd-wslay.sh) unless a build for the installed version is
    there; return its path.  Serialised by a lock file: two test runs
    starting at once build once."""
    out = out or httpd_cache_dir()
    path = str(out / "httpd-wslay")
    if _httpd_unusable(path) is None:
        return path
    if os.geteuid() != 0:
        raise CyrusError("building the WebSocket httpd needs root (apt-get build-dep)")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "httpd-wslay.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _httpd_unusable(path) is None:
            return path
        log = out / "httpd-wslay.build.log"
        _log(f"building a WebSocket-capable httpd (2-5 minutes, log {log})")
        with open(log, "w") as f:
            done = subprocess.run(
                ["bash", str(BUILD_SCRIPT), str(out)],
                stdout=f,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise CyrusError(f"building the WebSocket httpd failed (see {log})")
    why = _httpd_unusable(path)
    if why:
        raise CyrusError(f"the WebSocket httpd build is unusable: {why}")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while True:
        if not any(_alive(p) for p in pids):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def _imap_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mutf7_encode(name: str) -> str:
    """RFC 3501 section 5.1.3 modified UTF-7 (IMAP mailbox names): printable
    ASCII stays (``&`` becomes ``&-``), everything else is base64 of UTF-16BE
    between ``&`` and ``-`` with ``,`` for ``/``.  ``"Reisen ✈ Übersicht"`` ->
    ``"Reisen &Jwg- &ANw-bersicht"``.  The one copy in the project: the tests,
    the demo and the benchmark import it from here."""
    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            raw = "".join(buf).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(name: str) -> str:
    """Inverse of ``mutf7_encode``; an undecodable run is left as it is."""

    def one(m: re.Match[str]) -> str:
        b64 = m.group(1)
        if not b64:
            return "&"
        b64 = b64.replace(",", "/")
        try:
            return base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return m.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", one, name)


class _Imap:
    """Minimal IMAP client that pipelines: all commands are sent at once and
    the tagged answers collected afterwards (one round trip, not one each)."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.n = 0
        greeting = self.rfile.readline()
        if not greeting.startswith(b"* OK"):
            self.close()
            raise CyrusError(f"IMAP greeting: {greeting!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> _Imap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, commands: Sequence[str]) -> list[tuple[str, str]]:
        """Send all commands pipelined; return [(status, text)] in order."""
        tags = []
        data = bytearray()
        for c in commands:
            self.n += 1
            tag = f"c{self.n}"
            tags.append(tag)
            data += f"{tag} {c}\r\n".encode()
        self.sock.sendall(data)
        results: dict[str, tuple[str, str]] = {}
        while len(results) < len(tags):
            line = self.rfile.readline()
            if not line:
                raise CyrusError(f"IMAP connection closed; sent {list(commands)!r}")
            parts = line.decode("utf-8", "replace").rstrip("\r\n").split(" ", 2)
            if parts[0] in tags:
                results[parts[0]] = (parts[1] if len(parts) > 1 else "", " ".join(parts[2:]))
        return [results[t] for t in tags]


def _check(results: list[tuple[str, str]], commands: Sequence[str], *, exists_ok: bool) -> None:
    for (status, text), cmd in zip(results, commands, strict=True):
        if status == "OK":
            continue
        if exists_ok and ("exist" in text.lower() or "[USEATTR]" in text):
            continue
        raise CyrusError(f"IMAP {cmd.split(' ')[0]} failed: {status} {text} (command: {cmd})")


# ------------------------------------------------------------------- server --


class CyrusServer:
    """One private Cyrus instance living in ``dir``.

    ``http_port``/``imap_port``: 0 = pick free ports on 127.0.0.1.
    ``websocket``: True = require a WebSocket-capable httpd: the one named by
    $JMAPSYNC_CYRUS_HTTPD, else the cached build (made now if missing; see
    build_websocket_httpd), error if unusable; False = Debian's httpd,
    None = use it when it is usable (its ".version" file equals the installed
    cyrus-common version), else Debian's httpd.  After ``start()`` the
    attribute says what is running.
    ``pushpoll``: jmap_pushpoll seconds (Cyrus polls for push; 1 = fastest).
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        *,
        http_port: int = 0,
        imap_port: int = 0,
        websocket: bool | None = None,
        pushpoll: int = 1,
        users: Sequence[str] = DEFAULT_USERS,
        password: str = DEFAULT_PASSWORD,
        admin: str = ADMIN,
        admin_password: str = DEFAULT_PASSWORD,
        timeout: float = 30.0,
        extra_config: dict[str, str] | None = None,
    ) -> None:
        self.dir = os.path.abspath(os.fspath(dir))
        self.http_port = int(http_port)
        self.imap_port = int(imap_port)
        self.websocket = websocket
        self.pushpoll = int(pushpoll)
        if self.pushpoll < 1:
            raise CyrusError("pushpoll must be >= 1 (seconds)")
        self.users = list(users)
        self.password = password
        self.admin = admin
        self.admin_password = admin_password
        self.timeout = timeout
        self.extra_config = dict(extra_config or {})
        self.host = HOST
        if os.geteuid() == 0:
            self.cyrus_user = "cyrus"
        else:  # unprivileged: everything runs as the calling user
            self.cyrus_user = pwd.getpwuid(os.geteuid()).pw_name

    # -------------------------------------------------------------- paths --
    @property
    def conf(self) -> str:
        return f"{self.dir}/etc/imapd.conf"

    @property
    def master_conf(self) -> str:
        return f"{self.dir}/etc/cyrus.conf"

    @property
    def pidfile(self) -> str:
        return f"{self.dir}/run/master.pid"

    @property
    def sasldb(self) -> str:
        return f"{self.dir}/etc/sasldb2"

    @property
    def lmtp_socket(self) -> str:
        return f"{self.dir}/run/socket/lmtp"

    @property
    def outbox(self) -> str:
        """EmailSubmission'ed mail lands here as *.eml (+ .json envelope)."""
        return f"{self.dir}/outbox"

    @property
    def log_file(self) -> str:
        return f"{self.dir}/log/master.log"

    @property
    def session_url(self) -> str:
        return f"http://{HOST}:{self.http_port}/jmap/"

    def __repr__(self) -> str:
        return (
            f"CyrusServer(dir={self.dir!r}, http_port={self.http_port}, "
            f"imap_port={self.imap_port}, websocket={self.websocket})"
        )

    def __enter__(self) -> CyrusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ state --
    def master_pid(self) -> int | None:
        """pid of this instance's running master, else None (pid reuse safe)."""
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        if pid <= 0 or not _alive(pid):
            return None
        if self.master_conf.encode() not in _cmdline(pid):
            return None
        return pid

    @property
    def running(self) -> bool:
        return self.master_pid() is not None

    def instance_pids(self) -> list[int]:
        """Every process started for this instance (by environment, not by name)."""
        marker = f"{INSTANCE_ENV}={self.dir}".encode()
        me = os.getpid()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            if marker in _read_environ(int(entry)).split(b"\0"):
                pids.append(int(entry))
        return pids

    @classmethod
    def attach(cls, dir: str | os.PathLike[str]) -> CyrusServer:
        """The instance described by DIR/instance.json (written by start)."""
        d = os.path.abspath(os.fspath(dir))
        try:
            with open(f"{d}/instance.json") as f:
                info = json.load(f)
        except OSError as e:
            raise CyrusError(f"no Cyrus test instance in {d}: {e}") from e
        return cls(
            d,
            http_port=info["http_port"],
            imap_port=info["imap_port"],
            websocket=info.get("websocket"),
            pushpoll=info.get("pushpoll", 1),
            users=info.get("users", DEFAULT_USERS),
            password=info.get("password", DEFAULT_PASSWORD),
            admin=info.get("admin", ADMIN),
            admin_password=info.get("admin_password", DEFAULT_PASSWORD),
        )

    # ------------------------------------------------------------ start --
    def start(self) -> CyrusServer:
        """Start (or reuse) the instance and wait until JMAP answers.

        Idempotent: if this DIR's master already runs with the wanted ports
        (or any ports, when 0 was asked for), it is reused; with other ports
        it is restarted.  Mail and databases in DIR are kept; config files
        are rewritten on every real start.
        """
        if len(self.dir) > MAX_DIR_LEN:
            raise CyrusError(
                f"DIR too long for unix sockets ({len(self.dir)} > {MAX_DIR_LEN}): {self.dir}"
            )
        if not re.fullmatch(r"/[A-Za-z0-9_./+-]+", self.dir):
            raise CyrusError(f"DIR must be an absolute path of [A-Za-z0-9_./+-]: {self.dir!r}")
        if self.http_port and self.http_port == self.imap_port:
            raise CyrusError("http_port and imap_port must differ")
        os.makedirs(self.dir, exist_ok=True)
        ensure_packages(f"{self.dir}/apt-install.log")
        os.chmod(self.dir, 0o755)  # noqa: S103 - services run as user cyrus
        self._check_reachable()

        if self.running:
            info = self._read_info()
            if (
                info
                and self.http_port in (0, info["http_port"])
                and self.imap_port in (0, info["imap_port"])
                and self.websocket in (None, info.get("websocket"))
                and self.pushpoll == info.get("pushpoll")
            ):
                self.http_port, self.imap_port = info["http_port"], info["imap_port"]
                self.websocket = info.get("websocket", False)
                self._wait_ready(time.monotonic() + self.timeout)
                self._provision([(u, self.password) for u in self.users], exists_ok=True)
                return self
            _log("running with other ports or settings: restarting")
            self.stop()

        prev = self._read_info() or {}
        auto_http, auto_imap = not self.http_port, not self.imap_port
        if auto_http and auto_imap and prev:
            # a restarted instance keeps its URL when the old ports are free
            old = (int(prev.get("http_port", 0)), int(prev.get("imap_port", 0)))
            if all(old) and old[0] != old[1] and not any(_port_open(p) for p in old):
                self.http_port, self.imap_port = old

        httpd = self._choose_httpd()
        deadline = time.monotonic() + self.timeout
        for attempt in range(3):
            if not self.http_port:
                self.http_port = free_port()
            while not self.imap_port or self.imap_port == self.http_port:
                self.imap_port = free_port()
            for p in (self.http_port, self.imap_port):
                if _port_open(p):
                    raise CyrusError(f"port {p} on {HOST} is already in use")
            self._write_layout(httpd)
            users = ((self.admin, self.admin_password), *((u, self.password) for u in self.users))
            for u, pw in users:
                with self._saslpasswd(u, pw):
                    pass
            self._chown_tree()
            self._write_info()
            self._start_master()
            # the services bind within ~0.1 s; master only syslogs a failed
            # bind (e.g. a free_port() race), so give up on auto ports early
            auto = auto_http or auto_imap
            try:
                self._wait_ports(min(deadline, time.monotonic() + 3) if auto else deadline)
                break
            except CyrusError:
                if not auto or attempt == 2 or not self.running:
                    raise
                _log(f"ports {self.http_port}/{self.imap_port} did not open, trying others")
                self.stop()
                if auto_http:
                    self.http_port = 0
                if auto_imap:
                    self.imap_port = 0
        self._provision([(u, self.password) for u in self.users], exists_ok=True)
        self._wait_ready(deadline)
        return self

    def _check_reachable(self) -> None:
        """Services run as user cyrus: every parent of DIR must be searchable."""
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam(self.cyrus_user)
        groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if self.cyrus_user in g.gr_mem}
        p = Path(self.dir)
        for d in [p, *p.parents]:
            st = d.stat()
            if st.st_uid == pw.pw_uid:
                ok = st.st_mode & 0o100
            elif st.st_gid in groups:
                ok = st.st_mode & 0o010
            else:
                ok = st.st_mode & 0o001
            if not ok:
                raise CyrusError(
                    f"user {self.cyrus_user!r} cannot reach {self.dir}: {d} is mode "
                    f"{st.st_mode & 0o7777:o}; use a DIR under /tmp or chmod o+x {d}"
                )

    def _choose_httpd(self) -> str:
        want = self.websocket
        path = os.environ.get(HTTPD_ENV, "")
        usable = False
        why = f"${HTTPD_ENV} is not set"
        if want and not path:
            # Only when asked for: with websocket=None the httpd depends on
            # $JMAPSYNC_CYRUS_HTTPD alone, not on what some earlier run cached.
            try:
                path = build_websocket_httpd()  # the cached build, or a new one
            except CyrusError as exc:
                why = str(exc)
        if want is not False and path:
            found = _httpd_unusable(path)
            if found is None:
                usable = True
            else:
                why = found
                if want:
                    # Named but built for another Cyrus: build our own instead.
                    try:
                        path = build_websocket_httpd()
                        usable = _httpd_unusable(path) is None
                    except CyrusError as exc:
                        why = f"{found}; {exc}"
        if want and not usable:
            raise CyrusError(f"websocket=True but no usable WebSocket httpd: {why}")
        if path and not usable and want is None:
            _log(f"WARNING: no WebSocket: {why}; using Debian's httpd")
        self.websocket = usable
        if not usable:
            return "httpd"
        dst = f"{self.dir}/bin/httpd"
        os.makedirs(f"{self.dir}/bin", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)  # may be busy (ETXTBSY) if something still runs it
        shutil.copyfile(path, dst)
        os.chmod(dst, 0o755)  # noqa: S103 - run by master as user cyrus
        return dst

    def _write_layout(self, httpd: str) -> None:
        d = self.dir
        for sub in (
            "etc",
            "lib",
            "spool",
            "sieve",
            "log",
            "run/proc",
            "run/lock",
            "run/socket",
            "tmp",
            "bin",
            "outbox",
            "spool/stage.",
        ):
            os.makedirs(f"{d}/{sub}", exist_ok=True)
        # what Debian's /usr/lib/cyrus/bin/makedirs creates in configdirectory
        for sub in ("db", "proc", "socket", "log", "msg"):
            os.makedirs(f"{d}/lib/{sub}", exist_ok=True)
        for sub in ("user", "quota", "lock"):
            for c in "abcdefghijklmnopqrstuvwxyz":
                os.makedirs(f"{d}/lib/{sub}/{c}", exist_ok=True)
        # stale pid file / sockets / locks of a crashed run; data is kept
        for f in (self.pidfile, self.pidfile + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
        for sub in ("run/socket", "run/proc", "run/lock"):
            for entry in os.scandir(f"{d}/{sub}"):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)

        python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        sink = f"{d}/bin/sendmail"
        Path(sink).write_text(f"#!{python}\n{_SENDMAIL_SINK.lstrip()}")
        os.chmod(sink, 0o755)  # noqa: S103 - run by Cyrus as user cyrus

        conf = {
            "servername": SERVERNAME,
            "configdirectory": f"{d}/lib",
            "defaultpartition": "default",
            "partition-default": f"{d}/spool",
            "sievedir": f"{d}/sieve",
            "temp_path": f"{d}/tmp",
            "proc_path": f"{d}/run/proc",
            "mboxname_lockpath": f"{d}/run/lock",
            "lmtpsocket": self.lmtp_socket,
            "idlesocket": f"{d}/run/socket/idle",
            "notifysocket": f"{d}/run/socket/notify",
            "syslog_prefix": f"cyrus-{self.http_port}",
            "cyrus_user": self.cyrus_user,
            "umask": "077",
            # namespace: "INBOX", "Sent", "Work/Projects"
            "altnamespace": "yes",
            "unixhierarchysep": "yes",
            "virtdomains": "off",
            "hashimapspool": "false",
            # auth: plaintext over loopback, users in a private sasldb
            "admins": self.admin,
            "allowplaintext": "yes",
            "sasl_pwcheck_method": "auxprop",
            "sasl_auxprop_plugin": "sasldb",
            "sasl_sasldb_path": self.sasldb,
            "sasl_mech_list": "PLAIN LOGIN",
            "sasl_auto_transition": "no",
            "allowanonymouslogin": "no",
            # JMAP (RFC 8620/8621) needs conversations
            "httpmodules": "jmap",
            "conversations": "yes",
            "conversations_db": "twoskip",
            "conversations_counted_flags": "\\Draft \\Flagged $HasAttachment",
            "httpallowcompress": "no",
            "httpkeepalive": "0",
            "jmap_pushpoll": str(self.pushpoll),
            "jmap_nonstandard_extensions": "no",
            "jmapsubmission_deleteonsend": "no",
            # Fastmail's Notes folder is special-use \XNotes (JMAP role "xnotes",
            # imap/jmap_mailbox.c _mbox_get_role); Cyrus refuses CREATE ... (USE
            # (\XNotes)) unless it is listed here ("Invalid annotation entry").
            "specialuse_extra": "\\XNotes",
            # VacationResponse/get segfaults Debian's 3.6.1 httpd
            "jmap_vacation": "no",
            "sendmail": sink,
            # test friendliness
            "duplicatesuppression": "no",
            "statuscache": "no",
            "autocreate_quota": "-1",
            "popminpoll": "0",
            "imapidlepoll": "1",
            **self.extra_config,
        }
        text = "# generated by jmapsync tools/cyrus.py -- private test instance, loopback only\n"
        text += "".join(f"{k}: {v}\n" for k, v in conf.items())
        Path(self.conf).write_text(text)

        # master does NOT hand its -C to the services: without an explicit -C
        # every service would silently read /etc/imapd.conf instead.
        c = f"-C {self.conf}"
        imap_listen, http_listen = f"{HOST}:{self.imap_port}", f"{HOST}:{self.http_port}"
        Path(self.master_conf).write_text(
            "# generated by jmapsync tools/cyrus.py -- private test instance, loopback only\n"
            "START {\n"
            f'  recover     cmd="ctl_cyrusdb {c} -r"\n'
            "}\n"
            "SERVICES {\n"
            f'  imap        cmd="imapd {c}" listen="{imap_listen}" prefork=1 maxchild=100\n'
            f'  http        cmd="{httpd} {c}" listen="{http_listen}" prefork=1 maxchild=100\n'
            f'  lmtpunix    cmd="lmtpd {c}" listen="{self.lmtp_socket}" prefork=0 maxchild=20\n'
            "}\n"
            "EVENTS {\n"
            f'  checkpoint  cmd="ctl_cyrusdb {c} -c" period=30\n'
            "}\n"
            "DAEMON {\n"
            f'  idled       cmd="idled {c}"\n'
            "}\n"
        )

    def _chown_tree(self) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam(self.cyrus_user)
        uid, gid = pw.pw_uid, pw.pw_gid
        for root, dirs, files in os.walk(self.dir):
            for name in (*dirs, *files):
                os.lchown(os.path.join(root, name), uid, gid)
        os.chown(self.dir, uid, gid)
        os.chmod(f"{self.dir}/etc", 0o700)
        os.chmod(self.sasldb, 0o600)

    def _info(self) -> dict[str, Any]:
        return {
            "dir": self.dir,
            "http_port": self.http_port,
            "imap_port": self.imap_port,
            "session_url": self.session_url,
            "lmtp_socket": self.lmtp_socket,
            "websocket": bool(self.websocket),
            "pushpoll": self.pushpoll,
            "users": self.users,
            "password": self.password,
            "admin": self.admin,
            "admin_password": self.admin_password,
        }

    def _read_info(self) -> dict[str, Any] | None:
        try:
            with open(f"{self.dir}/instance.json") as f:
                info: dict[str, Any] = json.load(f)
        except (OSError, ValueError):
            return None
        return info

    def _write_info(self) -> None:
        info = self._info()
        path = f"{self.dir}/instance.json"
        with open(path + ".tmp", "w") as f:
            json.dump(info, f, indent=1)
        os.replace(path + ".tmp", path)
        os.chmod(path, 0o644)
        env = "".join(
            f"{k.upper()}={v}\n"
            for k, v in (
                ("http_port", self.http_port),
                ("imap_port", self.imap_port),
                ("lmtp_socket", self.lmtp_socket),
                ("session_url", self.session_url),
                ("users", ",".join(self.users)),
                ("password", self.password),
                ("admin", self.admin),
                ("websocket", int(bool(self.websocket))),
            )
        )
        Path(f"{self.dir}/instance.env").write_text(env)
        os.chmod(f"{self.dir}/instance.env", 0o644)

    def _start_master(self) -> None:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            INSTANCE_ENV: self.dir,
        }
        if "TZ" in os.environ:
            env["TZ"] = os.environ["TZ"]
        # -d: daemonize (returns when the child holds the pid file lock);
        # -L: stdout/stderr of master and services go to the log file.
        cmd = [
            str(BIN / "master"),
            "-d",
            "-C",
            self.conf,
            "-M",
            self.master_conf,
            "-p",
            self.pidfile,
            "-L",
            self.log_file,
        ]
        with open(self.log_file, "ab") as errf:
            res = subprocess.run(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=errf,
                stderr=errf,
                cwd=self.dir,
                check=False,
            )
        if res.returncode != 0:
            raise CyrusError(f"master failed to start (exit {res.returncode}):\n{self._log_tail()}")

    def _log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_file, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_ports(self, deadline: float) -> None:
        while not (_port_open(self.imap_port) and _port_open(self.http_port)):
            if not self.running:
                raise CyrusError(f"master died:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise CyrusError(f"timeout waiting for ports {self.imap_port}/{self.http_port}")
            time.sleep(0.02)

    def _wait_ready(self, deadline: float) -> None:
        user = self.users[0] if self.users else self.admin
        pw = self.password if self.users else self.admin_password
        last = ""
        while True:
            try:
                session = _get_json(self.http_port, "/jmap/", user, pw)
                if "urn:ietf:params:jmap:mail" in session.get("capabilities", {}):
                    return
                last = f"no mail capability in {session!r}"
            except (OSError, http.client.HTTPException, ValueError) as e:
                last = repr(e)
            if not self.running:
                raise CyrusError(f"master died:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise CyrusError(f"timeout waiting for JMAP at {self.session_url}: {last}")
            time.sleep(0.05)

    # ------------------------------------------------------------ users --
    @contextlib.contextmanager
    def _saslpasswd(self, name: str, password: str) -> Iterator[None]:
        """Set a password in the private sasldb; saslpasswd2 runs while the
        body of the with-statement does (add_user overlaps it with IMAP).

        sasldb keys are user@realm; Cyrus looks users up in realm =
        servername.  A lock file serializes writers (several processes may
        add users to one instance)."""
        with open(f"{self.dir}/run/sasldb.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            proc = subprocess.Popen(
                [SASLPASSWD2, "-p", "-c", "-f", self.sasldb, "-u", SERVERNAME, name],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            assert proc.stdin is not None and proc.stderr is not None  # noqa: S101
            try:
                proc.stdin.write(password.encode())
                proc.stdin.close()
                yield
            finally:
                err = proc.stderr.read()
                proc.stderr.close()
                rc = proc.wait()
            if rc != 0:
                raise CyrusError(f"saslpasswd2 {name} failed: {err.decode(errors='replace')}")
            pw = pwd.getpwnam(self.cyrus_user)
            if os.geteuid() == 0 and os.stat(self.sasldb).st_uid != pw.pw_uid:
                os.chown(self.sasldb, pw.pw_uid, pw.pw_gid)
                os.chmod(self.sasldb, 0o600)

    def _admin_creates(self, names: Sequence[str]) -> list[str]:
        cmds = []
        for n in names:
            cmds.append(f"CREATE {_imap_quote('user/' + n)}")
            for folder, use in SPECIAL_FOLDERS:
                mbox = _imap_quote(f"user/{n}/{mutf7_encode(folder)}")
                cmds.append(f"CREATE {mbox} (USE ({use}))")
        return cmds

    def _subscribe_all(self, name: str, password: str) -> None:
        folders = ["INBOX", *(mutf7_encode(f) for f, _ in SPECIAL_FOLDERS)]
        cmds = [f"LOGIN {_imap_quote(name)} {_imap_quote(password)}"]
        cmds += [f"SUBSCRIBE {_imap_quote(f)}" for f in folders] + ["LOGOUT"]
        with _Imap(self.imap_port) as c:
            _check(c.run(cmds), [f"LOGIN {name}", *cmds[1:]], exists_ok=False)

    def _admin_session(self) -> _Imap:
        conn = _Imap(self.imap_port)
        try:
            login = f"LOGIN {_imap_quote(self.admin)} {_imap_quote(self.admin_password)}"
            _check(conn.run([login]), [f"LOGIN {self.admin}"], exists_ok=False)
        except BaseException:
            conn.close()
            raise
        return conn

    def _provision(self, accounts: Sequence[tuple[str, str]], *, exists_ok: bool) -> None:
        """Create user/<name> and its special-use folders as admin, then
        subscribe them as the user (each step one pipelined IMAP batch).
        With exists_ok (restart on old data), existing mailboxes are fine."""
        if not accounts:
            return
        with self._admin_session() as a:
            cmds = self._admin_creates([n for n, _ in accounts])
            _check(a.run([*cmds, "LOGOUT"]), [*cmds, "LOGOUT"], exists_ok=exists_ok)
        for name, pw in accounts:
            self._subscribe_all(name, pw)

    def add_user(self, name: str, password: str = DEFAULT_PASSWORD) -> None:
        """Create a user on the running server: sasldb entry, mailbox
        user/<name> (via admin IMAP), the special-use folders Sent, Drafts,
        Trash, Junk, Archive, and subscriptions to them and INBOX."""
        if not _USER_RE.match(name):
            raise CyrusError(f"bad user name {name!r} (use [a-z0-9._-], lower case)")
        # saslpasswd2 runs while Cyrus creates the mailboxes
        with self._admin_session() as a, self._saslpasswd(name, password):
            cmds = self._admin_creates([name])
            _check(a.run([*cmds, "LOGOUT"]), [*cmds, "LOGOUT"], exists_ok=False)
        self._subscribe_all(name, password)

    # ------------------------------------------------------------- stop --
    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM master (by pid file), then any leftover process of this
        instance (by CYRUS_TEST_INSTANCE=DIR in its environment)."""
        pid = self.master_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone([pid], timeout):
                _log(f"master {pid} ignored SIGTERM, sending SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone([pid], 5)
        left = self.instance_pids()
        if left:
            for p in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGTERM)
            if not _wait_gone(left, 5):
                for p in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                _wait_gone(left, 5)
        for f in (self.pidfile, self.pidfile + ".lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f)
        sockdir = f"{self.dir}/run/socket"
        if os.path.isdir(sockdir):
            for entry in os.scandir(sockdir):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        still = [p for p in self.instance_pids() if _alive(p)]
        if still:
            raise CyrusError(f"still running after stop: {still}")

    # ------------------------------------------------------------ tools --
    def ctl(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a Cyrus tool (cyr_expire, squatter, reconstruct, mbpath, ...)
        as the cyrus user with this instance's config."""
        cmd = [str(BIN / tool), "-C", self.conf, *args]
        kw: dict[str, Any] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.cyrus_user)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", INSTANCE_ENV: self.dir}
        return subprocess.run(
            cmd, capture_output=True, text=True, check=check, env=env, cwd=self.dir, **kw
        )


def _get_json(port: int, path: str, user: str, password: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        conn.request("GET", path, headers={"Authorization": f"Basic {auth}"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        data: dict[str, Any] = json.loads(body)
        return data
    finally:
        conn.close()


# ------------------------------------------------------- functional API --


def start(
    dir: str | os.PathLike[str], http_port: int = 0, imap_port: int = 0, **kwargs: Any
) -> CyrusServer:
    """Start (or reuse) the instance in DIR; see CyrusServer for kwargs."""
    return CyrusServer(dir, http_port=http_port, imap_port=imap_port, **kwargs).start()


def stop(dir: str | os.PathLike[str]) -> None:
    """Stop the instance in DIR (no error when nothing runs there)."""
    d = os.path.abspath(os.fspath(dir))
    if not os.path.isdir(d):
        return
    CyrusServer(d).stop()


def add_user(dir: str | os.PathLike[str], name: str, password: str = DEFAULT_PASSWORD) -> None:
    """Add a user to the instance running in DIR."""
    srv = CyrusServer.attach(dir)
    if not srv.running:
        raise CyrusError(f"no Cyrus running in {srv.dir}")
    srv.add_user(name, password)


@contextlib.contextmanager
def running(dir: str | os.PathLike[str], **kwargs: Any) -> Iterator[CyrusServer]:
    """``with running(DIR) as srv:`` start ... stop."""
    srv = start(dir, **kwargs)
    try:
        yield srv
    finally:
        srv.stop()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/cyrus.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start", help="start (or reuse) the instance in DIR; prints the session URL")
    p.add_argument("dir")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--imap-port", type=int, default=0)
    p.add_argument("--pushpoll", type=int, default=1, help="jmap_pushpoll seconds (default 1)")
    ws = p.add_mutually_exclusive_group()
    ws.add_argument(
        "--websocket",
        dest="websocket",
        action="store_const",
        const=True,
        default=None,
        help=f"require the WebSocket httpd (${HTTPD_ENV})",
    )
    ws.add_argument("--no-websocket", dest="websocket", action="store_const", const=False)
    p = sub.add_parser("stop", help="stop the instance in DIR (data stays)")
    p.add_argument("dir")
    p = sub.add_parser("adduser", help="add a user (with special-use folders) to a running DIR")
    p.add_argument("dir")
    p.add_argument("name")
    p.add_argument("--password", default=DEFAULT_PASSWORD)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        if args.cmd == "start":
            srv = start(
                args.dir,
                args.http_port,
                args.imap_port,
                websocket=args.websocket,
                pushpoll=args.pushpoll,
            )
            _log(
                f"ready in {time.monotonic() - t0:.2f} s: IMAP {HOST}:{srv.imap_port}, "
                f"users {','.join(srv.users)} / {srv.password!r}, admin {srv.admin!r}, "
                f"websocket {srv.websocket}, LMTP {srv.lmtp_socket}"
            )
            print(srv.session_url)
        elif args.cmd == "stop":
            stop(args.dir)
            _log(f"stopped in {time.monotonic() - t0:.2f} s")
        else:
            add_user(args.dir, args.name, args.password)
            _log(f"user {args.name} added in {time.monotonic() - t0:.3f} s")
    except CyrusError as e:
        _log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
