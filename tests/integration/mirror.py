"""Run jmapsync against a test account and check the Maildir mirrors it exactly.

`Mirror` syncs in-process (Engine, for the SyncReport) or through the real
command line (`python -m jmapsync`, for exit codes, stderr and crash tests).
`assert_exact_mirror` compares the whole Maildir with what the server says
over JMAP, byte for byte, independently of jmapsync's own state database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailtools import Account

from jmapsync.config import load
from jmapsync.maildir.flags import FLAG_OF_KEYWORD, flags_from_keywords, parse_name
from jmapsync.sync.engine import Engine, SyncReport

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Mirror:
    account: Account
    base: Path
    layout: str = "verbatim"
    direction: str = "pull"
    name: str = "test"
    line_endings: str = "lf"
    # Elsewhere than under `base` (e.g. on a test file system of its own).
    maildir_at: Path | None = None
    state_at: Path | None = None

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "[jmapsync]\n"
            f"state_dir = {self.state_dir}\n"
            f"[account {self.name}]\n"
            f"session_url = {self.account.session_url}\n"
            f"username = {self.account.user}\n"
            f"password = {self.account.password}\n"
            f"maildir = {self.maildir}\n"
            f"layout = {self.layout}\n"
            f"direction = {self.direction}\n"
            f"line_endings = {self.line_endings}\n"
        )

    def set(self, key: str, value: str) -> None:
        """Change one account key in the config file."""
        lines = [
            line for line in self.config_path.read_text().splitlines() if not line.startswith(key)
        ]
        self.config_path.write_text("\n".join([*lines, f"{key} = {value}"]) + "\n")
        setattr(self, key, value)

    @property
    def config_path(self) -> Path:
        return self.base / "config.ini"

    @property
    def maildir(self) -> Path:
        return self.maildir_at or self.base / "mail"

    @property
    def state_dir(self) -> Path:
        return self.state_at or self.base / "state"

    def sync(self, *, force_deletes: bool = False) -> SyncReport:
        config = load(self.config_path)
        engine = Engine(config, config.account(self.name), force_deletes=force_deletes)
        return asyncio.run(engine.sync())

    def cli(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "jmapsync", "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            **kw,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"jmapsync {args} exited {done.returncode}:\n{done.stderr}")
        return done

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "jmapsync", "-c", str(self.config_path), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """relpath -> (inode, mtime_ns, size) of every file and directory under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def message_files(root: Path) -> dict[str, Path]:
    """relpath -> path of every file in a cur/ or new/ directory."""
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and p.parent.name in ("cur", "new")
    }


