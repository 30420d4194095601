"""Reading a restore source: a Maildir tree written by jmapsync, mbsync,
OfflineIMAP, Dovecot or a mail client.  Reads only; never writes there.

What is read, per message file (in cur/ and new/; dot-files and tmp/ are
ignored): its flags (the letters after ``:2,``), its mtime, and its bytes in
*canonical form* -- the bytes an upload sends, which is also what "the same
message" is judged by:

* every line ending CRLF (``message.upload_form``: Maildir writers on Unix
  store LF, JMAP servers hold CRLF, Cyrus refuses a bare LF);
* in a tree mbsync wrote, without the ``X-TUID:`` line mbsync appends to the
  header of every message it copies (isync 1.4.4, observed against Cyrus: a
  different 12-character value in each copy, always the last header line).
  It is mbsync's bookkeeping, not part of the message; kept, it would make
  each copy a different message and none of them equal to the original.

A tree is a *jmapsync mirror* when any file carries our name
(``<Email id>.jmapsync``); folder names are then read with jmapsync's own
escaping, and custom keywords come from the mirror's state database when it
is found.  A tree is an *mbsync* tree when a folder holds ``.mbsyncstate`` or
``.uidvalidity``, or a file name carries mbsync's ``,U=<uid>``.

Dovecot stores up to 26 keywords per folder as the letters a-z, named in the
folder's ``dovecot-keywords`` file: lines ``<index> <name>``, index 0 being
"a" (dovecot/core src/lib-storage/index/maildir/maildir-keywords.c,
maildir_keywords_sync).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import errno
import hashlib
import os
import re
import sqlite3
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from jmapsync.errors import LocalError, ProtocolError
from jmapsync.jmap.types import parse_keyword
from jmapsync.maildir import message
from jmapsync.maildir.flags import STANDARD_FLAGS, keywords_from_flags, parse_name
from jmapsync.maildir.names import Layout
from jmapsync.restore.folders import Kind

_OURS = re.compile(r"^([A-Za-z0-9_-]{1,255})\.jmapsync$")
_MBSYNC_NAME = re.compile(r",U=\d+")
_MBSYNC_FILES = (".mbsyncstate", ".uidvalidity")
# The last header line, in canonical (CRLF) form, as isync 1.4 writes it.
_TUID_LINE = re.compile(rb"(?:^|(?<=\r\n))X-TUID: [A-Za-z0-9+/]{12}\r\n\Z")
DOVECOT_KEYWORDS = "dovecot-keywords"
# Date headers outside this range are someone's typo, not an arrival time.
_EARLIEST = dt.datetime(1970, 1, 2, tzinfo=dt.UTC).timestamp()
_LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.UTC).timestamp()
_READERS = 4


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One message file and what the restore needs to know about it."""

    folder: str  # folder path relative to the root ("" = the root)
    relpath: str  # "<folder>/cur/<name>"
    flags: str  # the letters after ":2," ("" without)
    mtime: float
    email_id: str | None = None  # a jmapsync mirror's file: the Email id in its name
    sha256: str = ""  # of the canonical bytes
    size: int = 0  # of the canonical bytes
    message_id: str | None = None
    date: float | None = None  # the Date header
    problem: str | None = None  # why this file cannot be restored


