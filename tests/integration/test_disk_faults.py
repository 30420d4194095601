"""Full disks, read-only and unreadable Maildirs, I/O errors: one line, exit 1,
no half-written file a mail reader could see, a consistent state database,
the other accounts carry on -- and once the disk is fixed the next pass
completes exactly.  On real file systems (tmpfs, a read-only remount) where
the kernel can produce the fault; EIO, which no test file system here can be
made to return on demand, through the one OS call that reports it."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mounts
import pytest
from mailtools import Account, make_message
from mirror import ROOT, Mirror, assert_exact_mirror, assert_files_table, message_files

pytestmark = pytest.mark.skipif(mounts.skip_reason() is not None, reason=str(mounts.skip_reason()))


@pytest.fixture
def small_fs() -> Iterator[mounts.Mount]:
    with mounts.tmpfs("1m") as m:
        yield m


def _load(account: Account, n: int, size: int, start: int = 0) -> None:
    account.append_many("INBOX", [make_message(i, size=size) for i in range(start, start + n)])


def _two_accounts(mirror: Mirror, other: Account, other_dir: Path) -> None:
    """A second, healthy account in the same config."""
    cfg = mirror.config_path.read_text() + (
        "[account other]\n"
        f"session_url = {other.session_url}\n"
        f"username = {other.user}\n"
        f"password = {other.password}\n"
        f"maildir = {other_dir}\n"
        "direction = pull\n"
    )
    mirror.config_path.write_text(cfg)


def _complete_files_only(mirror: Mirror) -> None:
    """Every file a mail reader can see (cur/, new/) holds the whole message."""
    j = mirror.account.jmap()
    sizes = {e["id"]: e["size"] for e in j.get_emails(j.email_ids(), ["id", "size"])}
    for rel, path in message_files(mirror.maildir).items():
        eid = path.name.split(".jmapsync")[0]
        raw = path.read_bytes()
        # LF form is shorter by one byte per line; exact form equals the size.
        assert len(raw) + raw.count(b"\n") in (sizes[eid], sizes[eid] + raw.count(b"\n")), rel
        assert raw.endswith(b"\n"), f"{rel} is cut short"


def _db_ok(mirror: Mirror) -> None:
    conn = sqlite3.connect(mirror.state_dir / f"{mirror.name}.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


def test_full_disk_one_line_other_account_carries_on_then_completes(
    account_factory: Callable[[], Account], small_fs: mounts.Mount, tmp_path: Path
) -> None:
    account, other = account_factory(), account_factory()
    _load(account, 40, 60_000)  # 2.4 MB: does not fit in 1 MB
    other.append("INBOX", make_message(1))
    mirror = Mirror(account, tmp_path, maildir_at=small_fs.path / "mail")
    _two_accounts(mirror, other, tmp_path / "other-mail")

    done = mirror.cli("sync", check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("jmapsync: ")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("jmapsync: account test: ")
    assert "No space left on device" in errors[0]
    assert str(small_fs.path) in errors[0]  # the path is named
    assert len(message_files(tmp_path / "other-mail")) == 1  # the other account synced
    _complete_files_only(mirror)
    _db_ok(mirror)
    status = mirror.cli("status").stdout
    assert "No space left on device" in status

    small_fs.grow("64m")
    assert mirror.cli("sync").returncode == 0
    assert_exact_mirror(mirror)
    assert_files_table(mirror)


def test_full_state_directory_is_one_line_and_the_database_stays_usable(
    account: Account, small_fs: mounts.Mount, tmp_path: Path
) -> None:
    _load(account, 5, 2_000)
    mirror = Mirror(account, tmp_path, state_at=small_fs.path / "state")
    assert mirror.cli("sync").returncode == 0
    # Fill the state file system to the last byte.
    filler = small_fs.path / "filler"
    with open(filler, "wb", buffering=0) as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    _load(account, 60, 30_000, start=100)  # a pass that must record many rows
    done = mirror.cli("sync", check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("jmapsync: ")]
    assert len(line) == 1 and ("full" in line[0] or "space" in line[0]), done.stderr
    filler.unlink()
    assert mirror.cli("sync").returncode == 0
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    _db_ok(mirror)


def test_read_only_maildir_is_one_line(
    account: Account, small_fs: mounts.Mount, tmp_path: Path
) -> None:
    small_fs.grow("64m")
    _load(account, 3, 2_000)
    mirror = Mirror(account, tmp_path, maildir_at=small_fs.path / "mail")
    assert mirror.cli("sync").returncode == 0
    _load(account, 3, 2_000, start=100)
    small_fs.read_only()
    try:
        done = mirror.cli("sync", check=False)
    finally:
        small_fs.read_only(False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Read-only file system" in done.stderr
    assert mirror.cli("sync").returncode == 0
    assert_exact_mirror(mirror)


def test_permission_denied_is_one_line(account: Account, tmp_path: Path) -> None:
    """As an unprivileged user (chmod does not stop root) on a Maildir root it
    may not write to."""
    account.append("INBOX", make_message(1))
    base = Path("/tmp") / f"jms-perm-{os.getpid()}"
    base.mkdir(exist_ok=True)
    try:
        os.chmod(base, 0o777)  # noqa: S103 - the unprivileged user's state goes here
        locked = base / "locked"
        locked.mkdir(mode=0o755)
        mirror = Mirror(account, base / "run", maildir_at=locked / "mail")
        os.chmod(mirror.base, 0o777)  # noqa: S103
        done = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-m",
                "jmapsync",
                "-c",
                str(mirror.config_path),
                "sync",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            env=dict(os.environ, HOME=str(base)),
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        assert "Permission denied" in done.stderr
        assert str(locked) in done.stderr
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_io_error_on_fsync_is_one_line_and_nothing_is_recorded(
    account: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from the disk while making a batch durable: the pass stops, no
    state string advances, and the next pass finishes the job."""
    import errno

    from jmapsync.errors import DiskError
    from jmapsync.maildir import durable, store

    _load(account, 5, 2_000)
    mirror = Mirror(account, tmp_path)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with monkeypatch.context() as m:
        m.setattr(store, "SYNCFS", broken)
        m.setattr(durable, "SYNCFS", broken)
        m.setattr(os, "fsync", broken)
        with pytest.raises(DiskError, match="Input/output error"):
            mirror.sync()
    conn = sqlite3.connect(mirror.state_dir / "test.sqlite3")
    try:
        assert conn.execute("SELECT value FROM meta WHERE key='email_state'").fetchone() is None
    finally:
        conn.close()
    mirror.sync()
    assert_exact_mirror(mirror)
    assert_files_table(mirror)


