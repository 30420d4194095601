#!/usr/bin/env python3
"""jmapsync vs mbsync (and optionally OfflineIMAP) against one throwaway Cyrus.

Run as ``./dev bench [ARGS]`` (or ``python3 bench/compare.py [ARGS]``)::

    ./dev bench                          # N=2000, 3 rounds
    ./dev bench --sizes 2000,20000 --rounds 5
    ./dev bench --offlineimap            # adds OfflineIMAP (only for N <= 2000)

Method
------
* A private Cyrus 3.6 is started on 127.0.0.1 with the project's
  ``tools/cyrus.py`` in a fresh directory under /tmp (removed at the end).
* For each N a fresh user ``benchN`` is created and loaded with N messages:
  by /work/shared/cyrus/populate.py (IMAP MULTIAPPEND) when it exists, else
  by this script's own deterministic generator (sizes 2.5-195 KB, median about
  12 KB, 8 folders, one non-ASCII, ~2 % of the messages in two folders,
  flags \\Seen/\\Flagged/\\Answered; loaded by IMAP APPEND).  Messages in two
  folders are two IMAP messages (and one JMAP Email with two mailboxIds);
  both tools write one file per folder copy.
* Rounds alternate the tools (A B A B ...) so slow drift of the machine hits
  both alike.  In each round each tool, in turn:

  1. *initial pull*: empty Maildir, empty state (jmapsync: fresh
     ``state_dir``, layout verbatim, direction pull; mbsync: SyncState * in
     a fresh Maildir);
  2. *no-change re-sync*: the same command again on the synced mirror;
     jmapsync runs it ``--noop-repeat`` times (default 5), each right after
     a ``python -c pass`` of the same interpreter: the table shows the
     no-change run against start-up alone and against mbsync's no-change run
     (issue 16's target: within 0.10 s of ``python -c pass``);
  3. *incremental*: a fresh batch of server changes is applied over IMAP
     (``--flag-changes`` STORE +/-FLAGS \\Flagged, ``--moves`` UID MOVE,
     ``--new`` APPENDs of new messages to INBOX), then the command again.
     The batch is undone afterwards (untimed: the new messages expunged, the
     moved ones moved back, the flags reset), so every round starts from the
     same N messages and each tool sees exactly one batch.

* jmapsync's byte code is compiled first (``compileall``, as ``pip install``
  does): an editable checkout with PYTHONDONTWRITEBYTECODE set would
  otherwise compile every module on every run and time the compiler.
* jmapsync's passes log their stages (SyncReport.phases, from the JSON
  ``sync-done`` line): the incremental runs print them -- start-up and exit
  (the process wall time minus the pass), remote read, folders, scan and
  plan, execute, record.
* Each command is one child process: wall time from ``time.perf_counter``,
  CPU (user+sys) from ``os.wait4``, peak RSS from GNU ``/usr/bin/time -f %M``
  (or sampled VmHWM without it) -- not from wait4's ru_maxrss, which starts
  at the RSS of the forking parent (this Python, ~30 MB).
* After every run the mirror is counted (files in ``cur/`` and ``new/``) and
  compared, folder by folder, with the server's IMAP message counts; after the
  initial pull the tools' counts are compared with each other.  Mismatches are
  printed and stored, never hidden.
* Output: a table of medians [min-max] and the ratios jmapsync/mbsync,
  ``bench/results/compare-N.json`` (all runs, counts, machine info) and
  ``bench/results/compare.png`` (time vs N per tool, drawn from every
  compare-*.json present in bench/results).

Caveats
-------
* The mirrors are not byte-identical.  mbsync (isync 1.4) writes LF line
  ends, inserts an ``X-TUID:`` header, drops bare CRs and keeps folder names in
  modified UTF-7; jmapsync stores the server's bytes exactly (CRLF).  Byte
  totals are reported per mirror but differ for that reason.
* mbsync runs with the Cyrus README's configuration plus ``Expunge Near``:
  without it a message gone from the server (each move removes it from its
  source folder) is only marked trashed (T flag) in the Maildir, not deleted,
  so mbsync would do less work than a mirror has to.  ``--mbsync-no-expunge``
  uses the README configuration as is (trashed files are then counted apart).
* Moves: IMAP has no message identity across folders, so mbsync downloads a
  moved message again; jmapsync renames the file it has.
* Cyrus' httpd answers on a *reused* keep-alive connection ~44 ms late
  (server-side Nagle meets the client's delayed ACK, see the Cyrus README):
  a JMAP client's blob download rate here depends on how many connections it
  uses and whether it sets TCP_QUICKACK, not only on its own speed.  Real
  JMAP servers (Fastmail, Stalwart) do not stall like this.
* jmapsync is Python: ``jmapsync --version`` alone takes ~0.25 s and 33 MB
  here, paid by every measure; mbsync is C (~4-5 MB).
* Loopback, one machine: server and client share the CPUs (2 here), so the
  figures measure the client *and* the server work it causes.  Another load
  on the machine shows in the load averages stored with each run.
* Both tools fsync their files (jmapsync always, mbsync ``FSync yes`` by
  default); the file system of the work directory is recorded.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import imaplib
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.cyrus import (  # noqa: E402
    DEFAULT_PASSWORD,
    CyrusServer,
    installed_version,
    mutf7_decode,
    mutf7_encode,
)

HOST = "127.0.0.1"
POPULATE = Path("/work/shared/cyrus/populate.py")
RESULTS = REPO / "bench" / "results"
MEASURES = ("initial", "noop", "incremental")
TITLES = {"initial": "initial pull", "noop": "no-change", "incremental": "incremental"}
STARTUP = "python -c pass"  # the interpreter's start-up, timed next to each no-change run
PHASES = ("startup", "remote", "folders", "scan_plan", "execute", "record")
REFERENCE, CANDIDATE = "mbsync", "jmapsync"
OFFLINEIMAP_MAX_N = 2000


# ------------------------------------------------------------------ names --


def imap_quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------- the server side --


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    imap_port: int
    session_url: str


_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.*)$')
_UID_RE = re.compile(rb"UID (\d+)")
_FLAGS_RE = re.compile(rb"FLAGS \(([^)]*)\)")
_APPENDUID_RE = re.compile(rb"APPENDUID \d+ (\d+)")


def _unquote_imap(raw: bytes) -> str:
    s = raw.decode("utf-8", "replace").strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        s = s[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return s


class Mailstore:
    """The benchmark account over IMAP (imaplib): folders, counts, changes."""

    def __init__(self, acct: Account) -> None:
        self.conn = imaplib.IMAP4(HOST, acct.imap_port, timeout=120)
        # imaplib writes a literal and its CRLF separately: without NODELAY each
        # APPEND waits ~40 ms for a delayed ACK
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.login(acct.user, acct.password)
        self.selected: str | None = None

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self.conn.logout()

    def __enter__(self) -> Mailstore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ok(self, what: str, res: tuple[str, Any]) -> list[Any]:
        typ, data = res
        if typ != "OK":
            raise RuntimeError(f"IMAP {what}: {typ} {data!r}")
        return list(data)

    def folders(self) -> list[str]:
        """Selectable mailbox names as the server sends them (modified UTF-7)."""
        names = []
        for item in self._ok("LIST", self.conn.list('""', "*")):
            if item is None:
                continue
            if isinstance(item, tuple):  # name sent as a literal
                head, lit = item
                flags = _LIST_RE.match(head.split(b"{")[0] + b'""')
                name = lit.decode("utf-8", "replace")
                flag_text = flags.group("flags") if flags else b""
            else:
                m = _LIST_RE.match(item)
                if not m:
                    raise RuntimeError(f"cannot parse LIST line {item!r}")
                name, flag_text = _unquote_imap(m.group("name")), m.group("flags")
            if b"\\noselect" not in flag_text.lower():
                names.append(name)
        return sorted(names)

    def counts(self) -> dict[str, int]:
        """Messages per folder, keyed by the decoded (Unicode) folder name."""
        out = {}
        for name in self.folders():
            data = self._ok("STATUS", self.conn.status(imap_quote(name), "(MESSAGES)"))
            m = re.search(rb"MESSAGES (\d+)", data[0])
            out[mutf7_decode(name)] = int(m.group(1)) if m else 0
        return out

    def select(self, name: str) -> int:
        data = self._ok("SELECT", self.conn.select(imap_quote(name)))
        self.selected = name
        return int(data[0])

    def uid_flags(self, name: str) -> list[tuple[int, bool]]:
        """(uid, is \\Flagged) of every message of a folder."""
        if self.select(name) == 0:
            return []
        out = []
        for item in self._ok("FETCH", self.conn.uid("FETCH", "1:*", "(FLAGS)")):
            if not isinstance(item, bytes):
                continue
            u, f = _UID_RE.search(item), _FLAGS_RE.search(item)
            if u and f:
                out.append((int(u.group(1)), b"\\flagged" in f.group(1).lower()))
        return out

    def message_id(self, uid: int) -> str | None:
        data = self._ok(
            "FETCH",
            self.conn.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"),
        )
        for item in data:
            if isinstance(item, tuple):
                m = re.search(rb"<[^>\s]+>", item[1])
                if m:
                    return m.group(0).decode("ascii", "replace")
        return None

    def search_header(self, header: str, value: str) -> list[int]:
        data = self._ok("SEARCH", self.conn.uid("SEARCH", "HEADER", header, imap_quote(value)))
        return [int(x) for x in data[0].split()] if data and data[0] else []

    def store(self, uids: Sequence[int], op: str, flags: str) -> None:
        if uids:
            self._ok("STORE", self.conn.uid("STORE", _uidset(uids), op, flags))

    def move(self, uids: Sequence[int], dest: str) -> None:
        if uids:
            self._ok("MOVE", self.conn.uid("MOVE", _uidset(uids), imap_quote(dest)))

    def expunge(self, uids: Sequence[int]) -> None:
        if uids:
            self.store(uids, "+FLAGS.SILENT", "(\\Deleted)")
            self._ok("EXPUNGE", self.conn.uid("EXPUNGE", _uidset(uids)))

    def create(self, name: str) -> None:
        typ, data = self.conn.create(imap_quote(name))
        if typ != "OK" and b"exist" not in b" ".join(d or b"" for d in data).lower():
            raise RuntimeError(f"IMAP CREATE {name}: {data!r}")
        self.conn.subscribe(imap_quote(name))

    def append(self, folder: str, msg: Message) -> int | None:
        flags = "(" + " ".join(msg.flags) + ")" if msg.flags else None
        data = self._ok(
            "APPEND",
            self.conn.append(
                imap_quote(folder), flags, imaplib.Time2Internaldate(msg.date), msg.raw
            ),
        )
        m = _APPENDUID_RE.search(data[0] or b"")
        return int(m.group(1)) if m else None


def _uidset(uids: Sequence[int]) -> str:
    return ",".join(str(u) for u in sorted(uids))


# ------------------------------------------------------ own mail generator --

OWN_FOLDERS = (
    ("INBOX", 45),
    ("Archive", 10),
    ("Sent", 8),
    ("Work", 8),
    ("Work/Projects", 7),
    ("Lists/python-dev", 10),
    ("Personal/Family", 8),
    ("Reisen ✈ Übersicht", 4),
)
_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not this are or from at which "
    "but have an they you were all there would their we been has when who will more no "
    "if out so said what up its about into than them can only other new some could time "
    "these two may then first any like now my such make over our even most after also "
    "server mailbox message folder state change sync mirror backup release build deploy "
    "meeting budget draft review schedule invoice travel report python cyrus jmap imap"
)
_WORDS = _WORD_TEXT.split()
_BASE_DATE = dt.datetime(2024, 1, 1, 8, 0, tzinfo=dt.UTC)


@dataclass
class Message:
    raw: bytes
    folders: list[str]
    flags: list[str]
    date: dt.datetime


def _text_pool() -> list[str]:
    rng = random.Random("jmapsync-bench-text")
    lines = []
    for _ in range(600):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < rng.randint(40, 72):
            words.append(rng.choice(_WORDS))
        lines.append(" ".join(words))
    return lines


_POOL = _text_pool()


def _text(rng: random.Random, size: int) -> str:
    lines: list[str] = []
    n = 0
    while n < size:
        line = "" if rng.random() < 0.12 else rng.choice(_POOL)
        lines.append(line)
        n += len(line) + 2
    return "\r\n".join(lines) + "\r\n"


def make_message(seed: str, i: int, extra_headers: Sequence[str] = ()) -> Message:
    """Message i of the own generator: depends only on (seed, i)."""
    rng = random.Random(f"{seed}:{i}")
    target = int(min(195_000, max(2_500, rng.lognormvariate(math.log(12_000), 0.95))))
    date = _BASE_DATE + dt.timedelta(minutes=37 * i)
    subj = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))).capitalize()
    if rng.random() < 0.1:
        subj = "=?UTF-8?B?" + base64.b64encode(f"{subj} ✓ Übersicht".encode()).decode() + "?="
    headers = [
        f"From: User {rng.randint(1, 60)} <user{rng.randint(1, 60)}@example.org>",
        "To: Bench <bench@example.com>",
        f"Subject: {subj}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <{seed}.{i}@bench.test>",
        *extra_headers,
        "MIME-Version: 1.0",
    ]
    if target > 20_000 and rng.random() < 0.7:
        boundary = f"=_bench_{seed}_{i}"
        text = _text(rng, rng.randint(600, 4_000))
        att = base64.encodebytes(rng.randbytes(max(1_000, (target - len(text) - 600) * 3 // 4)))
        att_text = att.decode().replace("\n", "\r\n")
        name = rng.choice(["report.pdf", "photo.png", "data.csv", "blob.bin"])
        body = (
            f"This is a multi-part message in MIME format.\r\n--{boundary}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{text}--{boundary}\r\n"
            f'Content-Type: application/octet-stream; name="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
            f"{att_text}--{boundary}--\r\n"
        )
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    else:
        body = _text(rng, target - 400)
        headers.append("Content-Type: text/plain; charset=utf-8")
    raw = ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    names = [f for f, _ in OWN_FOLDERS]
    weights = [w for _, w in OWN_FOLDERS]
    folders = [rng.choices(names, weights)[0]]
    if rng.random() < 0.02:
        folders.append(rng.choice([f for f in names if f != folders[0]]))
    flags = [
        flag
        for flag, p in (("\\Seen", 0.6), ("\\Flagged", 0.08), ("\\Answered", 0.05))
        if rng.random() < p
    ]
    return Message(raw, folders, flags, date)


def load_own(acct: Account, n: int, seed: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    total = 0
    with Mailstore(acct) as ms:
        for folder, _ in OWN_FOLDERS:
            parts = folder.split("/")
            for depth in range(1, len(parts) + 1):
                if parts[0] != "INBOX":
                    ms.create(mutf7_encode("/".join(parts[:depth])))
        for i in range(n):
            msg = make_message(seed, i)
            for folder in msg.folders:
                ms.append(mutf7_encode(folder), msg)
                total += len(msg.raw)
    return {"loader": "own", "messages": n, "bytes": total, "seconds": time.perf_counter() - t0}


def small_message(seed: str, i: int) -> Message:
    """Message i of the small generator (--loader small): ~2 KB of text, one
    folder by the OWN_FOLDERS weights, flags as the own generator's."""
    rng = random.Random(f"{seed}:small:{i}")
    date = _BASE_DATE + dt.timedelta(minutes=3 * i)
    subj = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))).capitalize()
    headers = [
        f"From: User {rng.randint(1, 60)} <user{rng.randint(1, 60)}@example.org>",
        "To: Bench <bench@example.com>",
        f"Subject: {subj}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <{seed}.s{i}@bench.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    raw = ("\r\n".join(headers) + "\r\n\r\n" + _text(rng, 1_700)).encode()
    names = [f for f, _ in OWN_FOLDERS]
    folder = rng.choices(names, [w for _, w in OWN_FOLDERS])[0]
    flags = [
        flag
        for flag, p in (("\\Seen", 0.6), ("\\Flagged", 0.08), ("\\Answered", 0.05))
        if rng.random() < p
    ]
    return Message(raw, [folder], flags, date)


class _RawImap:
    """IMAP commands written and answered by hand: MULTIAPPEND (RFC 3502) with
    LITERAL+ literals, which imaplib does not speak."""

    def __init__(self, acct: Account) -> None:
        self.sock = socket.create_connection((HOST, acct.imap_port), timeout=600)
        self.f = self.sock.makefile("rb")
        self.f.readline()  # greeting
        self.serial = 0
        self.command(f"LOGIN {imap_quote(acct.user)} {imap_quote(acct.password)}".encode())

    def command(self, data: bytes) -> None:
        self.serial += 1
        tag = f"a{self.serial}".encode()
        self.sock.sendall(tag + b" " + data + b"\r\n")
        while line := self.f.readline():
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"IMAP {data[:40]!r}: {line!r}")
                return
        raise RuntimeError("IMAP: connection closed")

    def append_many(self, folder: str, messages: list[Message]) -> None:
        parts = [b"APPEND " + imap_quote(mutf7_encode(folder)).encode()]
        for msg in messages:
            flags = f" ({' '.join(msg.flags)})" if msg.flags else ""
            parts.append(f"{flags} {{{len(msg.raw)}+}}\r\n".encode() + msg.raw)
        self.command(b"".join(parts))

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self.command(b"LOGOUT")
        self.sock.close()


