"""direction = two-way, flags: what a user does to flags in the Maildir reaches
the server as single-keyword patches, and concurrent changes merge per keyword."""

from __future__ import annotations

import os
from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, message_files


def setup(account: Account, tmp_path: Path) -> tuple[Mirror, dict[str, str]]:
    j = account.jmap()
    inbox = j.mailbox_id("INBOX")
    ids = {
        "read": j.import_message(make_message(1), [inbox], keywords={"$seen": True}),
        "unread": j.import_message(make_message(2), [inbox]),
        "tagged": j.import_message(
            make_message(3), [inbox], keywords={"$seen": True, "project-x": True}
        ),
    }
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    return mirror, ids


def path_of(mirror: Mirror, eid: str) -> Path:
    [p] = [p for p in message_files(mirror.maildir).values() if p.name.startswith(eid)]
    return p


def keywords(account: Account, eid: str) -> set[str]:
    return set(account.jmap().get_email(eid, ["keywords"])["keywords"])


def test_local_flag_changes_reach_the_server_and_do_not_echo(
    account: Account, tmp_path: Path
) -> None:
    mirror, ids = setup(account, tmp_path)
    # F on a read message (mutt: cur/X:2,S -> cur/X:2,FS)
    read = path_of(mirror, ids["read"])
    os.rename(read, read.with_name(read.name.replace(":2,S", ":2,FS")))
    # reading a new message (mutt: new/X -> cur/X:2,S)
    unread = path_of(mirror, ids["unread"])
    os.rename(unread, unread.parent.parent / "cur" / (unread.name + ":2,S"))
    # mark unread and answered on the tagged one (cur/X:2,S -> cur/X:2,R)
    tagged = path_of(mirror, ids["tagged"])
    os.rename(tagged, tagged.with_name(tagged.name.replace(":2,S", ":2,R")))
    state_before = account.jmap().state("Email")

    report = mirror.sync()
    assert report.pushed == 3
    assert report.downloaded == 0 and report.renamed == 0  # the files already say it
    assert {"$seen", "$flagged"} <= keywords(account, ids["read"])
    assert "$seen" in keywords(account, ids["unread"])
    tagged_kw = keywords(account, ids["tagged"])
    assert "$seen" not in tagged_kw and "$answered" in tagged_kw
    assert "project-x" in tagged_kw  # a keyword with no flag letter survives
    assert account.jmap().state("Email") != state_before
    assert_exact_mirror(mirror)

    again = mirror.sync()  # our own write is not a remote change to apply
    assert (again.pushed, again.renamed, again.downloaded) == (0, 0, 0)


def test_flag_here_and_another_flag_there_both_survive(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    read = path_of(mirror, ids["read"])
    os.rename(read, read.with_name(read.name.replace(":2,S", ":2,FS")))  # local: +F
    account.jmap().add_keyword(ids["read"], "$answered")  # remote: +R
    report = mirror.sync()
    assert report.pushed == 1 and report.renamed == 1
    assert {"$seen", "$flagged", "$answered"} <= keywords(account, ids["read"])
    assert path_of(mirror, ids["read"]).name.endswith(":2,FRS")
    assert_exact_mirror(mirror)


def test_same_flag_changed_on_both_sides_is_no_conflict(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    read = path_of(mirror, ids["read"])
    os.rename(read, read.with_name(read.name.replace(":2,S", ":2,FS")))
    account.jmap().add_keyword(ids["read"], "$flagged")
    report = mirror.sync()
    assert report.pushed == 0
    assert_exact_mirror(mirror)


def test_remote_unflag_and_local_read_merge(account: Account, tmp_path: Path) -> None:
    """Remote clears $seen of one message while locally it gets F: F goes up,
    the cleared S comes down."""
    mirror, ids = setup(account, tmp_path)
    read = path_of(mirror, ids["read"])
    os.rename(read, read.with_name(read.name.replace(":2,S", ":2,FS")))
    account.jmap().remove_keyword(ids["read"], "$seen")
    mirror.sync()
    kws = keywords(account, ids["read"])
    assert "$flagged" in kws and "$seen" not in kws
    assert path_of(mirror, ids["read"]).name.endswith(":2,F")
    assert_exact_mirror(mirror)


def test_pull_mode_never_writes_to_the_server(account: Account, tmp_path: Path) -> None:
    mirror, ids = setup(account, tmp_path)
    mirror.set("direction", "pull")
    read = path_of(mirror, ids["read"])
    os.rename(read, read.with_name(read.name.replace(":2,S", ":2,FS")))
    state = account.jmap().state("Email")
    report = mirror.sync()
    assert report.pushed == 0 and report.renamed == 1  # the server's flags come back
    assert account.jmap().state("Email") == state
    assert_exact_mirror(mirror)
