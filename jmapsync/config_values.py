"""The values of config keys, read and checked one at a time (config.py
assembles them into AccountConfig / Config)."""

from __future__ import annotations

import configparser
import re
import shlex
from typing import Any

from jmapsync.errors import ConfigError

# maildir/keywords.py and sync/selection.py are imported only to check a key
# that is set: a config without them must not pay for their imports (every
# `jmapsync sync` reads the config; issue 16).

# Keys an account may set and [jmapsync] may default for every account.
HOOK_KEYS = ("post_sync_command", "post_sync_timeout", "post_sync_delay")


def choice(
    section: configparser.SectionProxy, key: str, default: str, allowed: tuple[str, ...]
) -> str:
    value = section.get(key, default).strip()
    if value not in allowed:
        raise ConfigError(
            f"[{section.name}] {key} = {value!r}: expected one of {', '.join(allowed)}"
        )
    return value


def positive_float(section: configparser.SectionProxy, key: str, default: float) -> float:
    raw = section.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"[{section.name}] {key} = {raw!r}: expected a number") from None
    if value <= 0:
        raise ConfigError(f"[{section.name}] {key} must be positive")
    return value


def folders(section: configparser.SectionProxy, default: tuple[str, ...]) -> tuple[str, ...]:
    """`folders =`: patterns split like a shell would ("Old Mail/*" quoted), checked now."""
    raw = section.get("folders")
    if raw is None:
        return default
    from jmapsync.sync.selection import Selection

    try:
        items = tuple(shlex.split(raw))
        Selection.parse(items)
    except ValueError as exc:
        raise ConfigError(f"[{section.name}] folders = {raw.strip()!r}: {exc}") from None
    return items


def hook(
    section: configparser.SectionProxy, defaults: configparser.SectionProxy | None
) -> dict[str, Any]:
    """post_sync_* of an account, each falling back to [jmapsync]'s.  An
    account's empty `post_sync_command =` turns off a global one."""
    chosen = {k: section if k in section else defaults for k in HOOK_KEYS}
    out: dict[str, Any] = {}
    src = chosen["post_sync_command"]
    command = (src.get("post_sync_command") or "").strip() if src is not None else ""
    if src is not None and command:
        try:
            shlex.split(command)  # run without a shell, split as password_command is
        except ValueError as exc:
            raise ConfigError(f"[{src.name}] post_sync_command: {exc}") from None
    out["post_sync_command"] = command or None
    for key, attr, default in (
        ("post_sync_timeout", "post_sync_timeout_s", 300.0),
        ("post_sync_delay", "post_sync_delay_s", 5.0),
    ):
        src = chosen[key]
        out[attr] = positive_float(src, key, default) if src is not None else default
    return out


def keywords(
    section: configparser.SectionProxy, key: str, default: frozenset[str]
) -> frozenset[str]:
    """A space-separated list of JMAP keywords, lowercased (keywords are
    case-insensitive, RFC 8621 4.1.1); empty means none."""
    raw = section.get(key)
    if raw is None:
        return default
    from jmapsync.maildir.keywords import is_keyword

    words = raw.split()
    bad = [w for w in words if not is_keyword(w)]
    if bad:
        raise ConfigError(f"[{section.name}] {key}: not a keyword: {bad[0]!r}")
    return frozenset(w.lower() for w in words)


def addresses(section: configparser.SectionProxy) -> tuple[str, ...]:
    """`addresses = me@example.com, *@example.org` (commas or spaces)."""
    out = []
    for word in re.split(r"[,\s]+", section.get("addresses", "")):
        if not word:
            continue
        local, at, domain = word.rpartition("@")
        if not at or not local or not domain or ("*" in local and local != "*"):
            raise ConfigError(
                f"[{section.name}] addresses: {word!r} is neither an address nor *@domain"
            )
        out.append(word)
    return tuple(out)


def count(section: configparser.SectionProxy, key: str, default: int) -> int:
    """An integer >= 0."""
    try:
        value = int(section.get(key, str(default)))
    except ValueError:
        raise ConfigError(f"[{section.name}] {key} must be an integer") from None
    if value < 0:
        raise ConfigError(f"[{section.name}] {key} must be >= 0")
    return value
