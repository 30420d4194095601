#!/usr/bin/env python3
"""Generate the man pages from the sources they describe, so they cannot drift:

    man/jmapsync.1      from the argparse parser (jmapsync/cli.py build_parser:
                        the same text as --help) and cli.py's exit codes
    man/jmapsync.ini.5  from config.example.ini (its comments, key by key)

    python3 tools/manpages.py          rewrite both
    python3 tools/manpages.py --check  exit 1 if either differs (a test runs this)

The pages are committed and installed with the package (pyproject.toml
[tool.setuptools.data-files] -> <prefix>/share/man/man1 and man5, where man
finds them for a venv on $PATH and pipx links them into ~/.local/share/man).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jmapsync import __version__, cli  # noqa: E402

PAGES = {
    "jmapsync.1": "cli",
    "jmapsync.ini.5": "ini",
}
MAN_DIR = ROOT / "man"
EXAMPLE = ROOT / "config.example.ini"
_KEY = re.compile(r"^([a-z_]+) *= *(.*)$")
_COMMENTED_KEY = re.compile(r"^[;#] ?([a-z_]+) = (.*)$")


def esc(text: str) -> str:
    """Text for a roff line: backslashes and minus signs escaped, no control
    character at the start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def _th(name: str, section: int, title: str) -> list[str]:
    # No date: it would change the page on every build without a change of content.
    return [
        f'.TH {name.upper()} {section} "" "jmapsync {__version__}" "{title}"',
    ]


# -- jmapsync(1) ---------------------------------------------------------------


def _invocation(action: argparse.Action) -> str:
    names = ", ".join(bold(s) for s in action.option_strings)
    if action.nargs == 0:
        return names
    if action.metavar is not None:
        meta = str(action.metavar)
    elif action.choices is not None:
        meta = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        meta = action.dest.upper()
    return f"{names} {italic(meta)}"


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            continue
        if action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        yield ".TP"
        yield _invocation(action)
        yield esc(action.help or "")


def _subcommands(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _usage(parser: argparse.ArgumentParser) -> str:
    # COLUMNS is fixed so the page does not depend on the terminal it was made in.
    formatter = argparse.HelpFormatter(parser.prog, width=78)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip().removeprefix("usage: ")


def _exit_codes() -> list[str]:
    """The exit codes as cli.py's docstring states them."""
    doc = cli.__doc__ or ""
    text = " ".join(doc.split("Exit codes:", 1)[1].split()) if "Exit codes:" in doc else ""
    return [esc(text)] if text else []


def cli_page() -> str:
    parser = cli.build_parser()
    out = _th("jmapsync", 1, "User Commands")
    what = (parser.description or "").rstrip(".")
    out += [".SH NAME", "jmapsync \\- " + esc(what[:1].lower() + what[1:])]
    out += [".SH SYNOPSIS", ".nf", esc(_usage(parser))]
    for _name, _help, sub in _subcommands(parser):
        out.append(esc(_usage(sub)))
    out += [".fi", ".SH DESCRIPTION"]
    out.append(
        esc(
            "jmapsync mirrors JMAP mail accounts (RFC 8620, RFC 8621) into local Maildir"
            " folders, one pass at a time (sync) or continuously (daemon), two-way or as a"
            " backup. The accounts, their Maildirs and everything else are set in the"
            " configuration file, described in jmapsync.ini(5); jmapsync init writes one."
        )
    )
    out += [".SH OPTIONS", *_options(parser)]
    out.append(".SH COMMANDS")
    for name, help_text, sub in _subcommands(parser):
        out += [f'.SS "{esc("jmapsync " + name)}"', esc(sub.description or help_text)]
        out += list(_options(sub))
    out += [".SH EXIT STATUS", *_exit_codes()]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        bold("XDG_CONFIG_HOME"),
        esc("The default config file is $XDG_CONFIG_HOME/jmapsync/config.ini (~/.config/...)."),
        ".TP",
        bold("XDG_STATE_HOME"),
        esc("The default state_dir is $XDG_STATE_HOME/jmapsync (~/.local/state/jmapsync)."),
        ".PP",
        esc("post_sync_command runs with JMAPSYNC_* variables: see jmapsync.ini(5)."),
        ".SH FILES",
        ".TP",
        italic("~/.config/jmapsync/config.ini"),
        esc("the configuration, see jmapsync.ini(5)"),
        ".TP",
        italic("~/.local/state/jmapsync/"),
        esc("one SQLite state database and lock per account; daemon-status.json"),
        ".SH SEE ALSO",
        "\\fBjmapsync.ini\\fR(5), \\fBmbsync\\fR(1), \\fBnotmuch\\fR(1), \\fBmutt\\fR(1)",
    ]
    return "\n".join(out) + "\n"


