"""Folders: each mailbox's folder path, and the folder-level actions of a pass.

A mailbox whose path differs from the one recorded is *moved*: its cur/ new/
tmp/ are renamed into the new path (nothing is downloaded again).  Every
mirrored mailbox's folder is created before the files are planned; the
folders of vanished mailboxes (and of those `folders =` no longer selects)
are removed after the files, and only when empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from jmapsync.config import AccountConfig
from jmapsync.errors import DeletionRefused
from jmapsync.jmap.types import Mailbox, MailboxId
from jmapsync.maildir import keyword_file, mutf7
from jmapsync.maildir.files import join
from jmapsync.maildir.names import (
    Layout,
    MailboxNode,
    mailbox_path_components,
    map_folders,
)
from jmapsync.maildir.store import MaildirStore
from jmapsync.state.db import StateDB
from jmapsync.sync import guards
from jmapsync.sync.context import PassContext
from jmapsync.sync.plan import FolderPlan
from jmapsync.sync.selection import Selection


def folder_map(
    mailboxes: Mapping[MailboxId, Mailbox], layout: Layout
) -> tuple[dict[MailboxId, str], dict[MailboxId, str]]:
    """Mailbox id -> its folder path in this layout, and mailbox id -> why it
    has none (maildir/names.py map_folders: one poison name must not block
    the account; such a mailbox is left alone, never taken for deleted)."""
    paths, unsafe = map_folders(
        (MailboxNode(m.id, m.name, m.parent_id, m.role) for m in mailboxes.values()), layout
    )
    return (
        {MailboxId(k): v for k, v in paths.items()},
        {MailboxId(k): v for k, v in unsafe.items()},
    )


def imap_names(names: list[str]) -> list[str] | None:
    """The mailbox names a folder written by mbsync or OfflineIMAP stands for,
    when any of its names is IMAP modified UTF-7 (maildir/mutf7.py); else None."""
    decoded = [mutf7.decode_or_none(n) or n for n in names]
    return decoded if decoded != names else None


def adopt_imap_names(ctx: PassContext, folder_of: Mapping[MailboxId, str]) -> None:
    """Folders another tool wrote under a mailbox's IMAP name become that
    mailbox's folder.

    mbsync 1.4 and OfflineIMAP store `Reisen ✈ Übersicht` as `Reisen &Jwg-
    &ANw-bersicht` (IMAP modified UTF-7, RFC 3501 5.1.3).  Pointed at such a
    Maildir, jmapsync would see a new folder and (two-way) create a mailbox
    of that literal name.  Instead, a folder whose names decode to an
    existing mailbox's path is moved to jmapsync's folder for it (whole, or
    file by file when that folder already holds mail); its messages are
    then a mail program's files there (matched to the server's messages and
    replaced by them, or imported if the server lacks them).  Logged once:
    afterwards the old path is no Maildir folder any more."""
    layout, store = ctx.account.layout, ctx.store
    known = set(folder_of.values())
    by_names: dict[tuple[str, ...], str] = {}
    for path in known:
        try:
            by_names[tuple(mailbox_path_components(path, layout))] = path
        except ValueError:
            continue
    for folder in store.folders(layout):
        if folder in known:
            continue
        try:
            decoded = imap_names(mailbox_path_components(folder, layout))
        except ValueError:
            continue
        dst = by_names.get(tuple(decoded)) if decoded else None
        if dst is None:
            continue  # not an encoded name, or of no mailbox (never created: mailboxes.py)
        ctx.mark_files_pending(rewrite=True)
        if store.move_folder(folder, dst):
            keyword_file.move(store, folder, dst)
            moved = "folder"
        else:
            store.ensure_folder(dst)
            for f in store.scan([folder]):
                store.rename(f.relpath, join(dst, f.subdir, f.name))
            moved = "files"
        ctx.log.warning(
            "folder-adopted",
            src=folder,
            dst=dst,
            moved=moved,
            reason="the mailbox's IMAP name (modified UTF-7), as mbsync and OfflineIMAP write it",
        )


def mirrored(
    mailboxes: Mapping[MailboxId, Mailbox], account: AccountConfig
) -> frozenset[MailboxId]:
    """The mailboxes the account's `folders =` selects."""
    return Selection.parse(account.folders).select(mailboxes)


def was_unmapped(db: StateDB) -> frozenset[MailboxId]:
    """The mailboxes the last pass could not give a folder (their names):
    their Emails have no file here yet, which is no local delete."""
    raw = db.get_meta("unmapped")
    return frozenset(MailboxId(m) for m in json.loads(raw)) if raw else frozenset()


def was_mirrored(db: StateDB, known: Iterable[MailboxId]) -> frozenset[MailboxId]:
    """The mailboxes the last pass mirrored (`known`, the recorded ones, when
    the state predates `folders =`: everything was)."""
    raw = db.get_meta("selected")
    return frozenset(MailboxId(m) for m in json.loads(raw)) if raw else frozenset(known)


def stamped(
    store: MaildirStore,
    paths: Mapping[MailboxId, str],
    folder_of: Mapping[MailboxId, str],
    layout: str,
) -> list[str]:
    """The folders whose times the fast path watches: the mirrored ones,
    those of unmirrored mailboxes that exist on disk (a file moved into one
    must be seen: it is refused, not taken for a delete), and every other
    folder on disk (another tool's leftover: a message put there later is
    the user's, and must be seen -- the root's time shows only new folders)."""
    mine = set(folder_of.values())
    on_disk = set(store.folders(layout))
    return sorted(mine | on_disk | {p for p in paths.values() if p not in mine and p in on_disk})


