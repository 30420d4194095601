"""The local outbox of one account: a Maildir for the bytes, an SQLite journal for the rest.

    <state_dir>/outbox/<account>/
        tmp/ new/ cur/     the messages (Maildir): new/ waits to be sent,
                           cur/ is held (the server refused it; see `reason`)
        journal.sqlite3    one row per message: envelope, where its send
                           stands (`state`), the Email id once imported, ...
        flush.lock         flock(): one process sends this outbox at a time

Order of writes, and why a message is never lost nor acknowledged half-way:
the file is written to tmp/, fsynced, renamed into new/ and the directory
fsynced; THEN its row is committed (WAL, synchronous=FULL); only then does
`send` return 0.  A crash in between leaves a file without a row: it was
never acknowledged, so it is never sent (the caller saw a failure and may
send again); `jmapsync status` lists it as "not queued".  A row whose file
is gone was dropped by the user (or finished but not yet forgotten).

`state` moves forward only (see send/submit.py for what each step proves):

    queued -> importing -> imported -> submitting -> sent -> (row deleted)
    any -> held (refused; `jmapsync send --flush` puts it back to work)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jmapsync.errors import LocalError, StateError
from jmapsync.send.spool import has_waiting, outbox_dir

if TYPE_CHECKING:  # `jmapsync sync` asks has_waiting() on every start
    from jmapsync.send.message import Prepared

STATES = ("queued", "importing", "imported", "submitting", "sent", "held")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Entry:
    """One queued message and how far its send got."""

    id: str  # its file name in new/ or cur/
    created_at: float
    from_address: str
    from_name: str
    mail_from: str | None  # -f (None: the Identity decides)
    rcpt_to: tuple[str, ...]
    message_id: str
    sha256: str
    size: int
    subject: str = ""
    dsn: dict[str, str] = field(default_factory=dict)  # notify / ret / envid (-N -R -V)
    state: str = "queued"
    email_id: str | None = None
    fresh: bool = False  # the Email was created by our import (no earlier submissions)
    was_draft: bool = False  # it sat in Drafts with $draft when we submitted
    before: tuple[str, ...] = ()  # EmailSubmission ids of the Email before ours
    submission_id: str | None = None
    reason: str | None = None  # why it is held, or why the last try failed
    reason_kind: str | None = None  # the SetError type (forbiddenFrom, ...) or our own
    attempts: int = 0
    last_try: float | None = None

    def to_json(self) -> str:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Entry:
        d = json.loads(text)
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("rcpt_to", "before"):
            d[key] = tuple(d.get(key) or ())
        return cls(**d)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """One account's outbox (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._db: sqlite3.Connection | None = None

    @classmethod
    def for_account(cls, state_dir: Path, account: str) -> Outbox:
        return cls(outbox_dir(state_dir, account))

    # -- files ---------------------------------------------------------------------

    def has_waiting(self) -> bool:
        """True when new/ holds a file: the cheap check the daemon makes
        every pass (no database is opened for an empty outbox)."""
        return has_waiting(self.root)

    def _ensure(self) -> None:
        """The directories, private (0700): the journal names recipients and
        subjects.  mkdir(parents=True) would give the parents the umask's mode."""
        for d in [*reversed(self.root.parents[:2]), self.root]:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(exist_ok=True, mode=0o700)

    def path_of(self, entry_id: str) -> Path | None:
        for sub in ("new", "cur"):
            p = self.root / sub / entry_id
            if p.exists():
                return p
        return None

    def read(self, entry: Entry) -> bytes:
        """The message bytes; LocalError if the file is gone or altered."""
        path = self.path_of(entry.id)
        if path is None:
            raise LocalError(f"outbox message {entry.id} is gone (removed by hand?)")
        data = path.read_bytes()
        import hashlib

        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise LocalError(f"outbox message {entry.id} was altered after it was queued")
        return data

    def _move(self, entry_id: str, to: str) -> None:
        src = self.path_of(entry_id)
        if src is None or src.parent.name == to:
            return
        os.rename(src, self.root / to / entry_id)
        _fsync_dir(self.root / to)
        _fsync_dir(src.parent)

    # -- journal -------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._ensure()
            try:
                db = sqlite3.connect(
                    self.root / "journal.sqlite3", timeout=30, isolation_level=None
                )
            except sqlite3.Error as exc:
                raise StateError(f"outbox journal {self.root}: {exc}") from None
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                db.close()  # not left open for a traceback to keep alive
                raise StateError(f"outbox journal {self.root}: {exc}") from None
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def add(self, prepared: Prepared, mail_from: str | None, dsn: dict[str, str]) -> Entry:
        """Queue a message: durable file first, then its row (see module docstring)."""
        self._ensure()
        import secrets

        entry_id = f"{int(time.time())}.{secrets.token_hex(8)}"
        tmp = self.root / "tmp" / entry_id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(prepared.data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.root / "new" / entry_id)
        _fsync_dir(self.root / "new")
        entry = Entry(
            id=entry_id,
            created_at=time.time(),
            from_address=prepared.from_address,
            from_name=prepared.from_name,
            mail_from=mail_from,
            rcpt_to=prepared.recipients,
            message_id=prepared.message_id,
            sha256=prepared.sha256,
            size=len(prepared.data),
            subject=prepared.subject,
            dsn=dsn,
        )
        self.db.execute(
            "INSERT INTO entries (id, created_at, data) VALUES (?, ?, ?)",
            (entry.id, entry.created_at, entry.to_json()),
        )
        return entry

    def entries(self) -> list[Entry]:
        """Every row, oldest first (a patch series goes out in order)."""
        rows = self.db.execute("SELECT data FROM entries ORDER BY created_at, id").fetchall()
        return [Entry.from_json(r[0]) for r in rows]

    def get(self, entry_id: str) -> Entry | None:
        row = self.db.execute("SELECT data FROM entries WHERE id = ?", (entry_id,)).fetchone()
        return Entry.from_json(row[0]) if row else None

    def update(self, entry: Entry, **changes: Any) -> Entry:
        """Record a step (committed before the caller goes on)."""
        new = replace(entry, **changes)
        self.db.execute("UPDATE entries SET data = ? WHERE id = ?", (new.to_json(), entry.id))
        return new

    def hold(self, entry: Entry, reason: str, kind: str) -> Entry:
        """Keep the message, not sent, with the reason: row first, then cur/."""
        new = self.update(entry, state="held", reason=reason, reason_kind=kind)
        self._move(entry.id, "cur")
        return new

    def park(self, entry: Entry) -> None:
        """A held message's file belongs in cur/ (a crash between the row and
        the rename can leave it in new/, where it would wake every flush)."""
        self._move(entry.id, "cur")

    def release(self, entry: Entry) -> Entry:
        """A held message goes back to work (`send --flush`).  Its Email may
        exist already (a refused submission leaves the draft): the next step
        looks for it before importing again."""
        state = "importing" if entry.email_id or entry.state != "held" else "queued"
        new = self.update(entry, state=state, reason=None, reason_kind=None)
        self._move(entry.id, "new")
        return new

    def done(self, entry: Entry) -> None:
        """Forget a sent message: file first (the server holds the Sent copy),
        then the row."""
        path = self.path_of(entry.id)
        if path is not None:
            path.unlink()
            _fsync_dir(path.parent)
        self.db.execute("DELETE FROM entries WHERE id = ?", (entry.id,))

    def drop_row(self, entry: Entry) -> None:
        self.db.execute("DELETE FROM entries WHERE id = ?", (entry.id,))

    def orphans(self) -> list[str]:
        """Files without a row: `send` died before acknowledging them."""
        known = {e.id for e in self.entries()}
        out = []
        for sub in ("new", "cur"):
            d = self.root / sub
            if d.is_dir():
                out += [p.name for p in d.iterdir() if p.name not in known]
        return sorted(out)

    # -- meta (the Identity cache) ---------------------------------------------------

    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
        )

    # -- the flush lock --------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, wait: float) -> Iterator[bool]:
        """flock() the outbox for one flusher; yields False if another process
        kept it for `wait` seconds (then do not touch the entries)."""
        self._ensure()
        fd = os.open(self.root / "flush.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.05)
            yield True
        finally:
            os.close(fd)
