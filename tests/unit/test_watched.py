"""sync/watched.py: the fingerprint a watch adds up from inotify events equals
the one listing the folder gives -- or the watch says it does not know."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jmapsync.maildir import durable
from jmapsync.sync import watched
from jmapsync.sync.prints import listing


def _folder(root: Path, name: str, cur: list[str], new: tuple[str, ...] = ()) -> Path:
    for sub, names in (("cur", cur), ("new", list(new)), ("tmp", [])):
        (root / name / sub).mkdir(parents=True, exist_ok=True)
        for n in names:
            (root / name / sub / n).write_text("x")
    return root / name


def _watch(*folders: Path) -> watched.Watch:
    watch = watched.Watch.start({f.name: f for f in folders}, {f.name: listing(f) for f in folders})
    assert watch is not None  # Linux: inotify is there
    return watch


def test_every_kind_of_change_adds_up_to_the_listing(tmp_path: Path) -> None:
    a = _folder(
        tmp_path, "A", ["1.jmapsync:2,S", "2.jmapsync:2,", "3.jmapsync:2,F"], ("4.jmapsync",)
    )
    b = _folder(tmp_path, "B", ["5.jmapsync:2,S"])
    watch = _watch(a, b)
    try:
        os.rename(a / "cur/1.jmapsync:2,S", a / "cur/1.jmapsync:2,RS")  # a flag
        os.rename(a / "cur/2.jmapsync:2,", b / "cur/2.jmapsync:2,")  # a move
        os.rename(a / "new/4.jmapsync", a / "cur/4.jmapsync:2,S")  # new/ -> cur/
        (a / "tmp/6").write_text("x")
        os.rename(a / "tmp/6", a / "new/6.jmapsync")  # a delivery
        os.link(b / "cur/5.jmapsync:2,S", a / "cur/5.jmapsync:2,S")  # a second mailbox
        (a / "cur/3.jmapsync:2,F").unlink()
        (a / "cur/.mutt-lock").mkdir()  # listing counts directories too
        (b / "new/ümlaut").write_bytes(b"x")  # names are bytes, as listed
        assert watch.now("A") == listing(a)
        assert watch.now("B") == listing(b)
        (b / "cur/.mutt-lock2").write_text("x")  # later changes too
        assert watch.now("B") == listing(b)
        assert watch.now("C") is None  # not watched
    finally:
        watch.close()


def test_a_folder_whose_times_moved_before_the_pass_is_not_vouched_for(tmp_path: Path) -> None:
    a = _folder(tmp_path, "A", ["1.jmapsync:2,S"])
    watch = _watch(a)
    watch.forget(["A"])
    assert watch.now("A") is None
    watch.close()


@pytest.mark.parametrize("what", ["move cur/ away and back", "replace new/", "missing new/"])
def test_a_watched_directory_that_moved_or_went_is_unknown(tmp_path: Path, what: str) -> None:
    a = _folder(tmp_path, "A", ["1.jmapsync:2,S"])
    b = _folder(tmp_path, "B", ["2.jmapsync:2,S"])
    if what == "missing new/":
        (a / "new").rmdir()
    watch = _watch(a, b)
    if what == "move cur/ away and back":
        os.rename(a / "cur", a / "cur.x")
        (a / "cur.x" / "7").write_text("x")  # an event of the moved directory
        os.rename(a / "cur.x", a / "cur")
    elif what == "replace new/":
        (a / "new.x").mkdir()
        os.rename(a / "new.x", a / "new")  # over the empty new/
    assert watch.now("A") is None
    assert watch.now("B") == listing(b)
    watch.close()


def test_an_overflowed_queue_vouches_for_nothing(tmp_path: Path) -> None:
    a = _folder(tmp_path, "A", ["1"])
    b = _folder(tmp_path, "B", [])
    watch = _watch(a, b)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    for _ in range(limit // 2 + 1):  # two events each
        os.rename(a / "cur/1", a / "cur/2")
        os.rename(a / "cur/2", a / "cur/1")
    assert listing(a) == watch._base["A"]  # the same names, but the kernel dropped events
    assert watch.now("A") is None and watch.now("B") is None
    watch.close()


def test_two_folders_that_are_one_directory_are_unknown(tmp_path: Path) -> None:
    a = _folder(tmp_path, "A", ["1"])
    (tmp_path / "L").symlink_to(a)
    watch = watched.Watch.start({"A": a, "L": tmp_path / "L"}, {"A": listing(a), "L": listing(a)})
    assert watch is not None
    assert watch.now("A") is None and watch.now("L") is None
    watch.close()


def test_no_inotify_means_no_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _folder(tmp_path, "A", ["1"])
    monkeypatch.setattr(durable, "LIBC", None)  # as maildir/durable.py finds it off Linux
    assert watched.Watch.start({"A": a}, {"A": listing(a)}) is None
