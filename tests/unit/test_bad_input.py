"""A hostile or broken server gets clear errors; nothing lands outside the Maildir;
the state is not advanced past what was applied; credentials never reach a log."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
from pathlib import Path

import httpx
import pytest
import structlog
from fakeserver import FakeEmail, FakeServer, account_config, client_factory

from jmapsync.config import Config, Credentials
from jmapsync.errors import AuthError, DownloadsFailed, ProtocolError, StateError
from jmapsync.state.db import StateDB
from jmapsync.sync.engine import Engine, SyncReport

MSG = b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n"


def run(tmp_path: Path, server: FakeServer) -> SyncReport:
    account = account_config(tmp_path, server)
    config = Config(path=None, state_dir=tmp_path / "state", accounts=(account,))
    engine = Engine(config, account, client_factory=client_factory(server))
    return asyncio.run(engine.sync())


def all_paths(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def server_with(*names: str) -> FakeServer:
    s = FakeServer()
    s.add_mailbox("inbox", "Inbox", role="inbox")
    for i, name in enumerate(names):
        s.add_mailbox(f"mb{i}", name)
    return s


@pytest.mark.parametrize(
    "name",
    [
        "../../etc",
        "/abs",
        "..",
        ".",
        "nul\x00byte",
        "a/../../b",
        "cur",
        "tmp",
        ".notmuch",
        "ctrl\x1b[31m",
        "x" * 200,
    ],
)
def test_hostile_mailbox_name_stays_inside_the_maildir(tmp_path: Path, name: str) -> None:
    server = server_with(name)
    server.emails.append(FakeEmail("M1", MSG, ["mb0"]))
    run(tmp_path, server)
    # Only the maildir and the state dir exist next to each other.
    assert {p.name for p in tmp_path.iterdir()} == {"mail", "state"}
    files = [p for p in (tmp_path / "mail").rglob("*") if p.is_file()]
    assert [f.read_bytes() for f in files] == [MSG]
    top = {p.name for p in (tmp_path / "mail").iterdir()}
    assert all(not n.startswith(".") for n in top), top
    assert "INBOX" in top


def test_a_mailbox_name_that_cannot_be_a_folder_is_skipped_not_blocking(tmp_path: Path) -> None:
    """One poison mailbox (an empty name) must not block the account: it is
    skipped with a warning and shown by `status`, everything else syncs, and
    once the server gives it a usable name the next pass takes it."""
    server = server_with("", "Work")
    server.emails.append(FakeEmail("M1", MSG, ["mb0"]))
    server.emails.append(FakeEmail("M2", MSG + b"2", ["mb1"]))
    with structlog.testing.capture_logs() as logs:
        report = run(tmp_path, server)
    assert report.downloaded == 1
    assert [p.name for p in (tmp_path / "mail/Work/new").iterdir()] == ["M2.jmapsync"]
    assert any(e["event"] == "mailbox-skipped" and e["mailbox"] == "mb0" for e in logs)
    assert len(report.skipped) == 1 and "empty" in report.skipped[0]
    db = StateDB.for_account(tmp_path / "state", "fake")
    assert db.email_state is not None
    assert "empty" in str(db.summary()["skipped"])
    db.close()

    server.mailboxes[1]["name"] = "Named now"
    server.state += 1
    report = run(tmp_path, server)
    assert report.skipped == []
    assert [p.name for p in (tmp_path / "mail/Named now/new").iterdir()] == ["M1.jmapsync"]


def test_absurd_size_is_refused_before_download(tmp_path: Path) -> None:
    server = server_with()
    server.emails.append(FakeEmail("M1", MSG, ["inbox"], size=10**13))
    with pytest.raises(ProtocolError, match="size"):
        run(tmp_path, server)
    assert not any(r.startswith("GET /jmap/download") for r in server.requests)
    assert not [p for p in (tmp_path / "mail").rglob("*") if p.is_file()]


def test_blob_longer_than_declared_size_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    """Refused as it streams in, nothing written; the pass fails (exit 1) and
    the Email waits in the retry list -- never recorded as mirrored."""
    server = server_with()
    server.emails.append(FakeEmail("M1", MSG * 100, ["inbox"], size=len(MSG)))
    with pytest.raises(DownloadsFailed, match="larger than"):
        run(tmp_path, server)
    assert not [p for p in (tmp_path / "mail").rglob("*") if p.is_file()]
    db = StateDB.for_account(tmp_path / "state", "fake")
    assert db.get_meta("retry_downloads") == '["M1"]'
    assert db.conn.execute("SELECT count(*) FROM files").fetchone() == (0,)
    db.close()


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "", "x" * 300, "M1\x00", 42])
def test_unsafe_email_id_is_refused(tmp_path: Path, bad_id: object) -> None:
    server = server_with()
    server.emails.append(FakeEmail(bad_id, MSG, ["inbox"]))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="invalid email id"):
        run(tmp_path, server)
    assert not [p for p in (tmp_path / "mail").rglob("*") if p.is_file()]


def test_invalid_json_is_a_protocol_error(tmp_path: Path) -> None:
    server = server_with()

    def broken(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/jmap/api/":
            return httpx.Response(
                200, content=b"{not json", headers={"content-type": "application/json"}
            )
        return None

    server.override = broken
    with pytest.raises(ProtocolError, match="not valid JSON"):
        run(tmp_path, server)


def test_missing_mail_capability_is_named(tmp_path: Path) -> None:
    server = server_with()
    server.capabilities = {"urn:ietf:params:jmap:core": {}}
    with pytest.raises(ProtocolError, match="urn:ietf:params:jmap:mail"):
        run(tmp_path, server)


def test_broken_state_then_good_sync_recovers(tmp_path: Path) -> None:
    """After a failed pass the next good one completes, with nothing lost."""
    server = server_with()
    server.emails.append(FakeEmail("M1", MSG, ["inbox"], size=10**13))
    with pytest.raises(ProtocolError):
        run(tmp_path, server)
    server.emails[0].size = None
    report = run(tmp_path, server)
    assert report.downloaded == 1
    assert (tmp_path / "mail/INBOX/new/M1.jmapsync").read_bytes() == MSG


def test_credentials_never_reach_logs_or_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = server_with()
    server.password = "right-password"
    account = account_config(tmp_path, server)
    server.password = "server-wants-another"  # so ours is refused: 401
    config = Config(path=None, state_dir=tmp_path / "state", accounts=(account,))
    engine = Engine(config, account, client_factory=client_factory(server))
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as info:
        asyncio.run(engine.sync())
    text = repr(logs) + str(info.value) + repr(info.value.fields) + repr(account)
    out = capsys.readouterr()
    text += out.out + out.err
    db_bytes = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir() if p.is_file())
    for secret in ("right-password", "server-wants-another"):
        assert secret not in text
        assert secret.encode() not in db_bytes
    assert "refused the credentials" in str(info.value)


def test_nothing_written_outside_root_even_with_symlinked_folder(tmp_path: Path) -> None:
    """A folder that is a symlink to elsewhere is not followed by the scan."""
    server = server_with("Work")
    server.emails.append(FakeEmail("M1", MSG, ["mb0"]))
    outside = tmp_path / "outside"
    (outside / "cur").mkdir(parents=True)
    (outside / "new").mkdir()
    (outside / "cur" / "M9.jmapsync:2,S").write_bytes(b"not ours to delete")
    (tmp_path / "mail").mkdir()
    os.symlink(outside, tmp_path / "mail" / "Elsewhere")
    run(tmp_path, server)
    assert (outside / "cur" / "M9.jmapsync:2,S").read_bytes() == b"not ours to delete"


def test_lf_mode_stores_a_bare_lf_blob_exactly(tmp_path: Path) -> None:
    """Cyrus cannot hold bare LF; another server can.  Not CRLF-only: byte-exact."""
    server = server_with()
    bare = b"From: a@b.example\nSubject: lf\n\nbody\n"
    server.emails.append(FakeEmail("M1", bare, ["inbox"]))
    server.emails.append(FakeEmail("M2", MSG, ["inbox"]))
    account = account_config(tmp_path, server, line_endings="lf")
    config = Config(path=None, state_dir=tmp_path / "state", accounts=(account,))
    asyncio.run(Engine(config, account, client_factory=client_factory(server)).sync())
    assert (tmp_path / "mail/INBOX/new/M1.jmapsync").read_bytes() == bare
    assert (tmp_path / "mail/INBOX/new/M2.jmapsync").read_bytes() == MSG.replace(b"\r\n", b"\n")


def test_max_calls_in_request_of_one_still_syncs(tmp_path: Path) -> None:
    """Back-references across requests are resolved by the client."""
    server = server_with("Work")
    server.max_calls = 1
    server.emails.append(FakeEmail("M1", MSG, ["inbox", "mb0"], keywords=["$seen"]))
    report = run(tmp_path, server)
    assert report.downloaded == 1 and report.linked == 1
    again = run(tmp_path, server)  # incremental, Mailbox/changes + Email/changes + gets
    assert again.mode in ("incremental", "unchanged")
    assert (tmp_path / "mail/Work/cur/M1.jmapsync:2,S").exists()


def test_token_command_sends_a_bearer_token(tmp_path: Path) -> None:
    server = server_with()
    server.token = "tok-Zq9-bearer"
    server.emails.append(FakeEmail("M1", MSG, ["inbox"]))
    script = tmp_path / "token.sh"
    script.write_text("#!/bin/sh\necho tok-Zq9-bearer\n")
    script.chmod(0o700)
    account = account_config(tmp_path, server)
    account = dataclasses.replace(
        account, credentials=Credentials(username=None, token_command=str(script))
    )
    config = Config(path=None, state_dir=tmp_path / "state", accounts=(account,))
    with structlog.testing.capture_logs() as logs:
        asyncio.run(Engine(config, account, client_factory=client_factory(server)).sync())
    assert (tmp_path / "mail/INBOX/new/M1.jmapsync").exists()
    assert "tok-Zq9-bearer" not in repr(logs)


def test_download_url_template_is_percent_encoded() -> None:
    from jmapsync.jmap.client import expand_template

    url = expand_template(
        "/dl/{accountId}/{blobId}/{name}?accept={type}",
        accountId="a b/c",
        blobId="G1",
        name="message.eml",
        type="message/rfc822",
    )
    assert url == "/dl/a%20b%2Fc/G1/message.eml?accept=message%2Frfc822"


def test_state_mismatch_on_a_flag_push_reads_again_and_retries(tmp_path: Path) -> None:
    """ifInState guards the write; on stateMismatch the pass starts over."""
    server = server_with()
    server.emails.append(FakeEmail("M1", MSG, ["inbox"], keywords=["$seen", "$hasattachment"]))
    account = account_config(tmp_path, server, direction="two-way")
    config = Config(path=None, state_dir=tmp_path / "state", accounts=(account,))

    def sync() -> SyncReport:
        return asyncio.run(Engine(config, account, client_factory=client_factory(server)).sync())

    sync()
    cur = tmp_path / "mail/INBOX/cur"
    [name] = os.listdir(cur)
    os.rename(cur / name, cur / "M1.jmapsync:2,FS")
    server.mismatch_sets = 2
    with structlog.testing.capture_logs() as logs:
        report = sync()
    assert report.pushed == 1
    assert sorted(server.emails[0].keywords) == ["$flagged", "$hasattachment", "$seen"]
    assert [e["attempt"] for e in logs if e["event"] == "state-mismatch"] == [1, 2]


def test_a_pass_with_nothing_new_is_one_request(tmp_path: Path) -> None:
    """The session is cached: no-change = one API request; a changed
    sessionState or a moved apiUrl makes jmapsync fetch the session again."""
    server = server_with()
    server.emails.append(FakeEmail("M1", MSG, ["inbox"]))
    run(tmp_path, server)
    server.requests.clear()
    run(tmp_path, server)
    assert server.requests == ["POST /jmap/api/"]

    server.session_state = "1"  # the server says: the session changed
    server.requests.clear()
    run(tmp_path, server)
    assert server.requests.count("GET /jmap/session") == 1

    server.api_path = "/jmap/api2/"  # the API moved: the cached URL now 404s
    server.requests.clear()
    report = run(tmp_path, server)
    assert report.downloaded == 0
    assert server.requests[:2] == ["POST /jmap/api/", "GET /jmap/session"]


def test_a_keyword_jmapsync_cannot_take_is_skipped_not_blocking(tmp_path: Path) -> None:
    """One poison keyword (a space, non-ASCII, a forbidden character) must not
    block the account: the Email syncs with its other keywords, a warning says
    which was left out, and a local flag change never touches it."""
    server = server_with()
    bad = ["two words", "ünïcode", "pa(ren"]
    server.emails.append(FakeEmail("M1", MSG, ["inbox"], keywords=["$seen", *bad]))
    server.emails.append(FakeEmail("M2", MSG + b"2", ["inbox"], keywords=["$flagged"]))
    account = account_config(tmp_path, server, direction="two-way")
    config = Config(path=None, state_dir=tmp_path / "state", accounts=(account,))

    def sync() -> SyncReport:
        return asyncio.run(Engine(config, account, client_factory=client_factory(server)).sync())

    with structlog.testing.capture_logs() as logs:
        report = sync()
    assert report.downloaded == 2
    cur = tmp_path / "mail/INBOX/cur"
    assert sorted(os.listdir(cur)) == ["M1.jmapsync:2,S"]
    assert sorted(os.listdir(tmp_path / "mail/INBOX/new")) == ["M2.jmapsync:2,F"]
    warned = [e for e in logs if e["event"] == "keyword-skipped"]
    assert warned and all(any(b in str(e["keywords"]) for e in warned) for b in bad[:1])
    os.rename(cur / "M1.jmapsync:2,S", cur / "M1.jmapsync:2,FS")
    assert sync().pushed == 1
    assert sorted(server.emails[0].keywords) == sorted(["$seen", "$flagged", *bad])


class _TempFull:
    """A state connection whose temp database is on a full file system."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def executescript(self, sql: str) -> sqlite3.Cursor:
        if "CREATE TEMP TABLE" in sql:
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.executescript(sql)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_verify_whose_scan_cannot_be_written_says_so_in_one_line(tmp_path: Path) -> None:
    """verify keeps its scan in a temp table (SQLite's temporary directory):
    a full one is a StateError naming it, not a traceback."""
    from jmapsync.sync import verify

    account = account_config(tmp_path, server_with())
    db = StateDB(tmp_path / "state.sqlite3")
    real = db.conn
    try:
        db.conn = _TempFull(real)  # type: ignore[assignment]
        with pytest.raises(StateError, match=r"disk is full.*temporary directory"):
            verify.check(account, db)
    finally:
        db.conn = real
        db.close()
