"""Whole-second time stamps (a real loop-mounted ext4 with 128-byte inodes):
a move or a flag change made in the same second as the pass's last write
reaches the server as what it is.

Before the marker rule (sync/scope.py) a pass trusted a directory time that
was 100 ms older than the local wall clock; on a 1-second file system the
user's change in the same second left the time as recorded, so the next
pass never looked at that folder: the file moved into INBOX was not seen,
its old folder looked emptied, and the message was deleted on the server.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import mounts
import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, message_files

pytestmark = pytest.mark.skipif(mounts.skip_reason() is not None, reason=str(mounts.skip_reason()))


@pytest.fixture
def coarse_fs() -> Iterator[mounts.Mount]:
    with mounts.ext4_coarse() as m:
        probe = m.path / "probe"
        probe.write_bytes(b"")
        assert probe.stat().st_mtime_ns % 1_000_000_000 == 0  # really whole seconds
        probe.unlink()
        yield m


def _file_of(mirror: Mirror, folder: str, eid: str) -> Path:
    [path] = [
        p
        for rel, p in message_files(mirror.maildir).items()
        if rel.startswith(folder + "/") and p.name.startswith(eid + ".")
    ]
    return path


def _mailboxes_of(account: Account, eid: str) -> set[str]:
    j = account.jmap()
    names = {m["id"]: m["name"] for m in j.mailboxes(["id", "name"])}
    [email] = j.get_emails([eid], ["mailboxIds"])
    return {names[m] for m in email["mailboxIds"]}


def test_move_and_flag_in_the_same_second_as_our_last_write_reach_the_server(
    account: Account, coarse_fs: mounts.Mount, tmp_path: Path
) -> None:
    account.create_folder("Work")
    for i in range(6):
        account.append("Work", make_message(i), keywords=["$seen"])
    for i in range(6, 9):
        account.append("INBOX", make_message(i), keywords=["$seen"])
    mirror = Mirror(account, tmp_path, direction="two-way", maildir_at=coarse_fs.path / "mail")
    mirror.sync()
    work_ids = account.jmap().emails_in("Work")
    inbox_ids = account.jmap().emails_in("INBOX")

    for round_ in range(3):
        # A remote change that makes the pass write into INBOX/cur ...
        account.jmap().set_keywords(inbox_ids[round_], ["$seen", "$answered"])
        mirror.sync()
        # ... and right after it, in (very likely) the same second, the user
        # moves a message into INBOX/cur and flags another one there.
        moved = work_ids[round_]
        src = _file_of(mirror, "Work", moved)
        os.rename(src, mirror.maildir / "INBOX" / "cur" / src.name)
        flagged = _file_of(mirror, "INBOX", inbox_ids[(round_ + 1) % 3])
        os.rename(flagged, flagged.with_name(flagged.name.replace(":2,", ":2,F")))
        time.sleep(0.05)
        mirror.sync()
        assert _mailboxes_of(account, moved) == {"Inbox"}, f"round {round_}: the move was lost"
        [email] = account.jmap().get_emails([inbox_ids[(round_ + 1) % 3]], ["keywords"])
        assert "$flagged" in email["keywords"], f"round {round_}: the flag was lost"
        account.jmap().set_keywords(inbox_ids[(round_ + 1) % 3], ["$seen"])
        mirror.sync()
        assert_exact_mirror(mirror)
    assert account.jmap().emails_in("Trash") == []  # nothing was taken for a delete
