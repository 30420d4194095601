"""Two-way sync as a state machine over the PURE decision modules (no I/O).

A "server" (Emails by id), a "disk" (relpath -> the message's content) and
the base (the Emails as of the last sync) live in memory.  Random remote
changes (keywords, moves, copies, destroys, deliveries) and local changes
(flag renames, new/ -> cur/, moves, copies, unlinks, ``T``) interleave with
a ``sync`` rule that runs one two-way pass the way the engine does it
(sync/engine.py + sync/local_to_remote/):

    plan_push(base, server, files by Email id, folder_of, trash)
      -> updates (Update.apply) and destroys go to the server,
         reimports become new Emails, their files adopted under the new id;
    plan_files(server, folder_of, scan) -> renames, links, downloads, removes;
    base = the server as it is now.

After every pass it checks, against an oracle written from the rules in the
docstrings of sync/twoway.py and sync/merge.py:

1. the disk mirrors the server exactly (one file per mailbox of each Email,
   in its folder, under our name, with the standard flags of its keywords,
   no ``T``, seen mail in cur/, the right content; nothing else);
2. a second pass right away has nothing to do (plan_push and plan_files empty);
3. no message vanished from the server unless deleted here while only in
   Trash (and unchanged there), or destroyed there (and unchanged here);
4. per keyword: a keyword changed on one side only ends with that side's
   value; keywords without a Maildir letter are never touched;
   and the conflict rules: concurrent moves settle on the remote one; a
   delete here + a change there keeps the message; a destroy there + a change
   here imports the message again (new Email, same content).

Not modelled: mailboxes without a folder (rule 1), files under an MUA's own
names (matched by content in local_to_remote/mua_files.py), Dovecot keyword letters, refused
writes, and the deletion guard (a pass here is always forced).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from jmapsync.jmap.types import BlobId, Email, EmailId, MailboxId
from jmapsync.maildir.files import (
    TRASHED,
    LocalFile,
    Subdir,
    base_name,
    email_id_of,
    join,
    split_rel,
    standard,
    wanted_name,
)
from jmapsync.maildir.flags import (
    FLAG_OF_KEYWORD,
    KEYWORD_OF_FLAG,
    flags_from_keywords,
    format_name,
    keywords_from_flags,
    parse_name,
)
from jmapsync.sync.plan import FilePlan, plan_files
from jmapsync.sync.twoway import PushPlan, plan_push

INBOX, ARCH, WORK, TRASH = (
    MailboxId("mbInbox"),
    MailboxId("mbArch"),
    MailboxId("mbWork"),
    MailboxId("mbTrash"),
)
FOLDER_OF: dict[MailboxId, str] = {INBOX: "INBOX", ARCH: "Archive", WORK: "Work", TRASH: "Trash"}
MAILBOX_OF = {folder: m for m, folder in FOLDER_OF.items()}
BOXES = sorted(FOLDER_OF)
FOLDERS = sorted(FOLDER_OF.values())
LETTERS = "DFPRS"
# The five keywords with a Maildir letter, and one without (never sent, never lost).
KEYWORDS = [*sorted(FLAG_OF_KEYWORD), "$junk"]
SIZE = 100

indexes = st.integers(min_value=0, max_value=40)
keyword_sets = st.frozensets(st.sampled_from(KEYWORDS), max_size=3)


def make_file(rel: str) -> LocalFile:
    folder, sub, name = split_rel(rel)
    parsed = parse_name(name)
    return LocalFile(folder, cast(Subdir, sub), name, email_id_of(parsed.base), parsed.flags)


def rel_with_flags(f: LocalFile, flags: str, seen_to_cur: bool = True) -> str:
    """The path an MUA renames a file to when it sets `flags` (seen: to cur/,
    unless it is one of the programs that leave it in new/)."""
    base = parse_name(f.name).base
    sub = "cur" if (f.subdir == "cur" or ("S" in flags and seen_to_cur)) else "new"
    name = base if (sub == "new" and not flags) else format_name(base, flags)
    return join(f.folder, sub, name)


@dataclass(frozen=True)
class Expect:
    """What the oracle expects of one base Email after the pass."""

    kind: str  # "kept" | "gone" | "reimport"
    mailboxes: frozenset[MailboxId] = frozenset()
    keywords: frozenset[str] = frozenset()
    content: str = ""
    why: str = ""
    # reimport: the keywords it may get (the flags of a file carrying a flag change)
    keyword_choices: frozenset[frozenset[str]] = frozenset()


class TwoWayMachine(RuleBasedStateMachine):
    trash: MailboxId | None = TRASH

    def __init__(self) -> None:
        super().__init__()
        self.server: dict[EmailId, Email] = {}
        self.base: dict[EmailId, Email] = {}
        self.disk: dict[str, str] = {}  # relpath -> content (the blob it came from)
        self.ids = itertools.count(1)
        self.destroyed_there: set[EmailId] = set()  # by the test, since the last pass

    # -- helpers ---------------------------------------------------------------------

    def new_email(self, boxes: frozenset[MailboxId], keywords: frozenset[str]) -> EmailId:
        n = next(self.ids)
        eid = EmailId(f"E{n}")
        self.server[eid] = Email(eid, BlobId(f"B{n}"), boxes, keywords, SIZE)
        return eid

    def scan(self) -> list[LocalFile]:
        return [make_file(rel) for rel in sorted(self.disk)]

    def pick_email(self, i: int) -> EmailId:
        ids = sorted(self.server)
        return ids[i % len(ids)]

    def pick_file(self, i: int) -> LocalFile:
        rels = sorted(self.disk)
        return make_file(rels[i % len(rels)])

    def local_rename(self, src: str, dst: str) -> None:
        """rename(2): replaces dst (only ever a copy of the same message here)."""
        if src != dst:
            self.disk[dst] = self.disk.pop(src)

    def files_by_email(self) -> dict[str, list[LocalFile]]:
        local: dict[str, list[LocalFile]] = defaultdict(list)
        for f in self.scan():
            assert f.email_id is not None
            local[f.email_id].append(f)
        return local

    def apply_files(self, plan: FilePlan) -> None:
        """Carry out a pull plan in the engine's order (renames, links, downloads, removes)."""
        for r in plan.renames:
            assert r.src in self.disk and r.dst not in self.disk, r
            self.disk[r.dst] = self.disk.pop(r.src)
        for lk in plan.links:
            assert lk.src in self.disk and lk.dst not in self.disk, lk
            self.disk[lk.dst] = self.disk[lk.src]
        for d in plan.downloads:
            for dst in (d.dst, *d.links):
                assert dst not in self.disk, d
                self.disk[dst] = d.blob_id
        for rm in plan.removes:
            assert rm.path in self.disk, rm
            del self.disk[rm.path]

    # -- setup -----------------------------------------------------------------------

    @initialize(
        spec=st.lists(
            st.tuples(st.frozensets(st.sampled_from(BOXES), min_size=1, max_size=2), keyword_sets),
            min_size=1,
            max_size=4,
        )
    )
    def first_sync(self, spec: list[tuple[frozenset[MailboxId], frozenset[str]]]) -> None:
        for boxes, keywords in spec:
            self.new_email(boxes, keywords)
        self.sync()

    # -- remote changes --------------------------------------------------------------

    @precondition(lambda self: self.server)
    @rule(i=indexes, keyword=st.sampled_from(KEYWORDS), on=st.booleans())
    def remote_keyword(self, i: int, keyword: str, on: bool) -> None:
        e = self.server[self.pick_email(i)]
        kws = e.keywords | {keyword} if on else e.keywords - {keyword}
        self.server[e.id] = Email(e.id, e.blob_id, e.mailbox_ids, kws, e.size)

    @precondition(lambda self: self.server)
    @rule(i=indexes, box=st.sampled_from(BOXES))
    def remote_move(self, i: int, box: MailboxId) -> None:
        e = self.server[self.pick_email(i)]
        self.server[e.id] = Email(e.id, e.blob_id, frozenset({box}), e.keywords, e.size)

    @precondition(lambda self: self.server)
    @rule(i=indexes, box=st.sampled_from(BOXES))
    def remote_add_mailbox(self, i: int, box: MailboxId) -> None:
        e = self.server[self.pick_email(i)]
        self.server[e.id] = Email(e.id, e.blob_id, e.mailbox_ids | {box}, e.keywords, e.size)

    @precondition(lambda self: self.server)
    @rule(i=indexes)
    def remote_destroy(self, i: int) -> None:
        eid = self.pick_email(i)
        del self.server[eid]
        self.destroyed_there.add(eid)

    @rule(box=st.sampled_from(BOXES), keywords=keyword_sets)
    def remote_deliver(self, box: MailboxId, keywords: frozenset[str]) -> None:
        self.new_email(frozenset({box}), keywords)

    # -- local changes ---------------------------------------------------------------

    @precondition(lambda self: self.disk)
    @rule(i=indexes, letter=st.sampled_from(LETTERS), on=st.booleans(), to_cur=st.booleans())
    def local_flag(self, i: int, letter: str, on: bool, to_cur: bool) -> None:
        f = self.pick_file(i)
        flags = set(f.flags) | {letter} if on else set(f.flags) - {letter}
        self.local_rename(f.relpath, rel_with_flags(f, "".join(flags), to_cur))

    @precondition(lambda self: self.disk)
    @rule(i=indexes)
    def local_trash_mark(self, i: int) -> None:
        f = self.pick_file(i)
        self.local_rename(f.relpath, rel_with_flags(f, f.flags + TRASHED))

    @precondition(lambda self: self.disk)
    @rule(i=indexes, folder=st.sampled_from(FOLDERS))
    def local_move(self, i: int, folder: str) -> None:
        f = self.pick_file(i)
        self.local_rename(f.relpath, join(folder, f.subdir, f.name))

    @precondition(lambda self: self.disk)
    @rule(i=indexes, folder=st.sampled_from(FOLDERS))
    def local_copy(self, i: int, folder: str) -> None:
        f = self.pick_file(i)
        self.disk[join(folder, f.subdir, f.name)] = self.disk[f.relpath]

    @precondition(lambda self: self.disk)
    @rule(i=indexes)
    def local_unlink(self, i: int) -> None:
        del self.disk[self.pick_file(i).relpath]

    # -- the pass --------------------------------------------------------------------

    def expectations(self) -> dict[EmailId, Expect]:
        """The rules of sync/twoway.py and sync/merge.py, stated per base Email."""
        present: dict[str, list[LocalFile]] = defaultdict(list)
        for f in self.scan():
            if TRASHED not in f.flags:
                assert f.email_id is not None
                present[f.email_id].append(f)
        out: dict[EmailId, Expect] = {}
        for eid, b in self.base.items():
            r = self.server.get(eid)
            here = present.get(eid, [])
            boxes_here = frozenset(MAILBOX_OF[f.folder] for f in here)
            base_flags = flags_from_keywords(b.keywords)
            # A letter differing from base in any file here is the user's change.
            local_value = {
                letter: letter not in base_flags
                for letter in LETTERS
                if any((letter in f.flags) != (letter in base_flags) for f in here)
            }
            moved_here = boxes_here != b.mailbox_ids
            if r is None:
                assert eid in self.destroyed_there
                if here and (moved_here or local_value):
                    # Into every folder it has here, with every flag change made
                    # on any copy (per flag, as in the merge; a flag differing
                    # from base can only differ one way).  Keywords without a
                    # letter here ($junk) come along as they were.
                    flags = "".join(c for c in LETTERS if (c in base_flags) != (c in local_value))
                    unlettered = b.keywords - keywords_from_flags(base_flags)
                    out[eid] = Expect(
                        "reimport",
                        boxes_here,
                        content=b.blob_id,
                        why="destroyed there, changed here: imported again",
                        keyword_choices=frozenset({keywords_from_flags(flags) | unlettered}),
                    )
                else:
                    out[eid] = Expect("gone", why="destroyed there, unchanged here")
                continue
            keywords = set(r.keywords)
            for letter, value in local_value.items():
                (keywords.add if value else keywords.discard)(KEYWORD_OF_FLAG[letter])
            kws = frozenset(keywords)
            remote_moved = r.mailbox_ids != b.mailbox_ids
            if not moved_here:
                out[eid] = Expect("kept", r.mailbox_ids, kws, why="not moved here")
            elif not here:
                if remote_moved or r.keywords != b.keywords:
                    out[eid] = Expect("kept", r.mailbox_ids, kws, why="deleted here, changed there")
                elif self.trash is None:
                    out[eid] = Expect("kept", r.mailbox_ids, kws, why="deleted here, no Trash")
                elif r.mailbox_ids == {self.trash}:
                    out[eid] = Expect("gone", why="deleted here while in Trash only")
                else:
                    out[eid] = Expect("kept", frozenset({self.trash}), kws, why="deleted: to Trash")
            elif remote_moved:
                out[eid] = Expect("kept", r.mailbox_ids, kws, why="moved on both sides: remote")
            else:
                out[eid] = Expect("kept", boxes_here, kws, why="moved here")
        return out

    def push(self) -> PushPlan:
        """plan_push, then its writes as local_to_remote/writes.py sends them, and the reimports."""
        plan = plan_push(self.base, self.server, self.files_by_email(), FOLDER_OF, self.trash)
        for u in plan.updates:
            eid = EmailId(u.email_id)
            self.server[eid] = u.apply(self.server[eid])
        for d in plan.destroy:
            del self.server[EmailId(d)]
        for ri in plan.reimports:
            content = self.disk[ri.file.relpath]
            n = next(self.ids)
            eid = EmailId(f"E{n}")
            boxes = frozenset(MailboxId(m) for m in ri.mailbox_ids)
            self.server[eid] = Email(eid, BlobId(content), boxes, ri.keywords, SIZE)
            # Adopted: the file stays, under the new Email's name.
            sub, name = wanted_name(eid, standard(ri.file.flags))
            self.local_rename(ri.file.relpath, join(ri.file.folder, sub, name))
        return plan

    @rule()
    def sync(self) -> None:
        expect = self.expectations()
        before = dict(self.server)
        push = self.push()
        self.apply_files(plan_files(self.server, FOLDER_OF, self.scan()))

        for why in sorted({w.why for w in expect.values()}):
            event(f"pass: {why}")  # coverage of the rules: --hypothesis-show-statistics
        self.check_server(expect, before, push)
        self.check_mirror()
        self.base = dict(self.server)
        self.destroyed_there.clear()
        self.check_second_pass_is_noop()

    # -- invariants ------------------------------------------------------------------

    def check_server(
        self, expect: Mapping[EmailId, Expect], before: Mapping[EmailId, Email], push: PushPlan
    ) -> None:
        after = self.server
        new_ids = set(after) - set(before)
        assert len(new_ids) == len(push.reimports)
        # Destroyed there + changed here: imported again, as a new Email (same content).
        reimported = {after[n].blob_id: after[n] for n in new_ids}
        assert len(reimported) == len(new_ids)
        wanted_imports = {BlobId(w.content): w for w in expect.values() if w.kind == "reimport"}
        assert set(reimported) == set(wanted_imports), "destroyed there + changed here"
        for blob, w in wanted_imports.items():
            assert reimported[blob].mailbox_ids == w.mailboxes, (blob, w.why)
            assert reimported[blob].keywords in w.keyword_choices, (blob, w.why)
        for eid, want in expect.items():
            if want.kind == "gone":
                assert eid not in after, (eid, want.why)
            elif want.kind == "reimport":
                assert eid not in after
            else:
                assert eid in after, f"{eid} lost ({want.why})"
                got = after[eid]
                assert got.blob_id == before[eid].blob_id
                assert got.mailbox_ids == want.mailboxes, (eid, want.why, got.mailbox_ids)
                assert got.keywords == want.keywords, (eid, want.why, got.keywords)
        # Emails the last pass did not know (delivered since): untouched by the push.
        for eid, e in before.items():
            if eid not in self.base:
                assert after.get(eid) == e
        # Nothing vanished but by an explicit delete (here, in Trash; or there).
        for eid in set(self.base) - set(after):
            assert eid in self.destroyed_there or eid in push.destroy, eid
        for destroyed in push.destroy:
            assert expect[EmailId(destroyed)].kind == "gone"
            assert before[EmailId(destroyed)].mailbox_ids == {self.trash}

    def check_mirror(self) -> None:
        """Every Email: one file per mailbox, in its folder, flags of its keywords."""
        wanted: dict[tuple[str, str], Email] = {}
        for e in self.server.values():
            for m in e.mailbox_ids:
                wanted[(FOLDER_OF[m], e.id)] = e
        seen: set[tuple[str, str]] = set()
        for rel, content in self.disk.items():
            f = make_file(rel)
            assert f.email_id is not None, rel
            key = (f.folder, f.email_id)
            assert key in wanted, f"{rel}: not in the server model"
            assert key not in seen, f"{rel}: a second file of {f.email_id} in {f.folder}"
            seen.add(key)
            e = wanted[key]
            assert parse_name(f.name).base == base_name(e.id)
            assert TRASHED not in f.flags, rel
            assert f.flags == standard(f.flags) == flags_from_keywords(e.keywords), rel
            assert f.subdir == "cur" or "S" not in f.flags, rel
            assert content == e.blob_id, rel
        assert seen == set(wanted), f"missing files: {set(wanted) - seen}"

    def check_second_pass_is_noop(self) -> None:
        plan = plan_push(self.base, self.server, self.files_by_email(), FOLDER_OF, self.trash)
        assert plan.empty and not plan.kept, plan
        assert plan_files(self.server, FOLDER_OF, self.scan()).empty


