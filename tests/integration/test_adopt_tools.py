"""Switching from mbsync or OfflineIMAP: jmapsync adopts their Maildir.

The real tools pull the test account over Cyrus' IMAP into a Maildir (the
configs of bench/compare.py: mbsync "SubFolders Verbatim", OfflineIMAP
`sep = /`; and OfflineIMAP's default `sep = .`), then a two-way
`jmapsync sync` runs on that Maildir.  It must write nothing to the server
(same mailboxes, Emails, keywords -- and the same Email and Mailbox states,
which any write would move), leave an exact mirror, and the next pass must
be a no-op.  Both tools keep `Reisen ✈ Übersicht` under its IMAP modified
UTF-7 name; before this, jmapsync created a mailbox of that literal name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, message_files

from jmapsync.jmap.client import JmapClient

FOLDERS = ["Work", "Work/Projects", "Reisen ✈ Übersicht", "Lists/python-dev"]


def ensure_tool(binary: str, package: str) -> None:
    if shutil.which(binary):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{binary} missing and this is not root on Debian (apt-get install {package})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(
                f"apt-get install {package} failed (runs when a Debian mirror is reachable):"
                f" {done.stderr[-300:]}"
            )


def seed(account: Account, n: int) -> None:
    """n messages over INBOX, Archive and FOLDERS, some in two folders, with
    flags and labels."""
    for path in FOLDERS:
        account.create_folder(path)
    places = ["INBOX", "Archive", *FOLDERS]
    kw_cycle = [
        ["$seen"],
        [],
        ["$seen", "$flagged"],
        ["$seen", "$answered", "project-x"],
        ["$junk"],
    ]
    with account.imap() as imap:
        for i in range(n):
            folder = places[i % len(places)]
            # Message-IDs that contain each other: JMAP's header filter matches
            # substrings, so finding message 0's Email means looking past the
            # 59 others (a limit of 20 made it import a duplicate).
            mid = f"<{'m' * (i + 1)}@adopt.test>"
            raw = make_message(i, size=2000 + 37 * i, message_id=mid)
            imap.append(folder, raw, keywords=kw_cycle[i % 5])
    j = account.jmap()
    ids = j.email_ids()
    other = j.mailbox_id("Work/Projects")
    for eid in ids[::9]:  # ~11% in two mailboxes
        j._set("Email", update={eid: {f"mailboxIds/{other}": True}})


def server_view(account: Account) -> dict[str, Any]:
    j = account.jmap()
    boxes = {m["id"]: (m["name"], m.get("parentId"), m.get("role")) for m in j.mailboxes()}
    ids = j.email_ids()
    emails = {
        e["id"]: (sorted(e["mailboxIds"]), sorted(e["keywords"]), e["blobId"])
        for e in j.get_emails(ids, ["mailboxIds", "keywords", "blobId"])
    }
    return {
        "mailboxes": boxes,
        "emails": emails,
        "email_state": j.state("Email"),
        "mailbox_state": j.state("Mailbox"),
    }


def pull_with(tool: str, account: Account, base: Path, mail: Path) -> None:
    if tool == "mbsync":
        ensure_tool("mbsync", "isync")
        rc = base / "mbsyncrc"
        rc.write_text(
            "IMAPAccount cyrus\n"
            f"Host 127.0.0.1\nPort {account.imap_port}\n"
            f"User {account.user}\nPass {account.password}\n"
            "SSLType None\nAuthMechs LOGIN\n\n"
            "IMAPStore far\nAccount cyrus\n\n"
            f"MaildirStore near\nPath {mail}/\nInbox {mail}/INBOX\n"
            "SubFolders Verbatim\n\n"
            "Channel cyrus\nFar :far:\nNear :near:\nPatterns *\nCreate Near\n"
            "Sync Pull\nSyncState *\n"
        )
        rc.chmod(0o600)
        argv = ["mbsync", "-c", str(rc), "-a"]
    else:
        ensure_tool("offlineimap", "offlineimap")
        rc = base / "offlineimaprc"
        sep = "sep = /\n" if tool == "offlineimap" else ""  # else its default: "."
        rc.write_text(
            f"[general]\naccounts = t\nmetadata = {base / 'oimeta'}\n\n"
            "[Account t]\nlocalrepository = local\nremoterepository = remote\n\n"
            f"[Repository local]\ntype = Maildir\nlocalfolders = {mail}\n{sep}\n"
            f"[Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\n"
            f"remoteport = {account.imap_port}\nremoteuser = {account.user}\n"
            f"remotepass = {account.password}\nssl = no\nstarttls = no\n"
            "maxconnections = 2\nreadonly = True\n"
        )
        rc.chmod(0o600)
        argv = ["offlineimap", "-c", str(rc), "-o", "-u", "quiet"]
    mail.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("tool", ["mbsync", "offlineimap", "offlineimap-dotsep"])
def test_two_way_sync_adopts_another_tools_maildir_without_a_server_write(
    account: Account, tmp_path: Path, tool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = int(os.environ.get("JMAPSYNC_ADOPT_N", "60"))  # 300 for the measurement
    seed(account, n)
    mirror = Mirror(account, tmp_path / "j", direction="two-way")
    pull_with(tool, account, tmp_path, mirror.maildir)
    theirs = message_files(mirror.maildir)
    their_bytes = sum(p.stat().st_size for p in theirs.values())
    assert any("&Jwg-" in rel for rel in theirs), "the tool keeps the IMAP name on disk"
    before = server_view(account)

    fetched = [0]
    real_fetch = JmapClient.fetch_blob

    async def counting_fetch(self: JmapClient, blob_id: str, size: int) -> bytes:
        data = await real_fetch(self, blob_id, size)
        fetched[0] += len(data)
        return data

    monkeypatch.setattr(JmapClient, "fetch_blob", counting_fetch)
    report = mirror.sync()
    after = server_view(account)
    assert after == before  # no mailbox created, no Email or keyword changed: no write at all
    assert (report.mailboxes_created, report.pushed, report.imported) == (0, 0, 0)

    leftover = {"offlineimap-dotsep": ["Lists.python-dev", "Work.Projects"]}.get(tool, [])
    strays = (".mbsyncstate", ".uidvalidity", ".mbsyncstate.lock")
    assert_exact_mirror(mirror, ignore_folders=leftover, ignore_strays=strays)
    assert not (mirror.maildir / "Reisen &Jwg- &ANw-bersicht" / "cur").exists()
    for folder in leftover:  # left alone, with the tool's files
        assert list((mirror.maildir / folder / "cur").iterdir())

    again = mirror.sync()
    assert server_view(account) == before
    counts = (again.downloaded, again.renamed, again.removed, again.pushed, again.imported)
    assert counts == (0, 0, 0, 0, 0)
    assert again.mailboxes_created == 0 and not again.warnings
    print(
        f"{tool}: {len(theirs)} files of theirs ({their_bytes} bytes);"
        f" jmapsync placed {report.downloaded} messages of {len(after['emails'])};"
        f" network: {report.bytes + fetched[0]} bytes of blobs ({fetched[0]} read to compare"
        f" bodies and reused, {report.bytes} downloaded); superseded {report.superseded};"
        f" server writes 0; warnings {report.warnings}"
    )
