"""Files without our name (a mail program's), and imports a crash interrupted.

A file an MUA wrote is one of:

1. the same bytes as a file of an Email we hold (`cp`, `mv` under another
   name): renamed to our name, it is an ordinary file of that Email;
2. the same Message-ID and body as an Email on the server (mutt's move or
   copy adds a `Content-Length:` header): it stands for that Email in its
   folder, and the server's bytes replace it once they are in place;
3. anything else that looks like a message: a new message, to be imported.

Journal recovery: an Email/import whose answer a crash swallowed is found on
the server (by id, or among the new Emails by size and SHA-256) and its file
adopted, instead of being imported twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId
from jmapsync.maildir import message
from jmapsync.maildir.files import TRASHED, LocalFile, Subdir, email_id_of, join, wanted_name
from jmapsync.maildir.flags import parse_name
from jmapsync.maildir.lineendings import inspect, local_form, server_bytes, to_lf
from jmapsync.state.db import JOURNAL_IMPORT, Content
from jmapsync.sync.context import PassContext
from jmapsync.sync.local_to_remote.outcome import Import, Outcome


def adopt(ctx: PassContext, f: LocalFile, sent: bytes, email: Email) -> None:
    """The file of an imported message, under our name, in the account's
    line-ending form of the bytes the server now holds."""
    store = ctx.store
    server = message.upload_form(sent)
    seen = inspect(server)
    form = local_form(ctx.account.line_endings, seen)
    body = to_lf(server) if form == "lf" else server
    sub, name = wanted_name(email.id, _kept(f.flags))
    dst = join(f.folder, sub, name)
    if ctx.dry is not None:
        ctx.dry.rename(f, dst, email.id, "take over import")
        return
    if store.read(f.relpath) == body:
        store.rename(f.relpath, dst)
        store.set_arrival(dst, email.received_at)
    else:
        store.deliver(f.folder, email.id, body, dst, email.received_at)
        store.remove(f.relpath)
    ctx.new_contents[email.id] = Content(seen.sha256, seen.size, seen.crlf_only, form)


def _kept(flags: str) -> str:
    """The flags of a mail program's file under our name: all its letters
    (Dovecot keyword letters too: they were imported, or are the user's)."""
    return "".join(sorted(set(flags) - {TRASHED}))


@dataclass
class Recovered:
    """What recover_imports found: the files adopted (their paths when the
    pass began), and for a re-import (a file under the name of an Email the
    server destroyed) the old Email id -> the new Email and the adopted
    file's flags when the import was journaled (a change since is the user's)."""

    adopted: set[str] = field(default_factory=set)
    reimported: dict[str, Email] = field(default_factory=dict)
    journaled_flags: dict[str, str] = field(default_factory=dict)  # relpath -> flags


async def recover_imports(
    ctx: PassContext,
    client: JmapClient,
    emails: Mapping[EmailId, Email],
    scan: list[LocalFile],
) -> Recovered:
    """Files of imports a crash interrupted that the server did take:
    adopted now, never imported again."""
    db, base = ctx.db, ctx.base
    entries = db.journal(JOURNAL_IMPORT)
    out = Recovered()
    if not entries:
        return out
    on_disk = {f.relpath: f for f in scan}
    for _seq, p in entries:
        rel, sha, size = str(p["path"]), str(p["sha256"]), int(str(p["size"]))
        f = on_disk.get(rel) or _renamed_since(rel, scan, emails)
        # A file under our name of an Email the server no longer has is a
        # re-import's: look for it too (found by the machine: a lost answer
        # to a re-import made the next pass import it again).
        if f is None or (f.email_id is not None and EmailId(f.email_id) in emails):
            continue  # gone, or a file of a live Email
        found: Email | None = None
        if isinstance(p.get("email_id"), str):
            found = emails.get(EmailId(str(p["email_id"])))
        else:
            # Any mailbox: another client may have moved it since (found by
            # the machine: the import was looked for only where it was put,
            # missed, and made again).  The hash decides; size and "new
            # since the last pass" keep the blobs read few.
            for e in emails.values():
                if e.id in base or e.size != size:
                    continue
                blob = await client.fetch_blob(e.blob_id, e.size)
                if hashlib.sha256(blob).hexdigest() == sha:
                    found = e
                    break
        if found is None:
            continue  # never imported: imported again below, as a new file
        raw = await asyncio.to_thread(ctx.store.read, f.relpath)
        ctx.log.info("import-recovered", path=f.relpath, email=found.id)
        ctx.mark_files_pending(rewrite=True)
        await asyncio.to_thread(adopt, ctx, f, raw, found)
        out.adopted.add(f.relpath)
        if f.email_id is not None:
            out.reimported[f.email_id] = found
            out.journaled_flags[f.relpath] = parse_name(rel.rsplit("/", 1)[-1]).flags
    with db.transaction() as conn:
        db.journal_clear(conn, JOURNAL_IMPORT)
    return out


def _renamed_since(
    rel: str, scan: list[LocalFile], emails: Mapping[EmailId, Email]
) -> LocalFile | None:
    """A re-import's file the user renamed (a flag) or moved since the import
    was journaled: another file of the same destroyed Email.  (An MUA's new
    file renamed since is found by its Message-ID instead: match_foreign.)"""
    old = email_id_of(parse_name(rel.rsplit("/", 1)[-1]).base)
    if old is None or EmailId(old) in emails:
        return None
    return min((f for f in scan if f.email_id == old), key=lambda f: f.relpath, default=None)


async def match_foreign(
    ctx: PassContext,
    client: JmapClient,
    foreign: list[LocalFile],
    emails: Mapping[EmailId, Email],
    out: Outcome,
) -> tuple[list[LocalFile], list[Import]]:
    """Split the MUA's files: copies of known messages (returned as files of
    their Email, under the name they have now), and new messages."""
    store = ctx.store
    contents = ctx.db.contents() | ctx.new_contents
    by_sha: dict[tuple[str, str], str] = {
        (c.sha256, c.form): eid for eid, c in contents.items() if EmailId(eid) in emails
    }
    virtual: list[LocalFile] = []
    rest: list[tuple[LocalFile, bytes, str | None]] = []
    for f in foreign:
        try:
            raw = await asyncio.to_thread(store.read, f.relpath)
        except FileNotFoundError:
            continue  # the mail program moved it on meanwhile: next pass
        eid = by_sha.get((hashlib.sha256(raw).hexdigest(), "exact"))
        if eid is None and b"\r" not in raw:
            eid = by_sha.get((hashlib.sha256(server_bytes(raw, "lf")).hexdigest(), "lf"))
        if eid is not None:
            # The same bytes as our file of that Email: a copy (cp, mv under
            # another name).  Take it over under our name.
            sub, name = wanted_name(eid, _kept(f.flags))
            dst = join(f.folder, sub, name)
            if ctx.dry is not None:
                ctx.dry.rename(f, dst, eid, "take over copy")
            if ctx.dry is not None or store.rename(f.relpath, dst):
                here = cast(Subdir, sub)
                virtual.append(LocalFile(f.folder, here, name, eid, _kept(f.flags)))
                ctx.report.adopted += 1
                out.rescan = True
            continue
        rest.append((f, raw, message.message_id(raw)))

    candidates = await by_message_id(client, {mid for _, _, mid in rest if mid})
    blobs: dict[str, bytes] = {}
    imports: list[Import] = []
    for f, raw, mid in rest:
        match = None
        for cand in candidates.get(mid or "", []):
            e = emails.get(EmailId(cand))
            if e is None:
                continue
            if cand not in blobs:
                blobs[cand] = await ctx.fetch_blob(client, e.blob_id, e.size)
            if message.same_body(raw, blobs[cand]):
                match = cand
                break
        if match is not None:
            # mutt's move or copy: a new file with the same message (plus a
            # header of mutt's).  It stands for that Email in this folder;
            # the server's bytes replace it once they are in place.
            virtual.append(LocalFile(f.folder, f.subdir, f.name, match, f.flags, f.inode))
            out.superseded.append((f.relpath, match))
        elif message.looks_like_message(raw):
            imports.append((f, raw, None, None))
        else:
            msg = f"{f.relpath} is not a mail message; left alone"
            ctx.warn("not-a-message", msg, path=f.relpath, action="left alone")
    return virtual, imports


# RFC 8621 4.4.1: the header filter matches when the header CONTAINS the
# value, so "1.x@y" also finds "11.x@y", "101.x@y", ...: with a small limit the
# Email that really has the Message-ID can fall outside it (an mbsync Maildir
# of 300 such messages had 10 imported twice).  Exact matches are kept below.
_MID_LIMIT = 256


async def by_message_id(client: JmapClient, mids: set[str]) -> dict[str, list[str]]:
    """Message-ID -> ids of the Emails on the server that carry it."""
    if not mids:
        return {}
    aid = client.session.account_id if client.session else ""
    ordered = sorted(mids)
    calls = [
        (
            "Email/query",
            {"accountId": aid, "filter": {"header": ["Message-ID", mid]}, "limit": _MID_LIMIT},
            f"q{i}",
        )
        for i, mid in enumerate(ordered)
    ]
    r = await client.call(calls)
    out: dict[str, list[str]] = {}
    for i, mid in enumerate(ordered):
        ids = r.result(f"q{i}").get("ids") or []
        out[mid] = [x for x in ids if isinstance(x, str)]
    # The filter matches substrings on some servers: keep exact matches only.
    found = sorted({x for xs in out.values() for x in xs})
    if found:
        exact = await mail.message_ids(client, found)
        out = {mid: [x for x in xs if mid in exact.get(x, [])] for mid, xs in out.items()}
    return out
