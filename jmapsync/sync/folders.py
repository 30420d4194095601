"""Folders: each mailbox's folder path, and the folder-level actions of a pass.

A mailbox whose path differs from the one recorded is *moved*: its cur/ new/
tmp/ are renamed into the new path (nothing is downloaded again).  Every
mailbox's folder is created before the files are planned; the folders of
vanished mailboxes are removed after the files, and only when empty.
"""

from __future__ import annotations

from collections.abc import Mapping

from jmapsync.errors import DeletionRefused
from jmapsync.jmap.types import Mailbox, MailboxId
from jmapsync.maildir.names import Layout, MailboxNode, folder_paths
from jmapsync.maildir.store import MaildirStore
from jmapsync.sync import guards
from jmapsync.sync.context import PassContext
from jmapsync.sync.plan import FolderPlan


def folder_map(mailboxes: Mapping[MailboxId, Mailbox], layout: Layout) -> dict[MailboxId, str]:
    """Mailbox id -> its folder path in this layout (maildir/names.py)."""
    paths = folder_paths(
        (MailboxNode(m.id, m.name, m.parent_id, m.role) for m in mailboxes.values()), layout
    )
    return {MailboxId(k): v for k, v in paths.items()}


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
    if fplan.moves:
        # Moved folders carry their files to new paths: the table is
        # rewritten whole at the end of this pass.
        ctx.mark_files_pending(rewrite=True)
    for src, dst in fplan.moves:
        if ctx.store.move_folder(src, dst):
            ctx.report.folders_moved += 1
            ctx.log.info("folder-moved", src=src, dst=dst)
    for folder in fplan.create:
        if ctx.store.ensure_folder(folder):
            ctx.report.folders_created += 1


def apply_after(ctx: PassContext, fplan: FolderPlan) -> None:
    """Remove the folders of vanished mailboxes -- only when empty."""
    store = ctx.store
    # Deepest first, so that a parent emptied by its children's moves goes too.
    for folder in sorted(fplan.remove_if_empty, key=lambda f: f.count("/"), reverse=True):
        if not store.path(folder).is_dir():
            continue
        was_folder = store.is_folder(folder)  # else: a leftover of a folder move
        if store.remove_folder_if_empty(folder):
            if was_folder:
                ctx.report.folders_removed += 1
                ctx.log.info("folder-removed", folder=folder)
        else:
            ctx.warn(
                "folder-kept",
                f"folder {folder!r} belongs to no mailbox any more but holds other files; kept",
                folder=folder,
                reason="not empty",
            )