@dataclass
class SourceTree:
    """Everything a restore reads from the source, before any network."""

    root: Path
    layout: Layout
    kind: Kind = "foreign"
    mbsync: bool = False
    folders: list[str] = field(default_factory=list)
    letters: dict[str, dict[str, str]] = field(default_factory=dict)  # folder -> a-z -> keyword
    files: list[SourceFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_date(value: bytes | None) -> float | None:
    """The Date header as a POSIX time; None when absent or unparsable.  A
    date without a zone (RFC 5322 "-0000" or none) is taken as UTC."""
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.decode("ascii", "replace"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        t = when.timestamp()
    except (OverflowError, OSError):
        return None
    return t if _EARLIEST <= t <= _LATEST else None


def strip_tuid(data: bytes) -> bytes:
    """`data` (canonical CRLF form) without mbsync's X-TUID header line."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data
    head = data[: end + 2]
    m = _TUID_LINE.search(head)
    if m is None:
        return data
    return data[: m.start()] + data[m.end() :]


def canonical(raw: bytes, mbsync: bool) -> bytes:
    """The bytes an upload sends for this file (module docstring)."""
    data = message.upload_form(raw)
    return strip_tuid(data) if mbsync else data


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def find_folders(root: Path, layout: Layout) -> list[str]:
    """The Maildir folders under root (a directory with cur/ or new/), as
    paths relative to root; symlinked directories are not followed.

    Maildir++: the root and the directories right below it -- with a dot
    (Dovecot, Courier, mbsync) or without (OfflineIMAP's default ``sep = .``
    writes ``INBOX`` and ``Work.Projects``)."""
    found: list[str] = []
    if layout == "maildir++":
        if _is_maildir(root):
            found.append("")
        with os.scandir(root) as entries:
            for e in entries:
                if (
                    e.name not in (".", "..", "cur", "new", "tmp")
                    and e.is_dir(follow_symlinks=False)
                    and _is_maildir(Path(e.path))
                ):
                    found.append(e.name)
        return sorted(found)
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if _is_maildir(here):
            found.append("" if here == root else here.relative_to(root).as_posix())
        # cur/new/tmp hold messages, dot-directories are tools' own (.notmuch)
        dirnames[:] = sorted(d for d in dirnames if d not in ("cur", "new", "tmp") and d[:1] != ".")
    return sorted(found)


def dovecot_keywords(path: Path) -> dict[str, str]:
    """The a-z letters of a dovecot-keywords file -> keyword (lower-cased as
    JMAP servers keep them); lines that are no valid keyword are left out."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        index, sep, name = line.partition(" ")
        if not sep or not index.isdigit() or not 0 <= int(index) < 26:
            continue
        with contextlib.suppress(ProtocolError):
            out[chr(ord("a") + int(index))] = parse_keyword(name.strip())
    return out


def mirror_keywords(db_path: Path) -> dict[str, frozenset[str]]:
    """Email id -> the keywords a jmapsync mirror's state database recorded
    (read-only; empty when the database cannot be read)."""
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute("SELECT id, keywords FROM emails").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {str(eid): frozenset(str(kws).split()) for eid, kws in rows}


def file_keywords(
    f: SourceFile, letters: dict[str, str], recorded: dict[str, frozenset[str]]
) -> frozenset[str]:
    """The keywords a file stands for: its standard flags, its Dovecot letters
    named in its folder's dovecot-keywords, and -- for a jmapsync mirror file
    -- the non-standard keywords its state recorded (the five standard ones
    come from the name, which the user may have changed since)."""
    kws = set(keywords_from_flags(f.flags))
    kws.update(letters[c] for c in f.flags if c in letters)
    if f.email_id is not None:
        standard = keywords_from_flags(STANDARD_FLAGS)
        kws.update(k for k in recorded.get(f.email_id, ()) if k not in standard)
    return frozenset(kws)


def _read(root: Path, f: SourceFile, mbsync: bool, max_size: int) -> SourceFile:
    """Fill in the content fields of one file (or its problem)."""

    def problem(why: str) -> SourceFile:
        return SourceFile(f.folder, f.relpath, f.flags, f.mtime, f.email_id, problem=why)

    path = root / f.relpath
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return problem("vanished while the restore read the folder")
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW: links are not followed out of the tree
            return problem("a symbolic link, not a message file")
        return problem(f"cannot be read: {exc.strerror}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return problem("not a regular file")
        if st.st_size - 64 > max_size:  # canonical form: CRs added, X-TUID gone
            return problem(f"{st.st_size} bytes, over the server's maxSizeUpload ({max_size})")
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        return problem(f"cannot be read: {exc.strerror}")
    finally:
        os.close(fd)
    if not message.looks_like_message(raw):
        return problem("not a mail message (no header block)")
    data = canonical(raw, mbsync)
    if len(data) > max_size:
        return problem(f"{len(data)} bytes, over the server's maxSizeUpload ({max_size})")
    return SourceFile(
        f.folder,
        f.relpath,
        f.flags,
        st.st_mtime,
        f.email_id,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        message_id=message.message_id(data),
        date=parse_date(message.header(data, "Date")),
    )


def list_files(root: Path, folders: list[str]) -> tuple[list[SourceFile], bool, bool]:
    """The message files of the folders (content not read yet), whether any
    is a jmapsync file, and whether the tree shows signs of mbsync."""
    files: list[SourceFile] = []
    ours = mbsync = False
    for folder in folders:
        base = root / folder if folder else root
        if any((base / n).exists() for n in _MBSYNC_FILES):
            mbsync = True
        for sub in ("cur", "new"):
            try:
                entries = list(os.scandir(base / sub))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise LocalError(f"cannot list {base / sub}: {exc.strerror}") from None
            for e in sorted(entries, key=lambda e: e.name):
                if e.name.startswith(".") or e.is_dir(follow_symlinks=False):
                    continue
                parsed = parse_name(e.name)
                m = _OURS.match(parsed.base)
                ours = ours or m is not None
                mbsync = mbsync or _MBSYNC_NAME.search(parsed.base) is not None
                try:
                    mtime = e.stat(follow_symlinks=False).st_mtime
                except OSError:
                    mtime = 0.0
                rel = f"{folder}/{sub}/{e.name}" if folder else f"{sub}/{e.name}"
                files.append(
                    SourceFile(folder, rel, parsed.flags, mtime, m.group(1) if m else None)
                )
    return files, ours, mbsync


def scan(
    root: Path,
    layout: Layout,
    max_size: int,
    progress: Callable[[int], None] | None = None,
) -> SourceTree:
    """Read the whole source tree (module docstring); raises LocalError when
    the root cannot be used at all."""
    if not root.is_dir():
        raise LocalError(f"restore source {root} is not a directory")
    folders = find_folders(root, layout)
    files, ours, mbsync = list_files(root, folders)
    tree = SourceTree(root, layout, "jmapsync" if ours else "foreign", mbsync, folders)
    for folder in folders:
        base = root / folder if folder else root
        letters = dovecot_keywords(base / DOVECOT_KEYWORDS)
        if letters:
            tree.letters[folder] = letters

    def one(f: SourceFile) -> SourceFile:
        done = _read(root, f, mbsync, max_size)
        if progress is not None:
            progress(1)
        return done

    # Reading and hashing release the GIL: a few threads keep the disk busy.
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        tree.files = list(pool.map(one, files))
    return tree


def read_canonical(root: Path, f: SourceFile, mbsync: bool) -> bytes | None:
    """The canonical bytes of a file as it is now; None if it is gone or no
    longer what the scan read (someone changed it meanwhile)."""
    try:
        raw = (root / f.relpath).read_bytes()
    except OSError:
        return None
    data = canonical(raw, mbsync)
    return data if hashlib.sha256(data).hexdigest() == f.sha256 else None
