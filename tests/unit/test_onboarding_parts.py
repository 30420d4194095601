"""What a new user meets, without a server: the closing sentence of a pass,
Maildir directory modes, the warning about a readable password file, the
config file editing and the discovery rules of `jmapsync init`, the man pages."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from jmapsync import cli, configfile, init
from jmapsync.config import load
from jmapsync.configfile import Section
from jmapsync.errors import ConfigError
from jmapsync.maildir.store import MaildirStore
from jmapsync.summary import sentence
from jmapsync.sync.report import SyncReport

ROOT = Path(__file__).resolve().parents[2]

# -- the sentence at the end of a pass --------------------------------------------


@pytest.mark.parametrize(
    ("report", "said"),
    [
        (
            SyncReport(
                "alice", downloaded=2000, renamed=15, moved=3, bytes=60_000_000, seconds=5.6
            ),
            "alice: 2000 new, 3 moved, 12 flags changed (60 MB) in 5.6 s",
        ),
        (SyncReport("alice", mode="unchanged", seconds=0.08), "alice: nothing new (0.1 s)"),
        (
            SyncReport("bob", renamed=1, pushed=1, imported=2, seconds=0.42),
            "bob: 1 flag changed, 1 change sent, 2 uploaded in 0.4 s",
        ),
        (
            SyncReport("c", removed=4, folders_created=1, destroyed=1, seconds=61.0),
            "c: 4 removed, 1 folder created, 1 deleted on the server in 1 min 1 s",
        ),
        (
            SyncReport("d", warnings=["x", "y"], seconds=0.2),
            "d: nothing new (0.2 s), 2 warnings (see the log)",
        ),
        (SyncReport("e", downloaded=1, bytes=2048, seconds=1), "e: 1 new (2.0 kB) in 1.0 s"),
    ],
)
def test_a_pass_ends_with_one_sentence(report: SyncReport, said: str) -> None:
    assert sentence(report) == said


# -- Maildir directory modes ------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, _ in os.walk(root):
        for d in dirnames:
            p = Path(dirpath) / d
            out[str(p.relative_to(root))] = stat.S_IMODE(p.stat().st_mode)
    return out


def test_maildir_directories_are_created_0700_whatever_the_umask(
    tmp_path: Path, umask_022: None
) -> None:
    os.umask(0)  # the loosest: mkdir's own mode is all that stands
    store = MaildirStore(tmp_path / "missing-parent" / "mail")
    store.ensure_root()
    store.ensure_folder("INBOX")
    store.ensure_folder("Work/Projects/Alpha")
    store.ensure_folder("")  # maildir++ inbox: cur/new/tmp in the root itself
    assert stat.S_IMODE((tmp_path / "missing-parent").stat().st_mode) == 0o700
    modes = _modes(store.root)
    assert set(modes.values()) == {0o700}, modes
    assert "Work/Projects/Alpha/tmp" in modes and "Work/cur" not in modes

    store.move_folder("Work/Projects/Alpha", "Archive/2024/Alpha")
    modes = _modes(store.root)
    assert {modes[k] for k in ("Archive", "Archive/2024", "Archive/2024/Alpha/cur")} == {0o700}


def test_existing_directories_keep_their_mode(tmp_path: Path, umask_022: None) -> None:
    root = tmp_path / "mail"
    (root / "INBOX").mkdir(parents=True, mode=0o755)
    os.chmod(root, 0o750)  # noqa: S103 - the user's own choice, to be kept
    store = MaildirStore(root)
    store.ensure_root()
    store.ensure_folder("INBOX")
    assert stat.S_IMODE(root.stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "INBOX").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "INBOX" / "cur").stat().st_mode) == 0o700


# -- a readable config with a password ---------------------------------------------


def _account_text(tmp_path: Path, secret: str) -> str:
    return (
        f"[jmapsync]\nstate_dir = {tmp_path / 's'}\n[account a]\n"
        f"session_url = https://h.example\nusername = u\n{secret}\nmaildir = {tmp_path / 'm'}\n"
    )


@pytest.mark.parametrize(
    ("secret", "mode", "warned"),
    [
        ("password = hunter2", 0o644, True),
        ("password = hunter2", 0o640, True),
        ("password = hunter2", 0o600, False),
        ("password = hunter2", 0o400, False),
        ("password_command = pass show x", 0o644, False),  # nothing secret in the file
    ],
)
def test_a_readable_file_with_a_password_is_warned_about_with_the_fix(
    tmp_path: Path, secret: str, mode: int, warned: bool
) -> None:
    path = tmp_path / "my config.ini"
    path.write_text(_account_text(tmp_path, secret))
    path.chmod(mode)
    with structlog.testing.capture_logs() as logs:
        load(path)
    found = [e for e in logs if e["event"] == "config-readable-by-others"]
    if not warned:
        assert found == []
        return
    [event] = found
    assert event["log_level"] == "warning"
    assert event["path"] == str(path)
    assert event["fix"] == f"chmod 600 '{path}'"
    assert "hunter2" not in str(event)


def test_the_warning_reaches_the_terminal_from_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(_account_text(tmp_path, "password = hunter2"))
    path.chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(path), "--log-format", "console", "status"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert f"chmod 600 {path}" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


# -- config file editing (init) ----------------------------------------------------


def _section(
    name: str = "work",
    secret: str = "pass show work",  # noqa: S107 - a command, not a password
    key: str = "password_command",
) -> Section:
    return Section(
        name,
        "https://jmap.example/s",
        "me@example.org",
        key,
        secret,
        "~/Mail/" + name,
        "verbatim",
        "two-way",
    )


EXISTING = """; my mail
[jmapsync]
state_dir = /tmp/x   ; kept

