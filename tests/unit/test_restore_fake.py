"""`jmapsync restore` against a server WITHOUT import dedup (tests/importfake.py).

Cyrus would hide a restore that imports a message twice (same bytes ->
alreadyExists); this server stores every import, so "no duplicate" here is a
claim about jmapsync's own dedup: the listing, the hash check and the
journal.  Crash safety is checked isync-style: the restore is interrupted at
its Nth step (each API call, upload and journal commit; before it, or right
after it with the answer lost), for every N, and a clean rerun must end with
exactly the messages of an uninterrupted run, none twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakeserver import account_config
from importfake import ImportingServer, standard_mailboxes

from jmapsync.config import AccountConfig, Config
from jmapsync.jmap.client import JmapClient
from jmapsync.restore import plan
from jmapsync.restore.execute import Restore
from jmapsync.restore.journal import RestoreJournal, journal_path
from jmapsync.restore.report import RestoreReport

YEAR = 365 * 86400


def msg(i: int, *, date: str | None = None, extra: str = "", lf: bool = False) -> bytes:
    raw = (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: m{i}\r\n"
        f"Date: {date or f'Mon, 0{1 + i % 9} Jan 20{10 + i % 12} 10:00:00 +0000'}\r\n"
        f"Message-ID: <{i}@restore.test>\r\n{extra}\r\nbody {i}\r\n"
    ).encode()
    return raw.replace(b"\r\n", b"\n") if lf else raw


def put(root: Path, rel: str, data: bytes, mtime: float | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (path.parent.parent / sub).mkdir(exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def foreign_tree(root: Path) -> dict[str, Any]:
    """An mbsync-like verbatim tree; returns what the account must hold after."""
    put(root, "INBOX/cur/1.host:2,S", msg(1))
    put(root, "INBOX/new/2.host", msg(2, lf=True))
    put(root, "INBOX/cur/3.host:2,FR", msg(3))
    put(root, "Work/Projects/cur/3.host:2,S", msg(3))  # the same message in a second folder
    put(root, "Reisen &Jwg-/cur/4.host:2,", msg(4))
    (root / "Empty" / "cur").mkdir(parents=True)
    return {
        "mailboxes": {"INBOX", "Work", "Work/Projects", "Reisen ✈", "Empty"},
        "emails": 4,
    }


class Env:
    def __init__(self, tmp_path: Path, server: ImportingServer | None = None) -> None:
        self.tmp = tmp_path
        self.server = server or ImportingServer()
        if not self.server.mailboxes:
            standard_mailboxes(self.server)
        self.source = tmp_path / "source"
        self.source.mkdir(parents=True, exist_ok=True)
        self.account: AccountConfig = account_config(tmp_path, self.server)
        self.config = Config(path=None, state_dir=tmp_path / "state", accounts=(self.account,))

    def factory(self) -> Callable[[AccountConfig], JmapClient]:
        return lambda account: JmapClient(account, transport=self.server.transport())

    def restore(
        self, *, dry_run: bool = False, layout: str = "verbatim", **kw: Any
    ) -> RestoreReport:
        r = Restore(
            self.config,
            self.account,
            self.source,
            layout,  # type: ignore[arg-type]
            dry_run=dry_run,
            client_factory=kw.pop("client_factory", None) or self.factory(),
        )
        return asyncio.run(r.run())

    def paths(self) -> set[str]:
        return {self.server.path_of(m["id"]) for m in self.server.mailboxes}

    def by_subject(self) -> dict[str, tuple[set[str], set[str], str]]:
        """Subject -> (mailbox paths, keywords, receivedAt)."""
        out = {}
        for e in self.server.emails:
            subject = e.blob.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
            out[subject] = (
                {self.server.path_of(m) for m in e.mailbox_ids},
                set(e.keywords),
                self.server.received[e.id],
            )
        return out


def test_fake_server_really_does_not_deduplicate(tmp_path: Path) -> None:
    """The premise of every test here: the same bytes imported twice are two Emails."""
    env = Env(tmp_path)

    async def twice() -> None:
        async with env.factory()(env.account) as client:
            await client.connect()
            from jmapsync.jmap import mail

            for _ in range(2):
                blob = await client.upload(msg(1))
                item = mail.ImportItem(
                    blob, frozenset({"mbInbox"}), frozenset(), "2024-01-01T00:00:00Z"
                )
                await mail.import_emails(client, "1", {"x": item})  # type: ignore[arg-type]

    asyncio.run(twice())
    assert len(env.server.duplicates()) == 1


def test_restore_then_rerun_imports_nothing_twice(tmp_path: Path) -> None:
    env = Env(tmp_path)
    want = foreign_tree(env.source)
    r = env.restore()
    assert (r.imported, r.present, r.skipped) == (want["emails"], 0, [])
    assert want["mailboxes"] <= env.paths()
    got = env.by_subject()
    assert got["m3"][0] == {"INBOX", "Work/Projects"}  # one Email, two mailboxes
    assert got["m3"][1] == {"$flagged", "$answered", "$seen"}  # union of both files' flags
    assert got["m2"][1] == set()  # new/, no flags
    assert got["m4"][0] == {"Reisen ✈"}  # modified UTF-7 decoded
    assert env.server.duplicates() == []
    writes = len(env.server.writes())
    again = env.restore()
    assert (again.imported, again.present, again.skipped) == (0, want["emails"], [])
    assert len(env.server.writes()) == writes  # the rerun sent nothing
    assert env.server.duplicates() == []


def test_rerun_without_journal_finds_messages_by_bytes(tmp_path: Path) -> None:
    """The journal lost (another machine, a deleted state_dir): the listing and
    the hash check alone keep the rerun from importing anything again."""
    env = Env(tmp_path)
    foreign_tree(env.source)
    first = env.restore()
    journal_path(env.config.state_dir, "fake").unlink()
    downloads = sum(1 for q in env.server.requests if q.startswith("GET /jmap/download/"))
    again = env.restore()
    assert (again.imported, again.present) == (0, first.imported)
    assert sum(1 for q in env.server.requests if q.startswith("GET /jmap/download/")) > downloads
    assert env.server.duplicates() == []


def test_dedup_disabled_duplicates_on_this_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: with the dedup switched off, a rerun duplicates."""
    env = Env(tmp_path)
    foreign_tree(env.source)
    env.restore()
    monkeypatch.setattr(plan, "decide", lambda m, p, *a: plan.importable(m, p))
    env.restore()
    assert len(env.server.duplicates()) == 4


