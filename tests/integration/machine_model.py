"""What the engine state machine (test_engine_machine.py) looks at: the Maildir
as files, the server as a snapshot, and the rules of docs/DESIGN.md stated
per message as what must and may happen in a pass.

Every message the machine creates has its own Message-ID `<N.mailtools@...>`
(`make_message(N)`), so a message is followed by its number ("token")
through re-imports, MUA copies and new Email ids.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from jmapserver import JmapServer

from jmapsync.maildir.flags import flags_from_keywords, parse_name

LETTERS = "DFPRS"
_TOKEN = re.compile(rb"^Message-ID: <(\d+)\.mailtools@mailtools\.test>", re.M | re.I)


def token_of(raw: bytes) -> int | None:
    m = _TOKEN.search(raw.split(b"\n\n")[0].split(b"\r\n\r\n")[0])
    return int(m.group(1)) if m else None


def body_of(raw: bytes) -> bytes:
    """The body, line endings made LF (mutt's copies differ only in headers)."""
    raw = raw.replace(b"\r\n", b"\n")
    return raw.split(b"\n\n", 1)[1] if b"\n\n" in raw else b""


@dataclass(frozen=True)
class File:
    """One message file on disk."""

    rel: str  # "Folder/cur/name"
    folder: str
    sub: str
    name: str
    flags: str  # the standard letters only
    eid: str | None  # ours: the Email id in the name; None: an MUA's name
    token: int | None
    body: bytes


@dataclass(frozen=True)
class Snap:
    """One Email as the server holds it."""

    eid: str
    token: int | None
    boxes: frozenset[str]  # mailbox ids
    keywords: frozenset[str]
    blob: bytes


def folders_on_disk(root: Path) -> list[str]:
    """Maildir folders (verbatim layout): directories with cur/ new/ tmp/."""
    out = []
    for dirpath, dirnames, _ in os.walk(root):
        if {"cur", "new", "tmp"} <= set(dirnames):
            out.append(os.path.relpath(dirpath, root))
        dirnames[:] = [d for d in dirnames if d not in ("cur", "new", "tmp") and d[0] != "."]
    return sorted(f for f in out if f != ".")


def scan(root: Path) -> list[File]:
    files = []
    for folder in folders_on_disk(root):
        for sub in ("cur", "new"):
            d = root / folder / sub
            for name in sorted(os.listdir(d)):
                raw = (d / name).read_bytes()
                parsed = parse_name(name)
                eid = (
                    parsed.base.removesuffix(".jmapsync")
                    if parsed.base.endswith(".jmapsync")
                    else None
                )
                letters = "".join(sorted(set(parsed.flags) & set(LETTERS)))
                files.append(
                    File(
                        f"{folder}/{sub}/{name}",
                        folder,
                        sub,
                        name,
                        letters,
                        eid,
                        token_of(raw),
                        body_of(raw),
                    )
                )
    return files


def folder_of(server: JmapServer) -> dict[str, str]:
    """Mailbox id -> folder (verbatim): the inbox is INBOX, others their path."""
    with server.store.lock:
        return {
            m: "INBOX" if b.role == "inbox" else server.store.path(m)
            for m, b in server.store.mailboxes.items()
        }


def names(server: JmapServer) -> dict[str, str]:
    """Mailbox id -> folder (verbatim): the inbox is INBOX, others their path."""
    with server.store.lock:
        return {
            m: "INBOX" if b.role == "inbox" else server.store.path(m)
            for m, b in server.store.mailboxes.items()
        }


def snapshot(server: JmapServer) -> dict[str, Snap]:
    with server.store.lock:
        return {
            e.id: Snap(
                e.id,
                token_of(server.store.blobs[e.blob_id]),
                frozenset(e.mailbox_ids),
                frozenset(e.keywords),
                server.store.blobs[e.blob_id],
            )
            for e in server.store.emails.values()
        }


def recorded(server: JmapServer, state_db: Path) -> tuple[dict[str, Snap], dict[str, str]]:
    """The Emails and mailbox folders as the engine's state database holds
    them: the base it merges against -- without the Emails whose download
    failed (sync/remote.py `_base`: no file here is no local delete)."""
    db = sqlite3.connect(state_db)
    try:
        rows = db.execute("SELECT id, blob_id, mailbox_ids, keywords FROM emails").fetchall()
        paths = dict(db.execute("SELECT id, path FROM mailboxes").fetchall())
        raw = db.execute("SELECT value FROM meta WHERE key='retry_downloads'").fetchone()
    finally:
        db.close()
    waiting = set(json.loads(raw[0])) if raw and raw[0] else set()
    with server.store.lock:
        blobs = dict(server.store.blobs)
    emails = {
        eid: Snap(
            eid,
            token_of(blobs[blob]),
            frozenset(m for m in boxes.split() if m),
            frozenset(k for k in kws.split() if k),
            blobs[blob],
        )
        for eid, blob, boxes, kws in rows
        if eid not in waiting
    }
    return emails, paths


def letters(keywords: frozenset[str]) -> str:
    return flags_from_keywords(keywords)


@dataclass
class Expect:
    """What a pass must achieve, computed from what it starts from."""

    survive: set[int]  # tokens that must be on the server afterwards
    # token -> (mailbox keys, letters or None: not decided here) the message
    # must end with; a key is a mailbox id, or "new:<folder>" for a folder
    # that becomes a mailbox
    exact: dict[int, tuple[frozenset[str], str | None]]
    why: dict[int, str]


def box_keys(
    base_names: dict[str, str], names: dict[str, str], folders: list[str]
) -> dict[str, str | None]:
    """Folder on disk (before the pass) -> the mailbox it stands for: its
    mailbox as last synced (the engine moves a folder the server renamed,
    files and all), a mailbox of that name, a new mailbox ("new:<folder>"),
    or None (its mailbox is gone: rule 1, left alone)."""
    by_base = {n: m for m, n in base_names.items()}
    by_now = {n: m for m, n in names.items()}
    out: dict[str, str | None] = {}
    for folder in folders:
        if folder in by_base and by_base[folder] in names:
            out[folder] = by_base[folder]
        elif folder in by_now:
            out[folder] = by_now[folder]
        elif folder not in by_base:
            out[folder] = "new:" + folder
        else:
            out[folder] = None
    return out


def expect(
    base: dict[str, Snap],
    base_names: dict[str, str],
    server: dict[str, Snap],
    names: dict[str, str],
    files: list[File],
    folders: list[str],
) -> Expect:
    """The rules (sync/twoway.py, sync/merge.py, the pull), per message.

    `base` / `base_names`: the Emails and mailbox folders as the last clean
    pass left them; `server` / `names` / `files` / `folders`: both sides as
    this pass finds them."""
    trash = next(m for m, n in names.items() if n == "Trash")
    key = box_keys(base_names, names, folders)
    by_token = {s.token: s for s in server.values()}
    here: dict[str, list[File]] = defaultdict(list)  # Email id -> files standing for it
    unmatched: dict[int, list[File]] = defaultdict(list)  # token -> MUA files to import
    for f in files:
        if f.eid is not None:
            here[f.eid].append(f)
        elif f.token in by_token and key[f.folder] is not None:
            here[by_token[f.token].eid].append(f)  # cp or mutt copy of a message there
        elif f.token is not None and key[f.folder] is not None:
            unmatched[f.token].append(f)  # imported (once per message) as a new one
    new_tokens = set(unmatched)
    out = Expect(set(new_tokens), {}, dict.fromkeys(new_tokens, "new local file"))
    for eid, s in server.items():
        if eid not in base and s.token is not None:
            out.survive.add(s.token)
            out.why[s.token] = "new on the server"
    for eid, b in base.items():
        r = server.get(eid)
        fs = here.get(eid, [])
        t = b.token
        assert t is not None
        keys = [key[f.folder] for f in fs]
        if None in keys or any(m not in names for m in b.boxes):
            # rule 1: left alone; the pull makes the files follow the server
            if r is not None:
                out.survive.add(t)
                out.exact[t] = (r.boxes, letters(r.keywords))
            out.why[t] = "a mailbox or folder without counterpart: left alone"
            continue
        boxes = frozenset(k for k in keys if k is not None)
        base_letters = letters(b.keywords)
        changed = {c for c in LETTERS if any((c in f.flags) != (c in base_letters) for f in fs)}
        cont = by_token.get(t)
        changed_here = bool(fs) and (boxes != b.boxes or bool(changed))
        if r is None and changed_here and cont is not None and cont.eid not in base:
            # A re-import whose answer a faulted pass lost: the journal finds
            # it, and the old Email's files stand for it (joins and leaves
            # since count; their flags are its keywords, bar the changes made
            # to the journaled file since -- which file that was is not
            # known here, so the flags are not checked).
            boxes |= {k for f in here.get(cont.eid, []) if (k := key[f.folder]) is not None}
            out.survive.add(t)
            out.exact[t] = (boxes, None)
            out.why[t] = "re-import recovered from the journal"
            continue
        if r is None:
            if fs and (boxes != b.boxes or changed):
                out.survive.add(t)
                flags = "".join(sorted(set(base_letters) ^ changed))
                # MUA copies of it join the re-import (one Email per message)
                joined = {key[f.folder] for f in unmatched.get(t, [])}
                out.exact[t] = (boxes | {k for k in joined if k is not None}, flags)
                out.why[t] = "destroyed there, changed here: imported again"
            else:
                out.why[t] = "destroyed there, unchanged here"
            continue
        # per flag: a letter changed here wins, else the server's value
        remote = letters(r.keywords)
        final = "".join(
            c for c in LETTERS if (c not in base_letters if c in changed else c in remote)
        )
        out.survive.add(t)
        if boxes == b.boxes:
            out.exact[t] = (r.boxes, final)
            out.why[t] = "not moved here"
        elif not fs:
            if r.boxes != b.boxes or r.keywords != b.keywords:
                out.exact[t] = (r.boxes, final)
                out.why[t] = "deleted here, changed there: kept"
            elif r.boxes == {trash}:
                out.survive.discard(t)
                out.why[t] = "deleted here while only in Trash: destroyed"
            else:
                out.exact[t] = (frozenset({trash}), final)
                out.why[t] = "deleted here: to Trash"
        elif r.boxes != b.boxes:
            out.exact[t] = (r.boxes, final)
            out.why[t] = "moved on both sides: the server's move"
        else:
            out.exact[t] = (boxes, final)
            out.why[t] = "moved here"
    return out