[account home]
session_url = https://h.example
username = me
password_command = pass show home
maildir = /tmp/home

; the work account, for the office
[account work]
session_url = https://old.example
username = old
password = old
maildir = /tmp/work-old
; a comment about what follows
[account z]
session_url = https://z.example
username = z
password_command = z
maildir = /tmp/z
"""


def test_an_account_is_added_without_touching_the_rest() -> None:
    text = configfile.merged(EXISTING.replace("[account work]", "[account other]"), _section())
    assert text.startswith(EXISTING.replace("[account work]", "[account other]"))
    assert text.endswith("\n\n" + _section().text())


def test_an_account_replaced_keeps_the_comments_around_it() -> None:
    text = configfile.merged(EXISTING, _section())
    assert "; the work account, for the office\n[account work]\n" in text
    assert "https://old.example" not in text and "password = old" not in text
    assert "maildir = ~/Mail/work\nlayout = verbatim\ndirection = two-way\n\n; a comment" in text
    assert "[account home]" in text and "[account z]" in text and "; kept" in text


def test_a_new_file_gets_a_header() -> None:
    text = configfile.merged(None, _section())
    assert text.startswith(configfile.HEADER) and text.endswith(_section().text())


@pytest.mark.parametrize("secret", ["abc ;def", "abc #def", " lead", "trail ", "two\nlines"])
def test_a_password_the_ini_format_cannot_hold_is_refused(tmp_path: Path, secret: str) -> None:
    section = _section(key="password", secret=secret)
    text = configfile.merged(None, section)
    with pytest.raises(ConfigError):
        configfile.validated(text, tmp_path / "c.ini", section)


def test_a_password_with_odd_characters_that_reads_back_is_fine(tmp_path: Path) -> None:
    section = _section(key="password", secret="p;a#s%s$w{o}r\\d=1")
    config, account = configfile.validated(
        configfile.merged(None, section), tmp_path / "c.ini", section
    )
    assert account.credentials.password is not None
    assert account.credentials.password.reveal() == "p;a#s%s$w{o}r\\d=1"
    assert [a.name for a in config.accounts] == ["work"]


def test_write_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.ini"
    configfile.write(path, "x\n", private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o640)
    configfile.write(path, "y\n", private=False)  # no password added: the mode stays
    assert (path.read_text(), stat.S_IMODE(path.stat().st_mode)) == ("y\n", 0o640)
    configfile.write(path, "z\n", private=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.ini"]


# -- init's discovery and names ----------------------------------------------------


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("me@fastmail.com", init.FASTMAIL_SESSION_URL),
        ("Me@FastMail.FM", init.FASTMAIL_SESSION_URL),
        ("me@example.org", "https://example.org/.well-known/jmap"),
        ("me@mail.example.org.", "https://mail.example.org/.well-known/jmap"),
    ],
)
def test_an_address_gives_fastmail_or_the_well_known_url(address: str, url: str) -> None:
    assert init.session_url_for(address) == url


@pytest.mark.parametrize(
    ("address", "url", "name"),
    [
        ("alice.b@example.org", "https://example.org/.well-known/jmap", "alice.b"),
        (None, init.FASTMAIL_SESSION_URL, "fastmail"),
        (None, "https://jmap.example.org/session", "example"),
        (None, "http://127.0.0.1:8080/jmap/", "mail"),
        ("ünï@x.org", "https://x.org/", "n"),
    ],
)
def test_default_account_names(address: str | None, url: str, name: str) -> None:
    assert init._default_name(address, url) == name


def test_without_a_terminal_a_missing_value_names_its_flag() -> None:
    asker = init.Asker(interactive=False)
    assert asker.text("Maildir", "~/Mail/x", "--maildir") == "~/Mail/x"
    with pytest.raises(ConfigError, match="--username is needed"):
        asker.text("User name", None, "--username")
    with pytest.raises(ConfigError, match="--password is needed"):
        asker.secret("Password", "--password")


# -- man pages ---------------------------------------------------------------------


def test_man_pages_are_what_the_parser_and_the_example_config_generate() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "manpages.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_every_command_flag_and_key_is_in_the_man_pages() -> None:
    page1 = (ROOT / "man" / "jmapsync.1").read_text().replace("\\-", "-")
    page5 = (ROOT / "man" / "jmapsync.ini.5").read_text().replace("\\-", "-")
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        assert f'.SS "jmapsync {name}"' in page1
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert option in page1, (name, option)
    for line in (ROOT / "config.example.ini").read_text().splitlines():
        key = line.lstrip("; ").split(" = ")[0]
        if " = " in line and key.isidentifier() and key.islower():
            assert f"\\fB{key}\\fR" in page5, key


@pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed")
@pytest.mark.parametrize("page", ["jmapsync.1", "jmapsync.ini.5"])
def test_man_renders_the_pages_without_warnings(page: str) -> None:
    done = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", str(ROOT / "man" / page)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "MANPAGER": "cat"},
    )
    assert done.returncode == 0
    assert done.stderr == ""
    assert "jmapsync" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("man") is None, reason="man (man-db) is not installed")
def test_pip_install_puts_the_man_pages_where_man_finds_them(tmp_path: Path) -> None:
    """`pip install .` into a prefix (as into a venv): <prefix>/share/man/man1
    and man5; man, with <prefix>/bin on $PATH and no MANPATH, finds both."""
    prefix = tmp_path / "prefix"
    # --ignore-installed: else pip first uninstalls the test environment's own
    # (editable) jmapsync, and its `jmapsync` command is gone for what follows.
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed"),
            *("--prefix", str(prefix), "."),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' leftovers in the checkout
    assert (prefix / "bin" / "jmapsync").exists()
    env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
    env["PATH"] = f"{prefix / 'bin'}:/usr/bin:/bin"
    found = subprocess.run(
        ["man", "-w", "jmapsync", "jmapsync.ini"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    assert found == [
        str(prefix / "share" / "man" / "man1" / "jmapsync.1"),
        str(prefix / "share" / "man" / "man5" / "jmapsync.ini.5"),
    ]
    installed = (prefix / "share" / "man" / "man1" / "jmapsync.1").read_text()
    assert installed == (ROOT / "man" / "jmapsync.1").read_text()


@pytest.mark.parametrize("columns", ["50", "120", ""])
def test_help_is_what_argparse_would_print(columns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """parser._Formatter asks the width as shutil does ($COLUMNS first), once
    per run, instead of importing shutil for every option (start-up): the
    help reads the same as with argparse's own formatter."""
    from jmapsync import parser

    def helps() -> list[str]:
        top = parser.build_parser()
        subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
        return [top.format_help(), subs.choices["sync"].format_help()]

    monkeypatch.setenv("COLUMNS", columns)
    parser._columns.cache_clear()
    try:
        ours = helps()
        monkeypatch.setattr(parser, "_Formatter", argparse.HelpFormatter)
        theirs = helps()
    finally:
        parser._columns.cache_clear()
    assert ours == theirs
