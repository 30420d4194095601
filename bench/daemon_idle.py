#!/usr/bin/env python3
"""`jmapsync daemon` at rest: CPU, memory and wake-ups of N idle accounts.

Run as ``.venv/bin/python bench/daemon_idle.py [ARGS]``::

    bench/daemon_idle.py                       # 10 accounts, 10 minutes idle, mutt, own renames
    bench/daemon_idle.py --minutes 2 --mutt-messages 2000
    bench/daemon_idle.py --jmapsync /work/wt-perf-base/.venv/bin/jmapsync   # another build

Method
------
* A private Cyrus with a WebSocket httpd (tools/cyrus.py, $JMAPSYNC_CYRUS_HTTPD
  as the tests use) and N users: each holds ``--messages`` small messages
  (~2 KB, read: \\Seen) in INBOX, Archive and Work; the first one also
  ``--mutt-messages`` in a folder "Big" for the mail program phase.
* One config with N two-way accounts (push auto: WebSocket; poll_interval
  300 s, the backstop).  A one-shot ``jmapsync sync`` mirrors them first
  (not measured), then ``jmapsync daemon`` starts; the measurement starts
  once every account has its push channel and no pass ran for 5 s.
* **idle**: nothing happens for ``--minutes``.  Read from /proc at the start
  and the end: CPU (utime + stime of all threads), RSS and peak RSS
  (VmHWM), and per thread the number of times it was scheduled
  (/proc/PID/task/TID/schedstat, 3rd field: each wake-up from a sleep is
  one) and its voluntary context switches.  Every second the per-thread
  counts are sampled, so that a timer firing every second shows as a thread
  awake in every one-second bin.  ``--strace`` adds ``strace -c -f`` over
  the window (system calls by kind).  The budget is the push keep-alive:
  per account one WebSocket ping (and its pong) every 30 s, one pass every
  poll_interval.
* **mutt**: a real mutt (tmux, as tests/integration/test_mutt.py) opens
  the big folder (it reads every file), pages through the index, reads
  messages, changes folder, and leaves without saving (``x``).  Reading mail
  changes nothing, so it must cause no pass and (almost) no CPU.
* **own renames**: ``--flag-changes`` messages of another account are
  flagged over IMAP: the push runs ONE pass, which renames as many files;
  those renames are our own and must not run a second pass.  Then they are
  unflagged (one more pass).
* Output: the figures, and bench/results/daemon-idle.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from compare import Account, Mailstore, compile_package, machine_info  # noqa: E402

from tools.cyrus import DEFAULT_PASSWORD, CyrusServer  # noqa: E402

RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WS_PING_S = 30.0  # jmap/push.py WS_PING_S
POLL_S = 300.0  # poll_interval: the backstop pass

# -- mail ------------------------------------------------------------------------


def small_message(user: str, i: int) -> bytes:
    rng = random.Random(f"{user}:{i}")
    words = ["mail", "sync", "folder", "state", "server", "mirror", "push", "idle", "quiet"]
    body = "\r\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(28))
    return (
        f"From: Sender {i % 50} <s{i % 50}@example.org>\r\n"
        f"To: {user}@example.com\r\nSubject: idle bench {i}\r\n"
        f"Date: Mon, 1 Jan 2024 08:00:00 +0000\r\nMessage-ID: <{user}.{i}@idle.test>\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def load(acct: Account, folders: dict[str, int], threads: int = 3) -> None:
    """Append small \\Seen messages, `folders` = {name: count}, a few connections at once."""
    with Mailstore(acct) as ms:
        for name in folders:
            if name != "INBOX":
                ms.create(name)
    jobs = [(name, i) for name, n in folders.items() for i in range(n)]

    def work(part: list[tuple[str, int]]) -> None:
        with Mailstore(acct) as ms:
            for name, i in part:
                ms.conn.append(name, "(\\Seen)", None, small_message(f"{acct.user}{name}", i))

    parts = [jobs[k::threads] for k in range(threads)]
    ts = [threading.Thread(target=work, args=(p,)) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# -- the daemon process ----------------------------------------------------------


class Daemon:
    def __init__(self, argv: list[str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log)
        self.pid = self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                e = json.loads(line)
                if isinstance(e, dict) and (name is None or e.get("event") == name):
                    out.append(e)
        return out

    def wait(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode} waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def quiet_for(self, seconds: float, timeout: float = 600) -> None:
        """Until no pass started or ended for `seconds`."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = len(self.events())
            if n != seen:
                seen, since = n, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
            time.sleep(0.25)
        raise RuntimeError("the daemon never went quiet")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self._log.close()


