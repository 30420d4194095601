"""Issue 11, network half: each bad-link case against the real Cyrus, through
tests/faultproxy.py (throttle, cut, silence, lost answers, rewritten answers).

Each test is bounded in time and bytes (the slowest, the 6 MB message at
200 KB/s, takes ~30 s by design).  The CLI runs in a subprocess, so that
exit codes, stderr and tracebacks are what a user sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import new_account
from faultproxy import FaultProxy, Request, Response, proxy_for
from mailtools import Account, make_message
from mirror import ROOT, Mirror, assert_exact_mirror, message_files

from jmapsync.config import load
from jmapsync.errors import TransportError
from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient

# The tree whose jmapsync the CLI runs (the subprocess's cwd comes first on
# sys.path): this one; another checkout to measure "before" on it.
CODE = Path(os.environ.get("JMAPSYNC_TEST_CODE", str(ROOT)))


@pytest.fixture
def proxy(account: Account) -> Iterator[FaultProxy]:
    with proxy_for(account.session_url) as p:
        yield p


def proxied(account: Account, base: Path, proxy: FaultProxy, **keys: str) -> Mirror:
    """A pull Mirror whose jmapsync reaches Cyrus only through `proxy`."""
    mirror = Mirror(account, base)
    text = mirror.config_path.read_text().replace(account.session_url, proxy.url())
    mirror.config_path.write_text(text)
    for key, value in keys.items():
        mirror.set(key, value)
    return mirror


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    return env | extra


def run_cli(
    mirror: Mirror, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(mirror.config_path), *args],
        capture_output=True,
        text=True,
        cwd=CODE,
        check=False,
        timeout=timeout,
        env=env or clean_env(),
    )
    return done, time.monotonic() - started


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("jmapsync: ")]


# -- slow, cut and silent links ------------------------------------------------------


@pytest.mark.slow
def test_a_6mb_message_through_a_200kb_per_s_link_syncs_with_timeout_8(
    account: Account, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Before: `timed out` after 8 s although bytes never stopped, on every
    pass.  Now the transfer takes ~30 s and is never cut: bytes keep coming."""
    account.append("INBOX", make_message(1, size=6_000_000))
    account.append("INBOX", make_message(2))
    mirror = proxied(account, tmp_path, proxy, timeout="8")
    proxy.rate = 200_000
    done, _ = run_cli(mirror, "sync")
    assert done.returncode == 0, done.stderr
    assert proxy.answer_bytes > 6_000_000  # it really came through the throttle
    assert_exact_mirror(mirror)


