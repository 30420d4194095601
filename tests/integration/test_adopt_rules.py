"""The adoption rules one by one (the real tools: test_adopt_tools.py).

- an IMAP modified UTF-7 folder of an existing mailbox moves to its folder,
  also file by file when that folder already holds mail;
- one of no mailbox is never created on the server;
- a folder of only known messages is a leftover on the first two-way pass,
  and only then: later it is the user's copy into a new folder;
- a leftover that gains a message the server lacks becomes a mailbox.
"""

from __future__ import annotations

from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror

from jmapsync.maildir.mutf7 import decode_or_none as imap_utf7_decode


def put(maildir: Path, folder: str, name: str, raw: bytes) -> None:
    for sub in ("cur", "new", "tmp"):
        (maildir / folder / sub).mkdir(parents=True, exist_ok=True)
    (maildir / folder / "cur" / name).write_bytes(raw)


def mutt_copy(raw: bytes) -> bytes:
    """What a mail program writes: LF line ends, one header more."""
    return b"X-Copied-By: test\n" + raw.replace(b"\r\n", b"\n")


def mailbox_names(account: Account) -> set[str]:
    return {m["name"] for m in account.jmap().mailboxes()}


def test_encoded_folder_moves_file_by_file_into_a_folder_with_mail(
    account: Account, tmp_path: Path
) -> None:
    account.create_folder("Reisen ✈ Übersicht")
    account.append("Reisen ✈ Übersicht", make_message(1))
    account.append("Reisen ✈ Übersicht", make_message(2))
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    state = account.jmap().state("Email")
    put(mirror.maildir, "Reisen &Jwg- &ANw-bersicht", "1.mbsync,U=1:2,", mutt_copy(make_message(1)))
    report = mirror.sync()
    assert "Reisen &Jwg- &ANw-bersicht" not in mailbox_names(account)
    assert report.superseded == 1 and report.imported == 0
    assert account.jmap().state("Email") == state
    assert_exact_mirror(mirror)


def test_encoded_folder_of_no_mailbox_is_not_created(account: Account, tmp_path: Path) -> None:
    mirror = Mirror(account, tmp_path, direction="two-way")
    put(mirror.maildir, "Caf&AOk-", "1.x:2,S", make_message(7))
    report = mirror.sync()
    assert not {"Caf&AOk-", "Café"} & mailbox_names(account)
    assert any("modified UTF-7" in w for w in report.warnings)
    assert report.imported == 0


def test_copies_in_a_new_folder_are_a_leftover_only_on_the_first_pass(
    account: Account, tmp_path: Path
) -> None:
    account.append("INBOX", make_message(1))
    account.append("INBOX", make_message(2))
    mirror = Mirror(account, tmp_path, direction="two-way")
    put(mirror.maildir, "Old.Box", "1.other-tool:2,S", mutt_copy(make_message(1)))
    first = mirror.sync()
    assert "Old.Box" not in mailbox_names(account)
    assert any("Old.Box" in w for w in first.warnings)
    quiet = mirror.sync()
    assert not quiet.warnings  # said once

    # Later, the user copies a message into a new folder: that is a mailbox.
    put(mirror.maildir, "Keep", "2.mutt:2,S", mutt_copy(make_message(2)))
    mirror.sync()
    assert "Keep" in mailbox_names(account)
    j = account.jmap()
    assert len(j.emails_in("Keep")) == 1

    # The leftover gains a message the server lacks: now it is a folder of the user's.
    put(mirror.maildir, "Old.Box", "9.new:2,S", make_message(9))
    mirror.sync()
    assert "Old.Box" in mailbox_names(account)
    assert len(j.emails_in("Old.Box")) == 2  # the copy joined, the new one imported
    assert_exact_mirror(mirror)


def test_imap_utf7_names() -> None:
    assert imap_utf7_decode("Reisen &Jwg- &ANw-bersicht") == "Reisen ✈ Übersicht"
    assert imap_utf7_decode("AT&-T") == "AT&T"
    for plain in ("R&D", "plain", "&Jwg", "&Jwg-&ANw-", "&AGE-", "Übersicht"):
        assert imap_utf7_decode(plain) is None, plain