# -- /proc -----------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    cpu_s: float
    rss_mb: float
    hwm_mb: float
    threads: dict[int, tuple[int, int]]  # tid -> (times scheduled, voluntary switches)


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def sample(pid: int) -> Sample:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    st = _status(pid)
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                runs = int(f.read().split()[2])
            vol = int(_status_task(pid, tid).get("voluntary_ctxt_switches", "0"))
            threads[int(tid)] = (runs, vol)
    return Sample(
        time.monotonic(),
        cpu,
        int(st["VmRSS"].split()[0]) / 1024,
        int(st["VmHWM"].split()[0]) / 1024,
        threads,
    )


def _status_task(pid: int, tid: str) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _thread_name(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


@dataclass
class Window:
    """One measured phase."""

    name: str
    seconds: float = 0.0
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    hwm_mb: float = 0.0
    wakeups: int = 0
    voluntary: int = 0
    busiest_bins: int = 0  # of the one-second bins, those in which the busiest thread ran
    bins: int = 0
    per_thread: list[dict[str, Any]] = field(default_factory=list)
    passes: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    strace: str = ""
    notes: list[str] = field(default_factory=list)
    load1: float = 0.0


def measure(
    daemon: Daemon, name: str, seconds: float, action: Callable[[], None] | None, strace: bool
) -> Window:
    """Sample the daemon every second for `seconds` (running `action` in a thread)."""
    pid = daemon.pid
    n_events = len(daemon.events())
    tracer = None
    if strace and shutil.which("strace"):
        out = daemon.log_path.with_suffix(f".{name}.strace")
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(out), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # attached to every thread
    first = sample(pid)
    timeline = [first]
    worker = threading.Thread(target=action) if action else None
    if worker:
        worker.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end or (worker and worker.is_alive()):
        time.sleep(max(0.0, min(1.0, end - time.monotonic())) or 1.0)
        timeline.append(sample(pid))
    last = timeline[-1]
    w = Window(name, seconds=last.at - first.at)
    w.cpu_s = last.cpu_s - first.cpu_s
    w.rss_mb, w.hwm_mb = last.rss_mb, last.hwm_mb
    for tid, (runs, vol) in last.threads.items():
        r0, v0 = first.threads.get(tid, (0, 0))
        active = sum(
            1
            for a, b in itertools.pairwise(timeline)
            if b.threads.get(tid, (0, 0))[0] > a.threads.get(tid, (0, 0))[0]
        )
        w.per_thread.append(
            {
                "tid": tid,
                "name": _thread_name(pid, tid),
                "wakeups": runs - r0,
                "voluntary": vol - v0,
                "active_bins": active,
            }
        )
    w.per_thread.sort(key=lambda t: -t["wakeups"])
    w.wakeups = sum(t["wakeups"] for t in w.per_thread)
    w.voluntary = sum(t["voluntary"] for t in w.per_thread)
    w.bins = len(timeline) - 1
    w.load1 = os.getloadavg()[0]
    w.busiest_bins = max((t["active_bins"] for t in w.per_thread), default=0)
    new = daemon.events()[n_events:]
    w.passes = [
        {"account": e.get("account"), "reasons": e.get("reasons"), "mode": e.get("mode")}
        for e in new
        if e.get("event") == "pass"
    ]
    for e in new:
        w.events[e.get("event", "?")] = w.events.get(e.get("event", "?"), 0) + 1
    if tracer is not None:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        with contextlib.suppress(OSError):
            w.strace = daemon.log_path.with_suffix(f".{name}.strace").read_text()
    return w


def report(w: Window, accounts: int) -> None:
    minutes = w.seconds / 60
    budget = accounts * (w.seconds / WS_PING_S * 2 + w.seconds / POLL_S * 20)
    print(f"\n-- {w.name}: {w.seconds:.0f} s (load average at the end {w.load1:.2f})")
    print(
        f"   CPU {w.cpu_s:.2f} s ({w.cpu_s / max(minutes, 1e-9):.2f} s/min), RSS {w.rss_mb:.1f} MB,"
        f" peak RSS {w.hwm_mb:.1f} MB, threads {len(w.per_thread)}"
    )
    print(
        f"   wake-ups {w.wakeups} ({w.wakeups / max(w.seconds, 1e-9):.2f}/s; push keep-alive"
        f" and backstop budget ~{budget:.0f}), voluntary switches {w.voluntary};"
        f" busiest thread awake in {w.busiest_bins} of {w.bins} one-second bins"
    )
    for t in w.per_thread[:6]:
        print(
            f"     tid {t['tid']} {t['name']:<16} wake-ups {t['wakeups']:6}"
            f"  awake in {t['active_bins']:4} bins"
        )
    reasons: dict[str, int] = {}
    for p in w.passes:
        key = ",".join(p["reasons"] or [])
        reasons[key] = reasons.get(key, 0) + 1
    print(f"   passes {len(w.passes)} by reasons {reasons}; log events {w.events}")
    for note in w.notes:
        print(f"   {note}")
    if w.strace:
        rows = [x for x in w.strace.splitlines() if x.strip()][:12]
        print("   strace -c -f:\n     " + "\n     ".join(rows))


# -- mutt -----------------------------------------------------------------------------

MUTTRC = """\
set mbox_type=Maildir
set folder="{folder}"
set spoolfile=+INBOX
set mark_old=no
unset wait_key
set header_cache=""
set sleep_time=0
set beep=no
set help=no
set timeout=3600
set mail_check=3600
set sort=date
"""


class Tmux:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="jmsi-", dir="/tmp"))
        self.sock = self.dir / "tmux.sock"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.sock), "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            timeout=60,
        )
        return done.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "m")

    def wait(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if time.monotonic() > deadline:
                raise RuntimeError(f"mutt: no {text!r} on screen:\n{self.screen()}")
            time.sleep(0.1)

    def close(self) -> None:
        self.run("kill-server")
        shutil.rmtree(self.dir, ignore_errors=True)


def mutt_session(maildir: Path, notes: list[str]) -> None:
    """Open the big folder, page through it, read messages, change folder,
    leave without saving."""
    tm = Tmux()
    try:
        rc = tm.dir / "muttrc"
        rc.write_text(MUTTRC.format(folder=maildir))
        cmd = shlex.join(["mutt", "-n", "-F", str(rc), "-f", str(maildir / "Big")])
        t0 = time.monotonic()
        tm.run("new-session", "-d", "-s", "m", "-x", "160", "-y", "50", f"{cmd}; sleep 3600")
        tm.wait("idle bench")
        notes.append(f"mutt opened Big in {time.monotonic() - t0:.1f} s")
        for _ in range(30):  # page down through the index
            tm.run("send-keys", "-t", "m", "z")
            time.sleep(0.2)
        for _ in range(5):  # read five messages, paging in each
            tm.run("send-keys", "-t", "m", "Enter")
            time.sleep(0.5)
            tm.run("send-keys", "-t", "m", "Space")
            time.sleep(0.3)
            tm.run("send-keys", "-t", "m", "i", "j")
            time.sleep(0.3)
        tm.run("send-keys", "-t", "m", "c")
        time.sleep(0.3)
        tm.run("send-keys", "-t", "m", "-l", "=Archive")
        tm.run("send-keys", "-t", "m", "Enter")
        time.sleep(1.0)
        for _ in range(5):
            tm.run("send-keys", "-t", "m", "z")
            time.sleep(0.2)
        tm.run("send-keys", "-t", "m", "x")  # exit without saving
        time.sleep(1.0)
    finally:
        tm.close()


# -- main -----------------------------------------------------------------------------


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="jmapsync daemon at rest (see the module docstring)")
    p.add_argument("--accounts", type=int, default=10)
    p.add_argument("--messages", type=int, default=200, help="per account")
    p.add_argument("--mutt-messages", type=int, default=20000, help="0: no mutt phase")
    p.add_argument("--minutes", type=float, default=10.0, help="idle window")
    p.add_argument("--flag-changes", type=int, default=500, help="own-renames phase; 0: none")
    p.add_argument("--strace", action="store_true", help="strace -c -f over each window")
    p.add_argument("--jmapsync", default=str(Path(sys.executable).parent / "jmapsync"))
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    jm = [args.jmapsync]
    python = Path(args.jmapsync).read_text().splitlines()[0].removeprefix("#!").split()[0]
    compiled = compile_package(python)
    machine = machine_info()
    machine["byte_compiled"] = compiled
    print(f"{machine['date']}  {machine['nproc']} CPUs, {args.jmapsync}")
    print("uptime:", _uptime())
    tmp = Path(tempfile.mkdtemp(prefix="jmsi-", dir="/tmp"))
    tmp.chmod(0o755)
    srv = CyrusServer(tmp / "cy", http_port=0, imap_port=0, websocket=True)
    daemon = None
    windows: list[Window] = []
    try:
        srv.start()
        users = [f"idle{k}" for k in range(args.accounts)]
        t0 = time.monotonic()
        for k, user in enumerate(users):
            srv.add_user(user)
            folders = {"INBOX": args.messages // 2, "Archive": args.messages // 4}
            folders["Work"] = args.messages - sum(folders.values())
            if k == 0 and args.mutt_messages:
                folders["Big"] = args.mutt_messages
            load(Account(user, DEFAULT_PASSWORD, srv.imap_port, srv.session_url), folders)
        print(f"loaded {len(users)} accounts in {time.monotonic() - t0:.0f} s")
        config = tmp / "config.ini"
        lines = ["[jmapsync]", f"state_dir = {tmp / 'state'}", f"poll_interval = {POLL_S:g}"]
        for user in users:
            lines += [
                f"[account {user}]",
                f"session_url = {srv.session_url}",
                f"username = {user}",
                f"password = {DEFAULT_PASSWORD}",
                f"maildir = {tmp / 'mail' / user}",
                "direction = two-way",
            ]
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        t0 = time.monotonic()
        subprocess.run([*jm, "-c", str(config), "sync"], check=True, capture_output=True)
        print(f"first sync of every account in {time.monotonic() - t0:.0f} s")
        daemon = Daemon(
            [*jm, "-c", str(config), "--log-format", "json", "daemon"], tmp / "daemon.log"
        )
        daemon.wait("daemon-ready", lambda: bool(daemon.events("daemon-ready")), 600)
        daemon.wait(
            "every push channel",
            lambda: len({e.get("account") for e in daemon.events("push-connected")}) >= len(users),
            120,
        )
        daemon.quiet_for(5)
        print(f"daemon {daemon.pid} ready; measuring")
        idle = measure(daemon, "idle", args.minutes * 60, None, args.strace)
        windows.append(idle)
        report(idle, len(users))
        if args.mutt_messages and shutil.which("mutt") and shutil.which("tmux"):
            w = Window("mutt")
            mutt = measure(
                daemon,
                "mutt",
                10,
                lambda: mutt_session(tmp / "mail" / users[0], w.notes),
                args.strace,
            )
            mutt.notes = w.notes
            windows.append(mutt)
            report(mutt, len(users))
        if args.flag_changes:
            acct = Account(users[-1], DEFAULT_PASSWORD, srv.imap_port, srv.session_url)

            def flag(op: str) -> Callable[[], None]:
                def go() -> None:
                    with Mailstore(acct) as ms:
                        ms.select("INBOX")
                        uids = [u for u, _ in ms.uid_flags("INBOX")][: args.flag_changes]
                        ms.store(uids, op, "(\\Flagged)")

                return go

            for op in ("+FLAGS.SILENT", "-FLAGS.SILENT"):
                w = measure(daemon, f"own renames ({op[0]}flag)", 20, flag(op), args.strace)
                windows.append(w)
                report(w, len(users))
    finally:
        if daemon is not None:
            daemon.stop()
        with contextlib.suppress(Exception):
            srv.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("uptime:", _uptime())
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "" if Path(args.jmapsync).resolve().is_relative_to(REPO) else "-other"
    out = RESULTS / f"daemon-idle{tag}.json"
    doc = {
        "benchmark": "bench/daemon_idle.py",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "args": vars(args),
        "windows": [w.__dict__ | {"load1_at_end": w.load1} for w in windows],
        "load1_end": os.getloadavg()[0],
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
