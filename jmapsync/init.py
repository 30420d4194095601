"""`jmapsync init`: a working config in a minute, by questions or by flags.

On a terminal (and without --yes) it asks for what no flag gave: the mail
address or session URL, how to get the secret, the Maildir, its layout and
the direction.  Elsewhere (a script, --yes) a missing value takes its
default, and one without a default is an error naming the flag.  Then it
connects and prints exactly what `jmapsync check` prints (check.show), and
writes the file only when that worked (or the user says to write anyway, or
--no-check): a new file, an account added to an existing one, or -- only
after an explicit yes on the terminal -- an account of the same name
replaced.  It never touches the rest of an existing file.
"""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from jmapsync.config import Direction, default_config_path
from jmapsync.errors import ConfigError

if TYPE_CHECKING:  # imported when `init` runs: the CLI registers its flags on every start
    from jmapsync.configfile import Section

# Fastmail's developer documentation names the session resource and says every
# API request carries a bearer token ("API token", made in Settings -> Privacy
# & Security -> Integrations):
# https://www.fastmail.com/developer/integrating-with-fastmail/
FASTMAIL_SESSION_URL = "https://api.fastmail.com/jmap/session"
FASTMAIL_DOMAINS = frozenset({"fastmail.com", "fastmail.fm", "messagingengine.com"})
PROBE_TIMEOUT_S = 10.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

LAYOUTS = {
    "verbatim": "INBOX in MAILDIR/INBOX, Work/Projects in MAILDIR/Work/Projects (mbsync's"
    " SubFolders Verbatim)",
    "maildir++": "INBOX is MAILDIR itself, Work/Projects in MAILDIR/.Work.Projects (Dovecot,"
    " Courier, OfflineIMAP with sep = .)",
}
DIRECTIONS = {
    "two-way": "what you do in mutt, notmuch or a shell reaches the server",
    "pull": "a backup: the server is the truth, nothing is ever sent",
}
SECRETS = {
    "token_command": "a command that prints an API token (Fastmail: Settings -> Privacy &"
    " Security -> Integrations -> API tokens)",
    "password_command": "a command that prints your password (e.g. pass show mail/me)",
    "password": "typed now and stored in the config file (mode 0600)",
}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._@+-]")


class Asker:
    """Questions on the terminal; without one, the defaults or an error that
    names the flag to give."""

    def __init__(
        self,
        interactive: bool,
        read: Callable[[str], str] = input,
        read_secret: Callable[[str], str] = getpass.getpass,
    ) -> None:
        self.interactive = interactive
        self.read = read
        self.read_secret = read_secret

    def text(self, question: str, default: str | None, flag: str) -> str:
        if not self.interactive:
            if default is None:
                raise ConfigError(f"init: {flag} is needed (no terminal to ask, or --yes)")
            return default
        shown = f" [{default}]" if default else ""
        while True:
            answer = self.read(f"{question}{shown}: ").strip()
            if answer or default is not None:
                return answer or str(default)

    def secret(self, question: str, flag: str) -> str:
        if not self.interactive:
            raise ConfigError(f"init: {flag} is needed (no terminal to ask, or --yes)")
        while True:
            answer = self.read_secret(f"{question} (not shown): ")
            if answer:
                return answer

    def choose(self, question: str, options: dict[str, str], default: str, flag: str) -> str:
        if not self.interactive:
            return default
        keys = list(options)
        print(question)
        for i, key in enumerate(keys, 1):
            print(f"  {i}) {key:<17} {options[key]}")
        while True:
            answer = self.read(f"Choose 1-{len(keys)} or a name [{default}]: ").strip()
            if not answer:
                return default
            if answer.isdigit() and 1 <= int(answer) <= len(keys):
                return keys[int(answer) - 1]
            if answer in options:
                return answer

    def confirm(self, question: str, default: bool) -> bool:
        if not self.interactive:
            return default
        while True:
            answer = self.read(f"{question} [{'Y/n' if default else 'y/N'}]: ").strip().lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")


