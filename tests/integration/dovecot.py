"""A private Dovecot IMAP server over a jmapsync Maildir, for tests.

Debian's dovecot-core is installed when missing (root; the package's own
service is kept from starting by policy-rc.d).  Debian's dovecot-imapd is
NOT installed: it Conflicts with cyrus-imapd (both "Provide: imap-server"),
and installing it removes the Cyrus the rest of the suite runs on.  Its
package is downloaded instead (`apt-get download`, the version of the
installed dovecot-core) and unpacked into ~/.cache/jmapsync/dovecot-imapd;
our config points Dovecot's imap and imap-login services at those binaries.

ONE dovecot process is then started with its own config in a temporary
directory: its own base_dir, a passwd-file user, a free loopback port,
`mail_location` = the mirror with the layout's LAYOUT setting.  No
system-wide service is used or touched; `stop()` ends the process this
module started, by its pid.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

DOVECOT = "/usr/sbin/dovecot"
POLICY = Path("/usr/sbin/policy-rc.d")
# Dovecot never runs a mail process as root; the mirror is handed to Debian's
# "mail" user while Dovecot reads it (`share()`), as if both ran as one user.
MAIL_UID = pwd.getpwnam("mail").pw_uid
MAIL_GID = pwd.getpwnam("mail").pw_gid
IMAPD_DIR = Path.home() / ".cache" / "jmapsync" / "dovecot-imapd"


def imap_binary(name: str) -> str:
    """Path of an IMAP service binary (imap, imap-login): the system's if
    dovecot-imapd is installed, else our unpacked copy."""
    system = Path("/usr/lib/dovecot") / name
    return str(system if system.exists() else IMAPD_DIR / "usr/lib/dovecot" / name)


def ensure_installed() -> None:
    """dovecot-core installed, dovecot-imapd's binaries at hand; skip the test
    when that cannot be had."""
    if not Path(DOVECOT).exists():
        _apt_install("dovecot-core")
    if Path(imap_binary("imap")).exists() and Path(imap_binary("imap-login")).exists():
        return
    core = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", "dovecot-core"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    IMAPD_DIR.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        done = subprocess.run(
            ["apt-get", "download", f"dovecot-imapd={core}"],
            cwd=IMAPD_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            break
        if attempt == 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, check=False)
    else:
        pytest.skip(
            f"apt-get download dovecot-imapd={core} failed (runs when a Debian mirror"
            f" is reachable): {done.stderr[-300:]}"
        )
    [deb] = sorted(IMAPD_DIR.glob("dovecot-imapd_*.deb"))[-1:]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(IMAPD_DIR)], check=True)


def _apt_install(package: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            f"{package} is not installed and this is not root on Debian"
            " (apt-get install it, or run as root)"
        )
    added_policy = False
    if not POLICY.exists():
        # Install without starting Debian's system-wide dovecot service.
        POLICY.write_text("#!/bin/sh\nexit 101\n")
        POLICY.chmod(0o755)
        added_policy = True
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run = subprocess.run
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
        if run(cmd, env=env, capture_output=True, check=False).returncode != 0:
            run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            done = run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(
                    f"apt-get install {package} failed (runs when a Debian mirror is"
                    f" reachable): {done.stderr[-300:]}"
                )
    finally:
        if added_policy:
            POLICY.unlink(missing_ok=True)


def version() -> str:
    return subprocess.run(
        [DOVECOT, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    dir: Path
    maildir: Path
    layout: str
    user: str = "tester"
    password: str = "secret"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.dir / "dovecot.conf"

    def start(self) -> Dovecot:
        ensure_installed()
        self.share()
        self.port = _free_port()
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        for sub in ("index", "home"):
            (self.dir / sub).mkdir(exist_ok=True)
            os.chown(self.dir / sub, MAIL_UID, MAIL_GID)
        (self.dir / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        (self.dir / "passwd").chmod(0o644)
        if self.layout == "verbatim":
            # mbsync's "SubFolders Verbatim" = Dovecot's LAYOUT=fs, inbox in INBOX/.
            location = f"maildir:{self.maildir}:LAYOUT=fs:INBOX={self.maildir}/INBOX"
        else:
            location = f"maildir:{self.maildir}"
        # Indexes elsewhere; the control files (dovecot-keywords, dovecot-uidlist)
        # stay in the folders: that is where Dovecot reads keyword names.
        location += f":INDEX={self.dir}/index"
        self.config.write_text(
            f"""
base_dir = {self.dir}/run
instance_name = jmsd{self.port}
state_dir = {self.dir}/run
log_path = {self.dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = {location}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_GID} home={self.dir}/home
}}
service imap {{
  executable = {imap_binary("imap")}
}}
service imap-hibernate {{
  executable = {imap_binary("imap-hibernate")}
}}
service imap-urlauth {{
  executable = {imap_binary("imap-urlauth")}
}}
service imap-urlauth-login {{
  executable = {imap_binary("imap-urlauth-login")}
}}
service imap-urlauth-worker {{
  executable = {imap_binary("imap-urlauth-worker")}
}}
service imap-login {{
  executable = {imap_binary("imap-login")}
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""
        )
        with open(self.dir / "stderr", "wb") as err:
            self.proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=err
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"dovecot did not listen: {self.log()}")

    def share(self) -> None:
        """Give the mirror to Dovecot's user (jmapsync, as root, wrote it)."""
        for dirpath, dirnames, filenames in os.walk(self.maildir):
            for name in [".", *dirnames, *filenames]:
                os.chown(os.path.join(dirpath, name), MAIL_UID, MAIL_GID)

    def log(self) -> str:
        out = ""
        for name in ("stderr", "dovecot.log"):
            p = self.dir / name
            if p.exists():
                out += p.read_text(errors="replace")[-2000:]
        return out

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
