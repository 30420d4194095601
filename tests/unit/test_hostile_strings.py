"""scrub.py, the JSON guard, what counts as idempotent, a cached session that
answers 403/404 (fake server: Cyrus cannot be made to move its URLs; the 401
case runs against Cyrus in tests/integration/test_network_faults.py)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import httpx
import pytest
from fakeserver import FakeServer, account_config

from jmapsync import cli, scrub
from jmapsync.errors import HTTPStatusError, MethodError, ProtocolError
from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient, idempotent, parse_json


@pytest.mark.parametrize(
    ("raw", "line", "text"),
    [
        ("plain", "plain", "plain"),
        ("\x1b[31mred\x1b[0m", "red", "red"),
        ("a\x1b]52;c;aGk=\x07b", "ab", "ab"),  # OSC 52: write the clipboard
        ("a\x1b]0;title\x1b\\b", "ab", "ab"),  # OSC ended by ST
        ("x\x1bcy", "xy", "xy"),  # ESC c: reset the terminal
        ("tab\tok", "tab\tok", "tab\tok"),
        ("two\nlines\r\n", "two lines  ", "two\nlines \n"),
        ("bell\x07 del\x7f c1\x9b2J", "bell  del  c1", "bell  del  c1"),
        ("bidi \u202eevil\u202c", "bidi  evil ", "bidi  evil "),
        ("lone esc\x1b", "lone esc ", "lone esc "),
    ],
)
def test_control_sequences_are_stripped(raw: str, line: str, text: str) -> None:
    assert scrub.line(raw) == line
    assert scrub.text(raw) == text


def test_secrets_are_redacted_in_every_form() -> None:
    scrub.add_basic_auth("carol", "Hunter2-pw")
    pair = "carol:Hunter2-pw"
    b64 = "Y2Fyb2w6SHVudGVyMi1wdw=="
    shown = scrub.line(f"pw Hunter2-pw pair {pair} hdr Basic {b64}")
    assert shown == "pw *** pair *** hdr Basic ***"
    scrub.add_secret("ab")  # too short to redact without mangling ordinary text
    assert scrub.line("about") == "about"


def test_errors_are_clean_where_they_are_made() -> None:
    scrub.add_secret("s3cret-token-xyz")
    err = MethodError("Email/get", "serverFail", "\x1b[2J s3cret-token-xyz")
    assert str(err) == "Email/get failed: serverFail ( ***)"
    assert err.description == " ***"


def test_log_processor_scrubs_keys_values_and_tracebacks() -> None:
    scrub.add_secret("pw-in-a-log-9")
    event = {
        "event": "x\x1b[1m",
        "names": ["a\x1bcb", {"k\x07": "pw-in-a-log-9"}],
        "count": 3,
        "exception": "Traceback\n  line \x1b[31m pw-in-a-log-9\n",
    }
    out = scrub.processor(None, "info", event)
    assert out == {
        "event": "x",
        "names": ["ab", {"k ": "***"}],
        "count": 3,
        "exception": "Traceback\n  line  ***\n",
    }


def test_the_cli_traceback_hook_scrubs(capsys: pytest.CaptureFixture[str]) -> None:
    scrub.add_secret("pw-in-a-trace-7")

    def crash() -> None:
        raise RuntimeError("boom \x1b]52;c;eA==\x07 pw-in-a-trace-7")

    try:
        crash()
    except RuntimeError:
        cli._excepthook(*sys.exc_info())  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "RuntimeError: boom  ***" in err and "\x1b" not in err


def test_the_cli_scrubs_stdout() -> None:
    scrub.add_secret("pw-on-stdout-5")
    buf = io.StringIO()
    out = cli._ScrubbedOut(buf)  # type: ignore[arg-type]
    out.write("mailbox \x1b[31mRed\x1b[0m pw-on-stdout-5\n")
    assert buf.getvalue() == "mailbox Red ***\n"


def test_json_guard_refuses_dense_and_deep_answers_and_takes_real_ones() -> None:
    real = json.dumps(
        {
            "methodResponses": [
                [
                    "Email/get",
                    {
                        "list": [
                            {"id": f"M{i:024x}", "mailboxIds": {"a": True}, "keywords": {}}
                            for i in range(500)
                        ]
                    },
                    "g",
                ]
            ]
        }
    ).encode()
    assert parse_json(real, "api")["methodResponses"][0][0] == "Email/get"
    dense = b"[" + b"[]," * 100_000 + b"[]]"
    with pytest.raises(ProtocolError, match="refused as absurd"):
        parse_json(dense, "api")
    deep = b"[" * 3000 + b"]" * 3000
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_json(deep, "api")
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_json(b"{nope", "api")


@pytest.mark.parametrize(
    ("calls", "safe"),
    [
        ([("Email/get", {}, "a"), ("Email/changes", {}, "b")], True),
        ([("Email/query", {}, "a"), ("Mailbox/queryChanges", {}, "b")], True),
        ([("Email/set", {"ifInState": "5", "update": {}}, "a")], True),
        ([("Email/set", {"update": {}}, "a")], False),
        ([("Email/import", {}, "a")], False),
        ([("Mailbox/set", {"create": {}}, "a")], False),
        ([("Email/get", {}, "a"), ("Mailbox/set", {}, "b")], False),
    ],
)
def test_idempotent_requests(calls: list[tuple[str, dict[str, object], str]], safe: bool) -> None:
    assert idempotent(calls) is safe


@pytest.mark.parametrize("status", [403, 404])
def test_a_cached_session_is_fetched_again_once_when_its_api_url_rejects(
    tmp_path: Path, status: int
) -> None:
    """The server moved its API; the cached session still names the old one."""
    server = FakeServer()
    server.add_mailbox("inbox", "Inbox", role="inbox")
    old_session = server.session()
    server.api_path = "/jmap/api2/"

    def old_api(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/jmap/api/":
            return httpx.Response(status, text="not here")
        return None

    server.override = old_api

    async def go() -> tuple[int, object]:
        async with JmapClient(account_config(tmp_path, server), transport=server.transport()) as c:
            c.use_cached("https://fake.test/jmap/session", old_session)
            _, boxes = await mail.fetch_mailboxes(c)
            return len(boxes), c.session_json

    count, stored = asyncio.run(go())
    assert count == 1
    assert stored is not None  # the new session, for the engine to cache
    assert server.requests.count("GET /jmap/session") == 1
    assert server.requests.count("POST /jmap/api/") == 1


def test_a_fresh_session_that_rejects_is_not_fetched_again(tmp_path: Path) -> None:
    server = FakeServer()
    server.add_mailbox("inbox", "Inbox", role="inbox")
    server.override = lambda r: httpx.Response(404) if r.url.path == "/jmap/api/" else None

    async def go() -> None:
        async with JmapClient(account_config(tmp_path, server), transport=server.transport()) as c:
            await c.connect()
            await mail.fetch_mailboxes(c)

    with pytest.raises(HTTPStatusError, match="HTTP 404"):
        asyncio.run(go())
    assert server.requests.count("GET /jmap/session") == 1
