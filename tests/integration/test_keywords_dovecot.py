"""Keywords beyond the five flags, read and written by a real Dovecot.

jmapsync stores them as Dovecot does (letters a..z named per folder by
dovecot-keywords); the proof is Dovecot's own IMAP server on the mirror:
FETCH FLAGS shows the server's keywords, and a keyword set with Dovecot's
STORE reaches Cyrus at the next `jmapsync sync`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dovecot import Dovecot, version
from mailtools import Account, Imap, make_message
from mirror import Mirror, assert_exact_mirror, message_files
from structlog.testing import capture_logs

from jmapsync.state.db import StateDB


@pytest.fixture
def dovecot_dir() -> Iterator[Path]:
    """Outside pytest's 0700 tmp tree: Dovecot's auth process runs as the
    "dovecot" user and must read its passwd file."""
    d = Path(tempfile.mkdtemp(prefix="jmsd-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def by_subject(imap: Imap, folder: str) -> dict[str, set[str]]:
    """Subject -> FLAGS of every message in a folder, as the IMAP server says."""
    imap.select(folder, readonly=True)
    typ, data = imap.conn.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    out: dict[str, set[str]] = {}
    flags: set[str] = set()
    for item in data:
        if isinstance(item, tuple):
            head = item[0].decode()
            flags = set(head.split("FLAGS (", 1)[1].split(")", 1)[0].split()) - {"\\Recent"}
            subject = item[1].decode().split(":", 1)[1].strip()
            out[subject] = flags
    return out


def keywords_by_subject(account: Account) -> dict[str, set[str]]:
    j = account.jmap()
    ids = j.email_ids()
    out = {}
    for e in j.get_emails(ids, ["keywords", "subject"]):
        out[e["subject"]] = set(e["keywords"])
    return out


@pytest.mark.parametrize("layout", ["verbatim", "maildir++"])
def test_dovecot_reads_the_keywords_and_its_store_reaches_the_server(
    account: Account, tmp_path: Path, dovecot_dir: Path, layout: str
) -> None:
    account.append(
        "INBOX", make_message(1, subject="one"), keywords=["$seen", "$Junk", "project-x"]
    )
    account.append("INBOX", make_message(2, subject="two"), keywords=["$HasAttachment"])
    account.append("Archive", make_message(3, subject="three"), keywords=["$MDNSent", "$NotJunk"])
    # In the Dovecot dir: the "mail" user must reach it (pytest's tmp is 0700).
    mirror = Mirror(account, dovecot_dir / "m", layout=layout, direction="two-way")
    mirror.sync()
    assert_exact_mirror(mirror)
    inbox = "" if layout == "maildir++" else "INBOX"
    archive = ".Archive" if layout == "maildir++" else "Archive"
    assert (mirror.maildir / inbox / "dovecot-keywords").read_text() == "0 $junk\n1 project-x\n"
    assert (mirror.maildir / archive / "dovecot-keywords").read_text() == "0 $mdnsent\n1 $notjunk\n"

    dc = Dovecot(dovecot_dir / "d", mirror.maildir, layout).start()
    try:
        with Imap(user=dc.user, password=dc.password, port=dc.port) as imap:
            seen_inbox = by_subject(imap, "INBOX")
            seen_archive = by_subject(imap, "Archive")
            print("Dovecot", version(), "FETCH FLAGS:", seen_inbox, seen_archive)
            assert seen_inbox["one"] == {"\\Seen", "$junk", "project-x"}
            assert seen_inbox["two"] == set()  # $hasattachment is server-only: no letter
            assert seen_archive["three"] == {"$mdnsent", "$notjunk"}
            # Through Dovecot: a new label, a keyword removed, a keyword known elsewhere.
            imap.select("INBOX")
            _typ, data = imap.conn.search(None, "UNKEYWORD", "$junk")
            for num in data[0].split():
                imap.conn.store(num.decode(), "+FLAGS", "(Project-Y)")
            _typ, data = imap.conn.search(None, "KEYWORD", "$junk")
            [num] = data[0].split()
            imap.conn.store(num.decode(), "-FLAGS", "($junk)")
            imap.select("Archive")
            imap.conn.store("1", "+FLAGS", "(project-x)")
        # Dovecot numbered the new keywords after ours, in each folder.
        inbox_map = (mirror.maildir / inbox / "dovecot-keywords").read_text()
        assert inbox_map.startswith("0 $junk\n1 project-x\n") and "2 Project-Y" in inbox_map

        report = mirror.sync()
        assert report.pushed == 3
        kws = keywords_by_subject(account)
        assert kws["one"] == {"$seen", "project-x"}
        assert kws["two"] == {"$hasattachment", "project-y"}  # $hasattachment untouched
        assert kws["three"] == {"$mdnsent", "$notjunk", "project-x"}

        # And back: a keyword set on the server shows in Dovecot after a sync.
        j = account.jmap()
        [three] = [
            e["id"] for e in j.get_emails(j.email_ids(), ["subject"]) if e["subject"] == "three"
        ]
        j.add_keyword(three, "$junk")
        mirror.sync()
        dc.share()
        with Imap(user=dc.user, password=dc.password, port=dc.port) as imap:
            assert by_subject(imap, "Archive")["three"] == {
                "$mdnsent",
                "$notjunk",
                "project-x",
                "$junk",
            }
            assert by_subject(imap, "INBOX")["two"] == {"Project-Y"}
    except BaseException:
        print(dc.log())
        raise
    finally:
        dc.stop()
    again = mirror.sync()
    assert (again.pushed, again.renamed, again.downloaded) == (0, 0, 0)


def test_existing_numbering_is_kept(account: Account, tmp_path: Path) -> None:
    """A dovecot-keywords already there (Dovecot's) keeps its numbers and case."""
    account.append("INBOX", make_message(1), keywords=["$seen", "project-x", "$junk"])
    mirror = Mirror(account, tmp_path, direction="two-way")
    (mirror.maildir / "INBOX" / "cur").mkdir(parents=True)
    (mirror.maildir / "INBOX" / "new").mkdir()
    (mirror.maildir / "INBOX" / "tmp").mkdir()
    (mirror.maildir / "INBOX" / "dovecot-keywords").write_text("0 $Junk\n4 project-x\n7 other\n")
    mirror.sync()
    [path] = message_files(mirror.maildir).values()
    assert path.name.endswith(":2,Sae")
    text = (mirror.maildir / "INBOX" / "dovecot-keywords").read_text()
    assert text == "0 $Junk\n4 project-x\n7 other\n"
    assert_exact_mirror(mirror)
    # the keywords file is part of the mirror, not a stray file
    done = mirror.cli("verify")
    assert done.stdout.splitlines() == ["account test: 1 files checked: OK"], done.stdout


def test_more_than_26_keywords_stay_server_only_and_are_logged_once(
    account: Account, tmp_path: Path
) -> None:
    labels = [f"label-{i:02}" for i in range(30)]
    account.append("INBOX", make_message(1), keywords=labels)
    account.append("INBOX", make_message(2), keywords=["$seen"])
    mirror = Mirror(account, tmp_path, direction="two-way")
    with capture_logs() as logs:
        mirror.sync()
    told = [e for e in logs if e["event"] == "keywords-without-letter"]
    assert [e["keywords"] for e in told] == [labels[26:]]
    assert_exact_mirror(mirror, all_lettered=False)
    j = account.jmap()
    ids = j.email_ids()
    j.add_keyword(ids[1], "$flagged")
    with capture_logs() as logs:
        mirror.sync()
    assert not [e for e in logs if e["event"] == "keywords-without-letter"]
    [e] = [e for e in j.get_emails(ids, ["keywords"]) if "label-00" in e["keywords"]]
    assert set(labels) <= set(e["keywords"])  # nothing lost on the server


def test_mirror_from_before_letters_loses_no_keyword(account: Account, tmp_path: Path) -> None:
    """A mirror written before keywords had letters (files without them, no
    dovecot-keywords, nothing recorded): the missing letters are not taken
    for removals; the letters are added."""
    account.append("INBOX", make_message(1), keywords=["$seen", "project-x"])
    account.append("INBOX", make_message(2), keywords=["$seen"])
    mirror = Mirror(account, tmp_path, direction="two-way")
    mirror.sync()
    # Make it look like the old version's mirror.
    for p in message_files(mirror.maildir).values():
        p.rename(p.with_name(p.name.replace(":2,Sa", ":2,S")))
    (mirror.maildir / "INBOX" / "dovecot-keywords").unlink()
    db = StateDB.for_account(mirror.state_dir, "test")
    with db.transaction() as conn:
        db.set_meta(conn, "keyword_letters", None)
        db.set_meta(conn, "local_stamp", None)
    db.close()
    report = mirror.sync()
    assert report.pushed == 0
    assert {frozenset(k) for k in keywords_by_subject(account).values()} >= {
        frozenset({"$seen", "project-x"})
    }
    assert_exact_mirror(mirror)