def load_small(acct: Account, n: int, seed: str, threads: int = 2) -> dict[str, Any]:
    """n small messages by IMAP MULTIAPPEND, 500 per command, over `threads`
    connections at once: ~10x one APPEND per message against Cyrus."""
    t0 = time.perf_counter()
    with Mailstore(acct) as ms:
        for folder, _ in OWN_FOLDERS:
            parts = folder.split("/")
            for depth in range(1, len(parts) + 1):
                if parts[0] != "INBOX":
                    ms.create(mutf7_encode("/".join(parts[:depth])))
    total = [0] * threads
    errors: list[BaseException] = []

    def work(k: int) -> None:
        imap = _RawImap(acct)
        try:
            batch: dict[str, list[Message]] = {}
            for i in range(k, n, threads):
                msg = small_message(seed, i)
                total[k] += len(msg.raw)
                batch.setdefault(msg.folders[0], []).append(msg)
                if len(batch[msg.folders[0]]) >= 500:
                    imap.append_many(msg.folders[0], batch.pop(msg.folders[0]))
            for folder, msgs in batch.items():
                imap.append_many(folder, msgs)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            imap.close()

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(f"small loader: {errors[0]!r}")
    took = time.perf_counter() - t0
    return {"loader": "small", "messages": n, "bytes": sum(total), "seconds": took}