def session_url_for(address: str) -> str:
    """The session URL to try for an address: Fastmail's for its domains, else
    RFC 8620 2.2 autodiscovery at https://DOMAIN/.well-known/jmap.  (The DNS
    SRV lookup of 2.2 is not done: no DNS library is among our dependencies.)"""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    if domain in FASTMAIL_DOMAINS:
        return FASTMAIL_SESSION_URL
    return f"https://{domain}/.well-known/jmap"


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when something at `url` answers as a JMAP session resource would
    without credentials (RFC 8620 2.2: a redirect, 401, or the session itself);
    else why not, in a few words."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})"
    if response.status_code in (200, 301, 302, 303, 307, 308, 401):
        return None
    return f"HTTP {response.status_code}"


def _default_name(address: str | None, url: str) -> str:
    """The local part of the address; else a name from the server's host
    ("fastmail" for api.fastmail.com); else "mail"."""
    if address:
        base = address.partition("@")[0]
    else:
        import httpx

        labels = httpx.URL(url).host.split(".")
        while len(labels) > 2 and labels[0] in ("api", "jmap", "mail", "www"):
            labels.pop(0)
        base = "" if labels[-1].isdigit() or ":" in labels[0] else labels[0]
    name = _NAME_CHARS.sub("", base).lstrip("._@+-")[:100]
    return name or "mail"


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password != "-":  # noqa: S105 - "-" means standard input, not a password
        return str(args.password) if args.password else None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise ConfigError("init: --password -: standard input gave no password")
    return line


def ask(
    args: argparse.Namespace,
    asker: Asker,
    before: Section | None,
    names: list[str],
    path: Path,
) -> Section:
    """Every value: the flag, else the answer, else (no terminal) the default."""
    address = args.address
    url = args.session_url
    if url is None and address is None:
        answer = asker.text(
            "Mail address or JMAP session URL ('fastmail' for Fastmail)",
            before.session_url if before else None,
            "--address or --session-url",
        )
        url, address = (answer, None) if "://" in answer or answer == "fastmail" else (None, answer)
    if url is None:
        url = session_url_for(address)
        if url == FASTMAIL_SESSION_URL:
            print(f"Fastmail: session URL {url} (it takes API tokens, not passwords)")
        else:
            why = probe(url)
            if why is None:
                print(f"found a JMAP server at {url}")
            else:
                print(f"no JMAP server answered at {url}: {why}")
                url = asker.text(
                    "JMAP session URL (your provider's documentation names it)",
                    None,
                    "--session-url",
                )
    if url == "fastmail":
        url = FASTMAIL_SESSION_URL
    fastmail = url == FASTMAIL_SESSION_URL
    key, secret = _secret(args, asker, before, fastmail)
    username = args.username
    if username is None and key != "token_command":
        default = address or (before.username if before else None)
        username = asker.text("User name", default, "--username")
    name = args.account or asker.text(
        "Account name (names the state file)",
        before.name if before else _default_name(address, url),
        "--account",
    )
    name = _free_name(name, names, path, asker)
    maildir = args.maildir or asker.text(
        "Maildir", before.maildir if before else f"~/Mail/{name}", "--maildir"
    )
    layout = args.layout or asker.choose(
        "Folder layout:", LAYOUTS, before.layout if before else "verbatim", "--layout"
    )
    directions = {d: DIRECTIONS.get(d, "see config.example.ini") for d in get_args(Direction)}
    direction = args.direction or asker.choose(
        "Direction:", directions, before.direction if before else "two-way", "--direction"
    )
    from jmapsync.configfile import Section

    return Section(name, url, username, key, secret, maildir, layout, direction)


