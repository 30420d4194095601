"""The folders of a Maildir tree on disk: find, create, move, remove them.

Every path this module touches is checked to lie inside the Maildir root
(`paths.inside`), whatever the caller computed.  Directories are created 0700, as
mbsync makes them.  `MaildirStore` (store.py) adds the message files.
"""

from __future__ import annotations

import os
from pathlib import Path

from jmapsync.errors import LocalError
from jmapsync.maildir.durable import DirSync
from jmapsync.maildir.files import PART_SUFFIX, SUBDIRS, join
from jmapsync.maildir.keywords import FILE_NAME as KEYWORDS_FILE
from jmapsync.maildir.paths import inside


def make_dirs(path: Path) -> None:
    """mkdir -p, each directory it creates mode 0700 (mbsync's choice: mail is
    private; Path.mkdir(parents=True) would give missing parents 0777 minus
    the umask, 0755 with the usual one).  Directories that exist keep their
    mode: the user may have opened them on purpose."""
    missing = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:  # pragma: no cover - / exists
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(0o700)
        except FileExistsError:
            if not d.is_dir():
                raise


class MaildirTree:
    """One account's Maildir root: its folders (MaildirStore adds the messages)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirsync = DirSync()

    def path(self, rel: str) -> Path:
        return inside(self.root, rel)

    # -- folders -------------------------------------------------------------------

    def ensure_root(self) -> None:
        try:
            make_dirs(self.root)
        except OSError as exc:
            raise LocalError(f"cannot create Maildir root {self.root}: {exc.strerror}") from None
        if not self.root.is_dir():
            raise LocalError(f"Maildir root {self.root} is not a directory")

    def is_folder(self, folder: str) -> bool:
        p = self.path(folder)
        return all((p / s).is_dir() for s in ("cur", "new"))

    def needs_folder(self, folder: str) -> bool:
        """True if ensure_folder would create anything (a dry run asks this)."""
        p = self.path(folder)
        return not all((p / sub).is_dir() for sub in SUBDIRS)

    def ensure_folder(self, folder: str) -> bool:
        """Create cur/ new/ tmp/ of a folder; True if anything was created."""
        p = self.path(folder)
        created = False
        for sub in SUBDIRS:
            d = p / sub
            if not d.is_dir():
                try:
                    make_dirs(d)
                except OSError as exc:
                    raise LocalError(
                        f"cannot create folder {folder or '.'}: {exc.strerror}"
                    ) from None
                self.dirsync.add(p)
                self.dirsync.add(p.parent)
                created = True
        return created

    def move_folder(self, src: str, dst: str) -> bool:
        """Move a folder's cur/ new/ tmp/ to another path, one rename each.

        Child folders stay where they are (their own moves follow), so the
        order of moves does not matter.  Returns False, having moved nothing,
        when the destination already holds mail: the per-file plan then moves
        the messages one by one instead.
        """
        if not self.can_move_folder(src, dst):
            return False
        s, d = self.path(src), self.path(dst)
        make_dirs(d)
        for sub in SUBDIRS:
            if not (s / sub).exists():
                continue
            target = d / sub
            if target.exists():
                target.rmdir()  # empty, checked above
            os.rename(s / sub, target)
        self.dirsync.add(s)
        self.dirsync.add(d)
        self.dirsync.add(d.parent)
        return True

    def can_move_folder(self, src: str, dst: str) -> bool:
        """Would move_folder move anything (src a folder, dst without mail)?"""
        s, d = self.path(src), self.path(dst)
        if s == d or not self.is_folder(src):
            return False
        return not any((d / sub).exists() and any((d / sub).iterdir()) for sub in SUBDIRS)

    def leftovers(self, folder: str) -> list[str]:
        """Relative paths of what remove_folder_if_empty would find in a
        folder's cur/ new/ tmp/ (our unfinished downloads do not count)."""
        p = self.path(folder)
        out = []
        for sub in SUBDIRS:
            d = p / sub
            if d.is_dir():
                out += [join(folder, sub, e) for e in os.listdir(d) if not e.endswith(PART_SUFFIX)]
        return out

    def remove_folder_if_empty(self, folder: str) -> bool:
        """Remove an emptied folder and its empty parents (never the root).

        Refuses (returns False) when any message file or other entry remains,
        so a removed mailbox never takes a user's file with it.
        """
        p = self.path(folder)
        if p == self.root or self.leftovers(folder):
            return False
        for sub in SUBDIRS:
            d = p / sub
            if d.is_dir():
                for e in os.listdir(d):
                    (d / e).unlink()
                d.rmdir()
        # Names the letters of files that are gone (maildir/keywords.py).
        (p / KEYWORDS_FILE).unlink(missing_ok=True)
        try:
            p.rmdir()
        except OSError:
            return True  # children folders remain; cur/new/tmp are gone
        self.dirsync.add(p.parent)
        parent = p.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()  # only succeeds when empty (no cur/ of its own)
            except OSError:
                break
            self.dirsync.add(parent.parent)
            parent = parent.parent
        return True

    def folders(self, layout: str) -> list[str]:
        """Every Maildir folder under the root, as relative paths."""
        found: list[str] = []
        if not self.root.is_dir():
            return found
        if layout == "maildir++":
            if self.is_folder(""):
                found.append("")
            for entry in sorted(os.listdir(self.root)):
                if entry.startswith(".") and entry not in (".", "..") and self.is_folder(entry):
                    found.append(entry)
            return found

        def walk(rel: str) -> None:
            p = self.path(rel)
            try:
                entries = sorted(os.listdir(p))
            except OSError:
                return
            if rel and self.is_folder(rel):
                found.append(rel)
            for entry in entries:
                if entry.startswith(".") or (rel and entry in SUBDIRS):
                    continue
                if (p / entry).is_dir() and not (p / entry).is_symlink():
                    walk(join(rel, entry))

        walk("")
        return found
