"""Pure mapping between the JMAP mailbox tree and folder paths (no I/O).

Mailbox names come from the server and become directory names, so this is a
security border: whatever the server sends, the folder path we produce is
relative, stays inside the Maildir root, never lands on a Maildir's own
``cur``/``new``/``tmp``, and can be turned back into the mailbox names it came
from (so that a folder created locally can be created on the server).

Layouts
-------

``verbatim``
    The inbox is the folder ``INBOX``; every other mailbox is its escaped
    ancestor names and its own escaped name joined by ``/``, e.g.
    ``Archive/2024``.  Children of the inbox live under it: ``INBOX/Receipts``.

``maildir++``
    The inbox is the Maildir root itself (path ``""``); every other mailbox is
    one directory ``.A.B.C``: a dot, then the escaped names from the top joined
    by dots.  An inbox ancestor contributes ``INBOX``: ``.INBOX.Receipts``.

Escaping one mailbox name
-------------------------

Each name is escaped on its own, then joined.  A character is replaced by
``%XX`` for each byte of its UTF-8 encoding (uppercase hex) when it is:

* ``%`` itself (so every ``%`` in a folder name starts an escape);
* ``/`` (the path separator);
* ``.`` in the ``maildir++`` layout (its separator), and a ``.`` at the start
  of a name in both layouts, so that ``.``, ``..`` and hidden names never
  appear as a path component;
* a control character: U+0000-U+001F, U+007F and U+0080-U+009F.

Then, in the ``verbatim`` layout only, a name that is exactly ``cur``,
``new`` or ``tmp`` has its first character escaped (``%63ur``), because the
parent folder's Maildir directories already have those names.  In both
layouts a top-level mailbox that is not the inbox but is named exactly
``INBOX`` becomes ``%49NBOX``, so that it never collides with the inbox (or,
in ``maildir++``, with the inbox's children ``.INBOX.*``).

Everything else stays as it is: any other Unicode, spaces (also leading and
trailing), ``&``, and ``.`` inside a name in the ``verbatim`` layout.  The
escaping is reversible; a folder path that differs from what we would produce
(lowercase hex, an escape that was not needed) is rejected rather than
guessed at.

Refused outright with :class:`UnsafeName`: an empty name, a name whose
escaped form is over 255 bytes (NAME_MAX; in ``maildir++`` this applies to
the whole ``.A.B.C`` directory name), a name with a lone surrogate (it has no
UTF-8 form and would alias another name on disk), a tree deeper than 64
levels, a parent cycle or unknown parent, and two mailboxes that would share
a folder.

Known limits, not handled here:

* Case-insensitive filesystems (macOS default, Windows): ``Foo`` and ``foo``,
  ``New`` and ``new``, ``Inbox`` and ``INBOX`` are one directory there.  The
  rules above compare case-sensitively, as POSIX filesystems do.
* Unicode normalization: names are kept byte for byte; a filesystem that
  normalizes (HFS+ to NFD) changes what a directory listing returns.
* A top-level mailbox named ``INBOX`` that is not the inbox and the inbox
  itself both read back as ``["INBOX"]`` from :func:`mailbox_path_components`;
  the paths differ, the name lists cannot.
* The total path length (PATH_MAX) depends on the root, so the store checks it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import PurePath
from typing import Literal, NamedTuple, get_args

from jmapsync.errors import ProtocolError

Layout = Literal["verbatim", "maildir++"]

INBOX = "INBOX"
# Linux/BSD NAME_MAX, in bytes of the file system encoding (UTF-8 for us).
NAME_MAX = 255
MAX_DEPTH = 64
# The directories of a Maildir; a child folder with one of these names would
# make the parent's messages appear in it (or the reverse).
_MAILDIR_SUBDIRS = frozenset({"cur", "new", "tmp"})
_HEX_DIGITS = "0123456789ABCDEF"


class UnsafeName(ProtocolError):
    """A mailbox name or tree that cannot become a safe, unique folder path."""


class MailboxNode(NamedTuple):
    """The part of a JMAP Mailbox that decides its folder path."""

    id: str
    name: str
    parent_id: str | None
    role: str | None


def escape_component(name: str, layout: Layout, *, top_level: bool) -> str:
    """Escape one mailbox name into one path component (rules: module docstring).

    ``top_level`` means "has no parent and is not the inbox"; the inbox itself
    is never passed here (its folder is fixed).  Raises UnsafeName for a name
    that cannot be stored safely at all.
    """
    _check_layout(layout)
    if not name:
        raise UnsafeName("server sent an empty mailbox name")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        # Python's file system encoding maps lone surrogates to raw bytes
        # (surrogateescape), so such a name could alias another one on disk.
        raise UnsafeName(f"mailbox name is not valid Unicode: {name!r:.80}")
    escaped = "".join(
        _percent(c)
        if c in "%/" or _is_control(c) or (c == "." and (i == 0 or layout == "maildir++"))
        else c
        for i, c in enumerate(name)
    )
    # These names contain nothing the loop escapes, so escaped == name here.
    if (layout == "verbatim" and name in _MAILDIR_SUBDIRS) or (top_level and name == INBOX):
        escaped = _percent(name[0]) + name[1:]
    if len(escaped.encode("utf-8")) > NAME_MAX:
        raise UnsafeName(f"mailbox name is longer than {NAME_MAX} bytes once escaped: {name!r:.80}")
    return escaped


def unescape_component(s: str) -> str:
    """Undo :func:`escape_component` on one path component.

    Strict: a ``%`` not followed by two uppercase hex digits, or escapes that
    do not decode as UTF-8, raise ValueError.  Characters other than ``%`` are
    taken literally, so this alone does not prove ``s`` is canonical; callers
    that read names from disk compare with a re-escape
    (:func:`mailbox_path_components` does).
    """
    buf = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c == "%":
            digits = s[i + 1 : i + 3]
            if len(digits) != 2 or any(d not in _HEX_DIGITS for d in digits):
                raise ValueError(f"malformed %-escape at offset {i} in {s!r:.80}")
            buf.append(int(digits, 16))
            i += 3
            continue
        try:
            buf += c.encode("utf-8")
        except UnicodeEncodeError as exc:
            # A directory whose name was not UTF-8 on disk (surrogateescape).
            raise ValueError(f"folder name is not valid UTF-8: {s!r:.80}") from exc
        i += 1
    try:
        return buf.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"%-escapes do not form UTF-8 in {s!r:.80}") from exc


def folder_paths(mailboxes: Iterable[MailboxNode], layout: Layout) -> dict[str, str]:
    """Map each mailbox id to its folder path relative to the Maildir root.

    All or nothing: one unsafe mailbox raises UnsafeName for the whole tree,
    because a partial mapping would let the sync plan mistake the missing
    mailbox's folder for one deleted on the server.
    """
    _check_layout(layout)
    nodes: dict[str, MailboxNode] = {}
    for node in mailboxes:
        if node.id in nodes:
            raise UnsafeName(f"server sent mailbox {node.id!r} twice", mailbox_id=node.id)
        nodes[node.id] = node
    _check_tree(nodes)

    paths: dict[str, str] = {}
    owner_of_path: dict[str, str] = {}
    for node in nodes.values():
        path = _path_of(node, nodes, layout)
        other = owner_of_path.get(path)
        if other is not None:
            # Two inbox roles, or duplicate sibling names: syncing both into
            # one folder would move messages between mailboxes on the server.
            raise UnsafeName(
                f"mailboxes {other!r} and {node.id!r} would share the folder {path!r}",
                mailbox_ids=(other, node.id),
                path=path,
            )
        owner_of_path[path] = node.id
        paths[node.id] = path
    return paths


def map_folders(
    mailboxes: Iterable[MailboxNode], layout: Layout
) -> tuple[dict[str, str], dict[str, str]]:
    """Like folder_paths, but a mailbox that cannot become a folder does not
    block the others: (mailbox id -> folder path, mailbox id -> why not).

    A mailbox is left out when its name cannot be stored (empty, not valid
    Unicode, too long once escaped), when an ancestor's cannot (its path
    goes through it), when its parent is unknown or the parents form a cycle,
    or when it would share its folder with another (both are left out: which
    one owns the folder cannot be told).  The sync treats a left-out mailbox
    as unmapped: its Emails' files are left exactly as they are, and its
    folder is neither created, moved nor removed -- so a partial mapping is
    never taken for deletions.
    """
    _check_layout(layout)
    nodes: dict[str, MailboxNode] = {}
    unsafe: dict[str, str] = {}
    for node in mailboxes:
        if node.id in nodes:
            unsafe[node.id] = "the server sent this mailbox twice"
        nodes[node.id] = node
    for nid in nodes:
        why = _ancestry_problem(nid, nodes)
        if why is not None:
            unsafe.setdefault(nid, why)
    owners: dict[str, list[str]] = {}
    for node in nodes.values():
        if node.id in unsafe:
            continue
        try:
            path = _path_of(node, nodes, layout)
        except UnsafeName as exc:
            unsafe[node.id] = exc.message
            continue
        owners.setdefault(path, []).append(node.id)
    paths: dict[str, str] = {}
    for path, ids in owners.items():
        if len(ids) == 1:
            paths[ids[0]] = path
            continue
        for nid in ids:  # two inbox roles, or siblings whose names escape alike
            unsafe[nid] = f"shares the folder {path!r} with mailbox(es) {sorted(set(ids) - {nid})}"
    return paths, unsafe


def _ancestry_problem(start: str, nodes: dict[str, MailboxNode]) -> str | None:
    """Why `start`'s chain of parents cannot be followed to the top, or None."""
    seen: set[str] = set()
    current: str | None = start
    child = start
    while current is not None:
        if current in seen:
            return f"its parents form a cycle through mailbox {current!r}"
        node = nodes.get(current)
        if node is None:
            return f"mailbox {child!r} has an unknown parent {current!r}"
        seen.add(current)
        child, current = current, node.parent_id
    return None


