"""A folder's dovecot-keywords on disk (maildir/keyword_file.py): written the
way a Dovecot reading the same Maildir needs it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jmapsync.maildir import keyword_file
from jmapsync.maildir.store import MaildirStore


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    s = MaildirStore(tmp_path)
    s.ensure_folder("INBOX")
    return s


def test_update_keeps_what_is_there_and_writes_dovecots_format(store: MaildirStore) -> None:
    path = store.path("INBOX") / "dovecot-keywords"
    path.write_text("0 $Junk\n")
    got = keyword_file.update(store, "INBOX", lambda slots: {**(slots or {}), 1: "project-x"})
    assert got == {0: "$Junk", 1: "project-x"}
    assert path.read_text() == "0 $Junk\n1 project-x\n"
    assert not (store.path("INBOX") / "dovecot-uidlist.lock").exists()  # released
    assert not list((store.path("INBOX") / "tmp").iterdir())  # temp file renamed


def test_mtime_grows_by_whole_seconds(store: MaildirStore) -> None:
    """Dovecot re-reads the file only when st_mtime (seconds) changed."""
    keyword_file.update(store, "INBOX", lambda _: {0: "a"})
    path = store.path("INBOX") / "dovecot-keywords"
    first = int(path.stat().st_mtime)
    keyword_file.update(store, "INBOX", lambda s: {**(s or {}), 1: "b"})
    assert int(path.stat().st_mtime) > first


def test_no_change_takes_no_lock_and_writes_nothing(store: MaildirStore) -> None:
    keyword_file.update(store, "INBOX", lambda _: {0: "a"})
    lock = store.path("INBOX") / "dovecot-uidlist.lock"
    lock.write_text("")  # Dovecot busy: must not matter when nothing changes
    assert keyword_file.update(store, "INBOX", lambda s: s) == {0: "a"}
    lock.unlink()
    assert (store.path("INBOX") / "dovecot-keywords").read_text() == "0 a\n"


def test_dovecots_lock_is_respected_then_taken_over_when_stale(
    store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyword_file, "LOCK_WAIT_SECONDS", 0.1)
    lock = store.path("INBOX") / "dovecot-uidlist.lock"
    lock.write_text("")
    with pytest.raises(keyword_file.Locked):
        keyword_file.update(store, "INBOX", lambda _: {0: "a"})
    assert not (store.path("INBOX") / "dovecot-keywords").exists()
    old = time.time() - keyword_file.LOCK_STALE_SECONDS - 5
    os.utime(lock, (old, old))
    assert keyword_file.update(store, "INBOX", lambda _: {0: "a"}) == {0: "a"}
    assert not lock.exists()


def test_a_moved_folder_takes_its_file_along(store: MaildirStore) -> None:
    keyword_file.update(store, "INBOX", lambda _: {0: "a"})
    store.ensure_folder("Archive")
    keyword_file.move(store, "INBOX", "Archive")
    assert keyword_file.read(store, "Archive") == {0: "a"}
    assert keyword_file.read(store, "INBOX") is None