def refuse_deselected(ctx: PassContext, held: Mapping[str, int], gone: list[str]) -> None:
    """Folders `folders =` no longer selects: their local copies go (the
    server keeps the mail), behind the deletion guards -- a typo in a pattern
    must not empty the mirror.  Never a server write, in either mode."""
    why = guards.deselected(held, gone, ctx.account.max_deletes)
    if why is not None and not ctx.force_deletes:
        raise DeletionRefused(
            f"refusing to sync: {why}; their local copies would be removed (the server keeps"
            " them). Nothing was changed. Fix `folders =`, or run `jmapsync sync"
            " --force-deletes` to remove the local copies"
        )
    for folder in gone:
        if held.get(folder) and ctx.dry is None:
            ctx.log.warning(
                "folder-deselected",
                folder=folder,
                files=held[folder],
                action="local copies removed; the server keeps them",
            )


def vanished(
    store: MaildirStore, old: Mapping[MailboxId, str], folder_of: Mapping[MailboxId, str]
) -> list[str]:
    """Folders synced last time, still wanted at the same path, gone from disk."""
    return sorted(
        path for m, path in old.items() if folder_of.get(m) == path and not store.is_folder(path)
    )


def refuse_missing(
    ctx: PassContext, held: Mapping[str, int], gone: list[str], root_missing: bool
) -> None:
    """Two-way, before anything is created on disk: a vanished root or a
    folder that vanished with its messages is far more likely an unmounted
    disk or a bad `rm -r` than a wish to delete all that mail."""
    if ctx.force_deletes:
        return
    what = guards.missing_locally(held, gone, root_missing, ctx.account.maildir)
    if what is not None:
        raise DeletionRefused(
            f"refusing to sync: {what}; in two-way mode that would delete the mail on the"
            " server. Nothing was changed. Restore it (is a disk unmounted?), or run"
            " `jmapsync sync --force-deletes` to delete it on the server too"
        )


def apply_before(ctx: PassContext, fplan: FolderPlan) -> None:
    """Move the folders of renamed mailboxes, create every mailbox's folder."""
    if ctx.dry is not None:
        ctx.dry.folders_before(ctx.store, ctx.report, fplan)
        return
    if fplan.moves:
        # Moved folders carry their files to new paths: the table is
        # rewritten whole at the end of this pass.
        ctx.mark_files_pending(rewrite=True)
    for src, dst in fplan.moves:
        if ctx.store.move_folder(src, dst):
            keyword_file.move(ctx.store, src, dst)
            ctx.report.folders_moved += 1
            ctx.log.info("folder-moved", src=src, dst=dst)
    for folder in fplan.create:
        if ctx.store.ensure_folder(folder):
            ctx.report.folders_created += 1


def apply_after(ctx: PassContext, fplan: FolderPlan, removed_foreign: set[str]) -> None:
    """Remove the folders of vanished mailboxes -- only when empty."""
    store = ctx.store
    if ctx.dry is not None:
        ctx.dry.folders_after(store, ctx.report, fplan, removed_foreign)
        return
    # Deepest first, so that a parent emptied by its children's moves goes too.
    for folder in sorted(fplan.remove_if_empty, key=lambda f: f.count("/"), reverse=True):
        if not store.path(folder).is_dir():
            continue
        was_folder = store.is_folder(folder)  # else: a leftover of a folder move
        if store.remove_folder_if_empty(folder):
            if was_folder:
                ctx.report.folders_removed += 1
                ctx.log.info("folder-removed", folder=folder)
        elif ctx.archive:
            ctx.log.info("folder-kept", folder=folder, reason="archive: holds mail it kept")
        else:
            ctx.kept_folders.add(folder)
            ctx.warn(
                "folder-kept",
                f"folder {folder!r} belongs to no mailbox any more but holds other files; kept",
                folder=folder,
                reason="not empty",
            )


def mapped(
    ctx: PassContext, mailboxes: Mapping[MailboxId, Mailbox]
) -> tuple[dict[MailboxId, str], dict[MailboxId, str]]:
    """Every mailbox's folder path, and those of the mailboxes mirrored
    (`folders =`); sets `ctx.selected`, `ctx.unmapped` (mailboxes whose
    name cannot become a folder: skipped, said, retried every pass) and
    the dry run's names."""
    paths, ctx.unmapped = folder_map(mailboxes, ctx.account.layout)
    ctx.selected = mirrored(mailboxes, ctx.account) - ctx.unmapped.keys()
    for mid, why in sorted(ctx.unmapped.items()):
        name = mailboxes[mid].name if mid in mailboxes else mid
        msg = f"mailbox {name!r:.60} ({mid}) is not synced: {why}"
        if msg not in ctx.report.skipped:
            ctx.report.skipped.append(msg)
            ctx.warn("mailbox-skipped", msg, mailbox=mid, reason=why)
    if ctx.dry is not None:
        ctx.dry.names = paths
    return paths, {m: p for m, p in paths.items() if m in ctx.selected}
