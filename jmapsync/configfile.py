"""Writing the config file (for `jmapsync init`): one account section added to
a file, or replacing its namesake, keeping everything else byte for byte.

configparser would lose the user's comments and order on a round trip, so
the file is edited as text and the result is validated by the same parser
`load()` uses before it replaces the old file -- atomically, so a crash
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jmapsync.config import AccountConfig, Config, parse
from jmapsync.errors import ConfigError

HEADER = (
    "; jmapsync configuration, written by `jmapsync init`.\n"
    "; Every key is described in config.example.ini and in `man jmapsync.ini`.\n"
)


@dataclass(frozen=True)
class Section:
    """The keys of one [account NAME] section, as they are written."""

    name: str
    session_url: str
    username: str | None
    secret_key: str  # "token_command" | "password_command" | "password"
    secret: str
    maildir: str  # as the user typed it: "~/Mail/x" stays "~/Mail/x"
    layout: str
    direction: str

    def text(self) -> str:
        lines = [f"[account {self.name}]", f"session_url = {self.session_url}"]
        if self.username:
            lines.append(f"username = {self.username}")
        lines += [
            f"{self.secret_key} = {self.secret}",
            f"maildir = {self.maildir}",
            f"layout = {self.layout}",
            f"direction = {self.direction}",
        ]
        return "\n".join(lines) + "\n"


def account_names(text: str, where: str) -> list[str]:
    """The [account NAME] sections of an existing file (which need not be a
    complete config: it is about to get its first account, maybe)."""
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), default_section="__defaults__"
    )
    try:
        parser.read_string(text, source=where)
    except configparser.Error as exc:
        raise ConfigError(f"{where} cannot be read ({exc}); fix or move it first") from None
    return [s.partition(" ")[2].strip() for s in parser.sections() if s.startswith("account ")]


def _header_at(line: str) -> bool:
    return line.lstrip().startswith("[")


def merged(existing: str | None, section: Section) -> str:
    """The file's new text: `section` added, or put in place of the section of
    the same name (the comment lines just before the next section stay:
    they describe that one)."""
    if existing is None:
        return HEADER + "\n" + section.text()
    lines = existing.splitlines(keepends=True)
    own = re.compile(rf"^\s*\[account\s+{re.escape(section.name)}\s*\]\s*$")
    start = next((i for i, line in enumerate(lines) if own.match(line)), None)
    if start is None:
        body = existing if existing.endswith("\n") or not existing else existing + "\n"
        return body + "\n" + section.text()
    end = next((i for i in range(start + 1, len(lines)) if _header_at(lines[i])), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip()[0] in ";#"):
        end -= 1
    rest = lines[end:]
    return "".join(lines[:start]) + section.text() + ("\n" if rest else "") + "".join(rest)


def validated(text: str, path: Path, section: Section) -> tuple[Config, AccountConfig]:
    """Parse the new text as `load()` will, and make sure every value reads
    back as written (an inline ` ;` or ` #` would turn the rest of a
    password into a comment)."""
    config = parse(text, path)
    account = config.account(section.name)
    c = account.credentials
    back = {
        "password": c.password.reveal() if c.password else None,
        "password_command": c.password_command,
        "token_command": c.token_command,
    }
    if back[section.secret_key] != section.secret:
        raise ConfigError(
            f"the {section.secret_key} cannot be written to an INI file as it is (leading or"
            " trailing spaces, a ' ;' or ' #', or a line break)"
        )
    if (c.username or None) != (section.username or None) or account.session_url != (
        section.session_url
    ):
        raise ConfigError("the user name or session URL cannot be written as it is")
    return config, account


def write(path: Path, text: str, *, private: bool) -> None:
    """Replace the file atomically (temp file, fsync, rename, fsync the
    directory).  Mode 0600 when it holds a password or is new; an existing
    file otherwise keeps its mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = 0o600
    if not private:
        with contextlib.suppress(FileNotFoundError):
            mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
