"""INI configuration -> frozen dataclasses, validated once at start.

The file format is documented key by key in config.example.ini.  Secrets are
wrapped in `Secret` as soon as they are read, so that no repr, log line or
traceback can show them; `password_command` / `token_command` run only when
the secret is needed (at connect time), never while parsing.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, cast

from jmapsync import config_values as values
from jmapsync import log, scrub
from jmapsync.config_values import HOOK_KEYS
from jmapsync.errors import ConfigError, SecretError

Layout = Literal["verbatim", "maildir++"]
Direction = Literal["two-way", "pull", "archive"]
LineEndings = Literal["lf", "exact"]
Push = Literal["auto", "websocket", "eventsource", "poll"]
LogFormat = Literal["auto", "console", "json"]
PUSH_CHOICES: tuple[str, ...] = ("auto", "websocket", "eventsource", "poll")

# maildir/keywords.py's DEFAULT_SERVER_ONLY (tests/unit/test_keywords.py checks
# they agree): that module is not imported for every `jmapsync sync`.
DEFAULT_SERVER_ONLY = frozenset({"$hasattachment", "$hasnoattachment"})
_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
_SECRET_TIMEOUT_S = 60


class Secret:
    """A password or token that never shows itself in repr(), str() or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself; call only where it is put on the wire."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Credentials(NamedTuple):
    """How to authenticate: exactly one of password, password_command, token_command."""

    username: str | None
    password: Secret | None = None
    password_command: str | None = None
    token_command: str | None = None

    @property
    def scheme(self) -> Literal["basic", "bearer"]:
        return "bearer" if self.token_command else "basic"

    def resolve(self) -> Secret:
        """Return the password or token, running the configured command if any.

        The command's stderr is not captured into our error message, because a
        password manager may print the secret there on failure.
        """
        if self.password is not None:
            self._register(self.password)
            return self.password
        command = self.token_command or self.password_command
        if command is None:  # pragma: no cover - excluded by validation
            raise SecretError("no password, password_command or token_command configured")
        key = "token_command" if self.token_command else "password_command"
        import subprocess

        try:
            done = subprocess.run(
                shlex.split(command),
                stdout=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                timeout=_SECRET_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SecretError(f"{key} could not run: {type(exc).__name__}") from None
        if done.returncode != 0:
            raise SecretError(f"{key} exited with status {done.returncode}")
        value = done.stdout.decode("utf-8", "replace").split("\n", 1)[0].rstrip("\r")
        if not value:
            raise SecretError(f"{key} printed nothing")
        secret = Secret(value)
        self._register(secret)
        return secret

    def _register(self, secret: Secret) -> None:
        """From now on this process never shows the secret (scrub.py)."""
        if self.token_command:
            scrub.add_secret(secret.reveal())
        else:
            scrub.add_basic_auth(self.username or "", secret.reveal())


@dataclass(frozen=True)
class AccountConfig:
    """One `[account NAME]` section."""

    name: str
    session_url: str
    credentials: Credentials
    maildir: Path
    layout: Layout = "verbatim"
    direction: Direction = "two-way"
    line_endings: LineEndings = "lf"
    # jmapsync-specific knobs with safe defaults (see config.example.ini)
    download_connections: int = 0  # 0 = the server's maxConcurrentRequests
    timeout_s: float = 60.0
    # Two-way: more local deletions than this in one pass are refused (--force-deletes).
    max_deletes: int = 100
    push: Push = "auto"  # the daemon's change notification transport
    # Run after a pass that changed the Maildir (jmapsync/hooks.py); None: nothing.
    post_sync_command: str | None = None
    post_sync_timeout_s: float = 300.0
    post_sync_delay_s: float = 5.0  # the daemon: passes this close share one run
    # Keywords that never get a Dovecot letter (maildir/keywords.py), lowercase.
    server_only_keywords: frozenset[str] = DEFAULT_SERVER_ONLY
    # `folders =`: mbsync-style patterns of the mailboxes mirrored (sync/selection.py)
    folders: tuple[str, ...] = ("*",)
    # `jmapsync send`: the account's own addresses (`*@domain` allowed), for
    # choosing the account and for a server Identity that names no address.
    addresses: tuple[str, ...] = ()


class Config(NamedTuple):
    """The whole file."""

    path: Path | None
    state_dir: Path
    accounts: tuple[AccountConfig, ...] = ()
    poll_interval_s: float = 300.0
    full_sync_interval_s: float = 86400.0
    log_format: LogFormat = "auto"

    def account(self, name: str) -> AccountConfig:
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none"
        raise ConfigError(f"no account named {name!r} in the config (known: {known})")

    def select(self, names: list[str] | None) -> list[AccountConfig]:
        if not names:
            return list(self.accounts)
        return [self.account(n) for n in names]


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jmapsync" / "config.ini"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jmapsync"


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def _parse_account(
    name: str,
    section: configparser.SectionProxy,
    config_dir: Path,
    push_default: str = "auto",
    hook_defaults: configparser.SectionProxy | None = None,
    folders_default: tuple[str, ...] = ("*",),
) -> AccountConfig:
    if not _ACCOUNT_NAME.match(name):
        raise ConfigError(
            f"account name {name!r}: use letters, digits and . _ @ + - (it names the state file)"
        )
    known = {
        "session_url",
        "username",
        "password",
        "password_command",
        "token_command",
        "maildir",
        "layout",
        "direction",
        "download_connections",
        "max_deletes",
        "timeout",
        "line_endings",
        "push",
        *HOOK_KEYS,
        "server_only_keywords",
        "folders",
        "addresses",
    }
    unknown = sorted(set(section.keys()) - known - set(section.parser.defaults()))
    if unknown:
        raise ConfigError(f"[{section.name}] unknown key(s): {', '.join(unknown)}")
    session_url = section.get("session_url", "").strip()
    if not session_url:
        raise ConfigError(f"[{section.name}] session_url is required")
    if not re.match(r"^https?://", session_url):
        raise ConfigError(f"[{section.name}] session_url must start with http:// or https://")
    sources = [k for k in ("password", "password_command", "token_command") if section.get(k)]
    if len(sources) != 1:
        raise ConfigError(
            f"[{section.name}] set exactly one of password, password_command, token_command"
            f" (found {len(sources)})"
        )
    username = section.get("username", "").strip() or None
    if sources[0] != "token_command" and username is None:
        raise ConfigError(f"[{section.name}] username is required for Basic auth")
    password = section.get("password")
    if password:  # redacted from every output of this process, before anything runs
        scrub.add_basic_auth(username or "", password)
    credentials = Credentials(
        username=username,
        password=Secret(password) if password else None,
        password_command=section.get("password_command") or None,
        token_command=section.get("token_command") or None,
    )
    maildir_raw = section.get("maildir", "").strip()
    if not maildir_raw:
        raise ConfigError(f"[{section.name}] maildir is required")
    maildir = _expand(maildir_raw)
    if not maildir.is_absolute():
        maildir = config_dir / maildir
    connections = values.count(section, "download_connections", 0)
    max_deletes = values.count(section, "max_deletes", 100)
    return AccountConfig(
        name=name,
        session_url=session_url,
        credentials=credentials,
        maildir=maildir,
        layout=cast(
            Layout, values.choice(section, "layout", "verbatim", ("verbatim", "maildir++"))
        ),
        direction=cast(
            Direction,
            values.choice(section, "direction", "two-way", ("two-way", "pull", "archive")),
        ),
        line_endings=cast(
            LineEndings, values.choice(section, "line_endings", "lf", ("lf", "exact"))
        ),
        download_connections=connections,
        timeout_s=values.positive_float(section, "timeout", 60.0),
        max_deletes=max_deletes,
        push=cast(Push, values.choice(section, "push", push_default, PUSH_CHOICES)),
        server_only_keywords=values.keywords(section, "server_only_keywords", DEFAULT_SERVER_ONLY),
        folders=values.folders(section, folders_default),
        addresses=values.addresses(section),
        **values.hook(section, hook_defaults),
    )


def parse(text: str, path: Path | None = None) -> Config:
    """Parse config text; `path` is used for messages and relative paths."""
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), default_section="__defaults__"
    )
    where = str(path) if path else "<config>"
    try:
        parser.read_string(text, source=where)
    except configparser.Error as exc:
        raise ConfigError(f"{where}: {exc}") from None
    config_dir = path.parent if path else Path.cwd()
    state_dir = default_state_dir()
    poll = 300.0
    full = 86400.0
    log_format = "auto"
    push_default = "auto"
    hook_defaults = parser["jmapsync"] if parser.has_section("jmapsync") else None
    folders_default: tuple[str, ...] = ("*",)
    accounts: list[AccountConfig] = []
    if parser.has_section("jmapsync"):
        # read first: an account's push and folders default to this section's
        push_default = values.choice(parser["jmapsync"], "push", "auto", PUSH_CHOICES)
        folders_default = values.folders(parser["jmapsync"], folders_default)
    for section_name in parser.sections():
        section = parser[section_name]
        if section_name == "jmapsync":
            keys = {
                "state_dir",
                "poll_interval",
                "full_sync_interval",
                "log_format",
                "push",
                *HOOK_KEYS,
                "folders",
            }
            unknown = sorted(set(section.keys()) - keys)
            if unknown:
                raise ConfigError(f"[jmapsync] unknown key(s): {', '.join(unknown)}")
            if section.get("state_dir"):
                state_dir = _expand(section["state_dir"].strip())
                if not state_dir.is_absolute():
                    state_dir = config_dir / state_dir
            poll = values.positive_float(section, "poll_interval", poll)
            full = values.positive_float(section, "full_sync_interval", full)
            log_format = values.choice(section, "log_format", "auto", ("auto", "console", "json"))
            continue
        kind, _, name = section_name.partition(" ")
        if kind != "account" or not name.strip():
            raise ConfigError(f"{where}: unknown section [{section_name}] (want [account NAME])")
        accounts.append(
            _parse_account(
                name.strip(), section, config_dir, push_default, hook_defaults, folders_default
            )
        )
    if not accounts:
        raise ConfigError(f"{where}: no [account NAME] section")
    names = [a.name for a in accounts]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: duplicate account names")
    roots = [a.maildir.resolve() for a in accounts]
    for i, a in enumerate(roots):
        for b in roots[i + 1 :]:
            if a == b or a in b.parents or b in a.parents:
                raise ConfigError(f"{where}: two accounts share or nest a maildir ({a}, {b})")
    return Config(
        path=path,
        state_dir=state_dir,
        accounts=tuple(accounts),
        poll_interval_s=poll,
        full_sync_interval_s=full,
        log_format=cast(LogFormat, log_format),
    )


def load(path: Path | None = None) -> Config:
    """Read and validate the config file (default: $XDG_CONFIG_HOME/jmapsync/config.ini)."""
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    config = parse(text, path)
    _warn_if_exposed(config, path)
    return config


def _warn_if_exposed(config: Config, path: Path) -> None:
    """A `password` in a file that group or others can read is a leaked
    password on a shared machine: say which file and the command that fixes
    it (a warning, not an error: the owner may know what they do)."""
    if not any(a.credentials.password is not None for a in config.accounts):
        return
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:  # pragma: no cover - it was just read
        return
    if mode & 0o077:
        log.get().warning(
            "config-readable-by-others",
            path=str(path),
            mode=f"{mode:04o}",
            message=f"{path} holds a password and is readable by group or others",
            fix=f"chmod 600 {shlex.quote(str(path))}",
        )
