"""Stage 4, execute: carry out the file plan, then bring files into their form.

Renames, links, downloads (up to `download_connections` at once, each into
tmp/ first), removes -- each action complete or not begun, so a pass
interrupted anywhere leaves a Maildir the next plan finishes.  A download
that fails after its retries (jmap/http.py) does not stop the others: they
finish and are committed, then the pass fails with DownloadsFailed before
the removes and before anything is recorded -- the next pass reads the same
changes and downloads only what is missing.  Then the
line-ending rewrites (`line_endings` switched), from the files themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from jmapsync.errors import (
    DownloadsFailed,
    HTTPStatusError,
    LocalError,
    ProtocolError,
    TransportError,
    disk_error,
)
from jmapsync.jmap.client import JmapClient
from jmapsync.maildir.files import split_rel
from jmapsync.maildir.lineendings import (
    Form,
    Inspector,
    inspect,
    local_form,
    server_bytes,
    to_crlf,
    to_lf,
)
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import Content
from jmapsync.sync.context import PassContext
from jmapsync.sync.plan import Download, FilePlan
from jmapsync.sync.report import Progress, ProgressFactory

IN_MEMORY_BYTES = 4 * 1024 * 1024  # messages up to this size are downloaded into memory


class Commits:
    """Downloaded files waiting in tmp/ to become durable and take their names.

    They are committed in batches (MaildirStore.commit_batch: one syncfs for
    the batch, then the renames and the hard links of each): the journal
    commit per fsync() was the largest single cost of a first sync."""

    BATCH_FILES = 64
    BATCH_BYTES = 32 * 1024 * 1024

    def __init__(self, store: MaildirStore) -> None:
        self.store = store
        self.pending: list[tuple[Path, Download]] = []
        self.bytes = 0
        self.lock = asyncio.Lock()

    async def add(self, tmp: Path, d: Download) -> None:
        self.pending.append((tmp, d))
        self.bytes += d.size
        if len(self.pending) >= self.BATCH_FILES or self.bytes >= self.BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            batch, self.pending, self.bytes = self.pending, [], 0
            if batch:
                await asyncio.to_thread(self._commit, batch)

    def _commit(self, batch: list[tuple[Path, Download]]) -> None:
        self.store.commit_batch((tmp, d.dst) for tmp, d in batch)
        for _, d in batch:
            for dst in d.links:
                self.store.link(d.dst, dst)


class Executor:
    """Does one pass's file plan against the Maildir."""

    def __init__(
        self, ctx: PassContext, client: JmapClient, progress: ProgressFactory | None
    ) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.client = client
        self.progress = progress
        self.commits = Commits(ctx.store)
        # Downloads that failed after their retries (the pass goes on without
        # them: see run), why, and how many were tried -- over every run() (a
        # streamed pass runs one per chunk).
        self.failed: list[Download] = []
        self._why: list[str] = []
        self._attempted = 0

    @property
    def error(self) -> DownloadsFailed | None:
        """What the pass ends with once it has recorded everything else."""
        if not self.failed:
            return None
        return DownloadsFailed(
            f"{len(self.failed)} of {self._attempted} downloads failed (first: {self._why[0]});"
            " the others are in place, the next pass fetches the rest",
            failed=len(self.failed),
            total=self._attempted,
        )

    async def run(self, plan: FilePlan, settled: Callable[[set[str]], None] | None = None) -> None:
        """Carry out the plan.  `settled(ids)` is told, right after the renames
        and links, which Emails' files are now final (they needed nothing
        else): the caller records them at once, so that a pass failing later
        (a download cut) does not leave those renames looking like the user's
        changes -- the next pass would send them back over a newer change
        made on the server meanwhile."""
        store, report = self.store, self.ctx.report
        for r in plan.renames:
            if store.rename(r.src, r.dst):
                report.renamed += 1
                report.moved += r.reason == "move"
            else:
                raise LocalError(f"{r.src} vanished while syncing; run sync again")
        for lk in plan.links:
            store.link(lk.src, lk.dst)
            report.linked += 1
        if settled is not None and (plan.renames or plan.links):
            touched = {r.email_id for r in plan.renames} | {lk.email_id for lk in plan.links}
            pending = {d.email_id for d in plan.downloads} | {rm.email_id for rm in plan.removes}
            if touched - pending:
                store.dirsync.flush()  # the renames are durable before they are recorded
                settled(touched - pending)
        if plan.downloads:
            await self._download_all(plan.downloads)
        if self.failed:
            # The plan now says what is on disk: the record, the line-ending
            # check and the folder stamps must not count files that never
            # arrived.  Their Emails are retried by the next pass (record.py
            # keeps their ids; remote.py leaves them out of the two-way base,
            # so a missing file is never taken for a local delete).
            gone = {id(d) for d in self.failed}
            plan.downloads = [d for d in plan.downloads if id(d) not in gone]
        for rm in plan.removes:
            if store.remove(rm.path):
                report.removed += 1

    # -- downloads -------------------------------------------------------------------

    async def _download_all(self, downloads: list[Download]) -> None:
        client, report = self.client, self.ctx.report
        assert client.session is not None  # noqa: S101
        width = (
            self.ctx.account.download_connections or client.session.limits.max_concurrent_requests
        )
        total_bytes = sum(d.size for d in downloads)
        progress = self.progress(len(downloads), total_bytes) if self.progress else Progress()
        queue: asyncio.Queue[Download] = asyncio.Queue()
        for d in downloads:
            queue.put_nowait(d)
        self._attempted += len(downloads)

        async def worker() -> None:
            while True:
                try:
                    d = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    n = await self._download_one(d)
                except (TransportError, HTTPStatusError, ProtocolError) as exc:
                    # The link, or the server's trouble with this one blob (a
                    # 404, a size it lied about, a redirect loop): a poison
                    # item must not block the account.  Anything else
                    # (credentials, the disk) stops the pass at once.
                    self._why.append(str(exc))
                    self.failed.append(d)
                    self.ctx.log.warning(
                        "download-failed", email_id=d.email_id, blob_id=d.blob_id, error=str(exc)
                    )
                    continue
                report.downloaded += 1
                report.bytes += n
                report.linked += len(d.links)
                progress.update(1, n)

        try:
            workers = [asyncio.create_task(worker()) for _ in range(max(1, width))]
            try:
                await asyncio.gather(*workers)
                await self.commits.flush()  # what did arrive is kept
            except BaseException:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
        finally:
            progress.close()

    async def _download_one(self, d: Download) -> int:
        if d.size <= IN_MEMORY_BYTES:
            return await self._download_small(d)  # links when committed
        n = await self._download_large(d)
        for dst in d.links:
            self.store.link(d.dst, dst)
        return n

    async def _download_small(self, d: Download) -> int:
        """Most messages: read into memory, decide the form, write ONE file.

        (A file create costs ~0.7 ms of kernel time on the test machine; the
        streamed path below needs two for a message stored in LF form.)"""
        data = bytearray()
        inspector = Inspector()

        def sink(chunk: bytes) -> None:
            inspector.feed(chunk)
            data.extend(chunk)

        known = self.ctx.fetched.pop(d.blob_id, None)  # read earlier in this pass
        if known is not None:
            sink(known)
            n = 0  # nothing came over the network for it
        else:
            n = await self.client.stream_blob(d.blob_id, d.size, sink)
        seen = inspector.finish()
        form = local_form(self.ctx.account.line_endings, seen)
        body = to_lf(bytes(data)) if form == "lf" else bytes(data)
        folder, _sub, _name = split_rel(d.dst)
        # open() and write() in a thread: they must not stall the other
        # downloads (an ext4 create waits for the journal while others sync).
        tmp = await asyncio.to_thread(
            self.store.write_unsynced, folder, d.email_id, body, d.received_at
        )
        self.ctx.new_contents[d.email_id] = Content(seen.sha256, seen.size, seen.crlf_only, form)
        await self.commits.add(tmp, d)
        return n

    async def _download_large(self, d: Download) -> int:
        """Big messages stream to tmp/ and are converted from there if needed."""
        folder, _sub, _name = split_rel(d.dst)
        fd, tmp = await asyncio.to_thread(self.store.open_partial, folder, d.email_id)
        inspector = Inspector()

        def write(chunk: bytes) -> None:
            inspector.feed(chunk)
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                # A DiskError, not an OSError: the HTTP layer must not take a
                # full disk for a broken connection.
                exc.filename = str(tmp)
                raise disk_error(exc) from None

        try:
            n = await self.client.stream_blob(d.blob_id, d.size, write)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        seen = inspector.finish()
        form = local_form(self.ctx.account.line_endings, seen)
        commit = self.store.commit_partial_lf if form == "lf" else self.store.commit_partial
        await asyncio.to_thread(commit, fd, tmp, d.dst, d.received_at)
        self.ctx.new_contents[d.email_id] = Content(seen.sha256, seen.size, seen.crlf_only, form)
        return n

    # -- line endings ----------------------------------------------------------------

    def line_endings(self, plan: FilePlan) -> None:
        """Bring every file into the form `line_endings` asks for, from the files
        themselves: no download, no server write.  Skipped when the mode is the
        one last applied and every file's content is recorded."""
        ctx, store = self.ctx, self.store
        mode = ctx.account.line_endings
        if ctx.db.get_meta("line_endings") == mode and ctx.db.get_meta("contents_complete") == "1":
            return  # new downloads were written in the right form already
        paths: dict[str, list[str]] = defaultdict(list)
        for rel, eid in plan.owned():
            paths[eid].append(rel)
        # Only the records of these Emails: a streamed pass asks per chunk.
        known = ctx.db.contents_of(e for e in paths if e not in ctx.new_contents)
        dry = ctx.dry
        if dry is not None:
            # Downloads would arrive in their final form; the rest is read
            # where it is now (the plan's renames and links were not done).
            for d in plan.downloads:
                paths.pop(d.email_id, None)

        def read(rel: str) -> bytes:
            return store.read(rel if dry is None else dry.on_disk(rel))

        for eid, rels in paths.items():
            rels.sort()
            content = ctx.new_contents.get(eid) or known.get(eid)
            if content is None:
                # Backfill (state from before line_endings): the file holds the
                # server's exact bytes, as version 1 wrote them.
                seen = inspect(read(rels[0]))
                content = Content(seen.sha256, seen.size, seen.crlf_only, "exact")
                ctx.new_contents[eid] = content
            want: Form = "lf" if mode == "lf" and content.crlf_only else "exact"
            if content.form == want:
                continue
            data = read(rels[0])
            if hashlib.sha256(server_bytes(data, content.form)).hexdigest() != content.sha256:
                ctx.warn(
                    "line-endings-skipped",
                    f"{rels[0]} differs from the server's message; not converted (see verify)",
                    path=rels[0],
                    reason="altered",
                )
                continue
            if dry is not None:
                dry.add("maildir", "rewrite", ", ".join(rels), f"line endings: {want}")
                ctx.report.rewritten += 1
                continue
            store.rewrite(rels, to_lf if want == "lf" else to_crlf)
            ctx.new_contents[eid] = Content(content.sha256, content.size, content.crlf_only, want)
            ctx.report.rewritten += 1
