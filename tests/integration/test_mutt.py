"""A REAL mutt (Debian's `mutt`, 2.2) in tmux on a Maildir mirrored by jmapsync
two-way from the Cyrus test server, then `jmapsync sync`, then the server is
asserted over JMAP.

In mutt: read message 1 (new/ -> cur/ with S), flag message 2 (F), save
message 3 to =Archive (mutt writes a NEW file under its own name -- into
Archive/cur/ as the message was read -- with an added Content-Length header,
and unlinks the original at `$`), delete message 4 (`d`,
`$`: unlinked, maildir_trash unset), leave message 5 unread, quit.  The server
must then show: 1 $seen, 2 $flagged, 3 in Archive only under the SAME Email id
(a move, not a re-import), 4 in Trash, 5 untouched -- the Maildir an exact
mirror, and a second pass doing nothing.

mutt is driven with `tmux send-keys` on a private tmux server (`-S`, its own
socket in a temporary directory, killed and removed afterwards), and every
step waits for a screen state (`tmux capture-pane -p`, polled to a deadline).
Needs the Debian packages `mutt` and `tmux`; installed here when missing and
root, skipped only when that is impossible.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror, assert_files_table, message_files, snapshot

pytestmark = pytest.mark.slow

T = TypeVar("T")

MUTTRC = """\
set mbox_type=Maildir
set folder="{folder}"
set spoolfile=+INBOX
unset maildir_trash
set sort=date
set confirmappend=no
set confirmcreate=no
set delete=yes
set move=no
set mark_old=no
unset wait_key
set header_cache=""
set message_cachedir=""
set sleep_time=0
set beep=no
set arrow_cursor
set resolve=no
set help=no
set charset=utf-8
set record=""
set postponed=""
set timeout=3600
set mail_check=3600
set index_format="[%4C] {{%Z}} %s"
"""

WIDTH, HEIGHT = 200, 50
TIMEOUT = 20.0  # seconds for one screen state (mutt answers in milliseconds)
EXITED = re.compile(r"\[mutt exited (\d+)\]")
INDEX_LINE = re.compile(r"^(->|  )\s*\[\s*(\d+)\] \{(.{3})\} (Test message \d+)\s*$")


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        subprocess.run(cmd, env=env, capture_output=True, check=False)


@pytest.fixture(scope="module")
def mutt_tools() -> None:
    missing = [p for p in ("mutt", "tmux") if not shutil.which(p)]
    if missing:
        _apt_install(*missing)
    missing = [p for p in ("mutt", "tmux") if not shutil.which(p)]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (Debian: apt-get install mutt tmux)")


# -- the Maildir, for diagnostics ----------------------------------------------------


def listing(maildir: Path) -> str:
    """`ls -la`-like view of every cur/ and new/ (name, size, inode)."""
    lines = []
    for folder in sorted(p for p in maildir.iterdir() if p.is_dir()):
        for sub in ("new", "cur"):
            d = folder / sub
            if not d.is_dir():
                continue
            for f in sorted(d.iterdir()):
                st = f.lstat()
                lines.append(f"  {folder.name}/{sub}/{f.name}  {st.st_size} bytes  ino {st.st_ino}")
    return "\n".join(lines) or "  (no message files)"


# -- tmux --------------------------------------------------------------------------


class Screen:
    """One mutt in a private tmux server; keys in, screen text out."""

    def __init__(self, describe: Callable[[], str]) -> None:
        self.describe = describe  # extra context for a timeout (the Maildir)
        # a private server on a socket of our own: other tmux servers are never touched
        self.dir = Path(tempfile.mkdtemp(prefix="jmsm-", dir="/tmp"))
        self.socket = self.dir / "tmux.sock"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}

    def start(self, cmd: list[str], env: dict[str, str]) -> None:
        inner = shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *cmd])
        # the shell stays after mutt so its exit status can be read off the screen
        shell = f'{inner}; echo "[mutt exited $?]"; exec sleep 3600'
        size = ["-x", str(WIDTH), "-y", str(HEIGHT)]
        self.tmux("new-session", "-d", "-s", "mutt", *size, "sh", "-c", shell)

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise AssertionError(f"tmux {args}: {done.stderr.strip()}")
        return done.stdout

    def close(self) -> None:
        """Stop this tmux server (and so mutt), remove its socket."""
        if self.socket.exists():
            subprocess.run(
                ["tmux", "-S", str(self.socket), "kill-server"],
                capture_output=True,
                env=self.env,
                check=False,
                timeout=30,
            )
        shutil.rmtree(self.dir, ignore_errors=True)

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "mutt")

    def keys(self, *keys: str) -> None:
        """tmux key names: "Enter", "C-u", "q", ..."""
        self.tmux("send-keys", "-t", "mutt", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "mutt", "-l", text)

    def wait(self, what: str, probe: Callable[[str], T | None], timeout: float = TIMEOUT) -> T:
        """Poll the screen until probe(screen) is not None/False; return that."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.text()
            found = probe(screen)
            if found:
                return found
            if m := EXITED.search(screen):
                raise AssertionError(f"mutt exited ({m.group(1)}) waiting for {what}:\n{screen}")
            if time.monotonic() > deadline:
                shown = "\n".join(line for line in screen.splitlines() if line.strip())
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; screen:\n{shown}\n"
                    f"Maildir:\n{self.describe()}"
                )
            time.sleep(0.05)