def stray_files(root: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """Files that are neither messages in cur/new nor anything in tmp/ (nor a
    folder's dovecot-keywords, nor names in `ignore`)."""
    return [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and p.parent.name not in ("cur", "new", "tmp")
        and p.name != KEYWORDS_FILE
        and p.name not in ignore
    ]


KEYWORDS_FILE = "dovecot-keywords"
# Keywords the server sets itself, which get no letter (jmapsync's default).
SERVER_ONLY = frozenset({"$hasattachment", "$hasnoattachment"})


def dovecot_letters(folder_dir: Path) -> dict[str, str]:
    """keyword (lowercase) -> letter, read from the folder's dovecot-keywords
    the simple way (restated here, not jmapsync's parser): "N name" lines."""
    try:
        text = (folder_dir / KEYWORDS_FILE).read_text()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        out.setdefault(name.lower(), "abcdefghijklmnopqrstuvwxyz"[int(number)])
    return out


def folder_of_paths(account: Account, layout: str = "verbatim") -> dict[str, str]:
    """Mailbox id -> folder path, computed here for PLAIN names (no escaping needed)."""
    j = account.jmap()
    out = {}
    for path, mb in j.mailbox_paths().items():
        parts = ["INBOX"] if mb.get("role") == "inbox" else path.split("/")
        if layout == "verbatim":
            out[mb["id"]] = "/".join(parts)
        else:
            out[mb["id"]] = "" if parts == ["INBOX"] else "." + ".".join(parts)
    return out


def expected_local_bytes(blob: bytes, line_endings: str) -> bytes:
    """The rule, restated independently of jmapsync: LF form only for CRLF-only
    blobs that end in CRLF; everything else byte-exact."""
    crlf_only = blob.endswith(b"\r\n") and blob.count(b"\r") == blob.count(b"\r\n") == blob.count(
        b"\n"
    )
    if line_endings == "lf" and crlf_only:
        return blob.replace(b"\r\n", b"\n")
    return blob


def assert_exact_mirror(
    mirror: Mirror,
    folder_of: dict[str, str] | None = None,
    *,
    check_bytes: bool = True,
    all_lettered: bool = True,
    ignore_folders: list[str] | tuple[str, ...] = (),
    ignore_strays: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Every Email is in the folder of each of its mailboxes, exactly once,
    with the right flags and the server's bytes; nothing else is there.

    Flags: D F P R S as the keywords say, and exactly the Dovecot letters of
    its other keywords that the folder's dovecot-keywords names (every such
    keyword has one, unless `all_lettered` is False: a folder of more than 26).
    `ignore_folders`: folders of no mailbox left as they are (another tool's);
    `ignore_strays`: file names another tool keeps in folders (.mbsyncstate)."""
    account = mirror.account
    j = account.jmap()
    folder_of = folder_of or folder_of_paths(account, mirror.layout)
    ids = j.email_ids()
    emails = j.get_emails(ids, ["id", "blobId", "mailboxIds", "keywords", "size"]) if ids else []
    files = {
        rel: p
        for rel, p in message_files(mirror.maildir).items()
        if not any(rel.startswith(f + "/") for f in ignore_folders)
    }
    expected: dict[str, tuple[str, str]] = {}  # "folder|id" -> (flags, blobId)
    letters: dict[str, dict[str, str]] = {}
    for e in emails:
        custom = {
            k.lower() for k in e["keywords"] if k.lower() not in FLAG_OF_KEYWORD
        } - SERVER_ONLY
        for mid in e["mailboxIds"]:
            folder = folder_of[mid]
            if folder not in letters:
                letters[folder] = dovecot_letters(mirror.maildir / folder)
            if all_lettered:
                assert custom <= set(letters[folder]), (folder, custom, letters[folder])
            dovecot = "".join(sorted(letters[folder][k] for k in custom if k in letters[folder]))
            expected[f"{folder}|{e['id']}"] = (
                flags_from_keywords(e["keywords"]) + dovecot,
                e["blobId"],
            )
    found: dict[str, tuple[str, Path]] = {}
    for rel, path in files.items():
        folder = str(path.parent.parent.relative_to(mirror.maildir))
        folder = "" if folder == "." else folder
        parsed = parse_name(path.name)
        assert parsed.base.endswith(".jmapsync"), f"foreign file {rel}"
        key = f"{folder}|{parsed.base.removesuffix('.jmapsync')}"
        assert key not in found, f"duplicate: {rel} and {found[key][1]}"
        found[key] = (parsed.flags, path)
        if path.parent.name == "new":
            assert "S" not in parsed.flags, rel
    assert sorted(found) == sorted(expected), (
        f"missing {sorted(set(expected) - set(found))[:10]}, "
        f"extra {sorted(set(found) - set(expected))[:10]}"
    )
    blobs: dict[str, bytes] = {}
    for key, (flags, path) in found.items():
        want_flags, blob_id = expected[key]
        folder = key.split("|")[0]
        mapped = set("DFPRS") | set(letters.get(folder, {}).values())
        assert "".join(sorted(set(flags) & mapped)) == want_flags, (key, flags, want_flags)
        if check_bytes:
            if blob_id not in blobs:
                blobs[blob_id] = j.download(blob_id)
            want = expected_local_bytes(blobs[blob_id], mirror.line_endings)
            assert path.read_bytes() == want, f"{path} differs from blob {blob_id}"
    strays = stray_files(mirror.maildir, ignore_strays)
    assert not strays, strays
    return {"emails": len(emails), "files": len(found)}


def assert_files_table(mirror: Mirror) -> None:
    """The state's file list is exactly what is on disk (after a completed pass)."""
    import sqlite3

    conn = sqlite3.connect(mirror.state_dir / f"{mirror.name}.sqlite3")
    try:
        rows = {
            "/".join(p for p in (folder, name) if p)
            for folder, name in conn.execute("SELECT folder, name FROM files")
        }
    finally:
        conn.close()
    assert rows == set(message_files(mirror.maildir)), sorted(
        rows ^ set(message_files(mirror.maildir))
    )[:10]