def test_same_message_id_other_bytes_is_imported(tmp_path: Path) -> None:
    """Same Message-ID and size but different bytes (an edited copy): not "already there"."""
    env = Env(tmp_path)
    put(env.source, "INBOX/cur/a:2,S", msg(1, extra="X-A: 1\r\n"))
    env.restore()
    put(env.source, "INBOX/cur/b:2,S", msg(1, extra="X-A: 2\r\n"))
    r = env.restore()
    assert (r.imported, r.present) == (1, 1)
    assert len(env.server.emails) == 2


def test_dry_run_sends_no_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = Env(tmp_path)
    foreign_tree(env.source)
    r = env.restore(dry_run=True)
    assert env.server.writes() == []
    assert r.to_import_messages == 4
    assert sorted(r.created) == ["Empty", "Reisen ✈", "Work", "Work/Projects"]
    assert not journal_path(env.config.state_dir, "fake").exists()
    assert "Mailbox/get" in env.server.methods  # it did read


def test_message_over_max_size_upload_is_skipped_with_reason(tmp_path: Path) -> None:
    server = ImportingServer(max_size_upload=2000)
    env = Env(tmp_path, server)
    put(env.source, "INBOX/cur/small:2,S", msg(1))
    put(env.source, "INBOX/cur/big:2,S", msg(2, extra="X-Pad: " + "x" * 3000 + "\r\n"))
    r = env.restore()
    assert r.imported == 1
    assert [(s.what, "maxSizeUpload" in s.reason) for s in r.skipped] == [
        ("INBOX/cur/big:2,S", True)
    ]


def test_not_a_message_and_refused_folder_are_skipped(tmp_path: Path) -> None:
    env = Env(tmp_path)
    put(env.source, "INBOX/cur/ok:2,S", msg(1))
    put(env.source, "INBOX/cur/junk", b"\x00\x01 not mail at all")
    put(env.source, "a&-b/cur/x:2,", msg(2))  # mUTF-7 "a&b": fine
    r = env.restore()
    assert r.imported == 2
    assert [s.what for s in r.skipped] == ["INBOX/cur/junk"]


