"""Per-account state in SQLite: what was last synced, and the JMAP state strings.

One database per account (`<state_dir>/<account>.sqlite3`), WAL mode with
synchronous=FULL, so a commit survives a power cut.  A second file,
`<account>.lock` (state/lock.py), is held with flock() for the whole sync: two
jmapsync processes never sync one account at once.

What the tables hold, and why:

- meta: schema version, the Email and Mailbox state strings, the last sync
  time and outcome.  A state string is written in the SAME transaction as the
  records it covers, and only after the engine has put them on disk.
- mailboxes: the remote mailbox tree as last synced, with the folder path we
  gave each one, so that a rename is recognised as a folder move.
- emails: id, blobId, mailboxIds and keywords as last synced (the base of the
  three-way merge of two-way sync).
- files: the local files as last synced (folder, name -> Email id); a later
  scan is compared with it to find what the user changed.
- contents: per Email, the SHA-256 and size of the SERVER's bytes, whether
  they are CRLF-only (so LF form is reversible), and the form the local files
  hold ("lf" or "exact"); `jmapsync verify` checks files against it.
- journal: each two-way write's intent, committed before the write and
  cleared with the pass's commit: Email/set and Mailbox/set (kind "write",
  informational: their effect is read back from the server) and Email/import
  (kind "import": the file, the SHA-256 and size of the bytes sent, the
  mailbox, and once known the new Email id), so that a crash between the
  import and the commit never imports the file twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from jmapsync.errors import StateError
from jmapsync.jmap.types import BlobId, Email, EmailId, Mailbox, MailboxId, State, intern_set
from jmapsync.state.schema import migrate

if TYPE_CHECKING:
    from jmapsync.maildir.lineendings import Form

# Journal kinds.  "import": an Email/import's file, the SHA-256 and size of
# the bytes sent, the mailbox, and once known the new Email id -- a pass that
# finds one looks for the Email before importing anything again.  "write":
# an Email/set or Mailbox/set about to be sent -- informational: a pass that
# finds one knows an earlier one died and reads the effect back from the
# server (the three-way decisions see a change made on both sides as done).
JOURNAL_IMPORT = "import"
JOURNAL_WRITE = "write"
_CHUNK = 500  # ids per "IN (...)" query (SQLite allows 999 parameters)


class Content(NamedTuple):
    """The server bytes of one Email, and the form its local files hold."""

    sha256: str
    size: int
    crlf_only: bool
    form: Form


class FileRecord(NamedTuple):
    folder: str
    name: str  # "cur/<file>" or "new/<file>"
    email_id: str


def _split(value: str) -> frozenset[str]:
    return frozenset(value.split()) if value else frozenset()


def join_set(values: Iterable[str]) -> str:
    return " ".join(sorted(values))


EMAIL_COLUMNS = "id, blob_id, mailbox_ids, keywords, size, received_at"


def email_of_row(row: tuple[str, str, str, str, int, str]) -> Email:
    eid, blob, mids, kws, size, received = row
    return Email(
        EmailId(eid),
        BlobId(blob),
        intern_set(frozenset(MailboxId(m) for m in _split(mids))),
        intern_set(_split(kws)),
        size,
        float(received) if received else None,  # "": recorded before receivedAt was kept
    )


_BROKEN = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def db_error(path: Path, exc: sqlite3.Error) -> StateError:
    """One line for an SQLite error, saying what the user can do about it.

    SQLite reports a full file system under WAL as "disk I/O error" as often
    as "database or disk is full"; the free space of the file system says
    which it is."""
    name = getattr(exc, "sqlite_errorname", "")
    if name in _BROKEN:
        return StateError(f"state database {path} is unusable: {exc}")
    hint = ""
    if _full(path.parent):
        hint = " (No space left on device: the file system holding it is full)"
    elif (tmp := _sqlite_tmpdir()) is not None and _full(tmp):
        hint = f" (No space left on device: {tmp}, where SQLite keeps temporary tables, is full)"
    return StateError(f"state database {path}: {exc}{hint}", retry_hint=name)


def _full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail == 0 or st.f_favail == 0


def _sqlite_tmpdir() -> Path | None:
    """The directory SQLite writes temporary tables to on Unix: the first
    of $SQLITE_TMPDIR, $TMPDIR, /var/tmp, /usr/tmp, /tmp that is a writable
    directory (os_unix.c, unixTempFileDir).  A streamed pass and verify
    keep their temporary tables there.  (Only read, to name it in an error.)"""
    env = [os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR")]
    for d in [*env, *_SQLITE_TMP_DEFAULTS]:
        if d and Path(d).is_dir() and os.access(d, os.W_OK | os.X_OK):
            return Path(d)
    return None


_SQLITE_TMP_DEFAULTS = ("/var/tmp", "/usr/tmp", "/tmp")  # noqa: S108 -- SQLite's, named only


class StateDB:
    """The state database of one account."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            migrate(self.conn, path)
        except sqlite3.Error as exc:
            raise db_error(path, exc) from None
        except OSError as exc:
            raise StateError(f"cannot open state database {path}: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    @classmethod
    def for_account(cls, state_dir: Path, account: str) -> StateDB:
        return cls(state_dir / f"{account}.sqlite3")

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed (a full disk): otherwise the
            # connection stays inside the transaction.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    # -- meta ----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(row[0]) if row else None

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str | None) -> None:
        if value is None:
            conn.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def email_state(self) -> State | None:
        v = self.get_meta("email_state")
        return State(v) if v else None

    @property
    def mailbox_state(self) -> State | None:
        v = self.get_meta("mailbox_state")
        return State(v) if v else None

    # -- records -------------------------------------------------------------------

    def mailboxes(self) -> dict[MailboxId, tuple[Mailbox, str]]:
        """Mailbox id -> (mailbox as last synced, its folder path)."""
        out: dict[MailboxId, tuple[Mailbox, str]] = {}
        for mid, name, parent, role, path in self.conn.execute(
            "SELECT id, name, parent_id, role, path FROM mailboxes"
        ):
            out[MailboxId(mid)] = (
                Mailbox(MailboxId(mid), name, MailboxId(parent) if parent else None, role),
                path,
            )
        return out

    def emails(self) -> dict[EmailId, Email]:
        rows = self.conn.execute(f"SELECT {EMAIL_COLUMNS} FROM emails")  # noqa: S608 - constants
        return {e.id: e for e in map(email_of_row, rows)}

    def emails_by_id(self, ids: Iterable[str]) -> dict[EmailId, Email]:
        """The records of these Emails only (an incremental pass over a few)."""
        out: dict[EmailId, Email] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {EMAIL_COLUMNS} FROM emails WHERE id IN ({marks})"  # noqa: S608
            out.update((e.id, e) for e in map(email_of_row, self.conn.execute(query, chunk)))
        return out

    def files_of(self, ids: Iterable[str]) -> list[FileRecord]:
        """The recorded files of these Emails."""
        out: list[FileRecord] = []
        wanted = sorted(ids)
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            out += [
                FileRecord(folder, name, eid)
                for folder, name, eid in self.conn.execute(
                    f"SELECT folder, name, email_id FROM files WHERE email_id IN ({marks})",  # noqa: S608
                    chunk,
                )
            ]
        return out

    def emails_with_files_in(self, folders: Iterable[str]) -> set[str]:
        out: set[str] = set()
        for folder in folders:
            out.update(
                eid
                for (eid,) in self.conn.execute(
                    "SELECT email_id FROM files WHERE folder=?", (folder,)
                )
            )
        return out

    def holds_mailbox(self, mailbox_id: str, besides: Iterable[str]) -> bool:
        """Does an Email recorded in this mailbox remain once `besides` (the
        Emails a pass changed or lost) are left out?  Reads at most
        len(besides) + 1 rows."""
        skip = set(besides)
        rows = self.conn.execute(
            "SELECT id FROM emails WHERE ' ' || mailbox_ids || ' ' LIKE ? LIMIT ?",
            (f"% {mailbox_id} %", len(skip) + 1),
        )
        return any(eid not in skip for (eid,) in rows)

    def files_per_folder(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT folder, count(*) FROM files GROUP BY folder"))

    @staticmethod
    def replace_files_of(
        conn: sqlite3.Connection,
        ids: Iterable[str],
        folders: Iterable[str],
        files: Iterable[FileRecord],
    ) -> None:
        """Replace the rows of these Emails and these folders (a partial pass)."""
        conn.executemany("DELETE FROM files WHERE email_id=?", [(i,) for i in ids])
        conn.executemany("DELETE FROM files WHERE folder=?", [(f,) for f in folders])
        conn.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?)",
            [(f.folder, f.name, f.email_id) for f in files],
        )

    @staticmethod
    def put_mailboxes(conn: sqlite3.Connection, boxes: Iterable[tuple[Mailbox, str]]) -> None:
        """Replace the whole mailbox table (mailboxes are few)."""
        conn.execute("DELETE FROM mailboxes")
        conn.executemany(
            "INSERT INTO mailboxes VALUES (?, ?, ?, ?, ?)",
            [(m.id, m.name, m.parent_id, m.role, path) for m, path in boxes],
        )

    @staticmethod
    def put_emails(conn: sqlite3.Connection, emails: Iterable[Email]) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO emails VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    e.id,
                    e.blob_id,
                    join_set(e.mailbox_ids),
                    join_set(e.keywords),
                    e.size,
                    "" if e.received_at is None else str(int(e.received_at)),
                )
                for e in emails
            ],
        )

    @staticmethod
    def delete_emails(conn: sqlite3.Connection, ids: Iterable[str]) -> None:
        conn.executemany("DELETE FROM emails WHERE id=?", [(i,) for i in ids])

    def has_files(self) -> bool:
        return self.conn.execute("SELECT 1 FROM files LIMIT 1").fetchone() is not None

    @staticmethod
    def replace_all_files(conn: sqlite3.Connection, files: Iterable[FileRecord]) -> None:
        conn.execute("DELETE FROM files")
        conn.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?)",
            ((f.folder, f.name, f.email_id) for f in files),
        )

    @staticmethod
    def update_files(
        conn: sqlite3.Connection, gone: Iterable[tuple[str, str]], came: Iterable[FileRecord]
    ) -> None:
        conn.executemany("DELETE FROM files WHERE folder=? AND name=?", list(gone))
        conn.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?)",
            [(f.folder, f.name, f.email_id) for f in came],
        )

    @staticmethod
    def prune_contents(conn: sqlite3.Connection, ids: Iterable[str] | None = None) -> None:
        """Forget the content of Emails that have no file any more (of these
        Emails only, if given: a pass of a few changes must not visit a
        million rows)."""
        if ids is None:
            conn.execute("DELETE FROM contents WHERE email_id NOT IN (SELECT email_id FROM files)")
            return
        conn.executemany(
            "DELETE FROM contents WHERE email_id=?"
            " AND NOT EXISTS (SELECT 1 FROM files WHERE files.email_id=?)",
            [(i, i) for i in set(ids)],
        )

    def contents_of(self, ids: Iterable[str]) -> dict[str, Content]:
        """The content records of these Emails only."""
        out: dict[str, Content] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT email_id, sha256, size, crlf_only, form FROM contents WHERE email_id IN ({marks})"  # noqa: S608, E501
            out.update(
                (eid, Content(sha, size, bool(crlf), form))
                for eid, sha, size, crlf, form in self.conn.execute(query, chunk)
            )
        return out

    def contents(self) -> dict[str, Content]:
        return {
            eid: Content(sha, size, bool(crlf), form)
            for eid, sha, size, crlf, form in self.conn.execute(
                "SELECT email_id, sha256, size, crlf_only, form FROM contents"
            )
        }

    @staticmethod
    def put_contents(conn: sqlite3.Connection, items: Mapping[str, Content]) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO contents VALUES (?, ?, ?, ?, ?)",
            [(e, c.sha256, c.size, int(c.crlf_only), c.form) for e, c in items.items()],
        )

    # -- journal -------------------------------------------------------------------

    def journal_add(self, kind: str, payload: Mapping[str, object]) -> int:
        """Write an intent and COMMIT it, before the side effect it announces."""
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO journal (kind, payload, created_at) VALUES (?, ?, ?)",
                (kind, json.dumps(payload, sort_keys=True), time.time()),
            )
            return int(cur.lastrowid or 0)

    def journal_update(self, seq: int, payload: Mapping[str, object]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE journal SET payload=? WHERE seq=?",
                (json.dumps(payload, sort_keys=True), seq),
            )

    def journal(self, kind: str) -> list[tuple[int, dict[str, object]]]:
        return [
            (int(seq), json.loads(payload))
            for seq, payload in self.conn.execute(
                "SELECT seq, payload FROM journal WHERE kind=? ORDER BY seq", (kind,)
            )
        ]

    @staticmethod
    def journal_clear(conn: sqlite3.Connection, kind: str | None) -> None:
        """Forget the intents of one kind (None: all of them)."""
        if kind is None:
            conn.execute("DELETE FROM journal")
        else:
            conn.execute("DELETE FROM journal WHERE kind=?", (kind,))

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("mailboxes", "emails", "files", "journal", "archived"):
            out[table] = int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
        return out

    def record_result(self, ok: bool, detail: str = "") -> None:
        with self.transaction() as conn:
            self.record_result_in(conn, ok, detail)

    @classmethod
    def record_result_in(cls, conn: sqlite3.Connection, ok: bool, detail: str = "") -> None:
        """record_result inside the caller's transaction."""
        now = str(time.time())
        cls.set_meta(conn, "last_attempt_at", now)
        cls.set_meta(conn, "last_result", "ok" if ok else "error: " + detail[:500])
        if ok:
            cls.set_meta(conn, "last_sync_at", now)

    def summary(self) -> dict[str, object]:
        return {
            "email_state": self.email_state,
            "mailbox_state": self.mailbox_state,
            "last_sync_at": self.get_meta("last_sync_at"),
            "last_result": self.get_meta("last_result"),
            "counts": self.counts(),
            "skipped": json.loads(self.get_meta("skipped") or "[]"),
            "journal": [
                json.loads(p) | {"kind": k}
                for k, p in self.conn.execute("SELECT kind, payload FROM journal ORDER BY seq")
            ],
        }
