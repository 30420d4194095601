"""line_endings = lf | exact against the real Cyrus, and `jmapsync verify`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, message_files, snapshot

CRLF_MSG = make_message(1, subject="crlf test")
ODD = {
    "lone-cr": b"From: a@example.test\r\nSubject: lone cr\r\n\r\nline one\rstill one\r\n",
    "crcrlf": b"From: a@example.test\r\nSubject: crcrlf\r\n\r\nx\r\r\ny\r\n",
    "no-final-newline": b"From: a@example.test\r\nSubject: no final newline\r\n\r\nlast line",
}


def files_by_subject(mirror: Mirror) -> dict[str, bytes]:
    out = {}
    for p in message_files(mirror.maildir).values():
        data = p.read_bytes()
        for line in data.splitlines():
            if line.startswith(b"Subject: "):
                out[line[9:].decode().rstrip("\r")] = data
                break
    return out


def seed(account: Account) -> None:
    with account.imap() as i:
        i.append("INBOX", CRLF_MSG, keywords=["$seen"])
        for raw in ODD.values():
            i.append("INBOX", raw)
    j = account.jmap()
    # one Email in two mailboxes: a hard link that must survive rewrites
    [eid] = j.email_ids({"header": ["Subject", "crlf test"]})
    j.set_mailboxes(eid, [j.mailbox_id("INBOX"), j.mailbox_id("Archive")])


def test_lf_mode_converts_only_what_converts_back(account: Account, tmp_path: Path) -> None:
    seed(account)
    big = make_message(9, size=5 * 1024 * 1024, subject="big crlf")  # the streamed path
    account.append("INBOX", big)
    mirror = Mirror(account, tmp_path, line_endings="lf")
    mirror.sync()
    assert_exact_mirror(mirror)
    by_subject = files_by_subject(mirror)
    lf = by_subject["crlf test"]
    assert b"\r" not in lf and lf.replace(b"\n", b"\r\n") == CRLF_MSG
    assert by_subject["lone cr"] == ODD["lone-cr"]
    assert by_subject["crcrlf"] == ODD["crcrlf"]
    assert by_subject["no final newline"] == ODD["no-final-newline"]
    assert by_subject["big crlf"] == big.replace(b"\r\n", b"\n") != big
    assert mirror.cli("verify").returncode == 0


def test_exact_mode_keeps_every_byte(account: Account, tmp_path: Path) -> None:
    seed(account)
    mirror = Mirror(account, tmp_path, line_endings="exact")
    mirror.sync()
    assert_exact_mirror(mirror)
    assert files_by_subject(mirror)["crlf test"] == CRLF_MSG


def test_switching_modes_rewrites_in_place_without_server_traffic(
    account: Account, tmp_path: Path
) -> None:
    seed(account)
    j = account.jmap()
    mirror = Mirror(account, tmp_path, line_endings="lf")
    mirror.sync()
    states = (j.state("Email"), j.state("Mailbox"))
    for mode, rewritten in (("exact", 2), ("lf", 2)):
        mirror.set("line_endings", mode)
        report = mirror.sync()
        assert report.downloaded == 0, mode
        # 2 files of one Email (hard links) rewritten, counted once per Email
        assert report.rewritten == rewritten // 2, mode
        assert_exact_mirror(mirror)
        assert (j.state("Email"), j.state("Mailbox")) == states  # no server write
        crlf_files = [
            p for p in message_files(mirror.maildir).values() if b"crlf test" in p.read_bytes()
        ]
        assert len(crlf_files) == 2
        assert crlf_files[0].stat().st_ino == crlf_files[1].stat().st_ino  # still one file
        assert mirror.cli("verify").returncode == 0
    # a pass with nothing to do afterwards changes nothing
    before = snapshot(mirror.maildir)
    assert mirror.sync().rewritten == 0
    assert snapshot(mirror.maildir) == before


def test_smime_signature_verifies_from_the_mirror_in_both_modes(
    account: Account, tmp_path: Path
) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=jmapsync test/emailAddress=a@example.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    body = tmp_path / "body.txt"
    body.write_bytes(b"Signed text.\r\nSecond line, trailing spaces   \r\n\r\nLast.\r\n")
    signed = subprocess.run(
        [
            "openssl",
            "smime",
            "-sign",
            "-in",
            str(body),
            "-signer",
            str(cert),
            "-inkey",
            str(key),
            "-text",
            "-from",
            "a@example.test",
            "-to",
            "b@example.test",
            "-subject",
            "smime",
        ],
        check=True,
        capture_output=True,
    ).stdout
    raw = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # Cyrus wants CRLF only
    account.append("INBOX", raw)
    for mode in ("lf", "exact"):
        mirror = Mirror(account, tmp_path / mode, line_endings=mode)
        mirror.sync()
        [path] = message_files(mirror.maildir).values()
        assert (b"\r\n" in path.read_bytes()) == (mode == "exact")
        done = subprocess.run(
            [
                "openssl",
                "smime",
                "-verify",
                "-in",
                str(path),
                "-CAfile",
                str(cert),
                "-purpose",
                "any",
            ],
            capture_output=True,
            check=False,
        )
        assert done.returncode == 0, (mode, done.stderr)
        assert b"Verification successful" in done.stderr


def test_verify_finds_every_kind_of_damage(account: Account, tmp_path: Path) -> None:
    with account.imap() as i:
        i.create_folder("Work")
        for n in range(6):
            i.append("INBOX" if n < 4 else "Work", make_message(n), keywords=["$seen"])
    mirror = Mirror(account, tmp_path)
    mirror.sync()
    clean = mirror.cli("verify", "--download")
    assert clean.returncode == 0, clean.stdout
    assert "6 files checked: OK" in clean.stdout

    files = sorted(message_files(mirror.maildir).values())
    inbox = [p for p in files if "/INBOX/" in str(p)]
    deleted, dup_src, flipped, moved = inbox[:4]
    deleted.unlink()
    shutil.copy(dup_src, dup_src.parent.parent / "new" / dup_src.name.split(":")[0])
    data = bytearray(flipped.read_bytes())
    data[-5] ^= 0x01
    flipped.write_bytes(bytes(data))
    os.rename(moved, mirror.maildir / "Work/cur" / moved.name)
    (mirror.maildir / "INBOX/cur/notes.txt").write_bytes(b"hello")
    (mirror.maildir / "INBOX/stray.eml").write_bytes(b"lost")

    before = snapshot(mirror.maildir)
    done = mirror.cli("verify", check=False)
    assert done.returncode == 1
    out = done.stdout
    assert f"missing    INBOX: Email {deleted.name.split('.')[0]}" in out
    assert f"missing    INBOX: Email {moved.name.split('.')[0]}" in out
    assert f"INBOX/new/{dup_src.name.split(':')[0]} (duplicate of" in out
    assert f"altered    INBOX/cur/{flipped.name}" in out
    assert f"misplaced  Work/cur/{moved.name}" in out
    assert "extra      INBOX/cur/notes.txt (not a message of this account)" in out
    assert "extra      INBOX/stray.eml (stray file outside cur/ new/)" in out
    assert snapshot(mirror.maildir) == before  # verify changed nothing
