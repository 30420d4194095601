"""sync/prints.py: a folder's fingerprint from a listing equals the one added
up from the paths a pass leaves there, and any change of the set changes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jmapsync.sync.prints import Prints, listing, parse


def _folder(root: Path, cur: list[str], new: list[str]) -> Path:
    for sub, names in (("cur", cur), ("new", new)):
        (root / "F" / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / "F" / sub / name).write_text("x")
    return root / "F"


def test_listing_equals_the_added_paths(tmp_path: Path) -> None:
    cur = ["a.jmapsync:2,S", "b.jmapsync:2,FS", "1700000000.M1P2.host:2,"]
    new = ["c.jmapsync", "ümlaut-mua-file"]
    folder = _folder(tmp_path, cur, new)
    p = Prints()
    p.add_all([f"F/cur/{n}" for n in cur] + [f"F/new/{n}" for n in new])
    assert listing(folder) == p.of("F")
    assert p.of("other") == (0, 0, 0)


def test_a_rename_a_new_or_a_lost_file_changes_it(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.jmapsync:2,S"], [])
    before = listing(folder)
    (folder / "cur" / "a.jmapsync:2,S").rename(folder / "cur" / "a.jmapsync:2,FS")
    assert listing(folder) != before
    p = Prints({"F": before})
    p.add("F/cur/a.jmapsync:2,S", -1)
    p.add("F/cur/a.jmapsync:2,FS")
    assert listing(folder) == p.of("F")  # the expected print, kept up to date by deltas
    (folder / "new" / "b").write_text("x")
    assert listing(folder) != p.of("F")
    # the same name in new/ and in cur/ are different files
    q = Prints()
    q.add("F/new/a.jmapsync:2,FS")
    q.add("F/new/b")
    assert q.of("F") != listing(folder)


def test_entries_that_are_not_message_files_only_ever_make_it_differ(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ["a.jmapsync"], [])
    p = Prints()
    p.add("F/cur/a.jmapsync")
    (folder / "cur" / ".hidden").write_text("x")
    assert listing(folder) != p.of("F")  # conservative: scanned next time


def test_fingerprints_do_not_depend_on_the_process(tmp_path: Path) -> None:
    code = (
        "from jmapsync.sync.prints import Prints\n"
        "p = Prints(); p.add('INBOX/cur/x.jmapsync:2,S'); print(list(p.of('INBOX')))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
            cwd=Path(__file__).resolve().parents[2],
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert len(outs) == 1
    assert parse({"INBOX": [1, 2, 3], "bad": [1, "x", 3], "short": [1]}) == {"INBOX": (1, 2, 3)}
