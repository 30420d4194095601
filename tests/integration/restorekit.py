"""Helpers for the `jmapsync restore` tests against Cyrus.

* `Setup`: one config file with any number of accounts (all sharing one
  state_dir, so that a restore from account A's mirror finds A's state), and
  the command line (`python -m jmapsync`) to drive it.
* `fill_account`: the round-trip fixture -- nested folders, non-ASCII names,
  an Email in three mailboxes, every flag, custom keywords, a lone CR, a
  message without final newline, a 5 MB one; Date headers spread over years,
  receivedAt three hours and some minutes after each Date.
* `account_view`: an account as JMAP shows it, in terms comparable across
  accounts (Cyrus Email ids are content hashes: equal bytes, equal id).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailtools import Account, make_message

ROOT = Path(__file__).resolve().parents[2]
BIG = 5 * 1024 * 1024


@dataclass
class Setup:
    base: Path
    accounts: dict[str, tuple[Account, str, str]] = field(default_factory=dict)

    def add(
        self, name: str, account: Account, layout: str = "verbatim", line_endings: str = "lf"
    ) -> None:
        self.accounts[name] = (account, layout, line_endings)
        self._write()

    def _write(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        text = f"[jmapsync]\nstate_dir = {self.state_dir}\n"
        for name, (a, layout, le) in self.accounts.items():
            text += (
                f"[account {name}]\nsession_url = {a.session_url}\nusername = {a.user}\n"
                f"password = {a.password}\nmaildir = {self.maildir(name)}\nlayout = {layout}\n"
                f"direction = pull\nline_endings = {le}\n"
            )
        self.config.write_text(text)

    @property
    def config(self) -> Path:
        return self.base / "config.ini"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def maildir(self, name: str) -> Path:
        return self.base / f"mail-{name}"

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "jmapsync", "-c", str(self.config), *args]

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.cmd(*args), capture_output=True, text=True, cwd=ROOT, check=False
        )
        if ok and done.returncode != 0:
            raise AssertionError(
                f"jmapsync {args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done


def date(years_back: float, i: int) -> dt.datetime:
    return dt.datetime(2024, 6, 1, 9, 30, tzinfo=dt.UTC) - dt.timedelta(days=365 * years_back + i)


def raw_message(i: int, when: dt.datetime, body: bytes, *, final_newline: bool = True) -> bytes:
    """A CRLF message with a body given as bytes (lone CRs and all)."""
    head = (
        f"From: Restore Test <rt@example.test>\r\nTo: you@example.test\r\n"
        f"Subject: raw {i}\r\nDate: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <raw.{i}@restore.test>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode()
    data = head + body
    return data if final_newline else data.rstrip(b"\r\n")


def fill_account(a: Account) -> dict[str, Any]:
    """The round-trip fixture (module docstring); returns what was put where."""
    folders = ["Work/Projects", "Reisen ✈ Übersicht", "Ünïcødé/Kïnd ✓", "Leer"]
    for f in folders:
        a.create_folder(f)
    j = a.jmap()
    mid = {p: j.mailbox_id(p) for p in ["INBOX", "Sent", "Archive", *folders, "Ünïcødé"]}
    pad = (b"0123456789abcdef" * 4 + b"\r\n") * (BIG // 66)
    items: list[tuple[bytes, list[str], list[str], dt.datetime]] = [
        (make_message(1, date=date(3, 1)), ["INBOX"], ["$seen", "project-x"], date(3, 1)),
        (
            make_message(2, date=date(2, 2)),
            ["INBOX", "Work/Projects", "Archive"],
            ["$flagged", "$answered"],
            date(2, 2),
        ),
        (
            make_message(3, date=date(1, 3), body="Grüße aus Übersee ✈\n"),
            ["Reisen ✈ Übersicht"],
            ["$draft", "$forwarded"],
            date(1, 3),
        ),
        (make_message(4, date=date(4, 4)), ["Ünïcødé/Kïnd ✓"], ["label-zwei", "$seen"], date(4, 4)),
        (raw_message(5, date(5, 5), b"a lone\rCR stays\r\n"), ["INBOX"], [], date(5, 5)),
        (
            raw_message(6, date(0.5, 6), b"no final newline", final_newline=False),
            ["Work/Projects"],
            ["$seen"],
            date(0.5, 6),
        ),
        (raw_message(7, date(6, 7), pad), ["Archive"], ["$seen"], date(6, 7)),
        (make_message(8, date=date(2.5, 8)), ["Sent"], ["$seen"], date(2.5, 8)),
        (make_message(9, date=date(1.5, 9)), ["Ünïcødé"], [], date(1.5, 9)),
    ]
    for raw, boxes, kws, when in items:
        arrived = when + dt.timedelta(hours=3, minutes=17, seconds=11)
        j.import_message(raw, [mid[b] for b in boxes], kws, arrived)
    return {"count": len(items)}


def account_view(a: Account) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str, str]]:
    """Email id -> (mailbox paths, keywords, receivedAt, Date header as sent)."""
    j = a.jmap()
    paths = {mb["id"]: path for path, mb in j.mailbox_paths().items()}
    ids = j.email_ids()
    out = {}
    for e in j.get_emails(ids, ["id", "mailboxIds", "keywords", "receivedAt", "sentAt"]):
        out[e["id"]] = (
            tuple(sorted(paths[m] for m in e["mailboxIds"])),
            tuple(sorted(e["keywords"])),
            e["receivedAt"],
            e["sentAt"],
        )
    return out


def mailbox_tree(a: Account) -> set[tuple[str, str | None]]:
    return {(p, mb.get("role")) for p, mb in a.jmap().mailbox_paths().items()}


def blob_hashes(a: Account) -> dict[str, str]:
    """Email id -> SHA-256 of its blob as the server sends it."""
    j = a.jmap()
    ids = j.email_ids()
    return {
        e["id"]: hashlib.sha256(j.download(e["blobId"])).hexdigest()
        for e in j.get_emails(ids, ["id", "blobId"])
    }


def tree_bytes(root: Path) -> dict[str, bytes]:
    """relpath -> bytes of every message file under a Maildir root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        d = Path(dirpath)
        if d.name in ("cur", "new"):
            for f in files:
                out[str((d / f).relative_to(root))] = (d / f).read_bytes()
    return out


def to_utc(sent_at: str) -> str:
    """JMAP sentAt (with the Date header's zone) as receivedAt spells it."""
    when = dt.datetime.fromisoformat(sent_at.replace("Z", "+00:00"))
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
