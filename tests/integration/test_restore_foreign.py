"""Restore of Maildirs that other tools wrote (mbsync, OfflineIMAP), against Cyrus.

Account A is pulled over IMAP by a real mbsync (isync 1.4: LF line ends, an
X-TUID header line per copy, folder names in modified UTF-7, a separate copy
per folder), then restored into fresh accounts.  Since Cyrus Email ids are
content hashes, "the same Email ids as A" means the restored bytes are A's
bytes exactly: CRLF restored, mbsync's X-TUID removed, the copies in two
folders one Email again.

Arrival times: mbsync's default (CopyArrivalDate no) leaves the copy time as
every mtime, so the Date headers are taken; with CopyArrivalDate yes the
mtimes are A's receivedAt, and the restore gives exactly those back.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from mailtools import Account, make_message
from restorekit import Setup, account_view, mailbox_tree, to_utc


def ensure_tool(program: str, package: str) -> str:
    """The program's path; its Debian package is installed when missing (as
    ./dev bench does for isync)."""
    found = shutil.which(program)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip(
            f"{program} (Debian package {package}) is not installed and we are not root"
            f" (apt-get install {package}, or run as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(cmd, capture_output=True, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        subprocess.run(cmd, capture_output=True, env=env, check=True)
    found = shutil.which(program)
    assert found, f"{package} installed but no {program}"
    return found


def mbsync_pull(mbsync: str, a: Account, target: Path, *, arrival: bool) -> None:
    """Pull every folder of A into `target` (SubFolders Verbatim), as in
    /work/shared/cyrus/README.md."""
    target.mkdir(parents=True)
    rc = target.parent / f"{target.name}.mbsyncrc"
    rc.write_text(
        f"IMAPAccount cyrus\nHost 127.0.0.1\nPort {a.imap_port}\nUser {a.user}\n"
        f"Pass {a.password}\nSSLType None\nAuthMechs LOGIN\n\n"
        f"IMAPStore far\nAccount cyrus\n\n"
        f"MaildirStore near\nPath {target}/\nInbox {target}/INBOX\nSubFolders Verbatim\n\n"
        f"Channel cyrus\nFar :far:\nNear :near:\nPatterns *\nCreate Near\nSync Pull\n"
        f"SyncState *\nCopyArrivalDate {'yes' if arrival else 'no'}\n"
    )
    done = subprocess.run(
        [mbsync, "-c", str(rc), "-a"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def fill(a: Account) -> None:
    for f in ("Work/Projects", "Reisen ✈ Übersicht", "R&D"):
        a.create_folder(f)
    j = a.jmap()
    base = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.UTC)
    plan = [
        (["INBOX"], ["$seen"]),
        (["INBOX", "Work/Projects"], ["$flagged", "$seen"]),
        (["Reisen ✈ Übersicht"], ["$answered"]),
        (["R&D"], ["$draft", "$seen"]),
        (["Work"], []),
        (["Sent"], ["$seen"]),
    ]
    for i, (boxes, kws) in enumerate(plan):
        when = base - dt.timedelta(days=400 * i + 3)
        raw = make_message(i, date=when, body=f"Nachricht {i}: Grüße\n")
        arrived = when + dt.timedelta(hours=3, minutes=1, seconds=i)
        j.import_message(raw, [j.mailbox_id(b) for b in boxes], kws, arrived)


def test_restore_of_an_mbsync_maildir(
    tmp_path: Path, account_factory: Callable[[], Account]
) -> None:
    mbsync = ensure_tool("mbsync", "isync")
    a, copied, stamped = account_factory(), account_factory(), account_factory()
    fill(a)
    mbsync_pull(mbsync, a, tmp_path / "plain", arrival=False)
    mbsync_pull(mbsync, a, tmp_path / "arrival", arrival=True)
    assert (tmp_path / "plain" / "Reisen &Jwg- &ANw-bersicht").is_dir()  # mbsync's spelling
    sample = next((tmp_path / "plain" / "INBOX").glob("*/*"))
    assert b"\nX-TUID: " in sample.read_bytes()
    assert b"\r\n" not in sample.read_bytes()

    s = Setup(tmp_path / "cfg")
    s.add("copied", copied)
    s.add("stamped", stamped)
    out = s.cli("restore", "--account", "copied", "--from", str(tmp_path / "plain")).stdout
    assert "written by mbsync" in out
    s.cli("restore", "--account", "stamped", "--from", str(tmp_path / "arrival"))

    want = account_view(a)
    assert mailbox_tree(copied) == mailbox_tree(a)
    for restored in (copied, stamped):
        got = account_view(restored)
        assert sorted(got) == sorted(want)  # the same ids: A's bytes exactly
        for eid, (boxes, keywords, _, _) in want.items():
            assert got[eid][0] == boxes, eid
            assert got[eid][1] == keywords, eid
    plain, arrival = account_view(copied), account_view(stamped)
    for eid, (_, _, received, sent) in want.items():
        assert plain[eid][2] == to_utc(sent), eid  # copy times: the Date header
        assert arrival[eid][2] == received, eid  # CopyArrivalDate: A's own receivedAt


def offlineimap_pull(program: str, a: Account, base: Path) -> Path:
    """OfflineIMAP with its defaults (sep = ".", no utime_from_header):
    folders INBOX, Work.Projects, ... directly under the root."""
    rc = base / "offlineimaprc"
    base.mkdir(parents=True)
    rc.write_text(
        f"[general]\naccounts = cyrus\nmetadata = {base / 'meta'}\n\n"
        "[Account cyrus]\nlocalrepository = local\nremoterepository = remote\n\n"
        f"[Repository local]\ntype = Maildir\nlocalfolders = {base / 'mail'}\n\n"
        f"[Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {a.imap_port}\n"
        f"remoteuser = {a.user}\nremotepass = {a.password}\nssl = no\nreadonly = True\n"
        "maxconnections = 1\n"
    )
    cmd = [program, "-c", str(rc), "-u", "quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return base / "mail"


def test_restore_of_an_offlineimap_maildir(
    tmp_path: Path, account_factory: Callable[[], Account]
) -> None:
    program = ensure_tool("offlineimap", "offlineimap3")
    a, restored = account_factory(), account_factory()
    fill(a)
    mail = offlineimap_pull(program, a, tmp_path / "oi")
    assert (mail / "Work.Projects" / "cur").is_dir()  # OfflineIMAP's own layout

    s = Setup(tmp_path / "cfg")
    s.add("restored", restored)
    s.cli("restore", "--account", "restored", "--from", str(mail), "--layout", "maildir++")
    assert mailbox_tree(restored) == mailbox_tree(a)
    want, got = account_view(a), account_view(restored)
    assert sorted(got) == sorted(want)  # LF back to CRLF: A's bytes exactly
    for eid, (boxes, keywords, _, sent) in want.items():
        assert got[eid][:2] == (boxes, keywords), eid
        assert got[eid][2] == to_utc(sent), eid  # copied files: the Date header
