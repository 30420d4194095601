"""The mail programs themselves use `jmapsync send` as their sendmail.

- a REAL mutt (Debian's mutt 2.2) in tmux with `set sendmail="... jmapsync
  send"` composes a message (To, Cc, Bcc, Subject typed at mutt's prompts, the
  body written by an $editor script) and sends it, passing the flags it
  passes for $use_envelope_from, $dsn_notify and $dsn_return; the server's
  sendmail sink has it, without the Bcc field, with that envelope; after
  `jmapsync sync` mutt itself shows it in the mirror's Sent folder;
- git send-email (Debian's git-email) with `--sendmail-cmd="jmapsync send"`
  sends a patch series in order.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mailtools import Account
from mirror import ROOT, Mirror, message_files
from sendtools import sink
from test_mutt import MUTTRC, Screen, _apt_install, listing

pytestmark = pytest.mark.slow

SEND_RC = """\
set sendmail="{sendmail}"
set from="alice@example.com"
set realname="Alice Example"
set use_from=yes
set hostname="example.com"
set editor="{editor}"
set edit_headers=no
set askcc=no
set askbcc=no
set copy=no
set sendmail_wait=0
set send_charset="utf-8"
# so that mutt passes -f, -N and -R too (mutt_invoke_sendmail)
set use_envelope_from=yes
set envelope_from_address="bounces@example.com"
set dsn_notify="failure,delay"
set dsn_return="hdrs"
"""


@pytest.fixture(scope="module")
def mutt_tools() -> None:
    missing = [p for p in ("mutt", "tmux") if not shutil.which(p)]
    if missing:
        _apt_install(*missing)
    missing = [p for p in ("mutt", "tmux") if not shutil.which(p)]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (Debian: apt-get install mutt tmux)")


@pytest.fixture
def screens() -> Iterator[list[Screen]]:
    made: list[Screen] = []
    try:
        yield made
    finally:
        for s in made:
            s.close()


def prompt(label: str) -> Callable[[str], bool]:
    """mutt's prompt line (the last one on the screen) starts with `label`."""

    def probe(screen: str) -> bool:
        lines = [line for line in screen.splitlines() if line.strip()]
        return bool(lines) and lines[-1].startswith(label)

    return probe


def jmapsync_command(mirror: Mirror) -> str:
    """The installed `jmapsync` script, as a user would set it.  Not `python -m`:
    mutt runs $sendmail with argv[0] = the bare program name, and a venv's
    python found by that name on $PATH is not the venv's.  mutt splits
    $sendmail at spaces and cannot quote: no spaces allowed."""
    script = Path(sys.executable).parent / "jmapsync"
    assert script.exists(), "jmapsync is not installed in the test environment (pip install -e .)"
    cmd = f"{script} -c {mirror.config_path} send"
    assert " " not in str(script) and " " not in str(mirror.config_path)
    return cmd