def test_a_link_that_cuts_every_second_connection_after_150kb_converges(
    account: Account, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Before: 6 runs in a row exit 1 and the Maildir stays empty.  Now a cut
    download is retried on a fresh connection (resumed: Cyrus has no Range,
    so the bytes already written are skipped) inside the pass."""
    account.append_many("INBOX", [make_message(i, size=200_000) for i in range(8)])
    mirror = proxied(account, tmp_path, proxy)
    proxy.every, proxy.cut_after = 2, 150_000
    runs = []
    for _ in range(3):
        done, _ = run_cli(mirror, "sync")
        runs.append(done.returncode)
        if done.returncode == 0:
            break
    assert runs[-1] == 0, (runs, done.stderr)
    assert proxy.faulted >= 2  # connections were cut
    proxy.clear()
    assert_exact_mirror(mirror)


def test_a_download_that_still_fails_does_not_abort_the_others(
    account: Account, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Before: one failed download aborted the pass and threw away the ones
    that had arrived.  Now the others finish and are committed, the pass
    says how many failed and exits 1, and the next pass downloads only the
    missing one.  (HTTP 404 for one blob: not retried, it is no link fault.)"""
    account.append_many("INBOX", [make_message(i, size=20_000) for i in range(6)])
    j = account.jmap()
    victim = j.get_emails(j.email_ids()[:1], ["blobId"])[0]["blobId"]
    mirror = proxied(account, tmp_path, proxy)

    def missing(req: Request) -> Response | None:
        if req.method == "GET" and f"/{victim}/" in req.path:
            return Response(404, [("Content-Type", "text/plain")], b"gone for now")
        return None

    proxy.hook, proxy.http = missing, True  # HTTP mode: requests are counted
    done, _ = run_cli(mirror, "sync")
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    assert line.startswith("jmapsync: account test: 1 of 6 downloads failed (first: download ")
    assert line.endswith("the others are in place, the next pass fetches the rest")
    assert len(message_files(mirror.maildir)) == 5
    proxy.hook = None
    seen = len(proxy.requests)
    done, _ = run_cli(mirror, "sync")
    assert done.returncode == 0, done.stderr
    downloads = [t for m, t in proxy.requests[seen:] if m == "GET" and "/download/" in t]
    assert len(downloads) == 1 and victim in downloads[0]
    assert_exact_mirror(mirror)


@pytest.mark.parametrize("stack", ["lean", "httpx"])
@pytest.mark.parametrize("fault", ["trickle", "silent"])
def test_a_trickling_or_silent_session_fails_within_timeout_with_one_line(
    account: Account, tmp_path: Path, fault: str, stack: str
) -> None:
    """Before: a session body at 1 byte/s -- the pass never ends.  Now it is
    dropped after ~`timeout` s of less than 1 KiB/s: exit 1, one line, no
    traceback.  Both stacks: httpx carries it when a proxy applies (here the
    fault proxy is the HTTP proxy)."""
    with proxy_for(account.session_url) as proxy:
        if stack == "lean":
            mirror = proxied(account, tmp_path, proxy, timeout="3")
            env = clean_env()
        else:
            mirror = Mirror(account, tmp_path)
            mirror.set("timeout", "3")
            env = clean_env(HTTP_PROXY=f"http://127.0.0.1:{proxy.port}")
        if fault == "trickle":
            proxy.trickle()
        else:
            proxy.stall_after = 0
        done, took = run_cli(mirror, "sync", timeout=60, env=env)
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        "jmapsync: account test: session: no progress for 3 s (less than 1 KiB/s)"
    ], done.stderr
    assert "Traceback" not in done.stderr
    assert took < 30  # bounded: dropped after ~3 s (not retried), not after 3 tries
    assert proxy.connections >= 1


def test_a_silent_api_answer_with_a_cached_session_fails_within_timeout(
    account: Account, proxy: FaultProxy, tmp_path: Path
) -> None:
    account.append("INBOX", make_message(1))
    mirror = proxied(account, tmp_path, proxy, timeout="3")
    assert run_cli(mirror, "sync")[0].returncode == 0
    proxy.stall_after = 0
    done, took = run_cli(mirror, "sync", timeout=60)
    assert done.returncode == 1
    # The engine asks for the session afresh after a failed cached call: it
    # stalls too, and its line is the one printed.
    events = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    (refetch,) = [e for e in events if e["event"] == "session-refetch"]
    assert refetch["reason"].startswith("API request Mailbox/changes,")
    assert refetch["reason"].endswith(": no progress for 3 s (less than 1 KiB/s)")
    assert error_lines(done.stderr) == [
        "jmapsync: account test: session: no progress for 3 s (less than 1 KiB/s)"
    ]
    assert took < 30


# -- hostile answers -------------------------------------------------------------------