def mailbox_path_components(path: str, layout: Layout) -> list[str]:
    """The mailbox names, from the top, that :func:`folder_paths` maps to ``path``.

    The inbox and its descendants start with ``"INBOX"`` whatever the inbox is
    called on the server.  Raises ValueError for a path no mailbox tree could
    produce: empty components, escapes we would not write, ``cur``/``new``/
    ``tmp`` in ``verbatim``, ``.INBOX`` alone in ``maildir++`` (the inbox is
    the root there), names over the length limits.  That makes this usable
    directly on directory listings: anything it accepts is a folder we could
    have created.
    """
    _check_layout(layout)
    if layout == "verbatim":
        if not path:
            raise ValueError("the Maildir root is not a folder in the verbatim layout")
        parts = path.split("/")
    else:
        if not path:
            return [INBOX]
        if not path.startswith("."):
            raise ValueError(f"maildir++ folders start with '.': {path!r:.80}")
        parts = path[1:].split(".")
        if parts == [INBOX]:
            raise ValueError("'.INBOX' is not a folder: the inbox is the maildir++ root")
    if len(parts) > MAX_DEPTH:
        raise ValueError(f"folder is more than {MAX_DEPTH} levels deep: {path!r:.80}")

    names: list[str] = []
    for i, part in enumerate(parts):
        if i == 0 and part == INBOX:
            names.append(INBOX)
            continue
        if not part:
            raise ValueError(f"empty component in folder path {path!r:.80}")
        name = unescape_component(part)
        try:
            canonical = escape_component(name, layout, top_level=i == 0)
        except UnsafeName as exc:
            raise ValueError(f"{part!r:.80} cannot be a folder name: {exc}") from exc
        if canonical != part:
            raise ValueError(
                f"{part!r:.80} is not how jmapsync writes {name!r:.80} (that is {canonical!r:.80})"
            )
        names.append(name)
    # Every part re-escaped cleanly, so the path is valid UTF-8 by now.
    if layout == "maildir++" and len(path.encode("utf-8")) > NAME_MAX:
        raise ValueError(f"maildir++ folder name is over {NAME_MAX} bytes: {path!r:.80}")
    return names