def reimport_of(files: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """E1, in Archive and INBOX without flags at the last pass, destroyed there
    since; `files` are its files here: (mailboxes, keywords) of its re-import."""
    e1 = EmailId("E1")
    base = {e1: Email(e1, BlobId("B1"), frozenset({ARCH, INBOX}), frozenset(), SIZE)}
    plan = plan_push(base, {}, {"E1": [make_file(rel) for rel in files]}, FOLDER_OF, TRASH)
    [reimport] = plan.reimports
    assert reimport.email_id == "E1"
    return reimport.mailbox_ids, reimport.keywords


def test_reimport_keeps_the_flag_change_of_a_file_not_first_by_path() -> None:
    """Found by the machine: the re-import took the flags of the first file by
    path (Archive, unchanged), and the D set on the INBOX copy was lost."""
    boxes, keywords = reimport_of(["Archive/new/E1.jmapsync", "INBOX/new/E1.jmapsync:2,D"])
    assert boxes == {ARCH, INBOX}
    assert keywords == {"$draft"}


def test_reimport_keeps_the_flag_changes_of_every_file() -> None:
    """Per keyword, a file that differs from base carries the user's change
    (sync/merge.py); a re-import should carry all of them, like a flag merge."""
    boxes, keywords = reimport_of(["Archive/new/E1.jmapsync:2,F", "INBOX/new/E1.jmapsync:2,D"])
    assert boxes == {ARCH, INBOX}
    assert keywords == {"$draft", "$flagged"}


class NoTrashMachine(TwoWayMachine):
    """The same without a Trash-role mailbox: a local delete is refused."""

    trash = None


TestTwoWay = TwoWayMachine.TestCase
TestTwoWay.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestTwoWayNoTrash = NoTrashMachine.TestCase
TestTwoWayNoTrash.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