def test_folders_without_a_mailbox_are_reported_with_their_file_counts(tmp_path: Path) -> None:
    """A jmapsync mirror: "a%2Fb" is the mailbox "a/b" (this server refuses the
    name); "a%2fb" is no name jmapsync writes.  Both folders are skipped, with
    their files; the rest is restored."""
    env = Env(tmp_path)
    put(env.source, "INBOX/cur/E1.jmapsync:2,S", msg(1))
    put(env.source, "a%2Fb/cur/E2.jmapsync:2,", msg(2))
    put(env.source, "a%2fb/cur/E3.jmapsync:2,", msg(3))
    put(env.source, "a%2fb/cur/E4.jmapsync:2,", msg(4))
    r = env.restore()
    assert r.kind == "jmapsync"
    assert r.imported == 1
    skipped = {s.what: (s.count, s.reason) for s in r.skipped}
    assert skipped["folder a%2fb"][0] == 2
    assert "cannot be a mailbox name" in skipped["folder a%2fb"][1]
    assert skipped["folder a%2Fb"][0] == 1
    assert "refused to create mailbox a/b" in skipped["folder a%2Fb"][1]
    assert r.skipped_count == 3


def test_special_folders_go_to_the_role_mailbox(tmp_path: Path) -> None:
    server = ImportingServer()
    server.add_mailbox("mbInbox", "Inbox", role="inbox")
    server.add_mailbox("mbSent", "Sent Items", role="sent")
    server.add_mailbox("mbJunk", "Spam", role="junk")
    env = Env(tmp_path, server)
    put(env.source, "Sent/cur/1:2,S", msg(1))
    put(env.source, "Sent/2023/cur/2:2,S", msg(2))
    put(env.source, "Junk/cur/3:2,", msg(3))
    r = env.restore()
    got = env.by_subject()
    assert got["m1"][0] == {"Sent Items"}
    assert got["m2"][0] == {"Sent Items/2023"}
    assert got["m3"][0] == {"Spam"}
    assert r.by_role == {"Sent": "sent", "Sent/2023": "sent", "Junk": "junk"}
    assert r.created == ["Sent Items/2023"]


def test_dovecot_maildirpp_keywords_and_arrival_dates(tmp_path: Path) -> None:
    """A Dovecot Maildir++ tree: keyword letters named in dovecot-keywords,
    real arrival times in the mtimes (Dovecot keeps its received date there)."""
    env = Env(tmp_path)
    src = env.source
    t0 = 1_500_000_000.0
    put(src, "cur/1500000000.M1P1.host,S=100,W=104:2,Sab", msg(1), t0)
    put(src, ".Lists.dev/cur/1500000001.M2P2.host,S=100,W=104:2,Fa", msg(2), t0 + YEAR)
    put(src, ".Lists.dev/cur/1500000002.M3P3.host,S=100,W=104:2,z", msg(3), t0 + 2 * YEAR)
    (src / "dovecot-keywords").write_text("0 $Junk\n1 Project-X\n")
    (src / ".Lists.dev" / "dovecot-keywords").write_text("0 work\nbroken line\n99 out-of-range\n")
    r = env.restore(layout="maildir++")
    assert r.skipped == []
    got = env.by_subject()
    assert got["m1"][:2] == ({"INBOX"}, {"$seen", "$junk", "project-x"})
    assert got["m2"][:2] == ({"Lists/dev"}, {"$flagged", "work"})
    assert got["m3"][1] == set()  # "z" is named nowhere
    assert got["m2"][2] == "2018-07-14T02:40:00Z"  # the mtime, not the Date header


def test_copied_tree_takes_date_headers(tmp_path: Path) -> None:
    """cp -r / mbsync without CopyArrivalDate: mtimes a second apart, Dates over years."""
    env = Env(tmp_path)
    now = 1_800_000_000.0
    for i in range(1, 6):
        put(
            env.source,
            f"INBOX/cur/{i}:2,S",
            msg(i, date=f"Mon, 01 Jan 20{10 + i} 10:00:00 +0000"),
            now + i,
        )
    env.restore()
    assert {v[2] for v in env.by_subject().values()} == {
        f"20{10 + i}-01-01T10:00:00Z" for i in range(1, 6)
    }


def test_large_restore_pages_and_batches(tmp_path: Path) -> None:
    """More messages than one listing page (50) and one import batch (50)."""
    env = Env(tmp_path)
    for i in range(130):
        put(env.source, f"INBOX/cur/{i}:2,S", msg(i))
    r = env.restore()
    assert r.imported == 130
    again = env.restore()
    assert (again.imported, again.present) == (0, 130)
    assert env.server.methods.count("Email/import") == 3
    assert env.server.duplicates() == []