def load_populate(acct: Account, n: int, populate: Path) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(populate),
        "--host",
        HOST,
        "--imap-port",
        str(acct.imap_port),
        "--user",
        acct.user,
        "--password",
        acct.password,
        "-n",
        str(n),
        "--json",
    ]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"populate.py failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    info: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    if info.get("n_errors"):
        raise RuntimeError(f"populate.py reported errors: {info.get('errors')}")
    return {"loader": "populate.py", **info}


# ---------------------------------------------------------- change batches --


@dataclass
class Batch:
    serial: int
    flagged: dict[str, list[int]] = field(default_factory=dict)  # folder -> uids set
    unflagged: dict[str, list[int]] = field(default_factory=dict)  # folder -> uids cleared
    moved: list[tuple[str, str, str]] = field(default_factory=list)  # (src, dst, Message-ID)
    delivered: list[int] = field(default_factory=list)  # INBOX uids
    tag: str = ""


def apply_batch(
    acct: Account, serial: int, n_flags: int, n_moves: int, n_new: int, seed: str
) -> Batch:
    """Keyword changes, moves and new deliveries on the server (IMAP)."""
    rng = random.Random(f"{seed}:batch:{serial}")
    batch = Batch(serial, tag=f"{seed}-{serial}")
    with Mailstore(acct) as ms:
        folders = ms.folders()
        msgs = [(f, uid, fl) for f in folders for uid, fl in ms.uid_flags(f)]
        picked = rng.sample(msgs, min(len(msgs), n_flags + n_moves))
        to_move, to_flag = picked[:n_moves], picked[n_moves:]
        for folder, uid, was_flagged in to_flag:
            target = batch.unflagged if was_flagged else batch.flagged
            target.setdefault(folder, []).append(uid)
        for folder in folders:
            if folder in batch.flagged or folder in batch.unflagged:
                ms.select(folder)
                ms.store(batch.flagged.get(folder, []), "+FLAGS.SILENT", "(\\Flagged)")
                ms.store(batch.unflagged.get(folder, []), "-FLAGS.SILENT", "(\\Flagged)")
        for src, uid, _ in sorted(to_move):
            ms.select(src)
            mid = ms.message_id(uid)
            if mid is None:
                continue
            # Not into a folder that holds a copy already (the ~2 % of
            # messages in two folders): IMAP would count two messages there,
            # JMAP has one Email in that mailbox, and the mirrors one file.
            choices = [f for f in folders if f != src]
            rng.shuffle(choices)
            dst = next((f for f in choices if not _holds(ms, f, mid)), None)
            ms.select(src)
            if dst is None:
                continue
            ms.move([uid], dst)
            batch.moved.append((src, dst, mid))
        ms.select("INBOX")
        for k in range(n_new):
            msg = make_message(f"{seed}new{serial}", k, [f"X-Bench-Batch: {batch.tag}"])
            msg.date = dt.datetime.now(dt.UTC)
            uid = ms.append("INBOX", msg)
            if uid is not None:
                batch.delivered.append(uid)
        if len(batch.delivered) != n_new:  # no APPENDUID: find them by header
            ms.select("INBOX")
            batch.delivered = ms.search_header("X-Bench-Batch", batch.tag)
    return batch


