"""The writes of a restore: mailbox creation, then journaled imports.

Nothing here changes or deletes what the account already holds: Mailbox/set
only creates, Email/import only adds.

Order per batch (at most maxObjectsInSet messages and 100, at most 32 MiB;
the next batch's steps 1-3 run while this one's step 4 does):

1. read each message's first file again and check it still has the bytes
   the plan was made from (a file changed meanwhile is skipped: rerun);
2. journal the intents of the batch, ONE commit -- before any upload;
3. upload the blobs, at most maxConcurrentUpload at a time (the account's
   very first upload alone: Cyrus answers parallel first uploads to a fresh
   account with HTTP 404, and a 404 is retried);
4. ONE Email/import for the batch;
5. journal the Email ids it answered with, ONE commit.

A crash between 2 and 5 leaves intents without an Email id: the next run
looks those messages up on the server before importing anything again
(journal.py).  Cyrus' own answer to bytes it already holds
(``alreadyExists`` with ``existingId``) counts as "already there"; the
restore never relies on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from jmapsync import log
from jmapsync.errors import HTTPStatusError, JmapsyncError
from jmapsync.jmap import mail
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import State
from jmapsync.restore import source
from jmapsync.restore.arrival import utc_date
from jmapsync.restore.folders import display
from jmapsync.restore.journal import RestoreJournal
from jmapsync.restore.plan import Key, MailboxPlan, Message
from jmapsync.restore.report import Progress, RestoreReport, Skipped

_BATCH_BYTES = 32 * 1024 * 1024
_UPLOAD_ATTEMPTS = 4


async def create_mailboxes(
    client: JmapClient, plan: MailboxPlan, report: RestoreReport
) -> dict[Key, str]:
    """Create the planned mailboxes, one request per depth (parents first);
    the ids of every mailbox the restore can use, by key.  A mailbox that
    cannot be created takes its children with it: their folders become
    refused (the reason goes to `plan.refused`)."""
    assert client.session is not None  # noqa: S101
    ids = dict(plan.existing)
    failed: dict[Key, str] = {}
    per_set = client.session.limits.max_objects_in_set
    depths = sorted({len(n.key) for n in plan.create})
    for depth in depths:
        level = [n for n in plan.create if len(n.key) == depth]
        creates: dict[str, tuple[str, str | None]] = {}
        key_of: dict[str, Key] = {}
        for n in level:
            parent_id: str | None = None
            if isinstance(n.parent, tuple):
                if n.parent not in ids:
                    failed[n.key] = failed.get(n.parent, "its parent could not be created")
                    continue
                parent_id = ids[n.parent]
            elif n.parent is not None:
                parent_id = n.parent
            cid = f"m{len(key_of)}"
            creates[cid] = (n.name, parent_id)
            key_of[cid] = n.key
        items = list(creates.items())
        for start in range(0, len(items), per_set):
            chunk = dict(items[start : start + per_set])
            created, refused = await mail.create_mailboxes(client, chunk)
            for cid, mid in created.items():
                ids[key_of[cid]] = mid
                report.created.append(display(key_of[cid]))
                log.get().info("restore-mailbox-created", mailbox=display(key_of[cid]), id=mid)
            for cid, why in refused.items():
                failed[key_of[cid]] = (
                    f"the server refused to create mailbox {display(key_of[cid])}: {why}"
                )
    for folder, key in list(plan.target.items()):
        if key not in ids:
            plan.refused[folder] = failed.get(key, "its mailbox could not be created")
            del plan.target[folder]
    return ids


@dataclass
class _Ready:
    """A message of a batch: read, then uploaded."""

    msg: Message
    keys: tuple[Key, ...]
    data: bytes
    blob_id: str = ""


@dataclass
class Uploader:
    """Imports messages in journaled batches (module docstring)."""

    client: JmapClient
    journal: RestoreJournal
    root: Path
    mbsync: bool
    report: RestoreReport
    progress: Progress
    email_state: State
    first_upload_done: bool = False

    async def run(
        self, work: Sequence[tuple[Message, tuple[Key, ...]]], ids: Mapping[Key, str]
    ) -> None:
        """Batch k+1 is read, journaled and uploaded while batch k's
        Email/import runs: the server appends the uploads to its upload area
        while it files the previous batch into the mailboxes."""
        assert self.client.session is not None  # noqa: S101
        limit = max(1, min(self.client.session.limits.max_objects_in_set, 100))
        batches: list[list[tuple[Message, tuple[Key, ...]]]] = [[]]
        size = 0
        for item in work:
            if batches[-1] and (len(batches[-1]) >= limit or size + item[0].size > _BATCH_BYTES):
                batches.append([])
                size = 0
            batches[-1].append(item)
            size += item[0].size
        importing: asyncio.Task[None] | None = None
        try:
            for batch in batches:
                ready = await self._prepare(batch)
                if importing is not None:
                    await importing
                    importing = None
                if ready:
                    importing = asyncio.create_task(self._import(ready, ids))
            if importing is not None:
                await importing
                importing = None
        finally:
            if importing is not None:  # an error (or Ctrl-C) while preparing
                importing.cancel()
                with contextlib.suppress(asyncio.CancelledError, JmapsyncError):
                    await importing

    async def _read(self, msg: Message) -> bytes | None:
        for rel in msg.files:
            f = source.SourceFile("", rel, "", 0.0, sha256=msg.sha256)
            data = await asyncio.to_thread(source.read_canonical, self.root, f, self.mbsync)
            if data is not None:
                return data
        return None

    async def _upload(self, data: bytes) -> str:
        for attempt in range(_UPLOAD_ATTEMPTS):
            try:
                return await self.client.upload(data)
            except HTTPStatusError as exc:
                # Cyrus: a fresh account's first uploads can 404 while it
                # creates its hidden upload folder.
                if exc.status != 404 or attempt == _UPLOAD_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _prepare(self, batch: list[tuple[Message, tuple[Key, ...]]]) -> list[_Ready]:
        """Steps 1-3 of the module docstring for one batch."""
        assert self.client.session is not None  # noqa: S101
        ready: list[_Ready] = []
        for msg, keys in batch:
            data = await self._read(msg)
            if data is None:
                self._skip(msg, "changed or vanished during the restore (run it again)")
                continue
            ready.append(_Ready(msg, keys, data))
        if not ready:
            return []
        self.journal.intend(
            (
                r.msg.sha256,
                r.msg.size,
                r.msg.message_id,
                {"file": r.msg.files[0], "mailboxes": [display(k) for k in r.keys]},
            )
            for r in ready
        )
        sem = asyncio.Semaphore(self.client.session.limits.max_concurrent_upload)

        async def up(r: _Ready) -> None:
            async with sem:
                r.blob_id = await self._upload(r.data)

        todo = ready
        if not self.first_upload_done:
            await up(ready[0])
            self.first_upload_done = True
            todo = ready[1:]
        await asyncio.gather(*(up(r) for r in todo))
        return ready

    async def _import(self, ready: list[_Ready], ids: Mapping[Key, str]) -> None:
        """Steps 4-5 of the module docstring for one batch."""
        items = {
            f"r{i}": mail.ImportItem(
                blob_id=r.blob_id,
                mailbox_ids=frozenset(ids[k] for k in r.keys),
                keywords=r.msg.keywords,
                received_at=utc_date(r.msg.received_at),
            )
            for i, r in enumerate(ready)
        }
        result = await mail.import_emails(self.client, self.email_state, items)
        done: list[tuple[str, int, str | None, str]] = []
        for i, r in enumerate(ready):
            cid = f"r{i}"
            email = result.created.get(cid)
            failed = result.failed.get(cid, {})
            existing = failed.get("existingId")
            if email is not None:
                done.append((r.msg.sha256, r.msg.size, r.msg.message_id, email.id))
                self.report.imported += 1
                self.report.imported_bytes += len(r.data)
            elif failed.get("type") == "alreadyExists" and isinstance(existing, str):
                done.append((r.msg.sha256, r.msg.size, r.msg.message_id, existing))
                self.report.present += 1
            else:
                reason = f"the server refused the import: {result.why(cid)}"
                self._skip(r.msg, reason, tick=False)
        self.journal.done(done)
        self.progress.update(len(ready), sum(len(r.data) for r in ready))

    def _skip(self, msg: Message, reason: str, *, tick: bool = True) -> None:
        log.get().warning("restore-skipped", file=msg.files[0], reason=reason)
        self.report.skipped.append(Skipped(msg.files[0], reason))
        if tick:
            self.progress.update(1, 0)