def test_a_blob_url_redirecting_to_itself_is_a_one_line_error(
    account: Account, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Before: an httpx.TooManyRedirects traceback."""
    account.append("INBOX", make_message(1))
    mirror = proxied(account, tmp_path, proxy)

    def loop(req: Request) -> Response | None:
        if req.method == "GET" and "/download/" in req.path:
            return Response(302, [("Location", req.target)])
        return None

    proxy.hook = loop
    done, _ = run_cli(mirror, "sync")
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    # A poison item: the pass records the rest and names the blob.
    assert line.startswith("jmapsync: account test: 1 of 1 downloads failed")
    assert "download G" in line and "redirect loop at" in line
    assert "Traceback" not in done.stderr


def more_changes_forever(req: Request, resp: Response) -> Response | None:
    """Cyrus's real */changes answers, each saying hasMoreChanges: true."""
    if req.method != "POST" or b"/changes" not in req.body or resp.status != 200:
        return None
    data = json.loads(resp.body)
    for name, args, _ in data["methodResponses"]:
        if name.endswith("/changes"):
            args["hasMoreChanges"] = True
    return Response(200, resp.headers, json.dumps(data).encode())


def test_endless_has_more_changes_falls_back_to_a_full_reconcile(
    account: Account, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Before: the pass never ends.  Now the second round, which answers the
    state it was asked from, ends the paging: a full reconcile instead."""
    account.append("INBOX", make_message(1))
    mirror = proxied(account, tmp_path, proxy)
    assert run_cli(mirror, "sync")[0].returncode == 0
    account.append("INBOX", make_message(2))
    proxy.rewrite = more_changes_forever
    before = proxy.calls.count("Email/changes")
    done, _ = run_cli(mirror, "-v", "sync", timeout=60)
    assert done.returncode == 0, done.stderr
    assert proxy.calls.count("Email/changes") - before <= 3
    assert "changes-no-progress" in done.stderr and "full-reconcile" in done.stderr
    proxy.clear()
    assert_exact_mirror(mirror)


def nested_arrays(size: int) -> bytes:
    n = (size - 2) // 3
    return b"[" + b"[]," * n + b"[]]"


@pytest.mark.parametrize(
    ("size", "error"),
    [(72_000_000, "the answer is larger than 32 MiB"), (24_000_000, "refused as absurd")],
)
def test_a_huge_answer_of_nested_empty_arrays_is_refused_in_bounded_memory(
    account: Account, proxy: FaultProxy, tmp_path: Path, size: int, error: str
) -> None:
    """Before: > 1 GiB RSS for 72 MB.  Now the size cap (32 MiB) refuses it as
    it arrives, and the density guard refuses a smaller one before parsing;
    the jmapsync process stays small (ru_maxrss of that process alone)."""
    mirror = proxied(account, tmp_path, proxy)
    body = nested_arrays(size)

    def bomb(req: Request) -> Response | None:
        if req.method == "POST" and req.path == "/jmap/":
            return Response(200, [("Content-Type", "application/json")], body)
        return None

    proxy.hook = bomb
    hwm = tmp_path / "hwm"
    # VmHWM of the jmapsync process itself, read as it exits: getrusage's
    # ru_maxrss would include the (large) pytest process it was forked from.
    probe = (
        "import atexit, runpy, sys\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        f"            open({str(hwm)!r}, 'w').write(line.split()[1])\n"
        "atexit.register(hwm)\n"
        "sys.argv = ['jmapsync'] + sys.argv[1:]\n"
        "runpy.run_module('jmapsync', run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "-c", str(mirror.config_path), "sync"],
        capture_output=True,
        text=True,
        cwd=CODE,
        check=False,
        timeout=120,
        env=clean_env(),
    )
    assert done.returncode == 1, done.stderr
    (line,) = error_lines(done.stderr)
    assert error in line and "Traceback" not in done.stderr
    peak_kib = int(hwm.read_text())
    assert peak_kib < 200 * 1024, f"{peak_kib} KiB"


def distinctive_account(account: Account) -> Account:
    return new_account(account.server, password="Pw-7q!distinct-zz")


def secrets_of(acc: Account) -> list[str]:
    pair = f"{acc.user}:{acc.password}"
    return [acc.password, pair, base64.b64encode(pair.encode()).decode()]


HOSTILE = "\x1b[31mRED\x1b]52;c;aGk=\x07"


@pytest.mark.parametrize("where", ["http-problem", "method-error"])
@pytest.mark.parametrize("log_format", ["json", "console"])
def test_escape_sequences_and_the_password_in_server_errors_reach_no_output(
    account: Account, tmp_path: Path, where: str, log_format: str
) -> None:
    """Before: printed raw, and the password with it.  Cyrus's own error
    answers carry both here: for the HTTP problem, the proxy adds a
    capability named with them to the request and Cyrus echoes it in its
    400 `detail`; for the method error, Cyrus's real answer is rewritten."""
    acc = distinctive_account(account)
    acc.append("INBOX", make_message(1))
    hostile = HOSTILE + acc.password

    def poison_request(req: Request) -> Response | None:
        if req.method == "POST" and req.path == "/jmap/" and where == "http-problem":
            data = json.loads(req.body)
            data["using"].append("urn:x:" + hostile)
            req.body = json.dumps(data).encode()
        return None

    def poison_answer(req: Request, resp: Response) -> Response | None:
        if where != "method-error" or req.method != "POST" or resp.status != 200:
            return None
        data = json.loads(resp.body)
        data["methodResponses"] = [
            ["error", {"type": "serverFail", "description": hostile}, cid]
            for _, _, cid in data["methodResponses"]
        ]
        return Response(200, resp.headers, json.dumps(data).encode())

    with proxy_for(acc.session_url) as proxy:
        mirror = proxied(acc, tmp_path, proxy)
        proxy.hook, proxy.rewrite = poison_request, poison_answer
        done, _ = run_cli(mirror, "-v", "--log-format", log_format, "sync")
        status, _ = run_cli(mirror, "status")
        sent = proxy.calls
    assert sent  # the requests did go through the proxy
    assert done.returncode == 1
    (line,) = error_lines(done.stderr)
    want = "unknownCapability" if where == "http-problem" else "serverFail (RED"
    assert want in line, line
    for output in (done.stderr, done.stdout, status.stdout, status.stderr):
        assert "\x1b" not in output and "\x07" not in output
        for secret in secrets_of(acc):
            assert secret not in output
    if log_format == "json":
        events = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
        assert any(e["event"] == "sync-failed" for e in events)


# -- an outdated cached session ----------------------------------------------------------


def moved_session(field: str, old: str, new: str) -> Any:
    """Cyrus's session with `field` moved from `old` to `new`; requests to
    `new` reach Cyrus at `old`, and the old URL now answers 401."""

    def stale(req: Request) -> bool:
        if field == "apiUrl":
            return req.method == "POST" and req.path == old
        return req.path.startswith(old)

    def hook(req: Request) -> Response | None:
        if req.path.startswith(new):
            req.target = old + req.target[len(new) :]
            return None
        if stale(req):
            return Response(401, [("Content-Type", "text/plain")], b"go away")
        return None

    def rewrite(req: Request, resp: Response) -> Response | None:
        if req.method == "GET" and req.path == "/jmap/" and resp.status == 200:
            data = json.loads(resp.body)
            data[field] = data[field].replace(old, new)
            return Response(200, resp.headers, json.dumps(data).encode())
        return None

    return hook, rewrite


@pytest.mark.parametrize(
    ("field", "old", "new"),
    [("apiUrl", "/jmap/", "/jmap/api-moved/"), ("downloadUrl", "/jmap/download/", "/jmap/dl2/")],
)
def test_a_cached_session_whose_url_now_answers_401_is_fetched_again(
    account: Account, proxy: FaultProxy, tmp_path: Path, field: str, old: str, new: str
) -> None:
    """Before: every later pass fails; the session is never fetched again."""
    account.append("INBOX", make_message(1))
    mirror = proxied(account, tmp_path, proxy)
    assert run_cli(mirror, "sync")[0].returncode == 0  # caches the session
    proxy.hook, proxy.rewrite = moved_session(field, old, new)
    for i in (2, 3):
        account.append("INBOX", make_message(i))
        seen = len(proxy.requests)
        done, _ = run_cli(mirror, "-v", "sync")
        assert done.returncode == 0, done.stderr
        refetched = ("GET", "/jmap/") in proxy.requests[seen:]
        # Pass 2 fetches the session again; pass 3 uses the one pass 2 stored.
        assert refetched == (i == 2), proxy.requests[seen:]
        assert ("session-refetch" in done.stderr) == (i == 2)
    proxy.clear()
    assert_exact_mirror(mirror)


# -- requests that must never be sent twice ----------------------------------------------


def test_lost_answers_resend_reads_but_never_a_write_or_an_upload(
    account: Account, tmp_path: Path
) -> None:
    """The proxy forwards the request, Cyrus acts on it, the answer is lost
    (client side closed before any byte) -- on a keep-alive connection, where
    the old client sent any request again.  A read is retried; Mailbox/set,
    Email/import and an upload are not (the proxy counts what Cyrus got)."""
    with proxy_for(account.session_url) as proxy:
        proxy.http = True  # per request, on connections of any age
        mirror = proxied(account, tmp_path, proxy)
        config = load(mirror.config_path)

        def drop_once(what: bytes) -> None:
            left = [1]

            def pred(req: Request) -> bool:
                if what in req.body or what in req.path.encode():
                    return bool(left and left.pop())
                return False

            proxy.drop_if = pred

        async def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            async with JmapClient(config.account("test")) as client:
                await client.connect()
                await mail.fetch_mailboxes(client)  # a pooled connection now
                drop_once(b"Mailbox/get")
                out["read"] = await mail.fetch_mailboxes(client)
                drop_once(b"Mailbox/set")
                with pytest.raises(TransportError):
                    await mail.create_mailboxes(client, {"n": ("Dropped", None)})
                drop_once(b"/upload/")
                with pytest.raises(TransportError):
                    await client.upload(make_message(7))
                blob = await client.upload(make_message(8))
                drop_once(b"Email/import")
                inbox = next(m for m, box in out["read"][1].items() if box.role == "inbox")
                item = mail.ImportItem(
                    blob, frozenset({inbox}), frozenset(), "2024-01-01T00:00:00Z"
                )
                with pytest.raises(TransportError):
                    await mail.import_emails(client, "0", {"i": item})
            return out

        asyncio.run(scenario())
        calls, requests = proxy.calls, proxy.requests
    assert calls.count("Mailbox/get") == 3  # 1 + the dropped one + its retry
    assert calls.count("Mailbox/set") == 1
    assert calls.count("Email/import") == 1
    assert sum(1 for m, t in requests if m == "POST" and "/upload/" in t) == 2  # msg 7 once, 8
    j = account.jmap()
    assert "Dropped" in {m["name"] for m in j.mailboxes()}  # Cyrus did act on it
    assert len(j.email_ids()) == 1  # the import happened, once


# -- TLS and proxies: the lean client and httpx ---------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ctx = __import__("ssl").SSLContext(__import__("ssl").PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ctx, path


def test_sync_over_tls_with_the_lean_client_and_a_bad_certificate_is_one_line(
    account: Account, tmp_path: Path, tls: tuple[Any, Path]
) -> None:
    ctx, ca_file = tls
    account.append("INBOX", make_message(1, size=300_000))
    with FaultProxy(account.session_url, tls=ctx) as proxy:
        mirror = proxied(account, tmp_path, proxy)
        assert proxy.url().startswith("https://localhost:")
        untrusted, _ = run_cli(mirror, "sync")
        done, _ = run_cli(mirror, "sync", env=clean_env(SSL_CERT_FILE=str(ca_file)))
    assert untrusted.returncode == 1
    (line,) = error_lines(untrusted.stderr)
    assert "certificate verify failed" in line and "Traceback" not in untrusted.stderr
    assert done.returncode == 0, done.stderr
    assert_exact_mirror(mirror)


@pytest.mark.parametrize("no_proxy", ["", "127.0.0.1"])
def test_http_proxy_from_the_environment_is_honoured(
    account: Account, tmp_path: Path, no_proxy: str
) -> None:
    """HTTP_PROXY applies: httpx carries every request through it (the lean
    client has no proxy support).  NO_PROXY naming the host: direct."""
    account.append("INBOX", make_message(1))
    mirror = Mirror(account, tmp_path)
    with proxy_for(account.session_url) as proxy:
        proxy.http = True
        env = clean_env(HTTP_PROXY=f"http://127.0.0.1:{proxy.port}", NO_PROXY=no_proxy)
        done, _ = run_cli(mirror, "sync", env=env)
        requests = list(proxy.requests)
    assert done.returncode == 0, done.stderr
    assert_exact_mirror(mirror)
    if no_proxy:
        assert requests == []
    else:
        targets = [t for _, t in requests]
        assert any(t.startswith("http://127.0.0.1:") and "/download/" in t for t in targets)
        assert any(t.startswith("http://127.0.0.1:") and t.endswith("/jmap/") for t in targets)