def _holds(ms: Mailstore, folder: str, message_id: str) -> bool:
    ms.select(folder)
    return bool(ms.search_header("Message-ID", message_id))


def undo_batch(acct: Account, batch: Batch) -> None:
    """Put the account back as it was before apply_batch (new UIDs aside)."""
    with Mailstore(acct) as ms:
        ms.select("INBOX")
        ms.expunge(batch.delivered)
        for src, dst, mid in reversed(batch.moved):
            ms.select(dst)
            uids = ms.search_header("Message-ID", mid)
            if uids:
                ms.move([max(uids)], src)
        for folder in set(batch.flagged) | set(batch.unflagged):
            ms.select(folder)
            ms.store(batch.flagged.get(folder, []), "-FLAGS.SILENT", "(\\Flagged)")
            ms.store(batch.unflagged.get(folder, []), "+FLAGS.SILENT", "(\\Flagged)")


# ------------------------------------------------------------------- tools --


class Tool:
    """One sync client: writes its config for a fresh mirror, gives its argv."""

    name = ""

    def __init__(self, acct: Account, work: Path) -> None:
        self.acct = acct
        self.work = work
        self.dir = work
        self.mail = work

    def reset(self, tag: str) -> None:
        """A fresh, empty mirror (and state) in WORK/NAME-TAG."""
        self.dir = self.work / f"{self.name}-{tag}"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.mail = self.dir / "mail"
        self.mail.mkdir()  # mbsync needs the root to exist; empty for everyone
        self.write_config()

    def write_config(self) -> None:
        raise NotImplementedError

    def argv(self) -> list[str]:
        raise NotImplementedError

    def folder_name(self, rel: str) -> str:
        """The mailbox name (Unicode, '/'-separated) of a folder path in the mirror."""
        return rel

    @staticmethod
    def version() -> str:
        return ""

    def python(self) -> str | None:
        """The interpreter this tool runs in (None: not Python)."""
        return None