# -- mutt's index ------------------------------------------------------------------


def index(screen: str) -> dict[str, tuple[int, str, bool]]:
    """subject -> (message number, %Z flags, is current) of every index line."""
    out = {}
    for line in screen.splitlines():
        if m := INDEX_LINE.match(line):
            out[m.group(4)] = (int(m.group(2)), m.group(3), m.group(1) == "->")
    return out


class Mutt:
    def __init__(self, screen: Screen) -> None:
        self.screen = screen

    def index_where(
        self, what: str, cond: Callable[[dict[str, tuple[int, str, bool]]], bool]
    ) -> dict[str, tuple[int, str, bool]]:
        def probe(screen: str) -> dict[str, tuple[int, str, bool]] | None:
            ix = index(screen)
            return ix if ix and cond(ix) else None

        return self.screen.wait(what, probe)

    def select(self, subject: str) -> None:
        """Jump to the message with this subject (by its number on screen)."""
        ix = self.index_where(f"{subject!r} in the index", lambda ix: subject in ix)
        number, _, current = ix[subject]
        if current:
            return
        self.screen.type(str(number))
        self.screen.wait("the jump prompt", lambda s: "Jump to message:" in s)
        self.screen.keys("Enter")
        self.index_where(f"the cursor on {subject!r}", lambda ix: ix.get(subject, (0, "", 0))[2])

    def flags(self, subject: str, want: Callable[[str], bool], what: str) -> str:
        ix = self.index_where(
            f"{subject!r} {what}", lambda ix: subject in ix and want(ix[subject][1])
        )
        return ix[subject][1]


# -- the test ----------------------------------------------------------------------


def boxes(account: Account, eid: str) -> set[str]:
    j = account.jmap()
    names = {m["id"]: path for path, m in j.mailbox_paths().items()}
    return {names[m] for m in j.get_email(eid, ["mailboxIds"])["mailboxIds"]}


@pytest.fixture
def mutt_factory(tmp_path: Path) -> Iterator[Callable[[Path], Mutt]]:
    screens: list[Screen] = []

    def start(maildir: Path) -> Mutt:
        rc = tmp_path / "muttrc"
        rc.write_text(MUTTRC.format(folder=maildir))
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = {
            "TERM": "xterm",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "MAIL": str(maildir / "INBOX"),
            "EDITOR": "false",
        }
        cmd = ["mutt", "-n", "-F", str(rc), "-f", str(maildir / "INBOX")]
        screen = Screen(lambda: listing(maildir))
        screens.append(screen)
        screen.start(cmd, env)
        return Mutt(screen)

    try:
        yield start
    finally:
        for s in screens:
            s.close()