def is_within(root: PurePath, candidate: PurePath) -> bool:
    """True iff ``candidate`` is ``root`` or lies below it, lexically.

    Both paths must be absolute (ValueError otherwise: a relative path would
    depend on the working directory).  ``..`` is normalized away, but symlinks
    are NOT resolved: a symlink inside the root that points outside passes
    this check, so the store must not follow links it did not create.
    """
    if not root.is_absolute() or not candidate.is_absolute():
        raise ValueError(f"is_within needs absolute paths: {root!s:.80}, {candidate!s:.80}")
    norm_root = os.path.normpath(root)
    norm_candidate = os.path.normpath(candidate)
    # commonpath, not startswith: "/mail2" starts with "/mail" but is outside it.
    return os.path.commonpath([norm_root, norm_candidate]) == norm_root


def _check_layout(layout: str) -> None:
    # Literal types are not checked at run time, and a typo in the config
    # would otherwise silently pick the maildir++ branch below.
    if layout not in get_args(Layout):
        raise ValueError(f"unknown Maildir layout: {layout!r}")


def _is_control(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F


def _percent(c: str) -> str:
    return "".join(f"%{b:02X}" for b in c.encode("utf-8"))


def _check_tree(nodes: dict[str, MailboxNode]) -> None:
    """Raise UnsafeName for an unknown parent id or a parent cycle.

    Checked on the raw parent links, before the inbox anchors paths: a cycle
    through the inbox would otherwise go unnoticed, and a server that sends
    one is not to be trusted with the rest of the tree either.
    """
    acyclic: set[str] = set()
    for start in nodes:
        chain: list[str] = []
        on_chain: set[str] = set()
        current: str | None = start
        while current is not None and current not in acyclic:
            if current in on_chain:
                raise UnsafeName(f"mailbox {current!r} is its own ancestor", mailbox_id=current)
            node = nodes.get(current)
            if node is None:
                raise UnsafeName(
                    f"mailbox {chain[-1]!r} has an unknown parent {current!r}",
                    mailbox_id=chain[-1],
                    parent_id=current,
                )
            chain.append(current)
            on_chain.add(current)
            current = node.parent_id
        acyclic.update(chain)


def _path_of(node: MailboxNode, nodes: dict[str, MailboxNode], layout: Layout) -> str:
    """The folder path of one mailbox in a tree already checked by _check_tree."""
    reversed_parts: list[str] = []
    current = node
    while True:
        # The inbox anchors its descendants at INBOX wherever it sits itself.
        under_inbox = current.role == "inbox"
        parent = None if current.parent_id is None else nodes[current.parent_id]
        if under_inbox:
            reversed_parts.append(INBOX)
        else:
            try:
                escaped = escape_component(current.name, layout, top_level=parent is None)
            except UnsafeName as exc:
                fields = {**exc.fields, "mailbox_id": current.id}
                raise UnsafeName(f"mailbox {current.id!r}: {exc.message}", **fields) from exc
            reversed_parts.append(escaped)
        if len(reversed_parts) > MAX_DEPTH:
            raise UnsafeName(
                f"mailbox {node.id!r} is more than {MAX_DEPTH} levels deep", mailbox_id=node.id
            )
        if under_inbox or parent is None:
            break
        current = parent
    parts = reversed_parts[::-1]
    if layout == "verbatim":
        return "/".join(parts)
    if under_inbox and len(parts) == 1:
        return ""  # the inbox is the maildir++ root
    path = "." + ".".join(parts)
    if len(path.encode("utf-8")) > NAME_MAX:
        raise UnsafeName(
            f"mailbox {node.id!r}: maildir++ folder name is over {NAME_MAX} bytes",
            mailbox_id=node.id,
        )
    return path
