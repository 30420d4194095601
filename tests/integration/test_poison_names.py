"""A mailbox whose name cannot become a folder (real Cyrus): skipped and said,
never blocking the account, never taken for a deleted folder -- and synced
once it has a usable name."""

from __future__ import annotations

from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, message_files


def test_a_mailbox_whose_name_cannot_be_a_folder_does_not_block_the_account(
    account: Account, tmp_path: Path
) -> None:
    j = account.jmap()
    # Cyrus takes the name; in maildir++ every "." is escaped (%2E): 300 bytes,
    # over the 255 a file name may have.
    dots = "." * 100
    bad = j.create_mailbox(dots)
    account.append("INBOX", make_message(1))
    j.import_message(make_message(2), [bad])
    mirror = Mirror(account, tmp_path, layout="maildir++", direction="two-way")
    report = mirror.sync()
    assert report.downloaded == 1  # the inbox message; the other is left alone
    assert len(report.skipped) == 1 and "longer than 255" in report.skipped[0]
    assert "skipped:" in mirror.cli("status").stdout
    # Nothing was sent to the server for it; the next pass has nothing to do
    # (the skip is still shown: it holds until the mailbox can be synced).
    assert mirror.sync().mode == "unchanged"
    assert "skipped:" in mirror.cli("status").stdout
    assert len(j.emails_in(dots)) == 1

    j.rename_mailbox(bad, "Short")
    report = mirror.sync()
    assert report.skipped == []
    files = message_files(mirror.maildir)
    assert any(rel.startswith(".Short/") for rel in files), sorted(files)
    # Its message had no file here until now: that is no local delete.
    assert len(j.emails_in("Short")) == 1
    assert j.emails_in("Trash") == []
