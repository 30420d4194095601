"""Two-way: carry the local side's changes to the server (executes sync/twoway.py).

Runs inside a pass, after the remote read and before the pull plan, so that
the pull plan then sees a server that already holds the local changes:

1. Folders: a new local Maildir folder becomes a mailbox (Mailbox/set create,
   parents first); a folder removed locally destroys its mailbox only when
   the mailbox is empty on the server too (otherwise the pull recreates the
   folder, and the log says why).
2. Journal recovery: an Email/import whose answer a crash swallowed is found
   on the server (same size, same SHA-256) and its file adopted, instead of
   importing it twice.
3. Files without our name (an MUA's): identical to a message we hold -> the
   file is renamed to our name (a copy, or a move by `mv`); same Message-ID
   and same body as an Email on the server -> it stands for that Email there
   (mutt's move: a copy with an extra header), and the server's bytes replace
   it once they are in place; anything else that is a message -> imported.
4. The membership and keyword changes (sync/twoway.py), checked against the
   deletion guards, go out in Email/set calls guarded by ifInState; then the
   imports (upload, journal, Email/import) and the adoption of their files.

A stateMismatch anywhere raises MethodError; the engine runs the pass again
from a fresh read.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from jmapsync.errors import DeletionRefused, ProtocolError
from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId, Mailbox, MailboxId, State
from jmapsync.maildir import message
from jmapsync.maildir.flags import keywords_from_flags
from jmapsync.maildir.lineendings import inspect, local_form, server_bytes, to_lf
from jmapsync.maildir.names import mailbox_path_components
from jmapsync.maildir.store import LocalFile, Subdir, join
from jmapsync.state.db import Content, StateDB
from jmapsync.sync import twoway
from jmapsync.sync.plan import TRASHED, standard, wanted_name

if TYPE_CHECKING:
    from jmapsync.sync.engine import Engine, SyncReport

JOURNAL_IMPORT = "import"
# Email/set and Mailbox/set intents: a pass that finds them knows an earlier
# one died after announcing them; their effect is read back from the server
# (the three-way decisions see a change made on both sides as done).
JOURNAL_WRITE = "write"
# A file to import: its bytes, and its mailboxes (None: its folder's)
Import = tuple[LocalFile, bytes, frozenset[str] | None]
INBOX = "INBOX"


@dataclass
class Outcome:
    email_state: State
    touched: set[EmailId] | None
    rescan: bool = False  # local files were renamed or written: scan again
    superseded: list[tuple[str, str]] = field(default_factory=list)  # (relpath, Email id)


def _received_at(path: Path) -> str:
    """The file's time as receivedAt: mutt keeps a message's date as the mtime
    of the copies it writes, so the server sorts the message where it was."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))