def test_real_mutt_composes_and_sends_through_jmapsync_send(
    mutt_tools: None, account: Account, tmp_path: Path, screens: list[Screen]
) -> None:
    mirror = Mirror(account, tmp_path / "m", direction="two-way")
    mirror.sync()
    subject = f"Hello from mutt {account.user}"
    editor = tmp_path / "editor.sh"
    editor.write_text(
        "#!/bin/sh\n"
        "printf 'Hi Bob,\\n\\nsent by mutt through jmapsync send.\\n.\\nthe end\\n' >> \"$1\"\n"
    )
    editor.chmod(0o755)
    rc = tmp_path / "muttrc"
    rc.write_text(
        MUTTRC.format(folder=mirror.maildir)
        + SEND_RC.format(sendmail=jmapsync_command(mirror), editor=editor)
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "TERM": "xterm",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "MAIL": str(mirror.maildir / "INBOX"),
    }
    screen = Screen(lambda: listing(mirror.maildir))
    screens.append(screen)
    screen.start(["mutt", "-n", "-F", str(rc), "-f", str(mirror.maildir / "INBOX")], env)
    screen.wait("the index", lambda s: "Mutt:" in s or "Mutt" in s)

    screen.keys("m")  # compose
    screen.wait("the To prompt", prompt("To:"))
    screen.type("Bob <bob@example.org>")
    screen.keys("Enter")
    screen.wait("the Subject prompt", prompt("Subject:"))
    screen.type(subject)
    screen.keys("Enter")
    screen.wait("the compose menu", lambda s: "Compose" in s and "bob@example.org" in s)
    screen.keys("c")  # Cc
    screen.wait("the Cc prompt", prompt("Cc:"))
    screen.type("carol@example.org")
    screen.keys("Enter")
    screen.keys("b")  # Bcc
    screen.wait("the Bcc prompt", prompt("Bcc:"))
    screen.type("hidden@example.net")
    screen.keys("Enter")
    screen.wait("Bcc in the compose menu", lambda s: "hidden@example.net" in s)
    screen.keys("y")  # send: mutt runs $sendmail with the message on stdin
    screen.wait("mutt's 'Mail sent.'", lambda s: "Mail sent." in s, timeout=60)

    [left] = sink(account.server, subject=subject)
    assert left.mail_from == "bounces@example.com"  # mutt's -f
    assert "RET=HDRS" in left.mail_params  # mutt's -R
    assert set(left.rcpt_params) == {"NOTIFY=FAILURE,DELAY"}  # mutt's -N
    assert left.rcpt_to == ("bob@example.org", "carol@example.org", "hidden@example.net")
    head, _, body = left.data.partition(b"\r\n\r\n")
    assert b"From: Alice Example <alice@example.com>\r\n" in head + b"\r\n"
    assert b"\r\nTo: Bob <bob@example.org>" in head
    assert b"\r\nCc: carol@example.org" in head
    assert b"Bcc" not in head and b"hidden" not in left.data
    assert body == b"Hi Bob,\r\n\r\nsent by mutt through jmapsync send.\r\n.\r\nthe end\r\n"

    # the mirror: after a sync, mutt shows the message in =Sent
    mirror.cli("sync")
    sent = [r for r in message_files(mirror.maildir) if r.startswith("Sent/cur/")]
    assert len(sent) == 1 and sent[0].endswith(":2,S"), sent
    screen.keys("c")  # change folder
    screen.wait("the folder prompt", lambda s: "Open mailbox" in s or "Change to" in s)
    screen.keys("C-u")
    screen.type("=Sent")
    screen.keys("Enter")
    screen.wait("the message in =Sent", lambda s: subject in s)
    screen.keys("q")


def _git(repo: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


@pytest.fixture(scope="module")
def git_email() -> None:
    def have() -> bool:
        where = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=False)
        # Mail::Address is only a Recommends of Debian's git-email, but it dies without it.
        perl = subprocess.run(["perl", "-MMail::Address", "-e1"], capture_output=True, check=False)
        return (Path(where.stdout.strip()) / "git-send-email").exists() and perl.returncode == 0

    if not shutil.which("git") or not shutil.which("perl"):
        pytest.skip("needs git and perl (Debian: apt-get install git perl)")
    if not have():
        _apt_install("git-email", "libmailtools-perl")
    if not have():
        pytest.skip("needs git send-email (Debian: apt-get install git-email libmailtools-perl)")


def test_git_send_email_with_sendmail_cmd_sends_a_series_in_order(
    git_email: None, account: Account, tmp_path: Path
) -> None:
    mirror = Mirror(account, tmp_path / "m")
    repo = tmp_path / "repo"
    env = os.environ | {
        "GIT_AUTHOR_NAME": "Alice Example",
        "GIT_AUTHOR_EMAIL": "alice@example.com",
        "GIT_COMMITTER_NAME": "Alice Example",
        "GIT_COMMITTER_EMAIL": "alice@example.com",
        "HOME": str(tmp_path),
    }
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    for i in (1, 2):
        (repo / f"file{i}.txt").write_text(f"change {i} by {account.user}\n")
        _git(repo, "add", ".", env=env)
        _git(repo, "commit", "-q", "-m", f"patch {i} of {account.user}", env=env)
    patches = _git(repo, "format-patch", "-o", str(tmp_path / "out"), "--root", env=env).split()
    cmd = shlex.join([sys.executable, "-m", "jmapsync", "-c", str(mirror.config_path), "send"])
    done = subprocess.run(
        [
            "git", "send-email", "--confirm=never", "--no-chain-reply-to", "--quiet",
            f"--sendmail-cmd={cmd}", "--from=Alice Example <alice@example.com>",
            "--to=list@example.org", "--bcc=archive@example.net", "--suppress-cc=all",
            *patches,
        ],
        capture_output=True, text=True, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    subjects = [f"[PATCH {i}/2] patch {i} of {account.user}" for i in (1, 2)]
    left = [sink(account.server, subject=s) for s in subjects]
    assert [len(x) for x in left] == [1, 1], left
    for [one] in left:
        assert one.mail_from == "alice@example.com"
        assert one.rcpt_to == ("list@example.org", "archive@example.net")
        assert b"Bcc" not in one.data and b"archive@" not in one.data
    first, second = left[0][0].data, left[1][0].data
    assert b"+change 1" in first and b"+change 2" in second
    assert b"In-Reply-To:" in second  # threaded as git made it