# -- jmapsync.ini(5) -----------------------------------------------------------


def _paragraphs(lines: list[str]) -> list[str]:
    """Comment text -> roff: indented lines (tables, lists) stay as they are."""
    out: list[str] = []
    pre = False
    for line in lines:
        verbatim = line.startswith("  ")
        if verbatim and not pre:
            out.append(".nf")
        if pre and not verbatim:
            out.append(".fi")
        pre = verbatim
        if not line.strip():
            out.append(".sp" if not pre else "")
        else:
            out.append(esc(line))
    if pre:
        out.append(".fi")
    return out


def _comment_text(line: str) -> str:
    body = line[1:]
    return body[1:] if body.startswith(" ") else body


def ini_page(example: str) -> str:
    out = _th("jmapsync.ini", 5, "File Formats")
    out += [
        ".SH NAME",
        "jmapsync.ini \\- configuration file of jmapsync(1)",
        ".SH SYNOPSIS",
        italic("$XDG_CONFIG_HOME/jmapsync/config.ini") + " (" + italic("~/.config/...") + ")",
        ".SH DESCRIPTION",
    ]
    pending: list[str] = []  # comment lines not yet given to a key or a section
    after_key = False  # the previous line was a key: a commented key is its alternative
    sections = 0
    for raw in example.splitlines():
        line = raw.rstrip()
        if line.startswith("["):
            # The comments before the first section describe the file; those
            # before a later one, that section.
            kind = line.strip("[]").split()[0]
            title = "[account NAME] SECTIONS" if kind == "account" else f"THE {line} SECTION"
            if not sections:
                out += _paragraphs(pending)
            out += [f'.SH "{esc(title)}"']
            if sections:
                out += _paragraphs(pending)
            pending = []
            sections += 1
            after_key = False
            continue
        if not line:
            after_key = False
            continue
        if line.startswith((";", "#")):
            m = _COMMENTED_KEY.match(line)
            if m and after_key:
                out += [".IP", f"Or: {bold(m.group(1))} = {italic(m.group(2))}"]
                continue
            if m:
                out += [".TP", f"{bold(m.group(1))} = {italic(m.group(2))} (not set by default)"]
                out += _paragraphs(pending)
                pending = []
                continue
            pending.append(_comment_text(line))
            after_key = False
            continue
        k = _KEY.match(line)
        if k is None:  # pragma: no cover - the example parses as INI
            raise SystemExit(f"config.example.ini: cannot read {line!r}")
        out += [".TP", f"{bold(k.group(1))} = {italic(k.group(2))}", *_paragraphs(pending)]
        pending = []
        after_key = True
    if pending:
        out += _paragraphs(pending)
    out += [".SH SEE ALSO", "\\fBjmapsync\\fR(1)"]
    return "\n".join(out) + "\n"


def render() -> dict[str, str]:
    return {"jmapsync.1": cli_page(), "jmapsync.ini.5": ini_page(EXAMPLE.read_text())}


def main(argv: list[str]) -> int:
    pages = render()
    if "--check" in argv:
        stale = [n for n, text in pages.items() if _read(MAN_DIR / n) != text]
        if stale:
            print(
                f"man pages out of date: {', '.join(stale)}; run: python3 tools/manpages.py",
                file=sys.stderr,
            )
            return 1
        return 0
    MAN_DIR.mkdir(exist_ok=True)
    for name, text in pages.items():
        (MAN_DIR / name).write_text(text)
        print(f"wrote man/{name}")
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
