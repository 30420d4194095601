"""Keywords beyond the five flags: each folder's Dovecot letters, for one pass.

    load      after the folders are in place: read every folder's
              ``dovecot-keywords`` (maildir/keyword_file.py) and what the
              last pass applied (the state database), into `ctx.letters`;
    allocate  before the pull plan: keywords of the planned Emails that
              have no letter in a folder get the lowest free slots there
              (the file is written BEFORE any file name carries them);
              more than 26: the rest stay server-only, logged once;
    record    in the pass's transaction: the letters now applied to every
              file of a folder become its "synced" letters.

"Synced" is what lets a missing letter mean "removed here": a folder's files
all carry a letter exactly when their Email has the keyword only once a pass
has planned every Email of that folder with the letter known (a full pass, or
the folder was scanned).  Until then a new letter counts only where it is
present (`Letters.told`), and the folder's time stamp is not recorded, so the
next pass plans all of it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from sqlite3 import Connection

from jmapsync.jmap.types import Email, MailboxId
from jmapsync.maildir import keyword_file
from jmapsync.maildir.keywords import FILE_NAME, LETTERS, Letters, Slots, is_mappable, mapped
from jmapsync.maildir.keywords import allocate as allocate_slots
from jmapsync.sync.context import PassContext

META = "keyword_letters"


def _recorded(ctx: PassContext) -> dict[str, dict[str, dict[str, str]]]:
    raw = ctx.db.get_meta(META)
    data = json.loads(raw) if raw else {}
    return {"synced": data.get("synced", {}), "overflow": data.get("overflow", {})}


def load(ctx: PassContext, folders: Iterable[str], moves: Iterable[tuple[str, str]]) -> None:
    """`ctx.letters` for every folder; `moves`: (old, new) paths of folders
    moved this pass (their file moved along: maildir/keyword_file.move)."""
    synced = _recorded(ctx)["synced"]
    for src, dst in moves:
        if src in synced:
            synced[dst] = synced.pop(src)
    server_only = ctx.account.server_only_keywords
    ctx.letters = {}
    for folder in folders:
        slots = keyword_file.read(ctx.store, folder)
        if slots is None:
            # No file (a user removed it): the letters we applied are what
            # the files carry; allocate() writes them back first.
            slots = _slots_of(synced.get(folder, {}))
        ctx.letters[folder] = Letters.of(mapped(slots, server_only), synced.get(folder))


def _slots_of(letters: Mapping[str, str]) -> Slots:
    return {LETTERS.index(letter): kw for letter, kw in letters.items()}


def allocate(ctx: PassContext, emails: Iterable[Email], folder_of: Mapping[MailboxId, str]) -> None:
    """Give every keyword of `emails` a letter in each folder it is in, where
    a slot is free; write the folders' files first.  `emails` is read once
    (sync/stream.py hands a stream of a million)."""
    server_only = ctx.account.server_only_keywords
    needed: dict[str, set[str]] = defaultdict(set)
    # Keyword sets are interned (jmap/types.py): few distinct ones among
    # 100 000 Emails, so each is checked once.
    custom_of: dict[frozenset[str], list[str]] = {}
    for e in emails:
        custom = custom_of.get(e.keywords)
        if custom is None:
            custom = custom_of[e.keywords] = [k for k in e.keywords if is_mappable(k, server_only)]
        if not custom:
            continue
        for m in e.mailbox_ids:
            folder = folder_of.get(m)
            lt = ctx.letters.get(folder) if folder is not None else None
            missing = [k for k in custom if lt is not None and k not in lt.letter_of]
            if folder is not None and missing:
                needed[folder].update(missing)
    for folder, lt in ctx.letters.items():
        if lt.current and not (ctx.store.path(folder) / FILE_NAME).exists():
            needed.setdefault(folder, set())  # the file was removed: write ours back
    recorded = _recorded(ctx)
    overflow: dict[str, list[str]] = {}
    for folder in sorted(needed):
        lt = ctx.letters[folder]

        def change(on_disk: Slots | None, lt: Letters = lt, folder: str = folder) -> Slots:
            slots = on_disk if on_disk is not None else _slots_of(lt.current)
            new, overflow[folder] = allocate_slots(slots, needed[folder], server_only)
            return new

        slots: Slots | None
        try:
            if ctx.dry is not None:  # what would be written, without writing it
                slots = change(keyword_file.read(ctx.store, folder))
            else:
                slots = keyword_file.update(ctx.store, folder, change)
        except keyword_file.Locked:
            ctx.log.info("keywords-file-locked", folder=folder, action="letters next pass")
            overflow.pop(folder, None)  # not told: tell when it is written
            continue
        ctx.letters[folder] = Letters.of(mapped(slots or {}, server_only), lt.synced)
        if ctx.letters[folder].current != lt.current:
            ctx.log.info("keyword-letters", folder=folder, letters=ctx.letters[folder].current)
        told = set(recorded["overflow"].get(folder, []))
        fresh = sorted(set(overflow.get(folder, [])) - told)
        if fresh:
            ctx.log.warning(
                "keywords-without-letter",
                folder=folder,
                keywords=fresh,
                reason="all 26 Dovecot letters of this folder are taken; they stay server-only",
            )
    ctx.overflow_told = {
        f: sorted(set(recorded["overflow"].get(f, [])) | set(overflow.get(f, [])))
        for f in set(recorded["overflow"]) | set(overflow)
        if f in ctx.letters
    }


def record(ctx: PassContext, conn: Connection, scanned: Iterable[str] | None) -> None:
    """Store the letters each fully planned folder now carries (`scanned`:
    the folders a partial pass looked at; None: all of them).  A folder whose
    letters changed but was not fully planned is left unsettled."""
    recorded = _recorded(ctx)
    looked = None if scanned is None else set(scanned)
    synced: dict[str, dict[str, str]] = {}
    for folder, lt in ctx.letters.items():
        if looked is None or folder in looked:
            now = dict(lt.current)
        else:
            now = dict(lt.synced)
            if now != dict(lt.current):
                ctx.unsettled.add(folder)
        if now:
            synced[folder] = now
    overflow = recorded["overflow"] if ctx.overflow_told is None else ctx.overflow_told
    data = {"synced": synced, "overflow": {f: v for f, v in overflow.items() if v}}
    ctx.db.set_meta(conn, META, json.dumps(data, sort_keys=True))
