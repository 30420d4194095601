"""The Cyrus test server fixtures work against the real server."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from mailtools import MAIL, Account, Imap, Jmap, make_message

pytestmark = pytest.mark.cyrus

SPECIAL = {
    "sent": "Sent",
    "drafts": "Drafts",
    "trash": "Trash",
    "junk": "Junk",
    "archive": "Archive",
    "inbox": "Inbox",
}


def test_session_answers_with_mail(account: Account) -> None:
    j = Jmap(account)
    s = j.session
    assert MAIL in s["capabilities"]
    assert j.account_id == account.user
    assert account.session_url == f"http://127.0.0.1:{account.http_port}/jmap/"
    assert j.api_url.startswith(f"http://127.0.0.1:{account.http_port}/")


def test_fresh_account_has_special_use_folders(account: Account) -> None:
    mbs = account.jmap().mailboxes()
    roles = {m["role"]: m for m in mbs if m.get("role")}
    assert {r: m["name"] for r, m in roles.items()} == SPECIAL
    assert all(m["isSubscribed"] for m in roles.values())
    assert all(m["totalEmails"] == 0 for m in mbs)
    with account.imap() as i:
        assert i.list_folders() == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]
        assert i.subscribed() == ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash"]


def test_add_user_isolates_accounts(cyrus: Any, account: Account) -> None:
    other = Account.of(cyrus, account.user + "b")
    cyrus.add_user(other.user)
    raw = make_message(1, subject="only for one")
    with account.imap() as i:
        i.append("INBOX", raw)
    assert len(account.jmap().email_ids()) == 1
    assert other.jmap().email_ids() == []
    with other.imap() as i:
        assert i.uids("INBOX") == []
    # the other user cannot even see the first account over JMAP
    assert account.user not in other.jmap().session["accounts"]


def test_imap_append_visible_in_jmap_with_keywords(account: Account) -> None:
    raw = make_message(7, size=4000, subject="Grüße ✈")
    when = dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    with account.imap() as i:
        uid = i.append(
            "INBOX",
            raw,
            flags=("\\Seen", "\\Flagged"),
            keywords=("$Forwarded", "Project-X"),
            internaldate=when,
        )
        assert i.fetch("INBOX", uid) == raw
        assert i.fetch_flags("INBOX") == {uid: {"\\Seen", "\\Flagged", "$Forwarded", "Project-X"}}
    j = account.jmap()
    [eid] = j.email_ids()
    e = j.get_email(
        eid, ["keywords", "size", "subject", "receivedAt", "messageId", "mailboxIds", "blobId"]
    )
    assert e["keywords"] == {"$seen": True, "$flagged": True, "$forwarded": True, "project-x": True}
    assert e["size"] == len(raw) == 4000
    assert e["subject"] == "Grüße ✈"
    assert e["receivedAt"] == "2024-03-04T05:06:07Z"
    assert e["messageId"] == ["7.mailtools@mailtools.test"]
    assert e["mailboxIds"] == {j.mailbox_id("INBOX"): True}
    assert j.download(e["blobId"]) == raw


def test_jmap_import_set_move_destroy(account: Account) -> None:
    j = account.jmap()
    inbox, archive = j.mailbox_id("INBOX"), j.mailbox_id("archive")
    ids = [j.import_message(make_message(n), [inbox], keywords=["$seen"]) for n in range(3)]
    assert sorted(j.email_ids({"inMailbox": inbox})) == sorted(ids)
    j.set_keywords(ids[0], {"$flagged": True})
    j.move(ids[1], inbox, archive)
    j.destroy(ids[2])
    got = {e["id"]: e for e in j.get_emails(ids[:2], ["keywords", "mailboxIds"])}
    assert got[ids[0]]["keywords"] == {"$flagged": True}
    assert got[ids[1]]["mailboxIds"] == {archive: True}
    assert sorted(j.email_ids()) == sorted(ids[:2])
    with account.imap() as i:
        assert {frozenset(f) for f in i.fetch_flags("INBOX").values()} == {frozenset({"\\Flagged"})}
        assert len(i.uids("Archive")) == 1


def test_unicode_nested_mailboxes(account: Account) -> None:
    path = "Reisen ✈ Übersicht/Ä/日本語/deep & deeper/Ωmega"
    with account.imap() as i:
        i.create_folder(path)
        assert i.conn.list('""', '"Reisen &Jwg- &ANw-bersicht"')[1][0].endswith(
            b'"Reisen &Jwg- &ANw-bersicht"'
        )
        assert path in i.list_folders()
        i.append(path, make_message(1))
    j = account.jmap()
    paths = j.mailbox_paths()
    parts = path.split("/")
    parent = None
    for n in range(1, 6):
        mb = paths["/".join(parts[:n])]
        assert mb["name"] == parts[n - 1]
        assert mb["parentId"] == parent
        parent = mb["id"]
    assert paths[path]["totalEmails"] == 1
    # JMAP side: create/rename/destroy, seen over IMAP with the UTF-8 name
    new = j.create_mailbox("Ωmega 2", parent)
    j.rename_mailbox(new, "Ωmega 3")
    with account.imap() as i:
        assert f"{path}/Ωmega 3" in i.list_folders()
    j.destroy_mailbox(new)
    with account.imap() as i:
        assert f"{path}/Ωmega 3" not in i.list_folders()


def test_imap_class_without_fixture_account(account: Account) -> None:
    with Imap(user=account.user, password=account.password, port=account.imap_port) as i:
        assert "INBOX" in i.list_folders()
