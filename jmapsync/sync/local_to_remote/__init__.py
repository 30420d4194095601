"""Two-way: carry the local side's changes to the server (executes sync/twoway.py).

Runs inside a pass, after the remote read and before the pull plan, and
returns what it did as an `Outcome` that the engine applies to the remote
model -- so the pull plan then sees a server that already holds the local
changes:

1. Folders (`mailboxes.py`): a new local Maildir folder becomes a mailbox
   (Mailbox/set create, parents first); a folder removed locally destroys
   its mailbox only when the mailbox is empty on the server too (otherwise
   the pull recreates the folder, and the log says why).
2. Journal recovery (`mua_files.py`): an Email/import whose answer a crash
   swallowed is found on the server and its file adopted, never imported twice.
3. Files without our name (`mua_files.py`): a copy of a message we hold is
   renamed to our name; mutt's move (same Message-ID and body) stands for its
   Email; anything else that is a message is imported.
4. The membership and keyword changes (sync/twoway.py, pure), checked against
   the deletion guards, go out in Email/set calls guarded by ifInState; then
   the imports and the adoption of their files (`writes.py`).

A stateMismatch anywhere raises MethodError; the engine runs the pass again
from a fresh read.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Set

from jmapsync.errors import DeletionRefused
from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Email, EmailId, Mailbox, MailboxId, State
from jmapsync.maildir.files import TRASHED, LocalFile
from jmapsync.maildir.keywords import NO_LETTERS
from jmapsync.state.db import JOURNAL_WRITE
from jmapsync.sync import guards, twoway
from jmapsync.sync.context import PassContext
from jmapsync.sync.local_to_remote.mailboxes import sync_folders
from jmapsync.sync.local_to_remote.mua_files import Recovered, match_foreign, recover_imports
from jmapsync.sync.local_to_remote.outcome import Import, Outcome
from jmapsync.sync.local_to_remote.writes import import_files, send_updates

__all__ = ["LocalToRemote", "Outcome"]


class LocalToRemote:
    """One pass's worth of local-to-remote work for one account."""

    def __init__(self, ctx: PassContext, client: JmapClient) -> None:
        self.ctx = ctx
        self.client = client

    async def folders(
        self,
        old: Mapping[MailboxId, str],
        mailboxes: Mapping[MailboxId, Mailbox],
        folder_of: Mapping[MailboxId, str],
        held: Mapping[str, int],
        vanished: list[str],
        emails: Mapping[EmailId, Email],
    ) -> bool:
        """New local folders -> mailboxes, removed empty ones -> destroyed.
        True if the server's mailboxes changed (read them again).  `folder_of`:
        every mailbox's folder, mirrored or not (an unmirrored mailbox's
        folder is not a new one)."""
        return await sync_folders(
            self.ctx, self.client, old, mailboxes, folder_of, held, vanished, emails
        )

    async def mailboxes(
        self, state: State, current: Mapping[MailboxId, Mailbox]
    ) -> tuple[State, dict[MailboxId, Mailbox]]:
        """The mailboxes after `folders()` changed them: read again -- or, in
        a dry run, as they would be."""
        if self.ctx.dry is not None:
            return state, self.ctx.dry.mailboxes(current)
        return await mail.fetch_mailboxes(self.client)

    async def run(
        self,
        scan: list[LocalFile],
        emails: Mapping[EmailId, Email],
        folder_of: Mapping[MailboxId, str],
        mailboxes: Mapping[MailboxId, Mailbox],
        email_state: State,
        held: Mapping[str, int],
        ignore: Set[MailboxId] = frozenset(),
    ) -> Outcome:
        """Steps 2-4 for the files in `scan` against the remote `emails`.
        `folder_of`: every mailbox's folder; `ignore`: the mailboxes not
        mirrored this pass (their folders' files are matched, never imported,
        and a move into or out of them is refused: twoway.Refusal)."""
        ctx, client = self.ctx, self.client
        out = Outcome(email_state)
        mailbox_of = {p: m for m, p in folder_of.items()}
        trash = next((m for m, b in mailboxes.items() if b.role == "trash"), None)

        died = ctx.db.journal(JOURNAL_WRITE)
        if died:
            ctx.log.info(
                "earlier-pass-died", writes=len(died), action="their effect is read from the server"
            )
        recovered = await recover_imports(ctx, client, emails, scan)
        out.rescan = bool(recovered.adopted)
        foreign = [
            f
            for f in scan
            if f.email_id is None
            and f.folder in mailbox_of
            and TRASHED not in f.flags
            and f.relpath not in recovered.adopted
        ]
        virtual: list[LocalFile] = []
        imports: list[Import] = []
        if foreign:
            ctx.mark_files_pending(rewrite=True)
            virtual, imports = await match_foreign(ctx, client, foreign, emails, out)
            imports = self._mirrored_only(imports, mailbox_of, ignore)

        base, local = self._continued(recovered, [*scan, *virtual])
        plan = twoway.plan_push(
            base, emails, local, folder_of, trash, letters=ctx.letters, ignore=ignore
        )
        self._refused(plan.refused)

        reasons = guards.deletion_guard(plan, held, max_deletes=ctx.account.max_deletes)
        if reasons and not ctx.force_deletes:
            raise DeletionRefused(
                "refusing to delete: "
                + "; ".join(reasons)
                + ". No message was deleted. If this is what you want, run"
                " `jmapsync sync --force-deletes` (or raise max_deletes)"
            )
        for eid, why in plan.kept:
            ctx.log.info("local-delete-not-sent", email=eid, reason=why)
        if not plan.empty:
            # The user's renames are not the pull plan's: record the files anew.
            ctx.mark_files_pending(rewrite=True)
        await send_updates(ctx, client, plan, emails, out)
        for r in plan.reimports:
            raw = await asyncio.to_thread(ctx.store.read, r.file.relpath)
            imports.append((r.file, raw, r.mailbox_ids, r.keywords))
        if imports:
            ctx.mark_files_pending(rewrite=True)
            await import_files(ctx, client, imports, emails, mailbox_of, out)
        return out

    def _continued(
        self, recovered: Recovered, files: list[LocalFile]
    ) -> tuple[dict[EmailId, Email], dict[str, list[LocalFile]]]:
        """The base and the files per Email for the three-way decisions.

        A re-import whose lost answer the journal recovered continues the
        destroyed Email: its base is the new Email as we imported it, and
        the old one's files stand for it in their folders, showing its
        keywords (each file held only its own part of the merged change the
        import carried) -- so a copy or a delete made since is a join or a
        leave, and nothing is imported twice.  The recovered file itself also
        shows the flags changed since its import was journaled."""
        base = self.ctx.base
        reimported = recovered.reimported
        if reimported:
            base = dict(base) | {e.id: e for e in reimported.values()}
        local: dict[str, list[LocalFile]] = defaultdict(list)
        for f in files:
            if f.email_id is not None and f.email_id in reimported:
                e = reimported[f.email_id]
                flags = self.ctx.letters.get(f.folder, NO_LETTERS).wanted(e.keywords)
                then = recovered.journaled_flags.get(f.relpath)
                if then is not None:  # letters the user changed since: as the file has them
                    since = set(f.flags) ^ set(then)
                    flags = "".join(sorted((set(flags) - since) | (set(f.flags) & since)))
                local[e.id].append(f._replace(email_id=e.id, flags=flags))
            elif f.email_id is not None:
                local[f.email_id].append(f)
        return base, local

    def _mirrored_only(
        self, imports: list[Import], mailbox_of: Mapping[str, MailboxId], ignore: Set[MailboxId]
    ) -> list[Import]:
        """New messages in an unmirrored folder are not imported: `folders =`
        says the user does not sync that mailbox."""
        kept = []
        for item in imports:
            f = item[0]
            if mailbox_of[f.folder] in ignore:
                msg = f"{f.relpath} not imported: `folders =` does not sync {f.folder!r}"
                self.ctx.warn("import-skipped", msg, path=f.relpath, reason="folder not synced")
            else:
                kept.append(item)
        return kept

    def _refused(self, refused: list[twoway.Refusal]) -> None:
        """One warning per folder for moves across the edge of `folders =`."""
        by: dict[tuple[bool, str], int] = defaultdict(int)
        for r in refused:
            for folder in r.folders:
                by[(r.into, folder)] += 1
        for (into, folder), n in sorted(by.items()):
            if into:
                msg = (
                    f"{n} message(s) moved or copied into {folder!r}, which `folders =` does"
                    " not sync: not sent to the server; they are put back where the server has"
                    " them"
                )
            else:
                msg = (
                    f"{n} message(s) of {folder!r}, which `folders =` does not sync, appeared in"
                    " a synced folder: a move out of it is not guessed; the server keeps them in"
                    f" {folder!r} and the local copies go"
                )
            self.ctx.warn("move-refused", msg, folder=folder, count=n, into=into)

    def remove_superseded(self, superseded: Iterable[tuple[str, str]], owned: set[str]) -> set[str]:
        """Remove MUA copies whose Email now has a file of ours in the mirror;
        the paths removed."""
        removed = set()
        for rel, eid in superseded:
            if eid not in owned:
                self.ctx.log.warning("copy-kept", path=rel, email=eid, reason="not mirrored yet")
                continue
            if self.ctx.dry is not None:
                self.ctx.dry.remove_copy(rel)
                self.ctx.report.superseded += 1
                removed.add(rel)
            elif self.ctx.store.remove(rel):
                self.ctx.report.superseded += 1
                removed.add(rel)
        return removed