def _free_name(name: str, names: list[str], path: Path, asker: Asker) -> str:
    """A name the file does not have yet -- or the user's yes to replacing it."""
    while name in names:
        if not asker.interactive:
            raise ConfigError(
                f"init: {path} already has [account {name}]; give another --account NAME"
                " (init never replaces one without asking)"
            )
        if asker.confirm(f"{path} has [account {name}]. Replace it?", False):
            return name
        name = asker.text("Another account name", None, "--account")
    return name


def _secret(
    args: argparse.Namespace, asker: Asker, before: Section | None, fastmail: bool
) -> tuple[str, str]:
    for key in ("token_command", "password_command"):
        if getattr(args, key):
            return key, str(getattr(args, key))
    password = _read_password(args)
    if password is not None:
        return "password", password
    default = before.secret_key if before else ("token_command" if fastmail else "password_command")
    key = asker.choose("How does jmapsync get your password or token?", SECRETS, default, "")
    if not asker.interactive:
        raise ConfigError("init: --token-command, --password-command or --password is needed")
    if key == "password":
        return key, asker.secret("Password", "--password")
    what = "token" if key == "token_command" else "password"
    again = before.secret if before and before.secret_key == key else None
    return key, asker.text(f"Command that prints the {what}", again, f"--{key.replace('_', '-')}")


def run(args: argparse.Namespace) -> int:
    """The whole of `jmapsync init`; returns the exit code."""
    import asyncio

    from jmapsync import check, configfile

    interactive = sys.stdin.isatty() and not args.yes
    asker = Asker(interactive)
    path: Path = args.config or default_config_path()
    existing = path.read_text(encoding="utf-8") if path.exists() else None
    names = configfile.account_names(existing, str(path)) if existing is not None else []
    before: Section | None = None
    if interactive:
        print(f"jmapsync init: a config for one account in {path}; nothing is written before")
        print("the end, and Ctrl-C quits. Press Enter to take the [default].")
    try:
        while True:
            section = ask(args, asker, before, names, path)
            replace = section.name in names  # only when the user said so
            text = configfile.merged(existing, section)
            try:
                config, account = configfile.validated(text, path, section)
            except ConfigError as exc:
                if not interactive:
                    raise
                print(f"That does not work: {exc}")
                before = section
                continue
            if args.no_check or asyncio.run(check.show(account)):
                break
            if not interactive:
                print("jmapsync: init: the connection failed; nothing written", file=sys.stderr)
                return EXIT_FAILED
            if asker.confirm("Change the answers and try again?", True):
                before = section
                _forget_flags(args)
                continue
            if asker.confirm(f"Write {path} anyway?", False):
                break
            print("nothing written")
            return EXIT_FAILED
        verb = "Replace" if replace else ("Add" if existing is not None else "Write")
        what = f"[account {section.name}] in {path}" if existing is not None else str(path)
        if interactive and not asker.confirm(f"{verb} {what}?", True):
            print("nothing written")
            return EXIT_FAILED
    except EOFError:
        print("\njmapsync: init: no answer; nothing written", file=sys.stderr)
        return EXIT_USAGE
    private = section.secret_key == "password" or existing is None  # noqa: S105 - a key name
    configfile.write(path, text, private=private)
    print(f"wrote {what}" + (" (mode 0600)" if private else ""))
    print("next: " + _next_command(args, path, section.name, len(config.accounts)))
    return EXIT_OK


def _forget_flags(args: argparse.Namespace) -> None:
    """After a failed connection the user answers again: flags were the
    first answers, not fixed ones."""
    for key in (
        "session_url",
        "address",
        "username",
        "token_command",
        "password_command",
        "password",
        "account",
        "maildir",
        "layout",
        "direction",
    ):
        setattr(args, key, None)


def _next_command(args: argparse.Namespace, path: Path, name: str, accounts: int) -> str:
    cmd = "jmapsync"
    if path != default_config_path():
        cmd += f" -c {path}"
    cmd += " sync" + (f" --account {name}" if accounts > 1 else "")
    return f"{cmd}   (then `jmapsync daemon` keeps it in sync; see the README)"
