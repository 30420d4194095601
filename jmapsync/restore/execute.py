"""`jmapsync restore`: upload a Maildir tree into an account, step by step.

1. **Lock** the account (the sync's own ``<state_dir>/<account>.lock``): no
   pass and no second restore runs meanwhile -- two restores at once would
   each find a message missing and both import it.  A dry run takes no lock.
2. **Connect**; the session's limits shape everything after.
3. **Read the source** (``source.py``): folders, flags, mtimes, the
   canonical bytes' hash, Message-ID and Date of every file; decide each
   file's arrival time (``arrival.py``) and group equal contents into
   messages (``plan.py``).
4. **Read the account**: its mailboxes, and ONE listing of every Email
   (``jmap/inventory.py``).
5. **Plan** (pure, ``plan.py``): mailboxes to create; per message "already
   there", "check" (download the candidates of the same size and Message-ID
   and compare hashes) or "import".
6. **Check** the candidates: downloads only, at most maxConcurrentRequests.
7. Dry run: stop here and report.  Otherwise **create** the mailboxes
   and **import** in journaled batches (``upload.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from jmapsync import log
from jmapsync.config import AccountConfig, Config
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.inventory import email_state as email_state_now
from jmapsync.jmap.inventory import list_messages
from jmapsync.jmap.mail import fetch_mailboxes
from jmapsync.maildir.names import Layout
from jmapsync.restore import plan, source
from jmapsync.restore.arrival import Stamp, received_times
from jmapsync.restore.folders import display, mailbox_names
from jmapsync.restore.journal import RestoreJournal, journal_path
from jmapsync.restore.report import NoProgress, ProgressFactory, RestoreReport, Skipped
from jmapsync.restore.upload import Uploader, create_mailboxes
from jmapsync.state.lock import account_lock


def _no_progress(_desc: str, _total: int, _nbytes: int) -> NoProgress:
    return NoProgress()


def mirror_database(config: Config, root: Path) -> Path | None:
    """The state database of the configured account whose maildir is `root`."""
    want = root.resolve()
    for account in config.accounts:
        if account.maildir.resolve() == want:
            db = config.state_dir / f"{account.name}.sqlite3"
            return db if db.exists() else None
    return None


class Restore:
    """One restore of a Maildir tree into one account."""

    def __init__(
        self,
        config: Config,
        account: AccountConfig,
        root: Path,
        layout: Layout,
        *,
        dry_run: bool = False,
        progress: ProgressFactory | None = None,
        client_factory: Callable[[AccountConfig], JmapClient] | None = None,
    ) -> None:
        self.config = config
        self.account = account
        self.root = root
        self.layout = layout
        self.dry_run = dry_run
        self.progress: ProgressFactory = progress or _no_progress
        self.client_factory = client_factory or JmapClient
        self.report = RestoreReport(account.name, root, layout, dry_run=dry_run)
        self.log = log.get().bind(account=account.name)

    async def run(self) -> RestoreReport:
        if self.dry_run:
            return await self._run()
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with account_lock(self.config.state_dir / f"{self.account.name}.lock"):
            return await self._run()

    async def _run(self) -> RestoreReport:
        r = self.report
        async with self.client_factory(self.account) as client:
            session = await client.connect()
            limits = session.limits
            tree = await self._read_source(limits.max_size_upload)
            folder_names: dict[str, list[str] | str] = {}
            for folder in tree.folders:
                try:
                    folder_names[folder] = mailbox_names(folder, self.layout, tree.kind)
                except ValueError as exc:
                    folder_names[folder] = f"the folder name cannot be a mailbox name: {exc}"
            messages = self._messages(tree)

            email_state = await email_state_now(client)
            _, boxes = await fetch_mailboxes(client)
            bar = self.progress("listing the account", 0, 0)
            listed = await list_messages(client, bar.update)
            bar.close()

            journal = RestoreJournal(
                journal_path(self.config.state_dir, self.account.name), readonly=self.dry_run
            )
            try:
                journal.bind(self.account.session_url, session.account_id)
                known = journal.known()
                mplan = plan.plan_mailboxes(folder_names, list(boxes.values()))
                r.by_role = dict(mplan.by_role)
                by_id = {e.id: plan.Listed(e.id, e.blob_id, e.message_ids, e.size) for e in listed}
                work = await self._decide(client, journal, messages, mplan, known, by_id)
                if self.dry_run:
                    self._refused(tree, mplan)
                    r.created = [display(n.key) for n in mplan.create]
                    r.to_import_messages = len(work)
                    for msg, keys in work:
                        r.to_import_bytes += msg.size
                        for k in keys:
                            r.to_import[display(k)] = r.to_import.get(display(k), 0) + 1
                    return r
                ids = await create_mailboxes(client, mplan, r)
                self._refused(tree, mplan)
                work = self._retarget(work, mplan, ids)
                bar = self.progress("restoring", len(work), sum(m.size for m, _ in work))
                try:
                    uploader = Uploader(
                        client, journal, self.root, tree.mbsync, r, bar, email_state
                    )
                    await uploader.run(work, ids)
                finally:
                    bar.close()
            finally:
                journal.close()
        self.log.info(
            "restore-done",
            imported=r.imported,
            present=r.present,
            skipped=r.skipped_count,
            created=len(r.created),
        )
        return r

    async def _read_source(self, max_size: int) -> source.SourceTree:
        bar = self.progress("reading", 0, 0)
        try:
            tree = await asyncio.to_thread(
                source.scan, self.root, self.layout, max_size, bar.update
            )
        finally:
            bar.close()
        r = self.report
        r.kind, r.mbsync, r.folders, r.files = (
            tree.kind,
            tree.mbsync,
            len(tree.folders),
            len(tree.files),
        )
        return tree

    def _messages(self, tree: source.SourceTree) -> list[plan.Message]:
        """Readable files -> messages; unreadable ones -> skipped."""
        r = self.report
        recorded: dict[str, frozenset[str]] = {}
        if tree.kind == "jmapsync":
            db = mirror_database(self.config, self.root)
            if db is not None:
                recorded = source.mirror_keywords(db)
            else:
                r.warnings.append(
                    "no state database of this mirror in the config's state_dir: keywords"
                    " other than the Maildir flags (e.g. custom labels) are not restored"
                )
        good = [f for f in tree.files if f.problem is None]
        for f in tree.files:
            if f.problem is not None:
                r.skipped.append(Skipped(f.relpath, f.problem))
        stamps: dict[str, list[Stamp]] = defaultdict(list)
        order: dict[str, list[source.SourceFile]] = defaultdict(list)
        for f in good:
            stamps[f.folder].append(Stamp(f.mtime, f.date))
            order[f.folder].append(f)
        times = received_times(stamps)
        pieces = [
            plan.Piece(
                f.relpath,
                f.sha256,
                f.size,
                f.message_id,
                f.folder,
                source.file_keywords(f, tree.letters.get(f.folder, {}), recorded),
                t,
            )
            for folder, fs in order.items()
            for f, t in zip(fs, times[folder], strict=True)
        ]
        messages = plan.group(pieces)
        r.messages = len(messages)
        return messages

    def _refused(self, tree: source.SourceTree, mplan: plan.MailboxPlan) -> None:
        """One entry per folder that has no mailbox, counting its files."""
        for folder, why in sorted(mplan.refused.items()):
            count = sum(1 for f in tree.files if f.folder == folder)
            self.report.skipped.append(Skipped(f"folder {folder or '(root)'}", why, count))

    async def _decide(
        self,
        client: JmapClient,
        journal: RestoreJournal,
        messages: list[plan.Message],
        mplan: plan.MailboxPlan,
        known: dict[str, str | None],
        listed: dict[str, plan.Listed],
    ) -> list[tuple[plan.Message, tuple[plan.Key, ...]]]:
        """Messages to import, with their mailboxes; the rest is counted."""
        r = self.report
        by_size = plan.index_by_size(listed.values())
        decisions = {m.sha256: plan.decide(m, mplan, known, listed, by_size) for m in messages}
        checks = {sha: d for sha, d in decisions.items() if isinstance(d, plan.Check)}
        hashes = await self._download_hashes(client, checks)
        found: list[tuple[str, int, str | None, str]] = []
        work: list[tuple[plan.Message, tuple[plan.Key, ...]]] = []
        for m in messages:
            d = decisions[m.sha256]
            if isinstance(d, plan.Check):
                match = next((c for c in d.candidates if hashes.get(c.blob_id) == m.sha256), None)
                d = (
                    plan.Present(match.email_id, "same bytes")
                    if match
                    else plan.importable(m, mplan)
                )
            if isinstance(d, plan.Present):
                r.present += 1
                if known.get(m.sha256, "") is None:
                    r.recovered += 1  # an import of an interrupted run did happen
                if d.how != "journal":
                    found.append((m.sha256, m.size, m.message_id, d.email_id))
            elif isinstance(d, plan.Import):
                work.append((m, d.mailboxes))
            elif isinstance(d, plan.Skip) and not all(f in mplan.refused for f in m.folders):
                r.skipped.append(Skipped(m.files[0], d.reason))
        if found and not self.dry_run:
            journal.done(found)  # a rerun need not download these again
        return work

    async def _download_hashes(
        self, client: JmapClient, checks: dict[str, plan.Check]
    ) -> dict[str, str]:
        """blobId -> SHA-256 of the candidates' bytes."""
        blobs = {c.blob_id: c.size for d in checks.values() for c in d.candidates}
        if not blobs:
            return {}
        assert client.session is not None  # noqa: S101
        sem = asyncio.Semaphore(client.session.limits.max_concurrent_requests)
        out: dict[str, str] = {}
        bar = self.progress("comparing", len(blobs), sum(blobs.values()))

        async def one(blob_id: str, size: int) -> None:
            async with sem:
                data = await client.fetch_blob(blob_id, size)
            out[blob_id] = hashlib.sha256(data).hexdigest()
            bar.update(1, size)

        try:
            await asyncio.gather(*(one(b, s) for b, s in blobs.items()))
        finally:
            bar.close()
        return out

    def _retarget(
        self,
        work: list[tuple[plan.Message, tuple[plan.Key, ...]]],
        mplan: plan.MailboxPlan,
        ids: dict[plan.Key, str],
    ) -> list[tuple[plan.Message, tuple[plan.Key, ...]]]:
        """Drop mailboxes that could not be created; a message left without
        any is skipped (its folder's refusal says why)."""
        out = []
        for m, keys in work:
            usable = tuple(k for k in keys if k in ids)
            if usable:
                out.append((m, usable))
        return out
