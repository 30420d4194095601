"""`direction = archive` against Cyrus: delete, move and expunge on the server;
every file stays, moves add a hard link, flags still follow; `status` and
`verify` agree on what was kept; switching back to pull or two-way is
refused until the user says so."""

from __future__ import annotations

import json
from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, message_files


def by_email(mirror: Mirror) -> dict[str, list[str]]:
    """Email id -> relpaths of its files."""
    out: dict[str, list[str]] = {}
    for rel in sorted(message_files(mirror.maildir)):
        eid = rel.rsplit("/", 1)[1].split(".jmapsync", 1)[0]
        out.setdefault(eid, []).append(rel)
    return out


def status_archived(mirror: Mirror) -> int:
    out = json.loads(mirror.cli("status", "--json").stdout)
    return int(out[mirror.name]["counts"]["archived"])


def setup(account: Account, tmp_path: Path) -> tuple[Mirror, dict[str, str]]:
    for f in ("Work", "Old"):
        account.create_folder(f)
    j = account.jmap()
    box = {p: j.mailbox_id(p) for p in ("INBOX", "Work", "Old")}
    ids = {}
    for i, where in enumerate(["INBOX", "INBOX", "INBOX", "Work", "Old", "INBOX"], start=1):
        ids[f"m{i}"] = j.import_message(make_message(i), [box[where]], ["$seen"])
    m = Mirror(account, tmp_path, direction="archive")
    m.sync()
    return m, ids


def test_archive_keeps_every_file_and_books_it(account: Account, tmp_path: Path) -> None:
    m, ids = setup(account, tmp_path)
    j = account.jmap()
    box = {p: j.mailbox_id(p) for p in ("INBOX", "Work", "Old")}
    before = set(message_files(m.maildir))
    inodes = {rel: p.stat().st_ino for rel, p in message_files(m.maildir).items()}

    j.destroy(ids["m1"])  # destroyed
    j.move(ids["m2"], box["INBOX"], box["Work"])  # moved
    with account.imap() as imap:  # expunged over IMAP
        [uid] = [u for u in imap.uids("INBOX") if b"<3.mailtools@" in imap.fetch("INBOX", u)]
        imap.delete("INBOX", uid)
    j.move(ids["m4"], box["Work"], box["INBOX"])
    j.add_keyword(ids["m4"], "$flagged")  # moved and flagged: every copy follows the flags
    j.move(ids["m5"], box["Old"], box["INBOX"])
    j.destroy_mailbox(box["Old"])  # its folder stays with the file it held

    report = m.sync()
    assert report.removed == 0
    assert report.downloaded == 0
    files = by_email(m)
    for eid in (ids["m1"], ids["m3"]):
        assert len(files[eid]) == 1
    assert files[ids["m2"]] == [
        f"INBOX/cur/{ids['m2']}.jmapsync:2,S",
        f"Work/cur/{ids['m2']}.jmapsync:2,S",
    ]
    a, b = (m.maildir / rel for rel in files[ids["m2"]])
    assert a.stat().st_ino == b.stat().st_ino == inodes[f"INBOX/cur/{ids['m2']}.jmapsync:2,S"]
    assert files[ids["m4"]] == [
        f"INBOX/cur/{ids['m4']}.jmapsync:2,FS",
        f"Work/cur/{ids['m4']}.jmapsync:2,FS",
    ]
    assert f"Old/cur/{ids['m5']}.jmapsync:2,S" in files[ids["m5"]]
    # nothing that was there went away (m4's files were renamed for the flag)
    renamed = {r for r in before if ids["m4"] in r}
    assert before - renamed <= set(message_files(m.maildir))

    kept = 5  # m1 and m3 gone; m2 left INBOX, m4 left Work, m5 left Old
    assert status_archived(m) == kept
    done = m.cli("verify")
    assert f"({kept} kept by direction = archive): OK" in done.stdout, done.stdout
    assert m.sync().mode == "unchanged"

    j.import_message(make_message(9), [box["INBOX"]], [])
    assert m.sync().downloaded == 1  # an incremental pass keeps the books as they are
    assert status_archived(m) == kept
    assert "OK" in m.cli("verify").stdout


def test_switching_archive_back_is_refused_until_forced(account: Account, tmp_path: Path) -> None:
    m, ids = setup(account, tmp_path)
    account.jmap().destroy(ids["m1"])
    m.sync()
    files = set(message_files(m.maildir))

    m.set("direction", "pull")
    done = m.cli("sync", check=False)
    assert done.returncode == 1
    assert "1 files were kept by direction = archive" in done.stderr
    m.set("direction", "two-way")
    done = m.cli("sync", "--force-deletes", check=False)
    assert done.returncode == 1
    assert "two-way sync would send them back" in done.stderr
    assert set(message_files(m.maildir)) == files  # nothing changed

    m.set("direction", "pull")
    m.cli("sync", "--force-deletes")
    assert status_archived(m) == 0
    assert_exact_mirror(m)
    m.set("direction", "two-way")
    m.cli("sync")  # nothing kept any more: two-way is fine


def test_pull_to_archive_is_safe_from_the_next_pass(account: Account, tmp_path: Path) -> None:
    j = account.jmap()
    inbox = j.mailbox_id("INBOX")
    eid = j.import_message(make_message(1), [inbox], ["$seen"])
    m = Mirror(account, tmp_path, direction="pull")
    m.sync()
    m.set("direction", "archive")
    j.destroy(eid)
    m.sync()
    assert list(by_email(m)) == [eid]
    assert status_archived(m) == 1
