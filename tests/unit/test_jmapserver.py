"""The in-memory JMAP server (tests/jmapserver) pinned on its own: the RFC
behaviour jmapsync relies on, each personality habit, the knobs and the
transport faults -- so that a test against it fails for jmapsync's reasons,
not the server's."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from jmapserver import JmapServer
from mailtools import Jmap, JmapError, make_message


@pytest.fixture(params=["stalwart", "fastmail"])
def server(request: pytest.FixtureRequest) -> Iterator[JmapServer]:
    with JmapServer(request.param) as s:
        yield s


@pytest.fixture
def stalwart() -> Iterator[JmapServer]:
    with JmapServer("stalwart") as s:
        yield s


@pytest.fixture
def fastmail() -> Iterator[JmapServer]:
    with JmapServer("fastmail") as s:
        yield s


def call(j: Jmap, name: str, **args: Any) -> Any:
    """One method call; its arguments, or ("error", type)."""
    [[rname, rargs, _]] = j.call([[name, {"accountId": j.account_id, **args}, "c"]])
    return ("error", rargs["type"]) if rname == "error" else rargs


def raw_request(
    url: str, auth: str, method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers={"Authorization": auth})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- states and changes --------------------------------------------------------------


def test_email_changes_report_created_updated_destroyed_and_omit_created_then_destroyed(
    server: JmapServer,
) -> None:
    j = server.account().jmap()
    a = server.deliver(make_message(1))
    b = server.deliver(make_message(2))
    since = j.state("Email")
    server.add_keyword(a, "$seen")
    server.destroy(b)
    c = server.deliver(make_message(3))
    d = server.deliver(make_message(4))
    server.destroy(d)
    got = call(j, "Email/changes", sinceState=since)
    assert (got["created"], got["updated"], got["destroyed"]) == ([c], [a], [b])
    assert got["newState"] == j.state("Email") and got["hasMoreChanges"] is False


def test_max_changes_gives_intermediate_states_that_add_up_to_all_changes(
    server: JmapServer,
) -> None:
    j = server.account().jmap()
    since = j.state("Email")
    ids = [server.deliver(make_message(i)) for i in range(7)]
    seen: list[str] = []
    state, pages = since, 0
    while True:
        got = call(j, "Email/changes", sinceState=state, maxChanges=3)
        assert len(got["created"]) <= 3
        seen += got["created"]
        state, pages = got["newState"], pages + 1
        if not got["hasMoreChanges"]:
            break
    assert seen == ids and pages == 3 and state == j.state("Email")


def test_cannot_calculate_changes_for_a_bogus_state_and_on_the_knob(server: JmapServer) -> None:
    j = server.account().jmap()
    assert call(j, "Email/changes", sinceState="nonsense") == ("error", "cannotCalculateChanges")
    state = j.state("Email")
    assert call(j, "Email/changes", sinceState=state)["created"] == []
    server.knobs.cannot_calculate = True
    assert call(j, "Email/changes", sinceState=state) == ("error", "cannotCalculateChanges")
    assert call(j, "Mailbox/changes", sinceState=j.state("Mailbox")) == (
        "error",
        "cannotCalculateChanges",
    )


def test_mailbox_counts_are_mailbox_updates(server: JmapServer) -> None:
    j = server.account().jmap()
    since = j.state("Mailbox")
    server.deliver(make_message(1), "Archive")
    got = call(j, "Mailbox/changes", sinceState=since)
    assert got["updated"] == [server.mailbox_id("Archive")]


def test_if_in_state_refuses_a_write_on_a_moved_state(server: JmapServer) -> None:
    j = server.account().jmap()
    a = server.deliver(make_message(1))
    old = j.state("Email")
    server.deliver(make_message(2))
    got = call(j, "Email/set", ifInState=old, update={a: {"keywords/$seen": True}})
    assert got == ("error", "stateMismatch")
    assert server.emails()[a].keywords == set()


# -- writes --------------------------------------------------------------------------


def test_patches_change_one_key_and_an_email_keeps_a_mailbox(server: JmapServer) -> None:
    j = server.account().jmap()
    a = server.deliver(make_message(1), "INBOX", ["$flagged", "custom"])
    inbox, arch = server.mailbox_id("INBOX"), server.mailbox_id("Archive")
    got = call(
        j,
        "Email/set",
        update={a: {"keywords/$seen": True, "keywords/$flagged": None, f"mailboxIds/{arch}": True}},
    )
    assert got["updated"] == {a: None}
    e = server.emails()[a]
    assert e.keywords == {"$seen", "custom"} and e.mailbox_ids == {inbox, arch}
    got = call(
        j,
        "Email/set",
        update={a: {f"mailboxIds/{inbox}": None, f"mailboxIds/{arch}": None}},
    )
    assert got["notUpdated"][a]["type"] == "invalidProperties"


def test_import_of_the_same_bytes_twice(server: JmapServer) -> None:
    """Stalwart: two Emails.  Fastmail (Cyrus underneath): alreadyExists."""
    j = server.account().jmap()
    raw = make_message(1)
    first = j.import_message(raw, [server.mailbox_id("INBOX")])
    if server.personality.name == "stalwart":
        second = j.import_message(raw, [server.mailbox_id("INBOX")])
        assert second != first and len(server.emails()) == 2
    else:
        with pytest.raises(JmapError) as err:
            j.import_message(raw, [server.mailbox_id("Archive")])
        assert err.value.type == "alreadyExists"
        assert err.value.response["notCreated"]["m"]["existingId"] == first
        assert server.emails()[first].mailbox_ids == {server.mailbox_id("INBOX")}


def test_mailbox_set_create_rename_and_destroy_rules(server: JmapServer) -> None:
    j = server.account().jmap()
    parent = j.create_mailbox("Work")
    child = j.create_mailbox("Projects", parent)
    j.rename_mailbox(child, "Plans")
    assert server.paths()[child] == "Work/Plans"
    server.deliver(make_message(1), "Work/Plans")
    got = call(j, "Mailbox/set", destroy=[parent, child], onDestroyRemoveEmails=False)
    assert got["notDestroyed"][parent]["type"] == "mailboxHasChild"
    assert got["notDestroyed"][child]["type"] == "mailboxHasEmail"
    dup = call(j, "Mailbox/set", create={"x": {"name": "Plans", "parentId": parent}})
    assert dup["notCreated"]["x"]["type"] == "invalidProperties"


# -- queries -------------------------------------------------------------------------


def test_query_filters_sorts_and_pages_by_anchor(server: JmapServer) -> None:
    j = server.account().jmap()
    ids = [server.deliver(make_message(i), "INBOX" if i % 2 else "Archive") for i in range(6)]
    inbox = server.mailbox_id("INBOX")
    got = call(
        j,
        "Email/query",
        filter={"inMailbox": inbox},
        sort=[{"property": "receivedAt", "isAscending": False}],
        calculateTotal=True,
    )
    assert got["ids"] == [ids[5], ids[3], ids[1]] and got["total"] == 3
    mid = f"2.{'mailtools'}@mailtools.test"  # make_message's Message-ID, brackets off
    assert call(j, "Email/query", filter={"header": ["Message-ID", mid]})["ids"] == [ids[2]]
    assert call(j, "Email/query", filter={"header": ["Message-ID", "mailtools.test"]})["ids"] == ids
    page = call(j, "Email/query", anchor=ids[1], anchorOffset=1, limit=2)
    assert page["ids"] == ids[2:4] and page["position"] == 2
    assert call(j, "Email/query", anchor="nope") == ("error", "anchorNotFound")


def test_stalwart_clamps_the_query_limit_and_returns_it(stalwart: JmapServer) -> None:
    """[STALWART] lib.rs: limit = min(limit, max-results), returned when the
    result set is larger than that."""
    j = stalwart.account().jmap()
    stalwart.knobs.query_max = 3
    ids = [stalwart.deliver(make_message(i)) for i in range(5)]
    got = call(j, "Email/query", limit=100, calculateTotal=True)
    assert got["ids"] == ids[:3] and got["limit"] == 3 and got["total"] == 5
    got = call(j, "Email/query", limit=100, position=3)
    assert got["ids"] == ids[3:] and got["limit"] == 3
    stalwart.knobs.query_max = 10
    assert "limit" not in call(j, "Email/query", limit=100)


def test_limits_refuse_too_many_calls_and_too_many_ids(server: JmapServer) -> None:
    j = server.account().jmap()
    server.knobs.limits["maxCallsInRequest"] = 2
    calls = [["Core/echo", {}, f"c{i}"] for i in range(3)]
    with pytest.raises(JmapError) as err:
        j.call(calls)
    assert json.loads(err.value.response)["limit"] == "maxCallsInRequest"
    server.knobs.limits["maxObjectsInGet"] = 2
    assert call(j, "Email/get", ids=["a", "b", "c"]) == ("error", "requestTooLarge")


# -- personalities: auth, hosts, read-only -------------------------------------------


def test_fastmail_takes_bearer_only_and_serves_downloads_on_a_second_host(
    fastmail: JmapServer,
) -> None:
    session = json.loads(raw_request(fastmail.session_url, "Bearer " + fastmail.token)[2].decode())
    api = urllib.parse.urlsplit(session["apiUrl"])
    download = urllib.parse.urlsplit(session["downloadUrl"])
    assert api.netloc != download.netloc
    basic = "Basic " + __import__("base64").b64encode(b"alice@example.test:app-password").decode()
    assert raw_request(fastmail.session_url, basic)[0] == 401
    eid = fastmail.deliver(make_message(1))
    blob = fastmail.emails()[eid].blob_id
    path = f"/jmap/download/{fastmail.account_id}/{blob}/m.eml?type=message/rfc822"
    dl = f"{download.scheme}://{download.netloc}{path}"
    assert raw_request(dl, "Bearer " + fastmail.token)[2] == make_message(1)
    assert raw_request(dl, "")[0] == 401
    assert raw_request(fastmail.base + path, "Bearer " + fastmail.token)[0] == 404


def test_read_only_token_reads_and_cannot_write(server: JmapServer) -> None:
    j = server.account(read_only=True).jmap()
    acc = j.session["accounts"][j.account_id]
    assert acc["isReadOnly"] is True
    assert "urn:ietf:params:jmap:submission" not in j.session["capabilities"]
    eid = server.deliver(make_message(1))
    assert call(j, "Email/get", ids=[eid])["list"][0]["id"] == eid
    got = call(j, "Email/set", update={eid: {"keywords/$seen": True}})
    assert got == ("error", "accountReadOnly")
    with pytest.raises(JmapError) as err:
        j.call(
            [["Core/echo", {}, "e"]],
            ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:submission"],
        )
    assert "unknownCapability" in str(err.value)


# -- knobs: rate limits and transport faults -----------------------------------------


def test_rate_limit_set_errors_and_429_with_retry_after(server: JmapServer) -> None:
    j = server.account().jmap()
    a = server.deliver(make_message(1))
    server.knobs.rate_limit_records = 1
    got = call(j, "Email/set", update={a: {"keywords/$seen": True}})
    assert got["notUpdated"][a]["type"] == "rateLimit"
    got = call(j, "Email/set", update={a: {"keywords/$seen": True}})
    assert got["updated"] == {a: None}
    server.fault("429", "api", retry_after="7")
    status, headers, _ = j.http("POST", j.api_url, b"{}", {"Content-Type": "application/json"})
    assert (status, headers["retry-after"]) == (429, "7")


def _post_raw(server: JmapServer, body: bytes) -> bytes:
    """One API POST on a raw socket; every byte the server sent until it closed."""
    auth = server.account().jmap()._auth
    url = urllib.parse.urlsplit(server.account().jmap().api_url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            f"POST {url.path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


def test_a_lost_answer_comes_after_the_write_was_applied(stalwart: JmapServer) -> None:
    j = stalwart.account().jmap()
    blob = j.upload(make_message(1))
    stalwart.fault("lose", "api:Email/import")
    req = {
        "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
        "methodCalls": [
            [
                "Email/import",
                {
                    "accountId": j.account_id,
                    "emails": {
                        "m": {"blobId": blob, "mailboxIds": {stalwart.mailbox_id("INBOX"): True}}
                    },
                },
                "i",
            ]
        ],
    }
    assert _post_raw(stalwart, json.dumps(req).encode()) == b""
    assert len(stalwart.emails()) == 1


def test_a_cut_answer_stops_half_way(server: JmapServer) -> None:
    j = server.account().jmap()
    eid = server.deliver(make_message(1, size=20000))
    server.fault("cut", "download")
    with pytest.raises(http.client.IncompleteRead):
        j.download(server.emails()[eid].blob_id)
    assert j.download(server.emails()[eid].blob_id) == make_message(1, size=20000)


def test_keep_alive_and_both_framings(server: JmapServer) -> None:
    auth = server.account().jmap()._auth
    url = urllib.parse.urlsplit(server.session_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    framings = set()
    for _ in range(4):
        conn.request("GET", url.path, headers={"Authorization": auth})
        resp = conn.getresponse()
        assert json.loads(resp.read())["username"] == server.user
        framings.add("chunked" if resp.getheader("transfer-encoding") else "length")
    conn.close()
    assert framings == {"chunked", "length"}
    assert server.api_http.connections == 1


# -- EventSource ---------------------------------------------------------------------


def _events(server: JmapServer, query: str, read: int, then: Any = None) -> list[tuple[str, Any]]:
    """Open the event source, run `then()`, return the first `read` events."""
    j = server.account().jmap()
    url = j.session["eventSourceUrl"].split("?")[0] + "?" + query
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.request("GET", f"{parts.path}?{parts.query}", headers={"Authorization": j._auth})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type") == "text/event-stream"
    if then is not None:
        then()
    out: list[tuple[str, Any]] = []
    name = ""
    try:
        while len(out) < read:
            line = resp.fp.readline().decode().rstrip("\r\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
    finally:
        conn.close()
    return out


def test_stalwart_pushes_typed_state_changes_and_pings_in_milliseconds(
    stalwart: JmapServer,
) -> None:
    got = _events(
        stalwart, "types=Email&closeafter=no&ping=1", 2, lambda: stalwart.deliver(make_message(1))
    )
    (n1, d1), (n2, d2) = got
    assert n1 == "state" and d1["@type"] == "StateChange"
    assert d1["changed"] == {stalwart.account_id: {"Email": stalwart.store.state("Email")}}
    assert (n2, d2) == ("ping", {"interval": 1000})


def test_fastmail_pushes_typeless_connect_then_change(fastmail: JmapServer) -> None:
    got = _events(
        fastmail,
        "types=Email,Mailbox&closeafter=no&ping=0",
        2,
        lambda: fastmail.deliver(make_message(1)),
    )
    (_, first), (_, second) = got
    assert "@type" not in first and first["type"] == "connect"
    assert second["type"] == "change"
    assert second["changed"][fastmail.account_id]["Email"] == fastmail.store.state("Email")
