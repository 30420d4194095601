"""`jmapsync init` against the real Cyrus: by questions on a pseudo-terminal
(pexpect), and by flags as a script calls it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pexpect
from mailtools import Account, make_message
from mirror import ROOT, message_files

from jmapsync import init


def _env(tmp_path: Path) -> dict[str, str]:
    """A home of its own: ~ and the XDG defaults point into tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".state"),
    }


def _spawn(tmp_path: Path, *args: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "jmapsync", *args],
        cwd=str(ROOT),
        env=_env(tmp_path),
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    child.logfile_read = (tmp_path / "pty.log").open("a")
    return child


def _done(child: pexpect.spawn) -> int:
    """Wait for the end; the exit status."""
    child.expect(pexpect.EOF)
    child.close()
    child.logfile_read.close()
    return int(child.exitstatus)


def _run(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """jmapsync as a script runs it: no terminal."""
    return subprocess.run(
        [sys.executable, "-m", "jmapsync", *args],
        cwd=ROOT,
        env=_env(tmp_path),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )


def _check_lines(text: str) -> list[str]:
    """The lines `check` prints about the server (session .. maildir)."""
    lines = [x.rstrip() for x in text.replace("\r\n", "\n").splitlines()]
    start = next(i for i, x in enumerate(lines) if x.startswith("  session:"))
    end = next(i for i, x in enumerate(lines) if x.startswith("  maildir:"))
    return lines[start : end + 1]


def test_interactive_from_an_address_to_a_first_sync(account: Account, tmp_path: Path) -> None:
    """No JMAP at the address's domain: init says so and asks for the session
    URL; the password is typed without echo and stored 0600; what it prints
    of the server is what `check` prints; the next command it names works."""
    account.import_message(make_message(1))
    child = _spawn(tmp_path, "init")
    child.expect_exact("Mail address or JMAP session URL ('fastmail' for Fastmail): ")
    child.sendline("someone@localhost")
    child.expect_exact("no JMAP server answered at https://localhost/.well-known/jmap")
    child.expect_exact("JMAP session URL (your provider's documentation names it): ")
    child.sendline(account.session_url)
    child.expect_exact("How does jmapsync get your password or token?")
    child.expect_exact("Choose 1-3 or a name [password_command]: ")
    child.sendline("3")
    child.expect_exact("Password (not shown): ")
    child.sendline(account.password)
    child.expect_exact("User name [someone@localhost]: ")
    child.sendline(account.user)
    child.expect_exact("Account name (names the state file) [someone]: ")
    child.sendline("")
    child.expect_exact("Maildir [~/Mail/someone]: ")
    child.sendline("")
    child.expect_exact("Folder layout:")
    child.expect_exact("Choose 1-2 or a name [verbatim]: ")
    child.sendline("")
    child.expect_exact("Direction:")
    child.expect_exact("Choose 1-3 or a name [two-way]: ")  # two-way, pull, archive
    child.sendline("pull")
    child.expect_exact("  maildir:      ")
    config = tmp_path / "home" / ".config" / "jmapsync" / "config.ini"
    child.expect_exact(f"Write {config}? [Y/n]: ")
    child.sendline("y")
    child.expect_exact(f"wrote {config} (mode 0600)")
    child.expect_exact("next: jmapsync sync   (then `jmapsync daemon`")
    assert _done(child) == 0
    transcript = (tmp_path / "pty.log").read_text()
    assert account.password not in transcript.replace(f"password = {account.password}", "")

    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert text.startswith("; jmapsync configuration, written by `jmapsync init`.")
    assert (
        f"[account someone]\nsession_url = {account.session_url}\nusername = {account.user}\n"
        f"password = {account.password}\nmaildir = ~/Mail/someone\nlayout = verbatim\n"
        "direction = pull\n"
    ) in text

    check = _run(tmp_path, "check")
    assert check.returncode == 0
    assert _check_lines(transcript) == _check_lines(check.stdout)
    assert _run(tmp_path, "sync").returncode == 0
    assert len(message_files(tmp_path / "home" / "Mail" / "someone")) == 1


def test_interactive_keeps_an_existing_account_and_retries_a_wrong_password(
    account: Account, tmp_path: Path
) -> None:
    config = tmp_path / "my.ini"
    existing = (
        "; my accounts\n[jmapsync]\nstate_dir = " + str(tmp_path / "state") + "\n\n"
        "[account home]   ; the old one\n"
        f"session_url = {account.session_url}\nusername = {account.user}\n"
        f"password_command = echo {account.password}\nmaildir = {tmp_path / 'home-mail'}\n"
    )
    config.write_text(existing)
    config.chmod(0o600)
    child = _spawn(tmp_path, "-c", str(config), "init", "--session-url", account.session_url)
    child.expect_exact("Choose 1-3 or a name [password_command]: ")
    child.sendline("password")
    child.expect_exact("Password (not shown): ")
    child.sendline("Not-The-Password-123")
    child.expect_exact("User name: ")
    child.sendline(account.user)
    child.expect_exact("Account name (names the state file) [mail]: ")
    child.sendline("home")
    child.expect_exact(f"{config} has [account home]. Replace it? [y/N]: ")
    child.sendline("")
    child.expect_exact("Another account name: ")
    child.sendline("work")
    child.expect_exact("Maildir [~/Mail/work]: ")
    child.sendline(str(tmp_path / "work-mail"))
    child.expect_exact("[verbatim]: ")
    child.sendline("maildir++")
    child.expect_exact("[two-way]: ")
    child.sendline("")
    child.expect_exact("  FAILED: session: the server refused the credentials (HTTP 401)")
    child.expect_exact("Change the answers and try again? [Y/n]: ")
    child.sendline("")
    # Everything again, the last answers as defaults (the password excepted).
    child.expect_exact(
        f"Mail address or JMAP session URL ('fastmail' for Fastmail) [{account.session_url}]: "
    )
    child.sendline("")
    child.expect_exact("Choose 1-3 or a name [password]: ")
    child.sendline("")
    child.expect_exact("Password (not shown): ")
    child.sendline(account.password)
    child.expect_exact(f"User name [{account.user}]: ")
    child.sendline("")
    child.expect_exact("Account name (names the state file) [work]: ")
    child.sendline("")
    child.expect_exact(f"Maildir [{tmp_path / 'work-mail'}]: ")
    child.sendline("")
    child.expect_exact("[maildir++]: ")
    child.sendline("")
    child.expect_exact("[two-way]: ")
    child.sendline("")
    child.expect_exact("  capabilities: ")
    child.expect_exact(f"Add [account work] in {config}? [Y/n]: ")
    child.sendline("y")
    child.expect_exact(f"wrote [account work] in {config} (mode 0600)")
    child.expect_exact(f"next: jmapsync -c {config} sync --account work")
    assert _done(child) == 0
    text = config.read_text()
    assert text.startswith(existing)  # the old account, its comments, untouched
    assert text.endswith(
        f"\n[account work]\nsession_url = {account.session_url}\nusername = {account.user}\n"
        f"password = {account.password}\nmaildir = {tmp_path / 'work-mail'}\n"
        "layout = maildir++\ndirection = two-way\n"
    )
    assert "Not-The-Password-123" not in text
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_interactive_refusing_to_write_leaves_nothing(account: Account, tmp_path: Path) -> None:
    config = tmp_path / "c.ini"
    child = _spawn(
        tmp_path,
        "init",
        "--config",
        str(config),
        "--session-url",
        account.session_url,
        "--username",
        account.user,
        "--password-command",
        "false",
        "--maildir",
        str(tmp_path / "m"),
        "--layout",
        "verbatim",
        "--direction",
        "pull",
        "--account",
        "x",
    )
    child.expect_exact("  FAILED: password_command exited with status 1")
    child.expect_exact("Change the answers and try again? [Y/n]: ")
    child.sendline("n")
    child.expect_exact(f"Write {config} anyway? [y/N]: ")
    child.sendline("")
    child.expect_exact("nothing written")
    assert _done(child) == 1
    assert not config.exists()


def _flags(account: Account, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "init",
        "--config",
        str(tmp_path / "c.ini"),
        "--session-url",
        account.session_url,
        "--username",
        account.user,
        "--maildir",
        str(tmp_path / "mail"),
        *extra,
    ]


def test_flags_write_a_config_that_syncs(account: Account, tmp_path: Path) -> None:
    account.import_message(make_message(1))
    cmd = tmp_path / "pw"
    cmd.write_text(f"#!/bin/sh\necho {account.password}\n")
    cmd.chmod(0o700)
    done = _run(
        tmp_path,
        *_flags(account, tmp_path, "--password-command", str(cmd), "--layout", "maildir++"),
        "--direction",
        "pull",
        "--account",
        "acc",
    )
    assert done.returncode == 0, done.stderr
    config = tmp_path / "c.ini"
    assert f"account acc: {account.session_url}\n  session:" in done.stdout
    assert f"wrote {config} (mode 0600)\nnext: jmapsync -c {config} sync   (" in done.stdout
    assert config.read_text().endswith(
        f"[account acc]\nsession_url = {account.session_url}\nusername = {account.user}\n"
        f"password_command = {cmd}\nmaildir = {tmp_path / 'mail'}\nlayout = maildir++\n"
        "direction = pull\n"
    )
    assert _run(tmp_path, "-c", str(config), "sync").returncode == 0
    assert len(message_files(tmp_path / "mail")) == 1  # maildir++: INBOX is the root

    # The same name again: refused, the file unchanged.
    before = config.read_bytes()
    again = _run(
        tmp_path, *_flags(account, tmp_path, "--password-command", str(cmd)), "--account", "acc"
    )
    assert again.returncode == 2
    assert f"jmapsync: init: {config} already has [account acc]" in again.stderr
    assert config.read_bytes() == before


def test_flags_errors_write_nothing(account: Account, tmp_path: Path) -> None:
    config = tmp_path / "c.ini"
    no_user = _run(
        tmp_path,
        "init",
        "--config",
        str(config),
        "--session-url",
        account.session_url,
        "--password",
        "x",
    )
    assert no_user.returncode == 2
    assert "jmapsync: init: --username is needed" in no_user.stderr

    no_secret = _run(tmp_path, *_flags(account, tmp_path))
    assert no_secret.returncode == 2 and "--password is needed" in no_secret.stderr

    wrong = _run(tmp_path, *_flags(account, tmp_path, "--password", "Not-It-4711"))
    assert wrong.returncode == 1
    assert "FAILED: session: the server refused the credentials (HTTP 401)" in wrong.stdout
    assert "init: the connection failed; nothing written" in wrong.stderr
    assert "Not-It-4711" not in wrong.stdout + wrong.stderr

    nowhere = _run(
        tmp_path, "init", "--config", str(config), "--address", "me@localhost", "--password", "x"
    )
    assert nowhere.returncode == 2
    assert "no JMAP server answered at https://localhost/.well-known/jmap" in nowhere.stdout
    assert "--session-url is needed" in nowhere.stderr
    assert not config.exists()


def test_password_from_standard_input_and_no_check(account: Account, tmp_path: Path) -> None:
    config = tmp_path / "c.ini"
    done = _run(
        tmp_path, *_flags(account, tmp_path, "--password", "-"), stdin=account.password + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert f"password = {account.password}\n" in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    offline = tmp_path / "offline.ini"
    done = _run(
        tmp_path,
        "init",
        "--config",
        str(offline),
        "--session-url",
        "https://unreachable.invalid/jmap",
        "--token-command",
        "pass show t",
        "--no-check",
        "--account",
        "later",
    )
    assert done.returncode == 0, done.stderr
    assert "token_command = pass show t\nmaildir = ~/Mail/later\n" in offline.read_text()


def test_the_probe_recognises_a_jmap_server_without_credentials(account: Account) -> None:
    base = account.session_url.split("/jmap/")[0]
    assert init.probe(f"{base}/.well-known/jmap") is None  # Cyrus: 301 to /jmap
    assert init.probe(account.session_url) is None  # 401 without credentials
    assert init.probe(f"{base}/no-such-thing") == "HTTP 404"