def test_verify_on_a_vanished_folder_and_root_reports(account: Account, tmp_path: Path) -> None:
    account.create_folder("Work")
    account.append("INBOX", make_message(1))
    account.append("Work", make_message(2))
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    import shutil

    shutil.rmtree(mirror.maildir / "Work")
    done = mirror.cli("verify", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "missing" in done.stdout and "Work" in done.stdout
    shutil.rmtree(mirror.maildir)
    done = mirror.cli("verify", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "missing" in done.stdout


def test_a_full_sqlite_temporary_directory_is_named(
    small_fs: mounts.Mount, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed pass and verify keep temporary tables in SQLite's
    temporary directory; when that is full (measured: SQLite says "database
    or disk is full" once a temp table spills there), the one line says
    which directory -- the state's own file system has room."""
    from jmapsync.state.db import db_error

    with contextlib.suppress(OSError):
        (small_fs.path / "fill").write_bytes(b"\0" * 2 * 1024 * 1024)
    monkeypatch.setenv("SQLITE_TMPDIR", str(small_fs.path))
    err = db_error(tmp_path / "a.sqlite3", sqlite3.OperationalError("database or disk is full"))
    assert f"{small_fs.path}, where SQLite keeps temporary tables, is full" in str(err)
    monkeypatch.setenv("SQLITE_TMPDIR", str(tmp_path))
    err = db_error(tmp_path / "a.sqlite3", sqlite3.OperationalError("database or disk is full"))
    assert "No space" not in str(err)