def _interpreter_of(script: str) -> str | None:
    """The #! interpreter of a console script (pip writes an absolute path)."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
    except OSError:
        return None
    return first[2:].split()[0] if first.startswith("#!/") else None


def compile_package(python: str) -> str:
    """Byte-compile the jmapsync package `python` imports (see the docstring)."""
    res = subprocess.run(
        [python, "-c", "import jmapsync, os; print(os.path.dirname(jmapsync.__file__))"],
        capture_output=True,
        text=True,
        check=False,
    )
    where = res.stdout.strip()
    if res.returncode != 0 or not where:
        return f"not compiled: {res.stderr.strip()[-200:]}"
    subprocess.run([python, "-m", "compileall", "-q", where], check=False)
    return where


def _jmapsync_argv() -> list[str]:
    """The console script next to this interpreter (no pyenv shim), else PATH."""
    here = Path(sys.executable).parent / "jmapsync"
    if here.exists():
        return [str(here)]
    found = shutil.which("jmapsync")
    return [found] if found else [sys.executable, "-m", "jmapsync"]


class Jmapsync(Tool):
    name = "jmapsync"

    def write_config(self) -> None:
        self.cfg = self.dir / "config.ini"
        self.cfg.write_text(
            "[jmapsync]\n"
            f"state_dir = {self.dir / 'state'}\n\n"
            "[account bench]\n"
            f"session_url = {self.acct.session_url}\n"
            f"username = {self.acct.user}\n"
            f"password = {self.acct.password}\n"
            f"maildir = {self.mail}\n"
            "layout = verbatim\n"
            "direction = pull\n"
        )
        self.cfg.chmod(0o600)

    def argv(self) -> list[str]:
        return [*_jmapsync_argv(), "-c", str(self.cfg), "sync"]

    def folder_name(self, rel: str) -> str:
        return "/".join(unquote(p) for p in rel.split("/"))

    @staticmethod
    def version() -> str:
        res = subprocess.run(
            [*_jmapsync_argv(), "--version"], capture_output=True, text=True, check=False
        )
        return (res.stdout or res.stderr).strip()

    def python(self) -> str | None:
        argv = self.argv()
        return argv[0] if argv[0] == sys.executable else _interpreter_of(argv[0])


class JmapsyncBaseline(Jmapsync):
    """Another jmapsync build (``--baseline PATH``), run in the same
    alternating rounds: an A/B of two versions on the same server and load."""

    name = "jmapsync-baseline"
    executable = ""

    def argv(self) -> list[str]:
        return [self.executable, "-c", str(self.cfg), "sync"]


class Mbsync(Tool):
    name = "mbsync"
    expunge = True

    def write_config(self) -> None:
        self.cfg = self.dir / "mbsyncrc"
        self.cfg.write_text(
            "IMAPAccount cyrus\n"
            f"Host {HOST}\nPort {self.acct.imap_port}\n"
            f"User {self.acct.user}\nPass {self.acct.password}\n"
            "SSLType None\nAuthMechs LOGIN\n\n"
            "IMAPStore far\nAccount cyrus\n\n"
            f"MaildirStore near\nPath {self.mail}/\nInbox {self.mail}/INBOX\n"
            "SubFolders Verbatim\n\n"
            "Channel cyrus\nFar :far:\nNear :near:\nPatterns *\nCreate Near\n"
            "Sync Pull\nSyncState *\n" + ("Expunge Near\n" if self.expunge else "")
        )
        self.cfg.chmod(0o600)

    def argv(self) -> list[str]:
        return ["mbsync", "-c", str(self.cfg), "-a"]

    def folder_name(self, rel: str) -> str:
        return mutf7_decode(rel)

    @staticmethod
    def version() -> str:
        res = subprocess.run(["mbsync", "--version"], capture_output=True, text=True, check=False)
        return res.stdout.strip()


class OfflineImap(Tool):
    name = "offlineimap"

    def write_config(self) -> None:
        self.cfg = self.dir / "offlineimaprc"
        self.cfg.write_text(
            f"[general]\naccounts = bench\nmetadata = {self.dir / 'meta'}\n\n"
            "[Account bench]\nlocalrepository = local\nremoterepository = remote\n\n"
            f"[Repository local]\ntype = Maildir\nlocalfolders = {self.mail}\nsep = /\n\n"
            f"[Repository remote]\ntype = IMAP\nremotehost = {HOST}\n"
            f"remoteport = {self.acct.imap_port}\nremoteuser = {self.acct.user}\n"
            f"remotepass = {self.acct.password}\nssl = no\nstarttls = no\n"
            "maxconnections = 2\nreadonly = True\n"
        )
        self.cfg.chmod(0o600)

    def argv(self) -> list[str]:
        return ["offlineimap", "-c", str(self.cfg), "-o", "-u", "quiet"]

    def folder_name(self, rel: str) -> str:
        return mutf7_decode(rel)

    @staticmethod
    def version() -> str:
        res = subprocess.run(
            ["offlineimap", "--version"], capture_output=True, text=True, check=False
        )
        return (res.stdout or res.stderr).strip().splitlines()[0] if res.returncode == 0 else ""


# ------------------------------------------------------------- measuring --


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    rc: int
    load1: float
    phases: dict[str, float] = field(default_factory=dict)  # jmapsync: its pass's stages


def pass_phases(output: str, wall_s: float) -> dict[str, float]:
    """The stages of a jmapsync pass from its JSON `sync-done` line, and
    "startup": the wall time outside the pass (interpreter, imports, config,
    exit).  Empty for other tools."""
    for line in reversed(output.splitlines()):
        if line.startswith("{") and '"sync-done"' in line:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                phases = {k: float(v) for k, v in (event.get("phases") or {}).items()}
                return {"startup": round(wall_s - float(event.get("seconds", 0)), 3)} | phases
    return {}


GNU_TIME = "/usr/bin/time"


def _peak_rss_poller(pid: int, peak: list[int], done: threading.Event) -> None:
    """Fallback without GNU time: sample VmHWM (peak RSS of the *current*
    image, so the parent's pages shared at fork do not count) until exit."""
    while not done.wait(0.02):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
                    break


def run_timed(argv: Sequence[str], log: Path, timeout: float) -> Run:
    """Run argv as one child: wall time from perf_counter, CPU from os.wait4.

    Peak RSS does NOT come from wait4's ru_maxrss: a child's ru_maxrss
    starts at the RSS of the (v)forked parent, this Python process (~30 MB),
    so every small tool would look that big.  GNU time, a small C process,
    forks the tool and reports its own child's ru_maxrss (%M, KiB); without
    it /proc/PID/status VmHWM is sampled every 20 ms.
    """
    load1 = os.getloadavg()[0]
    use_time = os.access(GNU_TIME, os.X_OK)
    rss_file = log.with_suffix(".rss")
    full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv] if use_time else list(argv)
    peak = [0]
    done = threading.Event()
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
        poller = None
        if not use_time:
            poller = threading.Thread(target=_peak_rss_poller, args=(proc.pid, peak, done))
            poller.start()
        timer = threading.Timer(timeout, os.killpg, (proc.pid, 9))
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
        wall = time.perf_counter() - t0
    if poller is not None:
        poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if use_time:
        # "Command exited with non-zero status N" may precede the figure
        lines = rss_file.read_text().split() if rss_file.exists() else []
        peak[0] = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return Run(
        wall_s=wall,
        cpu_s=ru.ru_utime + ru.ru_stime,
        maxrss_mb=peak[0] / 1024,
        rc=proc.returncode,
        load1=load1,
    )


@dataclass
class MirrorCount:
    files: int = 0  # live message files (no T flag)
    trashed: int = 0  # files marked trashed (T), not yet removed
    bytes: int = 0
    per_folder: dict[str, int] = field(default_factory=dict)


def count_mirror(root: Path, name_of: Callable[[str], str]) -> MirrorCount:
    """Message files in every cur/ and new/ below root (dot-files skipped)."""
    mc = MirrorCount()
    for dirpath, _dirs, files in os.walk(root):
        d = Path(dirpath)
        if d.name not in ("cur", "new"):
            continue
        rel = os.path.relpath(d.parent, root)
        folder = name_of("" if rel == "." else rel)
        for f in files:
            if f.startswith("."):
                continue
            mc.bytes += (d / f).stat().st_size
            if ":2," in f and "T" in f.rsplit(":2,", 1)[1]:
                mc.trashed += 1
                continue
            mc.files += 1
            mc.per_folder[folder] = mc.per_folder.get(folder, 0) + 1
    return mc


def folder_diff(mirror: dict[str, int], server: dict[str, int]) -> dict[str, tuple[int, int]]:
    """{folder: (mirror, server)} where they differ."""
    return {
        f: (mirror.get(f, 0), server.get(f, 0))
        for f in sorted(set(mirror) | set(server))
        if mirror.get(f, 0) != server.get(f, 0)
    }


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


