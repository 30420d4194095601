"""The command line's grammar: argparse, every subcommand and flag.

tools/manpages.py writes man/jmapsync.1 from it (a test fails on drift);
jmapsync/cli.py dispatches.  Nothing here imports a command's modules: every
start builds this parser, and `init`'s flags are registered here so that
other commands do not load jmapsync/init.py.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any, get_args

from jmapsync import __version__
from jmapsync.config import Direction, Layout


@functools.cache
def _columns() -> int:
    """The terminal width, as shutil.get_terminal_size() finds it ($COLUMNS,
    then standard output's terminal, else 80), asked once per run."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, minus its start-up cost: argparse builds one
    for every add_argument() (to check the metavar), and each imports shutil
    (with bz2 and lzma) and asks the terminal's size -- ~5 ms of every
    `jmapsync` start for help that is rarely printed (issue 16)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _columns() - 2  # as HelpFormatter does with shutil's answer
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands' parsers (type(self)) use _Formatter too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _add_init_parser(sub: Any) -> None:
    """Register `init` (jmapsync/init.py) on the CLI's subparsers: here, so
    that every other command does not import init.py."""
    p = sub.add_parser(
        "init",
        help="write a config: asks on a terminal, or takes flags (for scripts)",
        description="Write a config file for one account: asks for what the flags do not"
        " give (on a terminal), connects and shows what `check` shows, writes the file"
        " (never replacing an account without asking), prints the next command.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--session-url", metavar="URL", help="the JMAP session URL ('fastmail')")
    where.add_argument(
        "--address",
        metavar="ADDRESS",
        help="your mail address: its domain's /.well-known/jmap (or Fastmail's) is used",
    )
    p.add_argument("--username", help="for Basic auth (default: the address)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("--token-command", metavar="COMMAND", help="prints a bearer token")
    secret.add_argument("--password-command", metavar="COMMAND", help="prints the password")
    secret.add_argument(
        "--password",
        metavar="PASSWORD",
        help="stored in the config file (mode 0600); '-' reads it from standard input"
        " (a password on the command line is visible to other users)",
    )
    p.add_argument("--maildir", metavar="PATH", help="default: ~/Mail/NAME")
    p.add_argument("--layout", choices=tuple(get_args(Layout)), help="default: verbatim")
    p.add_argument("--direction", choices=tuple(get_args(Direction)), help="default: two-way")
    p.add_argument(
        "--account", metavar="NAME", help="the account's name (default: from the address)"
    )
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,  # else it would hide the global -c
        metavar="PATH",
        help="the file to write (default: -c, else $XDG_CONFIG_HOME/jmapsync/config.ini)",
    )
    p.add_argument("--yes", action="store_true", help="ask nothing: defaults for what is not given")
    p.add_argument("--no-check", action="store_true", help="write without connecting first")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="jmapsync", description="Mirror JMAP mail accounts into local Maildir folders."
    )
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        help="config file (default: $XDG_CONFIG_HOME/jmapsync/config.ini)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default=None,
        help="default: log_format from the config, else auto (console on a TTY, else JSON)",
    )
    p.add_argument("--version", action="version", version=f"jmapsync {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sync", help="one pass over every (or the named) account")
    s.add_argument("--account", action="append", metavar="NAME", help="only this account")
    s.add_argument(
        "--force-deletes",
        action="store_true",
        help="let through deletions the guards refuse (vanished folders, emptied folders,"
        " more than max_deletes)",
    )
    s.add_argument(
        "--dry-run",
        action="store_true",
        help="print what the pass would do in each direction; change nothing (no file, no"
        " state, no server write)",
    )
    s.add_argument("--json", action="store_true", help="with --dry-run: machine-readable output")
    c = sub.add_parser("check", help="validate the config, connect, show what the server offers")
    c.add_argument("--account", action="append", metavar="NAME")
    st = sub.add_parser("status", help="per account: last sync, states, counts, pending work")
    st.add_argument("--account", action="append", metavar="NAME")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    v = sub.add_parser("verify", help="check every mirrored file against the state; change nothing")
    v.add_argument("--account", action="append", metavar="NAME")
    v.add_argument("--download", action="store_true", help="also hash every blob on the server")
    d = sub.add_parser(
        "daemon", help="keep every account mirrored: push, Maildir watcher, until SIGTERM"
    )
    d.add_argument("--account", action="append", metavar="NAME")
    _add_init_parser(sub)
    r = sub.add_parser("restore", help="upload every message of a Maildir tree into an account")
    r.add_argument("--account", required=True, metavar="NAME", help="the account to restore into")
    r.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="MAILDIR",
        help="the Maildir tree to read (default: the account's maildir)",
    )
    r.add_argument(
        "--layout",
        choices=("verbatim", "maildir++"),
        help="folder layout of MAILDIR (default: the account's layout)",
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be created and imported; send no write",
    )
    # sendmail's command line (-t -i -oi -f ADDR -oem ... -- RCPT): parsed by
    # send/args.py, so "+" is this parser's only (unused) option prefix.
    se = sub.add_parser(
        "send", help="a sendmail: send (or queue) stdin via JMAP", add_help=False, prefix_chars="+"
    )
    se.add_argument("sendmail_args", nargs=argparse.REMAINDER)
    return p
