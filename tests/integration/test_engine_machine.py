"""Two-way sync as a Hypothesis state machine over the REAL engine.

The code that runs is the code under test: `Engine.sync()` on a Maildir in a
temporary directory, over real HTTP to the in-memory server
(tests/jmapserver) in its Stalwart personality -- which does NOT
deduplicate imports, so "no duplicate on the server" can fail here.

Between passes, random operations on both sides:

* remote: deliver, keyword on/off, move, copy to another mailbox, destroy,
  mailbox create / rename / destroy (with its messages);
* local, as mutt, notmuch and a shell do them: flag renames (mutt moves a
  message to cur/ when it sets S), moves across folders, `cp` under the same
  or another name, mutt's copy (a new file with a `Content-Length:` header),
  unlinks, new message files, new folders;
* faults for the next pass: the server carries out a write and the answer
  is lost, or an answer is cut in the middle.

After every pass that was not failed by a fault, checked against the rules
of docs/DESIGN.md (machine_model.expect):

1. no message lost on either side -- only the rules delete (destroyed there
   and unchanged here; deleted here while only in Trash);
2. no duplicate on the server (one Email per message);
3. each message's mailboxes and flags as the rules decide them (per-flag
   merge, local/remote moves, Trash, re-import with the merged keywords);
4. the mirror is exact (every Email's file in every mailbox's folder, right
   flags, the server's bytes; nothing else);
5. the next pass changes nothing, on either side.

`JMAPSYNC_MACHINE_EXAMPLES` sets the example count (CI: 30; a long run:
2000, see docs/DESIGN.md "How the rules are checked").
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from jmapserver import JmapServer
from machine_model import (
    LETTERS,
    Expect,
    File,
    expect,
    folders_on_disk,
    letters,
    names,
    recorded,
    scan,
    snapshot,
)
from mailtools import make_message
from memmirror import memory_mirror
from mirror import expected_local_bytes
from structlog.testing import capture_logs

from jmapsync.errors import JmapsyncError
from jmapsync.jmap import http
from jmapsync.maildir.flags import KEYWORD_OF_FLAG, format_name
from jmapsync.sync import watched
from jmapsync.sync.engine import SyncReport

EXAMPLES = int(os.environ.get("JMAPSYNC_MACHINE_EXAMPLES", "30"))
# The five keywords with a Maildir letter.  Others get Dovecot letters per
# folder (maildir/keywords.py), whose meaning moves with a file between
# folders: a model of its own, not this machine's.
KEYWORDS = sorted(KEYWORD_OF_FLAG.values())
NEW_MAILBOXES = ["Work", "Lists", "Old"]
NEW_FOLDERS = ["Projects", "Receipts"]
# (kind, where, times).  jmap/http.py retries idempotent requests once here
# (RETRY_DELAYS is set to one immediate retry): a single cut download is
# resumed, a second cut fails the pass.
FAULTS = [
    ("lose", "api:Email/set", 1),
    ("lose", "api:Email/import", 1),
    ("lose", "api:Mailbox/set", 1),
    ("lose", "upload", 1),
    ("cut", "download", 1),
    ("cut", "download", 2),
    ("cut", "api", 2),
]
# SyncReport counters that mean "something changed".
CHANGES = (
    "downloaded", "renamed", "linked", "removed", "folders_created", "folders_moved",
    "folders_removed", "rewritten", "pushed", "destroyed", "imported", "adopted",
    "superseded", "mailboxes_created", "mailboxes_destroyed",
)  # fmt: skip

picks = st.integers(min_value=0, max_value=63)
keyword_sets = st.frozensets(st.sampled_from(KEYWORDS), max_size=3)


class EngineMachine(RuleBasedStateMachine):
    personality = "stalwart"
    # Below this many names a pass lists the folders it wrote into without
    # scanning them; from it on it watches them (sync/watched.py).
    watch_from = watched.WATCH_FROM

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="jms-machine-"))
        self.server = JmapServer(self.personality).start()
        self.mirror = memory_mirror(self.server, self.tmp, direction="two-way")
        self.root = self.mirror.maildir
        self.tokens = itertools.count(1)
        self.mua_names = itertools.count(1)
        self.base = snapshot(self.server)
        self.base_names = names(self.server)
        self.faulted = False  # a pass failed by a fault since the last clean one
        self._retries = http.RETRY_DELAYS
        http.RETRY_DELAYS = (0.0,)
        self._watch_from, watched.WATCH_FROM = watched.WATCH_FROM, self.watch_from

    def teardown(self) -> None:
        http.RETRY_DELAYS = self._retries
        watched.WATCH_FROM = self._watch_from
        self.server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------

    def _pick(self, items: list[str], i: int) -> str:
        return sorted(items)[i % len(items)]

    def _email(self, i: int) -> str:
        return self._pick(list(self.server.emails()), i)

    def _file(self, i: int) -> File:
        files = scan(self.root)
        return files[i % len(files)]

    def _folder(self, i: int) -> str:
        return self._pick(folders_on_disk(self.root), i)

    def _mua_name(self, flags: str) -> str:
        base = f"{1700000000 + next(self.mua_names)}.M1P1.machine"
        return format_name(base, flags) if flags else base

    def _message(self) -> bytes:
        return make_message(next(self.tokens))

    # -- setup -----------------------------------------------------------------------

    @initialize(
        spec=st.lists(
            st.tuples(st.sampled_from(["INBOX", "Archive", "Trash"]), keyword_sets),
            min_size=1,
            max_size=4,
        )
    )
    def first_sync(self, spec: list[tuple[str, frozenset[str]]]) -> None:
        for box, keywords in spec:
            self.server.deliver(self._message(), box, keywords)
        self.sync()

    # -- remote ----------------------------------------------------------------------

    @rule(box=picks, keywords=keyword_sets)
    def remote_deliver(self, box: int, keywords: frozenset[str]) -> None:
        self.server.deliver(
            self._message(), self._pick(list(names(self.server).values()), box), keywords
        )

    @precondition(lambda self: self.server.emails())
    @rule(i=picks, keyword=st.sampled_from(KEYWORDS), on=st.booleans())
    def remote_keyword(self, i: int, keyword: str, on: bool) -> None:
        eid = self._email(i)
        (self.server.add_keyword if on else self.server.remove_keyword)(eid, keyword)

    @precondition(lambda self: self.server.emails())
    @rule(i=picks, box=picks, keep=st.booleans())
    def remote_move_or_copy(self, i: int, box: int, keep: bool) -> None:
        eid = self._email(i)
        target = self._pick(list(self.server.store.mailboxes), box)
        now = self.server.emails()[eid].mailbox_ids
        self.server.store.update_email(eid, mailbox_ids=(now | {target}) if keep else {target})

    @precondition(lambda self: self.server.emails())
    @rule(i=picks)
    def remote_destroy(self, i: int) -> None:
        self.server.destroy(self._email(i))

    @rule(name=st.sampled_from(NEW_MAILBOXES))
    def remote_mailbox_create(self, name: str) -> None:
        if name not in names(self.server).values():
            self.server.create_mailbox(name)

    def _plain_mailboxes(self) -> list[str]:
        with self.server.store.lock:
            boxes = self.server.store.mailboxes
            return [m for m, b in boxes.items() if b.role is None]

    @precondition(lambda self: self._plain_mailboxes())
    @rule(i=picks, name=st.sampled_from(NEW_MAILBOXES))
    def remote_mailbox_rename(self, i: int, name: str) -> None:
        if name not in names(self.server).values():
            self.server.store.update_mailbox(self._pick(self._plain_mailboxes(), i), name=name)

    @precondition(lambda self: self._plain_mailboxes())
    @rule(i=picks)
    def remote_mailbox_destroy(self, i: int) -> None:
        """With its messages (onDestroyRemoveEmails): those only there are destroyed."""
        self.server.store.destroy_mailbox(
            self._pick(self._plain_mailboxes(), i), remove_emails=True
        )

    # -- local -----------------------------------------------------------------------

    @precondition(lambda self: scan(self.root))
    @rule(i=picks, letter=st.sampled_from(LETTERS), on=st.booleans())
    def local_flag(self, i: int, letter: str, on: bool) -> None:
        """A flag rename as mutt does it (S moves a message from new/ to cur/)."""
        f = self._file(i)
        flags = "".join(sorted(set(f.flags) | {letter} if on else set(f.flags) - {letter}))
        sub = "cur" if f.sub == "cur" or "S" in flags else "new"
        base = f.name.split(":2,")[0]
        name = format_name(base, flags) if (flags or sub == "cur") else base
        os.rename(self.root / f.rel, self.root / f.folder / sub / name)

    @precondition(lambda self: scan(self.root))
    @rule(i=picks, folder=picks)
    def local_move(self, i: int, folder: int) -> None:
        f = self._file(i)
        os.rename(self.root / f.rel, self.root / self._folder(folder) / f.sub / f.name)

    @precondition(lambda self: scan(self.root))
    @rule(i=picks, folder=picks, same_name=st.booleans())
    def local_cp(self, i: int, folder: int, same_name: bool) -> None:
        """`cp`: the same bytes, under the same name or a new one."""
        f = self._file(i)
        name = f.name if same_name else self._mua_name(f.flags)
        dst = self.root / self._folder(folder) / f.sub / name
        if not dst.exists():
            shutil.copyfile(self.root / f.rel, dst)

    @precondition(lambda self: scan(self.root))
    @rule(i=picks, folder=picks)
    def local_mutt_copy(self, i: int, folder: int) -> None:
        """mutt's save: a new file in new/ with the flags in its name and a
        Content-Length: header added (not byte-identical)."""
        f = self._file(i)
        raw = (self.root / f.rel).read_bytes().replace(b"\r\n", b"\n")
        head, _, body = raw.partition(b"\n\n")
        copy = head + f"\nContent-Length: {len(body)}".encode() + b"\n\n" + body
        (self.root / self._folder(folder) / "new" / self._mua_name(f.flags)).write_bytes(copy)

    @precondition(lambda self: scan(self.root))
    @rule(i=picks)
    def local_unlink(self, i: int) -> None:
        (self.root / self._file(i).rel).unlink()

    @rule(folder=picks, flags=st.sampled_from(["", "S", "FS", "D"]))
    def local_new(self, folder: int, flags: str) -> None:
        """A message a mail program wrote (a draft, an Fcc copy), in LF."""
        raw = self._message().replace(b"\r\n", b"\n")
        sub = "cur" if "S" in flags else "new"
        (self.root / self._folder(folder) / sub / self._mua_name(flags)).write_bytes(raw)

    @rule(name=st.sampled_from(NEW_FOLDERS))
    def local_new_folder(self, name: str) -> None:
        for sub in ("cur", "new", "tmp"):
            (self.root / name / sub).mkdir(parents=True, exist_ok=True)

    # -- faults ----------------------------------------------------------------------

    @precondition(lambda self: not self.server.faults)
    @rule(fault=st.sampled_from(FAULTS))
    def arm_fault(self, fault: tuple[str, str, int]) -> None:
        self.server.fault(*fault)

    @precondition(lambda self: not self.server.faults)
    @rule(fault=st.sampled_from(FAULTS))
    def faulted_pass(self, fault: tuple[str, str, int]) -> None:
        """A fault and a pass at once: faults otherwise wait for a pass that
        hits them, and most runs would see few."""
        self.server.fault(*fault)
        self.sync()

    # -- the pass --------------------------------------------------------------------

    def _pass(self) -> SyncReport:
        with capture_logs():
            return self.mirror.sync(force_deletes=True)

    @rule()
    def sync(self) -> None:
        files = scan(self.root)
        pre = snapshot(self.server)
        exp = expect(
            self.base, self.base_names, pre, names(self.server), files, folders_on_disk(self.root)
        )
        armed = bool(self.server.faults)
        armed_with = [dataclasses.replace(f) for f in self.server.faults]
        try:
            report = self._pass()
        except JmapsyncError:
            if not armed or self.server.faults == armed_with:
                raise  # failed, and no fault was even used: a bug
            event("pass failed by a fault")
            self.faulted = True
            # What the engine recorded of it -- the Emails whose files its
            # pull had made final before the fault (execute.py `settled`) --
            # is the base the user then works from.
            # (A pass that failed on downloads records all but them.)
            self.base, self.base_names = recorded(
                self.server, self.mirror.state_dir / "test.sqlite3"
            )
            return
        finally:
            self.server.faults.clear()  # an unused fault does not carry over
        event("clean pass" + (" after a fault" if self.faulted else ""))
        for why in sorted(set(exp.why.values())):
            event(f"rule: {why}")
        if any("belongs to no mailbox any more" in w for w in report.warnings):
            # DESIGN: the folder of a mailbox destroyed on the server is kept
            # when it holds a file we did not write; the next pass makes it a
            # mailbox again and syncs the file.  Two passes, by design.
            event("folder kept with an MUA file: converged in two passes")
            self._pass()
            # the second pass syncs the kept files too: a message destroyed
            # there may come back from an MUA's copy in such a folder
            exp.exact.clear()
            exp.why = {t: why for t, why in exp.why.items() if t in exp.survive}
        self.check_messages(exp)
        self.check_mirror()
        self.check_next_pass_does_nothing()
        self.base, self.base_names, self.faulted = snapshot(self.server), names(self.server), False

    # Hypothesis picks rules uniformly: two more names for a pass make passes
    # (and faulted ones) frequent enough between the ~15 kinds of change.
    @rule()
    def sync_again(self) -> None:
        self.sync()

    @rule()
    def sync_once_more(self) -> None:
        self.sync()

    # -- checks ----------------------------------------------------------------------

    def check_messages(self, exp: Expect) -> None:
        after = snapshot(self.server)
        where = names(self.server)
        by_folder = {n: m for m, n in where.items()}
        tokens: dict[int, list[str]] = {}
        for eid, s in after.items():
            assert s.token is not None, eid
            tokens.setdefault(s.token, []).append(eid)
        dups = {t: ids for t, ids in tokens.items() if len(ids) > 1}
        assert not dups, f"duplicate on the server: {dups}"
        lost = sorted(exp.survive - set(tokens))
        assert not lost, f"lost: {[(t, exp.why.get(t)) for t in lost]}"
        gone = sorted(t for t, why in exp.why.items() if t not in exp.survive and t in tokens)
        for t in gone:
            assert "destroyed" not in exp.why[t], f"{t} should be gone: {exp.why[t]}"
        for t, (boxes, flags) in exp.exact.items():
            [eid] = tokens[t]
            want = {by_folder.get(k[4:], k) if k.startswith("new:") else k for k in boxes}
            got = after[eid]
            assert got.boxes == want, (t, exp.why[t], sorted(got.boxes), sorted(want))
            if flags is not None:
                assert letters(got.keywords) == flags, (t, exp.why[t], got.keywords, flags)

    def check_mirror(self) -> None:
        """Every Email's file in every mailbox's folder, right flags and
        bytes; no other file; a folder per mailbox and no other."""
        where = names(self.server)
        assert set(folders_on_disk(self.root)) == set(where.values())
        want: dict[tuple[str, str], tuple[str, bytes]] = {}
        for eid, s in snapshot(self.server).items():
            for m in s.boxes:
                want[(where[m], eid)] = (letters(s.keywords), expected_local_bytes(s.blob, "lf"))
        files = scan(self.root)
        foreign = [f.rel for f in files if f.eid is None]
        assert not foreign, f"files not under our name left: {foreign}"
        got = {(f.folder, f.eid): f for f in files if f.eid is not None}
        assert len(got) == len(files), "two files of one Email in one folder"
        assert set(got) == set(want), (sorted(set(got) - set(want)), sorted(set(want) - set(got)))
        for key, f in got.items():
            flags, raw = want[key]
            assert f.flags == flags, (f.rel, flags)
            assert f.sub == "cur" or "S" not in flags, f.rel  # seen mail lives in cur/
            assert (self.root / f.rel).read_bytes() == raw, f"{f.rel}: not the server's bytes"

    def check_next_pass_does_nothing(self) -> None:
        states = self.server.store.states()
        files = sorted(f.rel for f in scan(self.root))
        report = self._pass()
        changed = {k: getattr(report, k) for k in CHANGES if getattr(report, k)}
        assert not changed, f"the next pass changed {changed}"
        assert self.server.store.states() == states
        assert sorted(f.rel for f in scan(self.root)) == files

    @invariant()
    def nothing_outside_the_maildir(self) -> None:
        outside = {p.name for p in self.tmp.iterdir()} - {"mail", "state", "config.ini"}
        assert not outside, outside


class FastmailEngineMachine(EngineMachine):
    """The same over the Fastmail personality: Cyrus underneath, so the same
    bytes imported twice answer alreadyExists (the join path), downloads
    from a second host, Bearer only.  And with the folders' inotify watch
    on at any size: what a partial pass leaves in the folders it did not
    scan is learnt from events, not from listing them."""

    personality = "fastmail"
    watch_from = 0


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=30, deadline=None, print_blob=True
)
TestFastmailEngineMachine = FastmailEngineMachine.TestCase
TestFastmailEngineMachine.settings = settings(
    max_examples=max(1, EXAMPLES // 3), stateful_step_count=30, deadline=None, print_blob=True
)