# -- crash at every step ---------------------------------------------------------


class Crash(BaseException):
    """Stands for SIGKILL: nothing of ours catches a BaseException."""


class Injector:
    def __init__(self, at: int) -> None:
        self.at = at
        self.step = 0
        self.fired = ""

    def tick(self, what: str) -> None:
        self.step += 1
        if self.step == self.at:
            self.fired = what
            raise Crash(what)

    def wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        async def wrapped(*args: Any, **kw: Any) -> Any:
            self.tick(f"before {name}")
            result = await fn(*args, **kw)
            self.tick(f"after {name}")  # it happened; its answer is lost
            return result

        return wrapped

    def wrap_sync(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapped(*args: Any, **kw: Any) -> Any:
            self.tick(f"before {name}")
            result = fn(*args, **kw)
            self.tick(f"after {name}")
            return result

        return wrapped


def test_crash_at_every_step_then_rerun_imports_each_message_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 1
    fired: list[str] = []
    while True:
        env = Env(tmp_path / f"run{n}")
        for i in range(7):
            put(env.source, f"INBOX/cur/{i}:2,S", msg(i))
        put(env.source, "Work/cur/6:2,", msg(6))  # in two folders
        put(env.source, "Work/Sub/cur/7:2,F", msg(7))
        injector = Injector(n)

        def factory(account: AccountConfig, env: Env = env, inj: Injector = injector) -> JmapClient:
            client = JmapClient(account, transport=env.server.transport())
            client.call = inj.wrap(client.call, "call")  # type: ignore[method-assign]
            client.upload = inj.wrap(client.upload, "upload")  # type: ignore[method-assign]
            return client

        with monkeypatch.context() as m:
            m.setattr(RestoreJournal, "intend", injector.wrap_sync(RestoreJournal.intend, "intend"))
            m.setattr(RestoreJournal, "done", injector.wrap_sync(RestoreJournal.done, "done"))
            with contextlib.suppress(Crash):
                env.restore(client_factory=factory)
        if not injector.fired:
            break
        fired.append(injector.fired)
        r = env.restore()
        assert r.skipped == [], injector.fired
        assert env.server.duplicates() == [], f"duplicate after a crash {injector.fired}"
        assert len(env.server.emails) == 8, injector.fired
        got = env.by_subject()
        assert got["m6"][0] == {"INBOX", "Work"}, injector.fired
        assert got["m7"][0] == {"Work/Sub"}, injector.fired
        n += 1
    assert fired[-3:] == ["after call", "before done", "after done"]  # Email/import, answer lost
    assert "before intend" in fired
    assert sum(1 for f in fired if "upload" in f) >= 8


def test_symlinks_are_not_followed_out_of_the_tree(tmp_path: Path) -> None:
    env = Env(tmp_path)
    secret = tmp_path / "elsewhere.eml"
    secret.write_bytes(msg(1))
    put(env.source, "INBOX/cur/real:2,S", msg(2))
    (env.source / "INBOX" / "cur" / "link:2,S").symlink_to(secret)
    r = env.restore()
    assert r.imported == 1
    assert [(s.what, s.reason) for s in r.skipped] == [
        ("INBOX/cur/link:2,S", "a symbolic link, not a message file")
    ]


def test_journal_of_another_account_is_not_trusted(tmp_path: Path) -> None:
    """The config now points the account elsewhere: the old journal's Email
    ids mean nothing there and must not make anything "already there"."""
    env = Env(tmp_path)
    put(env.source, "INBOX/cur/a:2,S", msg(1))
    env.restore()
    path = journal_path(env.config.state_dir, "fake")
    journal = RestoreJournal(path)
    journal.bind("https://other.test/jmap", "acc1")
    assert journal.known() == {}
    journal.close()


def test_restore_holds_the_account_lock(tmp_path: Path) -> None:
    from jmapsync.errors import LockedError
    from jmapsync.state.lock import account_lock

    env = Env(tmp_path)
    put(env.source, "INBOX/cur/a:2,S", msg(1))
    env.config.state_dir.mkdir(parents=True)
    with account_lock(env.config.state_dir / "fake.lock"):
        with pytest.raises(LockedError):
            env.restore()
        assert env.restore(dry_run=True).to_import_messages == 1  # reads only: no lock
    assert env.server.writes() == []
