"""Which Identity sends a From address (send/identity.py), as a case table."""

from __future__ import annotations

import pytest

from jmapsync.jmap.types import Identity
from jmapsync.send.identity import choose, envelope_from, own_addresses

ME = Identity("i1", "Alice", "alice@example.com")
ME_WORK = Identity("i2", "Alice (work)", "alice@example.com")
WILD = Identity("i3", "", "*@example.org")
CYRUS = Identity("alice", "", "")  # Cyrus 3.6: one identity, empty email
EXACT_ORG = Identity("i4", "", "x@example.org")


@pytest.mark.parametrize(
    ("identities", "from_address", "from_name", "own", "expected"),
    [
        ([ME], "alice@example.com", "", [], ME),
        ([ME], "ALICE@Example.COM", "", [], ME),  # case-insensitive
        ([ME], "bob@example.com", "", [], None),
        ([ME, ME_WORK], "alice@example.com", "Alice (work)", [], ME_WORK),  # by display name
        ([ME, ME_WORK], "alice@example.com", "Someone", [], ME),  # else the first
        ([WILD], "anything@example.org", "", [], WILD),
        ([WILD], "anything@sub.example.org", "", [], None),  # a wildcard is one domain
        ([WILD, ME], "alice@example.com", "", [], ME),
        ([WILD, EXACT_ORG], "x@example.org", "", [], EXACT_ORG),  # exact beats wildcard
        # Cyrus's empty identity: our own addresses, or anything when none are known
        ([CYRUS], "whoever@example.net", "", [], CYRUS),
        ([CYRUS], "alice@example.com", "", ["alice@example.com"], CYRUS),
        ([CYRUS], "bob@example.com", "", ["alice@example.com"], None),
        ([CYRUS], "bob@example.com", "", ["*@example.com"], CYRUS),
        ([ME, CYRUS], "alice@example.com", "", [], ME),
        ([], "alice@example.com", "", [], None),
    ],
)
def test_choose(
    identities: list[Identity],
    from_address: str,
    from_name: str,
    own: list[str],
    expected: Identity | None,
) -> None:
    assert choose(identities, from_address, from_name, own) == expected


def test_own_addresses_add_an_email_shaped_login() -> None:
    assert own_addresses([], "alice") == []
    assert own_addresses([], "me@fastmail.com") == ["me@fastmail.com"]
    assert own_addresses(["*@fastmail.com"], "me@fastmail.com") == ["*@fastmail.com"]


@pytest.mark.parametrize(
    ("identity", "given", "expected"),
    [
        (ME, None, "alice@example.com"),
        (ME, "bounces@example.com", "bounces@example.com"),  # -f wins
        (ME, "", ""),  # -f '<>': the null sender
        (WILD, None, "from@example.org"),  # a wildcard is no address
        (CYRUS, None, "from@example.org"),
    ],
)
def test_envelope_from(identity: Identity, given: str | None, expected: str) -> None:
    assert envelope_from(identity, "from@example.org", given) == expected


def test_the_addresses_key_takes_addresses_and_domain_wildcards() -> None:
    from jmapsync.config import parse
    from jmapsync.errors import ConfigError

    base = "[account a]\nsession_url = https://x.test/\nusername = u\npassword = p\nmaildir = /m\n"
    config = parse(base + "addresses = me@example.com, *@example.org  other@example.net\n")
    assert config.accounts[0].addresses == ("me@example.com", "*@example.org", "other@example.net")
    assert parse(base).accounts[0].addresses == ()
    for bad in ("me", "@example.com", "me@", "a*b@example.com"):
        with pytest.raises(ConfigError):
            parse(base + f"addresses = {bad}\n")