class TwoWay:
    """One pass's worth of local-to-remote work for one account."""

    def __init__(self, engine: Engine, db: StateDB, client: JmapClient, report: SyncReport):
        self.engine = engine
        self.store = engine.store
        self.account = engine.account
        self.log = engine.log
        self.db = db
        self.client = client
        self.report = report

    # -- 1. folders ----------------------------------------------------------------

    def vanished(
        self, old: Mapping[MailboxId, str], folder_of: Mapping[MailboxId, str]
    ) -> list[str]:
        """Folders synced last time, still wanted at the same path, gone from disk."""
        return sorted(
            path
            for m, path in old.items()
            if folder_of.get(m) == path and not self.store.is_folder(path)
        )

    async def folders(
        self,
        old: Mapping[MailboxId, str],
        mailboxes: Mapping[MailboxId, Mailbox],
        folder_of: Mapping[MailboxId, str],
        held: Mapping[str, int],
        vanished: list[str],
    ) -> bool:
        """Create mailboxes for new local folders, destroy the mailboxes of
        folders removed while empty.  True if the server's mailboxes changed."""
        changed = await self._create_mailboxes(old, mailboxes, folder_of)
        for path in vanished:
            if held.get(path):
                continue  # removed with messages in it: the deletion guard decides
            [mid] = [m for m, p in folder_of.items() if p == path]
            box = mailboxes[mid]
            children = any(b.parent_id == mid for b in mailboxes.values())
            why = None
            if box.role:
                why = f"it is the {box.role} mailbox"
            elif children:
                why = "the mailbox has child mailboxes"
            elif box.total_emails:
                why = f"the mailbox holds {box.total_emails} messages on the server"
            else:
                self.db.journal_add(JOURNAL_WRITE, {"mailbox_destroy": mid, "folder": path})
                why = await mail.destroy_mailbox(self.client, mid)
            if why is None:
                self.report.mailboxes_destroyed += 1
                self.log.info("mailbox-destroyed", folder=path, reason="folder removed locally")
                changed = True
            else:
                msg = f"folder {path!r} was removed locally but is kept: {why}"
                self.log.warning("folder-recreated", folder=path, reason=why)
                self.report.warnings.append(msg)
        return changed

    async def _create_mailboxes(
        self,
        old: Mapping[MailboxId, str],
        mailboxes: Mapping[MailboxId, Mailbox],
        folder_of: Mapping[MailboxId, str],
    ) -> bool:
        layout = self.account.layout
        known = set(folder_of.values()) | set(old.values())
        new = [f for f in self.store.folders(layout) if f not in known]
        if not new:
            return False
        by_names: dict[tuple[str, ...], str] = {}
        for m, path in folder_of.items():
            try:
                by_names[tuple(mailbox_path_components(path, layout))] = m
            except ValueError:
                continue
        inbox = next((m for m, b in mailboxes.items() if b.role == "inbox"), None)
        if inbox is not None:
            by_names.setdefault((INBOX,), inbox)
        wanted: set[tuple[str, ...]] = set()
        for folder in new:
            try:
                names = tuple(mailbox_path_components(folder, layout))
            except ValueError as exc:
                self.log.warning("folder-not-created", folder=folder, reason=str(exc))
                self.report.warnings.append(f"folder {folder!r} not created on the server: {exc}")
                continue
            # Every missing ancestor too (a verbatim "a/b" whose "a" has no cur/).
            wanted.update(names[:i] for i in range(1, len(names) + 1))
        wanted -= set(by_names)
        if not wanted:
            return False
        # One Mailbox/set per depth: a parent exists before its children.
        for depth in sorted({len(n) for n in wanted}):
            level = sorted(n for n in wanted if len(n) == depth)
            creates: dict[str, tuple[str, str | None]] = {}
            for i, names in enumerate(level):
                parent = by_names.get(names[:-1]) if depth > 1 else None
                if depth > 1 and parent is None:
                    continue  # its parent could not be created: reported below
                creates[f"c{i}"] = (names[-1], parent)
            if not creates:
                continue
            paths = sorted("/".join(level[int(cid[1:])]) for cid in creates)
            self.db.journal_add(JOURNAL_WRITE, {"mailbox_create": paths})
            ids, failed = await mail.create_mailboxes(self.client, creates)
            for cid, (name, _parent) in creates.items():
                names = level[int(cid[1:])]
                if cid in ids:
                    by_names[names] = ids[cid]
                    self.report.mailboxes_created += 1
                    self.log.info("mailbox-created", name="/".join(names))
                else:
                    why = failed.get(cid, "no answer")
                    self.log.warning("mailbox-not-created", name="/".join(names), reason=why)
                    self.report.warnings.append(f"mailbox {name!r} not created: {why}")
        return True

    # -- 2.-4. messages ----------------------------------------------------------------

    async def push(
        self,
        scan: list[LocalFile],
        emails: dict[EmailId, Email],
        folder_of: Mapping[MailboxId, str],
        mailboxes: Mapping[MailboxId, Mailbox],
        email_state: State,
        touched: set[EmailId] | None,
        *,
        held: Mapping[str, int],
        vanished: list[str],
        root_missing: bool,
    ) -> Outcome:
        base = self.engine.base
        out = Outcome(email_state, set(touched) if touched is not None else None)
        mailbox_of = {p: m for m, p in folder_of.items()}
        trash = next((m for m, b in mailboxes.items() if b.role == "trash"), None)

        died = self.db.journal(JOURNAL_WRITE)
        if died:
            self.log.info(
                "earlier-pass-died", writes=len(died), action="their effect is read from the server"
            )
        recovered = await self._recover_imports(emails, base, scan)
        out.rescan = bool(recovered)
        foreign = [
            f
            for f in scan
            if f.email_id is None
            and f.folder in mailbox_of
            and TRASHED not in f.flags
            and f.relpath not in recovered
        ]
        virtual: list[LocalFile] = []
        imports: list[Import] = []
        if foreign:
            self.engine.mark_files_pending(self.db, rewrite=True)
            virtual, imports = await self._match_foreign(foreign, emails, out)

        local: dict[str, list[LocalFile]] = defaultdict(list)
        for f in scan:
            if f.email_id is not None:
                local[f.email_id].append(f)
        for f in virtual:
            assert f.email_id is not None  # noqa: S101
            local[f.email_id].append(f)
        plan = twoway.plan_push(base, emails, local, folder_of, trash)

        reasons = twoway.deletion_guard(
            plan,
            held,
            max_deletes=self.account.max_deletes,
            vanished=vanished,
            root_missing=root_missing,
        )
        if reasons and not self.engine.force_deletes:
            raise DeletionRefused(
                "refusing to delete: "
                + "; ".join(reasons)
                + ". No message was deleted. If this is what you want, run"
                " `jmapsync sync --force-deletes` (or raise max_deletes)"
            )
        for eid, why in plan.kept:
            self.log.info("local-delete-not-sent", email=eid, reason=why)
        if not plan.empty:
            # The user's renames are not the pull plan's: record the files anew.
            self.engine.mark_files_pending(self.db, rewrite=True)
        await self._send(plan, emails, out)
        for r in plan.reimports:
            raw = await asyncio.to_thread(self.store.read, r.file.relpath)
            imports.append((r.file, raw, r.mailbox_ids))
        if imports:
            self.engine.mark_files_pending(self.db, rewrite=True)
            await self._import(imports, emails, mailbox_of, out)
        return out

    # -- journal recovery ------------------------------------------------------------

    async def _recover_imports(
        self,
        emails: dict[EmailId, Email],
        base: Mapping[EmailId, Email],
        scan: list[LocalFile],
    ) -> set[str]:
        """Files of imports a crash interrupted that the server did take:
        adopted now (their paths returned), never imported again."""
        entries = self.db.journal(JOURNAL_IMPORT)
        if not entries:
            return set()
        on_disk = {f.relpath: f for f in scan}
        adopted: set[str] = set()
        for _seq, p in entries:
            rel, sha, size = str(p["path"]), str(p["sha256"]), int(str(p["size"]))
            f = on_disk.get(rel)
            if f is None or f.email_id is not None:
                continue  # gone, or already ours
            found: Email | None = None
            if isinstance(p.get("email_id"), str):
                found = emails.get(EmailId(str(p["email_id"])))
            else:
                for e in emails.values():
                    if e.id in base or e.size != size or str(p["mailbox"]) not in e.mailbox_ids:
                        continue
                    blob = await self.client.fetch_blob(e.blob_id, e.size)
                    if hashlib.sha256(blob).hexdigest() == sha:
                        found = e
                        break
            if found is None:
                continue  # never imported: imported again below, as a new file
            raw = await asyncio.to_thread(self.store.read, rel)
            self.log.info("import-recovered", path=rel, email=found.id)
            self.engine.mark_files_pending(self.db, rewrite=True)
            await asyncio.to_thread(self._adopt, f, raw, found)
            adopted.add(rel)
        with self.db.transaction() as conn:
            self.db.journal_clear(conn, JOURNAL_IMPORT)
        return adopted

    # -- foreign files -----------------------------------------------------------------

    async def _match_foreign(
        self, foreign: list[LocalFile], emails: Mapping[EmailId, Email], out: Outcome
    ) -> tuple[list[LocalFile], list[Import]]:
        """Split the MUA's files: copies of known messages (returned as files of
        their Email, under the name they have now), and new messages."""
        contents = self.db.contents() | self.engine.new_contents
        by_sha: dict[tuple[str, str], str] = {
            (c.sha256, c.form): eid for eid, c in contents.items() if EmailId(eid) in emails
        }
        virtual: list[LocalFile] = []
        rest: list[tuple[LocalFile, bytes, str | None]] = []
        for f in foreign:
            try:
                raw = await asyncio.to_thread(self.store.read, f.relpath)
            except FileNotFoundError:
                continue  # the mail program moved it on meanwhile: next pass
            eid = by_sha.get((hashlib.sha256(raw).hexdigest(), "exact"))
            if eid is None and b"\r" not in raw:
                eid = by_sha.get((hashlib.sha256(server_bytes(raw, "lf")).hexdigest(), "lf"))
            if eid is not None:
                # The same bytes as our file of that Email: a copy (cp, mv under
                # another name).  Take it over under our name.
                sub, name = wanted_name(eid, standard(f.flags))
                if self.store.rename(f.relpath, join(f.folder, sub, name)):
                    here = cast(Subdir, sub)
                    virtual.append(LocalFile(f.folder, here, name, eid, standard(f.flags)))
                    self.report.adopted += 1
                    out.rescan = True
                continue
            rest.append((f, raw, message.message_id(raw)))

        candidates = await self._by_message_id({mid for _, _, mid in rest if mid})
        blobs: dict[str, bytes] = {}
        imports: list[Import] = []
        for f, raw, mid in rest:
            match = None
            for cand in candidates.get(mid or "", []):
                e = emails.get(EmailId(cand))
                if e is None:
                    continue
                if cand not in blobs:
                    blobs[cand] = await self.client.fetch_blob(e.blob_id, e.size)
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
                imports.append((f, raw, None))
            else:
                self.log.warning("not-a-message", path=f.relpath, action="left alone")
                self.report.warnings.append(f"{f.relpath} is not a mail message; left alone")
        return virtual, imports

    async def _by_message_id(self, mids: set[str]) -> dict[str, list[str]]:
        """Message-ID -> ids of the Emails on the server that carry it."""
        if not mids:
            return {}
        aid = self.client.session.account_id if self.client.session else ""
        ordered = sorted(mids)
        calls = [
            (
                "Email/query",
                {"accountId": aid, "filter": {"header": ["Message-ID", mid]}, "limit": 20},
                f"q{i}",
            )
            for i, mid in enumerate(ordered)
        ]
        r = await self.client.call(calls)
        out: dict[str, list[str]] = {}
        for i, mid in enumerate(ordered):
            ids = r.result(f"q{i}").get("ids") or []
            out[mid] = [x for x in ids if isinstance(x, str)]
        # The filter matches substrings on some servers: keep exact matches only.
        found = sorted({x for xs in out.values() for x in xs})
        if found:
            exact = await mail.message_ids(self.client, found)
            out = {mid: [x for x in xs if mid in exact.get(x, [])] for mid, xs in out.items()}
        return out

    # -- writes ---------------------------------------------------------------------

    async def _send(
        self, plan: twoway.PushPlan, emails: dict[EmailId, Email], out: Outcome
    ) -> None:
        assert self.client.session is not None  # noqa: S101
        size = self.client.session.limits.max_objects_in_set
        work: list[twoway.Update | str] = [*plan.updates, *plan.destroy]
        for start in range(0, len(work), size):
            chunk = work[start : start + size]
            updates = {u.email_id: dict(u.as_jmap()) for u in chunk if isinstance(u, twoway.Update)}
            destroy = [u for u in chunk if isinstance(u, str)]
            intent = {"update": sorted(updates), "destroy": destroy, "state": out.email_state}
            self.db.journal_add(JOURNAL_WRITE, intent)
            result = await mail.set_emails(self.client, out.email_state, updates, destroy)
            out.email_state = result.new_state
            for u in chunk:
                eid = EmailId(u if isinstance(u, str) else u.email_id)
                if isinstance(u, str) and u in result.destroyed:
                    emails.pop(eid, None)
                    self.report.destroyed += 1
                elif isinstance(u, twoway.Update) and u.email_id in result.updated:
                    emails[eid] = u.apply(emails[eid])
                    self.report.pushed += 1
                else:
                    why = result.why(str(eid))
                    self.log.warning("change-not-sent", email=str(eid), reason=why)
                    self.report.warnings.append(f"local change of {eid} refused: {why}")
                    continue
                if out.touched is not None:
                    out.touched.add(eid)
        if work:
            self.log.info(
                "local-changes-sent",
                updated=self.report.pushed,
                destroyed=self.report.destroyed,
                kept=len(plan.kept),
            )

    async def _import(
        self,
        items: list[Import],
        emails: dict[EmailId, Email],
        mailbox_of: Mapping[str, MailboxId],
        out: Outcome,
    ) -> None:
        assert self.client.session is not None  # noqa: S101
        limits = self.client.session.limits
        batch = max(1, min(limits.max_objects_in_set, 50))
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            pending: dict[str, tuple[LocalFile, bytes, int, dict[str, object]]] = {}
            boxes: dict[str, frozenset[str]] = {}
            for i, (f, raw, mailbox_ids) in enumerate(chunk):
                data = message.upload_form(raw)
                if len(data) > limits.max_size_upload:
                    why = f"{len(data)} bytes, over the server's maxSizeUpload"
                    self.log.warning("import-skipped", path=f.relpath, reason=why)
                    self.report.warnings.append(f"{f.relpath} not imported: {why}")
                    continue
                intent = {
                    "path": f.relpath,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "mailbox": mailbox_of[f.folder],
                }
                seq = self.db.journal_add(JOURNAL_IMPORT, intent)
                intent["blob_id"] = await self.client.upload(data)
                pending[f"i{i}"] = (f, data, seq, intent)
                boxes[f"i{i}"] = mailbox_ids or frozenset({mailbox_of[f.folder]})
            if not pending:
                continue
            items_jmap = {
                cid: mail.ImportItem(
                    blob_id=str(intent["blob_id"]),
                    mailbox_ids=boxes[cid],
                    keywords=keywords_from_flags(standard(f.flags)),
                    received_at=_received_at(self.store.path(f.relpath)),
                )
                for cid, (f, _data, _seq, intent) in pending.items()
            }
            result = await mail.import_emails(self.client, out.email_state, items_jmap)
            out.email_state = result.new_state
            for cid, (f, data, seq, intent) in pending.items():
                email = result.created.get(cid)
                if email is not None:
                    self.db.journal_update(seq, intent | {"email_id": email.id})
                    await asyncio.to_thread(self._adopt, f, data, email)
                    emails[email.id] = email
                    if out.touched is not None:
                        out.touched.add(email.id)
                    self.report.imported += 1
                    out.rescan = True
                    continue
                err = result.failed.get(cid, {})
                existing = err.get("existingId")
                if err.get("type") == "alreadyExists" and isinstance(existing, str):
                    await self._join_existing(f, EmailId(existing), emails, mailbox_of, out)
                else:
                    why = result.why(cid)
                    self.log.warning("import-refused", path=f.relpath, reason=why)
                    self.report.warnings.append(f"{f.relpath} not imported: {why}")
        if self.report.imported:
            self.log.info("local-messages-imported", count=self.report.imported)

    async def _join_existing(
        self,
        f: LocalFile,
        eid: EmailId,
        emails: dict[EmailId, Email],
        mailbox_of: Mapping[str, MailboxId],
        out: Outcome,
    ) -> None:
        """The server already holds these bytes (Cyrus: same content, same
        id): the Email joins this folder's mailbox, and its bytes replace
        the file once they are in place."""
        mid = mailbox_of[f.folder]
        e = emails.get(eid)
        if e is None:
            raise ProtocolError(f"Email/import: alreadyExists names {eid}, which is not there")
        if mid not in e.mailbox_ids:
            update = twoway.Update(eid, join=frozenset({mid}), reason="move")
            # Unguarded: after an import our state is behind (see import_emails),
            # and a patch of one mailbox key cannot overwrite anyone's change.
            result = await mail.set_emails(self.client, None, {eid: dict(update.as_jmap())}, [])
            if eid not in result.updated:
                why = result.why(eid)
                self.log.warning("import-refused", path=f.relpath, reason=why)
                return
            emails[eid] = update.apply(e)
            if out.touched is not None:
                out.touched.add(eid)
        out.superseded.append((f.relpath, eid))

    def _adopt(self, f: LocalFile, sent: bytes, email: Email) -> None:
        """The file of an imported message, under our name, in the account's
        line-ending form of the bytes the server now holds."""
        seen = inspect(message.upload_form(sent))
        form = local_form(self.account.line_endings, seen)
        server = message.upload_form(sent)
        body = to_lf(server) if form == "lf" else server
        sub, name = wanted_name(email.id, standard(f.flags))
        dst = join(f.folder, sub, name)
        current = self.store.read(f.relpath)
        if current == body:
            self.store.rename(f.relpath, dst)
        else:
            self.store.deliver(f.folder, email.id, body, dst)
            self.store.remove(f.relpath)
        self.engine.new_contents[email.id] = Content(seen.sha256, seen.size, seen.crlf_only, form)

    def remove_superseded(self, superseded: Iterable[tuple[str, str]], owned: set[str]) -> set[str]:
        """Remove MUA copies whose Email now has a file of ours in the mirror;
        the paths removed."""
        removed = set()
        for rel, eid in superseded:
            if eid not in owned:
                self.log.warning("copy-kept", path=rel, email=eid, reason="not mirrored yet")
                continue
            if self.store.remove(rel):
                self.report.superseded += 1
                removed.add(rel)
        return removed