@dataclass
class SizeResult:
    n: int
    load: dict[str, Any]
    runs: dict[str, dict[str, list[Run]]]
    counts: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    load1: list[float] = field(default_factory=list)
    startup: dict[str, list[Run]] = field(default_factory=dict)  # tool -> `python -c pass` runs
    verify: dict[str, list[Run]] = field(default_factory=dict)  # tool -> `jmapsync verify` runs


def bench_size(srv: CyrusServer, n: int, args: argparse.Namespace, work: Path) -> SizeResult:
    user = f"bench{n}"
    print(f"\n== N={n}: user {user}", flush=True)
    srv.add_user(user)
    acct = Account(user, DEFAULT_PASSWORD, srv.imap_port, srv.session_url)
    use_populate = args.loader == "populate" or (args.loader == "auto" and args.populate.exists())
    if args.loader == "small":
        load = load_small(acct, n, args.seed)
    elif use_populate:
        load = load_populate(acct, n, args.populate)
    else:
        if args.loader == "auto":
            print(f"   {args.populate} not found: using the built-in generator")
        load = load_own(acct, n, args.seed)
    with Mailstore(acct) as ms:
        base_counts = ms.counts()
    total = sum(base_counts.values())
    load["imap_messages"] = total
    load["folders"] = len(base_counts)
    print(
        f"   loaded {n} messages by {load['loader']} in {load['seconds']:.1f} s "
        f"({load.get('bytes', 0) / 1e6:.1f} MB): {total} IMAP messages in "
        f"{len(base_counts)} folders",
        flush=True,
    )

    Mbsync.expunge = not args.mbsync_no_expunge
    tools: list[Tool] = [Jmapsync(acct, work)]
    if args.baseline:
        JmapsyncBaseline.executable = str(args.baseline)
        tools.append(JmapsyncBaseline(acct, work))
    if not args.no_mbsync:
        tools.append(Mbsync(acct, work))
    if args.offlineimap:
        if shutil.which("offlineimap") is None:
            print("   offlineimap not installed: skipped")
        elif n > OFFLINEIMAP_MAX_N:
            print(f"   offlineimap skipped at N={n} (> {OFFLINEIMAP_MAX_N})")
        else:
            tools.append(OfflineImap(acct, work))

    res = SizeResult(n=n, load=load, runs={t.name: {m: [] for m in MEASURES} for t in tools})
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    serial = 0
    for rnd in range(1, args.rounds + 1):
        for tool in tools:
            tool.reset(f"n{n}r{rnd}")
            plan = [m for m in MEASURES for _ in range(args.noop_repeat if m == "noop" else 1)]
            for k, measure in enumerate(plan):
                batch = None
                if measure == "incremental":
                    serial += 1
                    batch = apply_batch(
                        acct, serial, args.flag_changes, args.moves, args.new, args.seed
                    )
                python = tool.python()
                if measure == "noop" and python is not None:
                    start = run_timed([python, "-c", "pass"], logs / "python-pass.log", 60)
                    res.startup.setdefault(tool.name, []).append(start)
                try:
                    log = logs / f"{tool.name}-n{n}-r{rnd}-{measure}{k}.log"
                    run = run_timed(tool.argv(), log, args.timeout)
                    with Mailstore(acct) as ms:
                        server = ms.counts()
                finally:
                    if batch is not None:
                        undo_batch(acct, batch)
                res.load1.append(run.load1)
                output = log.read_text(errors="replace")
                run.phases = pass_phases(output, run.wall_s)
                if run.rc != 0:
                    print(f"   {tool.name} {TITLES[measure]} round {rnd}: EXIT {run.rc}")
                    print("   ---- output ----\n" + output.rstrip() + "\n   ----------------")
                    res.errors.append(
                        {
                            "tool": tool.name,
                            "measure": measure,
                            "round": rnd,
                            "rc": run.rc,
                            "argv": tool.argv(),
                            "output": output[-8000:],
                        }
                    )
                    break
                res.runs[tool.name][measure].append(run)
                mc = count_mirror(tool.mail, tool.folder_name)
                diff = folder_diff(mc.per_folder, server)
                res.counts.append(
                    {
                        "tool": tool.name,
                        "measure": measure,
                        "round": rnd,
                        "files": mc.files,
                        "trashed": mc.trashed,
                        "bytes": mc.bytes,
                        "server": sum(server.values()),
                        "diff": diff,
                    }
                )
                trashed = f", {mc.trashed} trashed" if mc.trashed else ""
                print(
                    f"   r{rnd} {tool.name:<11} {TITLES[measure]:<12} {run.wall_s:7.2f} s  "
                    f"cpu {run.cpu_s:6.2f} s  rss {run.maxrss_mb:6.1f} MB  "
                    f"files {mc.files}{trashed} (server {sum(server.values())})"
                    f"  load {run.load1:.2f}",
                    flush=True,
                )
                if measure == "noop" and tool.name in res.startup:
                    print(f"      {STARTUP}: {res.startup[tool.name][-1].wall_s:.3f} s")
                if measure == "incremental" and run.phases:
                    print(
                        "      phases: " + ", ".join(f"{p} {v:.3f}" for p, v in run.phases.items())
                    )
                if diff:
                    msg = (
                        f"{tool.name} {TITLES[measure]} round {rnd}: mirror != server "
                        f"(folder: mirror, server) {diff}"
                    )
                    print("   MISMATCH " + msg)
                    res.mismatches.append(msg)
            if args.verify and isinstance(tool, Jmapsync) and res.runs[tool.name]["initial"]:
                log = logs / f"{tool.name}-n{n}-r{rnd}-verify.log"
                run = run_timed([*tool.argv()[:-1], "verify"], log, args.timeout)
                res.verify.setdefault(tool.name, []).append(run)
                print(
                    f"   r{rnd} {tool.name:<11} {'verify':<12} {run.wall_s:7.2f} s  "
                    f"cpu {run.cpu_s:6.2f} s  rss {run.maxrss_mb:6.1f} MB  exit {run.rc}"
                    f"  load {run.load1:.2f}",
                    flush=True,
                )
            if not args.keep:
                shutil.rmtree(tool.dir, ignore_errors=True)
        initial = {
            c["tool"]: c["files"]
            for c in res.counts
            if c["round"] == rnd and c["measure"] == "initial"
        }
        if len(set(initial.values())) > 1:
            msg = f"round {rnd}: initial pull file counts differ: {initial}"
            print("   MISMATCH " + msg)
            res.mismatches.append(msg)
    return res