def test_real_mutt_read_flag_move_delete_then_sync(
    mutt_tools: None, account: Account, tmp_path: Path, mutt_factory: Callable[[Path], Mutt]
) -> None:
    j = account.jmap()
    inbox = j.mailbox_id("INBOX")
    seen = {"$seen": True}
    ids = [
        j.import_message(make_message(i), [inbox], keywords=({} if i in (1, 5) else seen))
        for i in range(1, 6)
    ]
    subj = {eid: f"Test message {i}" for i, eid in enumerate(ids, 1)}
    read, flag, move, delete, untouched = ids
    mirror = Mirror(account, tmp_path / "m", direction="two-way")
    mirror.sync()
    assert_exact_mirror(mirror)
    before = listing(mirror.maildir)
    print("Maildir before mutt:\n" + before)

    # -- mutt ------------------------------------------------------------------
    mutt = mutt_factory(mirror.maildir)
    ix = mutt.index_where("the index with 5 messages", lambda ix: len(ix) == 5)
    assert [s for s, _ in sorted(ix.items(), key=lambda kv: kv[1][0])] == list(subj.values())
    assert ix[subj[read]][1][0] == "N" and ix[subj[untouched]][1][0] == "N", ix

    mutt.select(subj[read])  # read: open in the pager, back to the index
    mutt.screen.keys("Enter")
    mutt.screen.wait("the pager with message 1", lambda s: "This is test message 1." in s)
    mutt.screen.keys("q")
    mutt.flags(subj[read], lambda f: f[0] != "N", "read in the index")

    mutt.select(subj[flag])  # flag
    mutt.screen.keys("F")
    mutt.flags(subj[flag], lambda f: f[2] == "!", "flagged (!)")

    mutt.select(subj[move])  # save to =Archive (marks the original deleted)
    mutt.screen.keys("s")
    mutt.screen.wait("the save prompt", lambda s: "Save to mailbox" in s)
    mutt.screen.keys("C-u")
    mutt.screen.type("=Archive")
    mutt.screen.wait(
        "=Archive typed", lambda s: re.search(r"Save to mailbox.*: =Archive\s*$", s, re.M)
    )
    mutt.screen.keys("Enter")
    mutt.flags(subj[move], lambda f: f[1] == "D", "saved and marked deleted (D)")

    mutt.select(subj[delete])  # delete
    mutt.screen.keys("d")
    mutt.flags(subj[delete], lambda f: f[1] == "D", "marked deleted (D)")

    mutt.screen.keys("$")  # sync: renames, unlinks
    mutt.index_where(
        "the index after $ without messages 3 and 4",
        lambda ix: set(ix) == {subj[read], subj[flag], subj[untouched]},
    )
    mutt.screen.keys("q")
    status = mutt.screen.wait("mutt to quit", EXITED.search)
    after = listing(mirror.maildir)
    print("Maildir after mutt:\n" + after)
    assert status.group(1) == "0", status.group(0)

    # -- what mutt did on disk ---------------------------------------------------
    files = message_files(mirror.maildir)
    where = {eid: sorted(r for r in files if Path(r).name.startswith(eid + ".")) for eid in ids}
    diag = f"\nbefore:\n{before}\nafter:\n{after}"
    assert where[read] == [f"INBOX/cur/{read}.jmapsync:2,S"], diag
    assert where[flag] == [f"INBOX/cur/{flag}.jmapsync:2,FS"], diag
    assert where[move] == [] and where[delete] == [], diag
    assert where[untouched] == [f"INBOX/new/{untouched}.jmapsync"], diag
    copies = [r for r in files if r.startswith("Archive/")]
    assert len(copies) == 1, diag
    assert not Path(copies[0]).name.endswith(".jmapsync") and ":2," in copies[0], diag
    copy = files[copies[0]].read_bytes()
    assert b"\nContent-Length: " in copy and b"Subject: Test message 3\n" in copy, copy[:600]
    assert len(files) == 4, diag

    # -- jmapsync, the real command line ---------------------------------------------
    mirror.cli("sync")
    emails = {e["id"]: e for e in j.get_emails(ids, ["id", "keywords", "mailboxIds"])}
    assert sorted(j.email_ids()) == sorted(ids), "an Email was added or destroyed"
    assert "$seen" in emails[read]["keywords"] and boxes(account, read) == {"Inbox"}
    assert {"$flagged", "$seen"} <= set(emails[flag]["keywords"])
    assert boxes(account, flag) == {"Inbox"}
    assert boxes(account, move) == {"Archive"}  # same Email id: a move, not an import
    assert "$seen" in emails[move]["keywords"]
    assert boxes(account, delete) == {"Trash"}
    assert "$seen" not in emails[untouched]["keywords"]
    assert boxes(account, untouched) == {"Inbox"}
    assert j.emails_in("Archive") == [move]
    assert j.emails_in("Trash") == [delete]
    assert_exact_mirror(mirror)
    assert_files_table(mirror)
    assert not files[copies[0]].exists()  # mutt's copy gave way to the server's bytes

    # -- a second pass has nothing to do -----------------------------------------------
    state, disk = j.state("Email"), snapshot(mirror.maildir)
    again = mirror.sync()
    busy = {
        k: v
        for k, v in again.as_dict().items()
        if isinstance(v, int)
        and not isinstance(v, bool)
        and k not in ("bytes", "warnings", "planned")
        and v
    }
    assert not busy, busy
    assert not again.warnings, again.warnings
    assert j.state("Email") == state
    assert snapshot(mirror.maildir) == disk
