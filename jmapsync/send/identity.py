"""PURE: which Identity sends a message, and the envelope sender.

RFC 8621 6: an Identity's `email` is an address, or `*@domain` for any
address of that domain.  Cyrus 3.6 returns exactly one Identity whose email
is EMPTY (id = the user name; Identity/set does not exist there), so a
server may tell us nothing about the addresses we may use.  Our rule for an
Identity without an email: it stands for the account's own addresses --
the `addresses` key of the account (patterns like the Identity's), plus the
login name when it is an email address (Fastmail logins are).  When neither
names any address, it matches every From: the server is the judge of what
may be sent (it answers forbiddenFrom), and Cyrus 3.6 with one empty
Identity leaves no other choice.

Choice, best first: an Identity whose email equals From (the one whose name
equals From's display name, if several), then a wildcard Identity of From's
domain, then an Identity without an email under the rule above.
"""

from __future__ import annotations

from collections.abc import Sequence

from jmapsync.jmap.types import Identity


def matches(pattern: str, address: str) -> bool:
    """`pattern` is an address or `*@domain`; both compared case-insensitively
    (local parts are case-sensitive in theory, in practice nowhere)."""
    pattern, address = pattern.strip().casefold(), address.strip().casefold()
    if pattern.startswith("*@"):
        return address.rpartition("@")[2] == pattern[2:] and "@" in address
    return pattern == address


def own_addresses(configured: Sequence[str], username: str) -> list[str]:
    """The account's own addresses as far as we know them."""
    out = [a for a in configured if a.strip()]
    if "@" in username and not any(matches(a, username) for a in out):
        out.append(username)
    return out


def choose(
    identities: Sequence[Identity],
    from_address: str,
    from_name: str = "",
    own: Sequence[str] = (),
) -> Identity | None:
    """The Identity to send `from_address` with, or None (EX_NOUSER)."""
    exact = [i for i in identities if i.email and not i.email.startswith("*@")]
    exact = [i for i in exact if matches(i.email, from_address)]
    if exact:
        named = [i for i in exact if from_name and i.name == from_name]
        return (named or exact)[0]
    for i in identities:
        if i.email.startswith("*@") and matches(i.email, from_address):
            return i
    for i in identities:
        if not i.email and (not own or any(matches(a, from_address) for a in own)):
            return i
    return None


def envelope_from(identity: Identity, from_address: str, given: str | None) -> str:
    """MAIL FROM: `-f` when given ("" is the null sender), else the Identity's
    address when it names one, else the From address."""
    if given is not None:
        return given
    if identity.email and not identity.email.startswith("*@"):
        return identity.email
    return from_address


def describe(identities: Sequence[Identity], own: Sequence[str]) -> str:
    """For the EX_NOUSER message: what we could have sent as."""
    names = [i.email or f"(no address: {', '.join(own) or 'any'})" for i in identities]
    return ", ".join(names) or "no identity at all"