# ---------------------------------------------------------------- report --


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", tempfile.gettempdir()],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "tmp_fs": fs,
        "peak_rss_from": "GNU time %M" if os.access(GNU_TIME, os.X_OK) else "VmHWM sampling",
        "cyrus": installed_version("cyrus-common"),
        "isync": installed_version("isync") or Mbsync.version(),
        "mbsync": Mbsync.version(),
        "jmapsync": Jmapsync.version(),
        "jmapsync_git": subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "offlineimap": OfflineImap.version() if shutil.which("offlineimap") else None,
    }


def stats_of(res: SizeResult) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """tool -> measure -> metric (wall_s, cpu_s, maxrss_mb) -> median/min/max."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for tool, per in res.runs.items():
        out[tool] = {}
        for measure, runs in per.items():
            if runs:
                out[tool][measure] = {
                    k: summarize([getattr(r, k) for r in runs])
                    for k in ("wall_s", "cpu_s", "maxrss_mb")
                }
    return out


def ratios_of(stats: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    a, b = stats.get(CANDIDATE, {}), stats.get(REFERENCE, {})
    for measure in MEASURES:
        if measure in a and measure in b:
            out[measure] = {
                k: a[measure][k]["median"] / b[measure][k]["median"]
                for k in ("wall_s", "cpu_s", "maxrss_mb")
                if b[measure][k]["median"] > 0
            }
    return out


def print_table(res: SizeResult, stats: dict[str, Any], ratios: dict[str, Any]) -> None:
    tools = list(res.runs)
    units = {
        "wall_s": ("wall", "s", 2),
        "cpu_s": ("cpu", "s", 2),
        "maxrss_mb": ("peak RSS", "MB", 1),
    }
    print(
        f"\nN = {res.n} ({res.load['imap_messages']} IMAP messages, "
        f"{res.load.get('bytes', 0) / 1e6:.1f} MB), "
        f"{len(res.runs[tools[0]]['initial'])} rounds; median [min - max]"
    )
    head = f"{'measure':<24}" + "".join(f"{t:>28}" for t in tools) + f"{'jmapsync/mbsync':>18}"
    print(head)
    print("-" * len(head))
    for measure in MEASURES:
        for k, (label, unit, dec) in units.items():
            cells = []
            for t in tools:
                s = stats.get(t, {}).get(measure, {}).get(k)
                cells.append(
                    f"{s['median']:.{dec}f} [{s['min']:.{dec}f} - {s['max']:.{dec}f}] {unit:<2}"
                    if s
                    else "n/a"
                )
            r = ratios.get(measure, {}).get(k)
            name = f"{TITLES[measure]} {label}"
            print(
                f"{name:<24}"
                + "".join(f"{c:>28}" for c in cells)
                + (f"{r:>18.2f}" if r is not None else f"{'n/a':>18}")
            )
    for tool, starts in res.startup.items():
        noop = [r.wall_s for r in res.runs[tool]["noop"]]
        if not noop:
            continue
        py, jm = statistics.median(r.wall_s for r in starts), statistics.median(noop)
        mb = [r.wall_s for r in res.runs.get(REFERENCE, {}).get("noop", [])]
        vs_mbsync = f", {jm / statistics.median(mb):.2f}x mbsync's" if mb else ""
        print(
            f"\n{tool} no-change vs start-up (medians of {len(noop)}): {jm:.3f} s, "
            f"{STARTUP} {py:.3f} s: +{jm - py:.3f} s ({jm / py:.1f}x){vs_mbsync}"
        )
    for tool, runs in res.verify.items():
        print(
            f"{tool} verify: median {statistics.median(r.wall_s for r in runs):.2f} s,"
            f" peak RSS {max(r.maxrss_mb for r in runs):.1f} MB, exit {[r.rc for r in runs]}"
        )
    for tool, per in res.runs.items():
        phased = [r.phases for r in per["incremental"] if r.phases]
        if phased:
            med = {p: statistics.median(ph.get(p, 0.0) for ph in phased) for p in PHASES}
            print(
                f"{tool} incremental, median per stage: "
                + ", ".join(f"{p} {v:.3f} s" for p, v in med.items())
            )
    init = [c for c in res.counts if c["measure"] == "initial"]
    if init:
        print("\nmessage files after the initial pull (per round; server = IMAP messages):")
        for c in init:
            tr = f" + {c['trashed']} trashed" if c["trashed"] else ""
            print(
                f"  r{c['round']} {c['tool']:<11} {c['files']}{tr} files, "
                f"{c['bytes'] / 1e6:.1f} MB  (server {c['server']})"
            )
    if res.load1:
        print(f"\nload average (1 min) at run starts: {min(res.load1):.2f} - {max(res.load1):.2f}")
    for m in res.mismatches:
        print(f"MISMATCH: {m}")
    for e in res.errors:
        print(f"ERROR: {e['tool']} {TITLES[e['measure']]} round {e['round']}: exit {e['rc']}")


def write_json(res: SizeResult, machine: dict[str, Any], args: argparse.Namespace) -> Path:
    stats = stats_of(res)
    doc = {
        "benchmark": "bench/compare.py",
        "n": res.n,
        "rounds": args.rounds,
        "machine": machine,
        "load": res.load,
        "incremental_batch": {
            "flag_changes": args.flag_changes,
            "moves": args.moves,
            "new": args.new,
        },
        "mbsync_expunge_near": not args.mbsync_no_expunge,
        "stats": stats,
        "ratios_jmapsync_over_mbsync": ratios_of(stats),
        "noop_repeat": args.noop_repeat,
        "startup": {
            t: {
                "python_pass_wall_s": summarize([r.wall_s for r in rs]),
                "noop_minus_python_pass_s": statistics.median(r.wall_s for r in res.runs[t]["noop"])
                - statistics.median(r.wall_s for r in rs),
            }
            for t, rs in res.startup.items()
            if rs and res.runs[t]["noop"]
        },
        "verify": {t: [asdict(r) for r in rs] for t, rs in res.verify.items()},
        "incremental_phases": {
            t: [r.phases for r in per["incremental"] if r.phases] for t, per in res.runs.items()
        },
        "runs": {
            t: {m: [asdict(r) for r in rs] for m, rs in per.items()} for t, per in res.runs.items()
        },
        "counts": res.counts,
        "mismatches": res.mismatches,
        "errors": res.errors,
        "load1_at_run_starts": res.load1,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{_prefix(args)}-{res.n}.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return path


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib missing: pip install matplotlib ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
        try:
            import matplotlib
        except ImportError:
            return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _prefix(args: argparse.Namespace) -> str:
    """compare-N.json; compare-small-N.json for the small messages (another
    data set: its own files and chart)."""
    return "compare-small" if args.loader == "small" else "compare"


def _short(n: int) -> str:
    """2000 -> 2k, 1000000 -> 1M: tick labels that do not run into each other."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def draw_chart(prefix: str = "compare") -> Path | None:
    """Median time vs N per tool (min-max as error bars), from every compare-*.json."""
    docs = []
    for p in sorted(RESULTS.glob(f"{prefix}-[0-9]*.json")):
        with contextlib.suppress(ValueError, OSError):
            docs.append(json.loads(p.read_text()))
    docs.sort(key=lambda d: d["n"])
    if not docs:
        return None
    plt = _import_pyplot()
    if plt is None:
        print("matplotlib cannot be imported: no chart")
        return None
    ns = [d["n"] for d in docs]
    tools = sorted({t for d in docs for t in d["stats"]}, key=lambda t: (t != CANDIDATE, t))
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(5 * len(MEASURES), 4.2))
    for ax, measure in zip(axes, MEASURES, strict=True):
        for k, tool in enumerate(tools):
            pts = [
                (d["n"], d["stats"][tool][measure]["wall_s"])
                for d in docs
                if measure in d["stats"].get(tool, {})
            ]
            if not pts:
                continue
            shift = 1 + 0.02 * (k - (len(tools) - 1) / 2)  # keep error bars apart
            x = [p[0] * shift for p in pts]
            med = [p[1]["median"] for p in pts]
            err = [
                [p[1]["median"] - p[1]["min"] for p in pts],
                [p[1]["max"] - p[1]["median"] for p in pts],
            ]
            ax.errorbar(x, med, yerr=err, marker="o", capsize=3, label=tool)
        if len(set(ns)) > 1:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
            plain = plt.FuncFormatter(lambda v, _pos: f"{v:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        else:
            ax.set_xlim(ns[0] * 0.9, ns[0] * 1.1)
            ax.set_ylim(bottom=0)
        ax.set_xticks(ns)
        ax.set_xticklabels([_short(n) for n in ns])
        ax.set_xlabel("messages (N)")
        ax.set_ylabel("wall time, s (median, min-max)")
        ax.set_title(TITLES[measure])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    m = docs[-1]["machine"]
    fig.suptitle(
        f"jmapsync vs mbsync on a local Cyrus {m.get('cyrus')} "
        f"({m.get('nproc')} CPUs, {m.get('date', '')[:10]})"
    )
    fig.tight_layout()
    out = RESULTS / f"{prefix}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ------------------------------------------------------------------ main --


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="jmapsync vs mbsync on a throwaway local Cyrus (see the module docstring)."
    )
    p.add_argument(
        "--sizes",
        default="2000",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        help="comma list of message counts (default 2000)",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument(
        "--offlineimap", action="store_true", help=f"add OfflineIMAP (N <= {OFFLINEIMAP_MAX_N})"
    )
    p.add_argument(
        "--loader",
        choices=("auto", "populate", "own", "small"),
        default="auto",
        help="auto: populate.py if it exists, else the built-in generator; small: ~2 KB"
        " messages, 4 IMAP connections at once (for 100 000s)",
    )
    p.add_argument("--populate", type=Path, default=POPULATE, help=f"default {POPULATE}")
    p.add_argument("--flag-changes", type=int, default=100, help="incremental: flag changes")
    p.add_argument("--moves", type=int, default=20, help="incremental: moves")
    p.add_argument("--new", type=int, default=50, help="incremental: new deliveries")
    p.add_argument(
        "--mbsync-no-expunge",
        action="store_true",
        help="mbsync without 'Expunge Near' (the Cyrus README config as is)",
    )
    p.add_argument(
        "--no-mbsync",
        action="store_true",
        help="jmapsync (and --offlineimap) only: mbsync 1.4.4 hangs on Cyrus near 97k messages",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="another jmapsync executable (e.g. an older checkout's .venv/bin/jmapsync),"
        " measured in the same alternating rounds as jmapsync-baseline",
    )
    p.add_argument(
        "--noop-repeat",
        type=int,
        default=5,
        help="no-change runs per tool and round, each after a `python -c pass` (default 5)",
    )
    p.add_argument("--verify", action="store_true", help="time `jmapsync verify` after each round")
    p.add_argument("--seed", default="bench", help="seed of generated mail and changes")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per tool run")
    p.add_argument("--keep", action="store_true", help="keep the mirrors and logs (prints where)")
    args = p.parse_args(argv)
    if not args.sizes or min(args.sizes) < 1 or args.rounds < 1:
        p.error("--sizes and --rounds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("mbsync") is None:
        if os.geteuid() == 0:
            print("installing isync (mbsync) ...", flush=True)
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "isync"],
                check=False,
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            )
        if shutil.which("mbsync") is None:
            print("compare: mbsync missing (apt-get install isync)", file=sys.stderr)
            return 2
    compiled = [compile_package(sys.executable)]
    if args.baseline:
        base_python = _interpreter_of(str(args.baseline))
        if base_python:
            compiled.append(compile_package(base_python))
    machine = machine_info()
    machine["byte_compiled"] = compiled
    print(
        f"{machine['date']}  {machine['nproc']} CPUs ({machine['cpu']}), cyrus "
        f"{machine['cyrus']}, {machine['mbsync']}, {machine['jmapsync']} "
        f"({' '.join(_jmapsync_argv())})"
    )
    print(
        "uptime:",
        subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip(),
    )
    tmp = Path(tempfile.mkdtemp(prefix="jmsb-", dir="/tmp"))
    tmp.chmod(0o755)
    srv = CyrusServer(tmp / "cy", http_port=0, imap_port=0)
    results: list[tuple[SizeResult, Path]] = []
    failed = False
    try:
        t0 = time.monotonic()
        srv.start()
        print(f"Cyrus up in {time.monotonic() - t0:.1f} s: {srv.session_url}, IMAP {srv.imap_port}")
        work = tmp / "w"
        work.mkdir()
        for n in args.sizes:
            res = bench_size(srv, n, args, work)
            path = write_json(res, machine, args)
            stats = stats_of(res)
            print_table(res, stats, ratios_of(stats))
            print(f"\nwrote {path}")
            results.append((res, path))
            failed = failed or bool(res.errors or res.mismatches)
    finally:
        with contextlib.suppress(Exception):  # cleanup must go on
            srv.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        "uptime:",
        subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip(),
    )
    chart = draw_chart(_prefix(args))
    if chart:
        print(f"wrote {chart}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
