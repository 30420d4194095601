"""The command line as a user meets it: exit codes, one-line errors, check, status,
password_command, and no secret in any output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror


def test_sync_check_status_happy_path(account: Account, tmp_path: Path) -> None:
    account.append("INBOX", make_message(1), keywords=["$seen"])
    mirror = Mirror(account, tmp_path)
    done = mirror.cli("check")
    assert "urn:ietf:params:jmap:mail" in done.stdout
    assert "maxConcurrentRequests=" in done.stdout
    assert "push:" in done.stdout and "poll" in done.stdout
    assert mirror.cli("sync").returncode == 0
    assert_exact_mirror(mirror)
    status = mirror.cli("status").stdout
    assert "emails:         1" in status
    assert "files (disk):   1" in status
    data = json.loads(mirror.cli("status", "--json").stdout)
    assert data["test"]["counts"]["emails"] == 1
    assert data["test"]["email_state"]


def test_python_dash_m_and_console_script_are_the_same(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "jmapsync", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("jmapsync ")


def test_wrong_password_fails_with_one_line_and_keeps_other_accounts(
    account: Account, tmp_path: Path
) -> None:
    account.append("INBOX", make_message(1))
    good = Mirror(account, tmp_path / "good")
    cfg = good.config_path.read_text()
    cfg += (
        "[account bad]\n"
        f"session_url = {account.session_url}\n"
        f"username = {account.user}\n"
        "password = not-the-password-xyzzy\n"
        f"maildir = {tmp_path / 'bad-mail'}\n"
    )
    good.config_path.write_text(cfg)
    done = good.cli("-v", "sync", check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("jmapsync: ")]
    assert errors == [
        "jmapsync: account bad: session: the server refused the credentials (HTTP 401)"
    ]
    assert_exact_mirror(good)  # the good account synced regardless
    for secret in ("not-the-password-xyzzy", account.password + "\n"):
        assert secret not in done.stderr + done.stdout


def test_password_command_and_secret_never_logged(account: Account, tmp_path: Path) -> None:
    pw = "Zq9-distinctive-Pw"
    user = account.user + "pw"
    account.server.add_user(user, password=pw)
    other = Account.of(account.server, user, pw)
    other.append("INBOX", make_message(1))
    mirror = Mirror(other, tmp_path)
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\necho {pw}\n")
    script.chmod(0o700)
    cfg = mirror.config_path.read_text().replace(f"password = {pw}", f"password_command = {script}")
    mirror.config_path.write_text(cfg)
    done = mirror.cli("-vv", "--log-format", "json", "sync")
    assert done.returncode == 0
    assert_exact_mirror(mirror)
    assert [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert pw not in done.stderr + done.stdout
    db_bytes = b"".join(p.read_bytes() for p in mirror.state_dir.iterdir() if p.is_file())
    assert pw.encode() not in db_bytes
    # and a failing sync with the wrong one does not echo it either
    script.write_text("#!/bin/sh\necho Wrong-Pw-Zq9\n")
    failed = mirror.cli("-vv", "sync", check=False)
    assert failed.returncode == 1 and "Wrong-Pw-Zq9" not in failed.stderr + failed.stdout


def test_failing_password_command_is_a_clear_error(account: Account, tmp_path: Path) -> None:
    mirror = Mirror(account, tmp_path)
    cfg = mirror.config_path.read_text().replace(
        f"password = {account.password}", "password_command = false"
    )
    mirror.config_path.write_text(cfg)
    done = mirror.cli("sync", check=False)
    assert done.returncode == 1
    assert "password_command exited with status 1" in done.stderr


def test_bad_config_exits_2_with_the_reason(tmp_path: Path) -> None:
    import subprocess

    cfg = tmp_path / "c.ini"
    cfg.write_text(
        "[account x]\nsession_url = ftp://nope\nmaildir = m\npassword = p\nusername = u\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(cfg), "sync"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "session_url must start with http:// or https://" in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "jmapsync", "-c", str(tmp_path / "nope.ini"), "sync"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and "config file not found" in missing.stderr


def test_well_known_discovery_from_a_bare_host_url(account: Account, tmp_path: Path) -> None:
    """session_url = http://host:port follows /.well-known/jmap and its 301."""
    account.append("INBOX", make_message(1))
    mirror = Mirror(account, tmp_path)
    bare = account.session_url.split("/jmap/")[0]
    mirror.config_path.write_text(mirror.config_path.read_text().replace(account.session_url, bare))
    mirror.cli("sync")
    assert_exact_mirror(mirror)


def test_password_changed_after_a_sync_is_a_clear_error(account: Account, tmp_path: Path) -> None:
    """With the session cached from the last run, the API request itself meets the
    401; the client then fetches the session once more (a moved apiUrl would
    explain a 401 too), which names the real cause."""
    account.append("INBOX", make_message(1))
    mirror = Mirror(account, tmp_path)
    mirror.cli("sync")
    mirror.set("password", "not-the-password-xyzzy")
    done = mirror.cli("sync", check=False)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("jmapsync: ")]
    assert errors == [
        "jmapsync: account test: session: the server refused the credentials (HTTP 401)"
    ]
    assert "not-the-password-xyzzy" not in done.stderr
