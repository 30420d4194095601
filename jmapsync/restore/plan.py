"""PURE: what a restore does -- which mailboxes to create, which messages to
import, which are already there, which are skipped and why.

No network, no disk: the source tree (read by ``source.py``), the account's
mailboxes and its message listing go in; decisions come out.  The one
question this module cannot answer alone -- "is this Email on the server the
same bytes as my file?" -- comes back as a ``Check`` with the candidates to
download and hash (``execute.py``).

**Messages.** Files with the same canonical bytes (SHA-256) are one message,
whatever folders they are in (a jmapsync mirror hard-links an Email into each
folder of its mailboxes; mbsync writes a copy per folder): it is imported
once, into the mailbox of each of those folders, with the union of their
keywords and the earliest of their arrival times.

**Already there** means: the same Message-ID and the same bytes.  Cheap
checks first: an Email recorded in the restore journal as the import of
exactly these bytes, and still listed, is there; otherwise only Emails of the
same size whose Message-ID matches ours (or that have none, or we have
none) are candidates, and only those are downloaded.  A message without a
candidate is imported without any further question to the server.

**Mailboxes.** A folder's mailbox names (``folders.py``) are looked up in the
account's tree by name (Unicode NFC, as servers normalize), parents first;
``INBOX`` is the inbox-role mailbox.  A top-level folder named like a
special mailbox (Sent, Drafts, Trash, Archive, Junk and a few common
spellings of them) that matches no top-level mailbox of that name goes to the
mailbox with that role, wherever it is.  Everything else that is missing is
created, parents first.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from jmapsync.jmap.types import Mailbox
from jmapsync.maildir.names import INBOX

Key = tuple[str, ...]  # mailbox names from the top, NFC; ("INBOX", ...) below the inbox

# Folder name (casefolded) -> role, for names that match no mailbox of the account.
ROLE_OF_NAME: dict[str, str] = {
    "sent": "sent",
    "sent items": "sent",
    "sent messages": "sent",
    "sent mail": "sent",
    "drafts": "drafts",
    "trash": "trash",
    "deleted items": "trash",
    "deleted messages": "trash",
    "archive": "archive",
    "archives": "archive",
    "junk": "junk",
    "spam": "junk",
    "junk e-mail": "junk",
    "junk email": "junk",
}


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


@dataclass(frozen=True, slots=True)
class NewMailbox:
    """A mailbox to create: `parent` is an existing mailbox id, the key of
    another NewMailbox (created before it), or None for the top level."""

    key: Key
    name: str
    parent: str | Key | None


@dataclass
class MailboxPlan:
    target: dict[str, Key] = field(default_factory=dict)  # folder -> mailbox key
    existing: dict[Key, str] = field(default_factory=dict)  # key -> mailbox id
    create: list[NewMailbox] = field(default_factory=list)  # parents first
    refused: dict[str, str] = field(default_factory=dict)  # folder -> why
    by_role: dict[str, str] = field(default_factory=dict)  # folder -> role it was matched to


def remote_keys(mailboxes: Iterable[Mailbox]) -> dict[Key, str]:
    """Key -> mailbox id for the account's tree (first one wins on a clash)."""
    boxes = {m.id: m for m in mailboxes}
    out: dict[Key, str] = {}
    for m in sorted(boxes.values(), key=lambda b: b.id):
        parts: list[str] = []
        node: Mailbox | None = m
        seen: set[str] = set()
        while node is not None and node.id not in seen:
            seen.add(node.id)
            if node.role == "inbox":
                parts.append(INBOX)
                break
            parts.append(nfc(node.name))
            node = boxes.get(node.parent_id) if node.parent_id else None
        out.setdefault(tuple(reversed(parts)), m.id)
    return out


def plan_mailboxes(
    folder_names: Mapping[str, list[str] | str], mailboxes: Sequence[Mailbox]
) -> MailboxPlan:
    """Map each source folder to a mailbox (existing or to create).

    `folder_names`: folder -> its mailbox names, or the reason it has none."""
    plan = MailboxPlan()
    plan.existing = remote_keys(mailboxes)
    role_ids = {m.role: m.id for m in mailboxes if m.role}
    key_of_id = {v: k for k, v in plan.existing.items()}
    new: dict[Key, NewMailbox] = {}
    for folder in sorted(folder_names, key=lambda f: (f.count("/") + f.count("."), f)):
        names = folder_names[folder]
        if isinstance(names, str):
            plan.refused[folder] = names
            continue
        parts = [nfc(n) for n in names]
        if parts[0] == INBOX:
            if (INBOX,) not in plan.existing:
                plan.refused[folder] = "the account has no inbox-role mailbox"
                continue
            key: Key = (INBOX,)
        elif (parts[0],) in plan.existing or (parts[0],) in new:
            key = (parts[0],)
        elif (role := ROLE_OF_NAME.get(parts[0].casefold())) and role in role_ids:
            key = key_of_id[role_ids[role]]
            plan.by_role[folder] = role
        else:
            key = (parts[0],)
            new[key] = NewMailbox(key, parts[0], None)
        for name in parts[1:]:
            child = (*key, name)
            if child not in plan.existing and child not in new:
                parent: str | Key = plan.existing.get(key) or key
                new[child] = NewMailbox(child, name, parent)
            key = child
        plan.target[folder] = key
    plan.create = sorted(new.values(), key=lambda n: (len(n.key), n.key))
    return plan


@dataclass(frozen=True, slots=True)
class Message:
    """One message to restore: every file with the same canonical bytes."""

    sha256: str
    size: int
    message_id: str | None
    files: tuple[str, ...]  # relpaths, the first one is read for the upload
    folders: tuple[str, ...]
    keywords: frozenset[str]
    received_at: float


@dataclass(frozen=True, slots=True)
class Candidate:
    email_id: str
    blob_id: str
    size: int


@dataclass(frozen=True, slots=True)
class Present:
    email_id: str
    how: str  # "journal" or "same bytes"


@dataclass(frozen=True, slots=True)
class Check:
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class Import:
    mailboxes: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


Decision = Present | Check | Import | Skip


@dataclass(frozen=True, slots=True)
class Listed:
    """An Email of the account (jmap/inventory.RemoteMessage, as plain data)."""

    id: str
    blob_id: str
    message_ids: tuple[str, ...]
    size: int


@dataclass(frozen=True, slots=True)
class Piece:
    """One readable source file, as grouping needs it."""

    relpath: str
    sha256: str
    size: int
    message_id: str | None
    folder: str
    keywords: frozenset[str]
    received_at: float


def group(pieces: Iterable[Piece]) -> list[Message]:
    """One Message per distinct content, in the order of its first file."""
    by_sha: dict[str, list[Piece]] = defaultdict(list)
    for p in pieces:
        by_sha[p.sha256].append(p)
    return [
        Message(
            sha256=sha,
            size=ps[0].size,
            message_id=ps[0].message_id,
            files=tuple(p.relpath for p in ps),
            folders=tuple(sorted({p.folder for p in ps})),
            keywords=frozenset().union(*(p.keywords for p in ps)),
            received_at=min(p.received_at for p in ps),
        )
        for sha, ps in by_sha.items()
    ]


def decide(
    msg: Message,
    plan: MailboxPlan,
    journal: Mapping[str, str | None],
    listed: Mapping[str, Listed],
    by_size: Mapping[int, Sequence[Listed]],
) -> Decision:
    """What to do with one message (module docstring)."""
    recorded = journal.get(msg.sha256)
    if recorded is not None and recorded in listed:
        return Present(recorded, "journal")
    candidates = tuple(
        Candidate(e.id, e.blob_id, e.size)
        for e in by_size.get(msg.size, ())
        if not e.message_ids or msg.message_id is None or msg.message_id in e.message_ids
    )
    if candidates:
        return Check(candidates)
    return importable(msg, plan)


def importable(msg: Message, plan: MailboxPlan) -> Import | Skip:
    """Import into the mailboxes of the message's folders that have one."""
    keys = tuple(sorted({plan.target[f] for f in msg.folders if f in plan.target}))
    if not keys:
        return Skip(plan.refused.get(msg.folders[0], "its folder has no mailbox"))
    return Import(keys)


def index_by_size(listed: Iterable[Listed]) -> dict[int, list[Listed]]:
    out: dict[int, list[Listed]] = defaultdict(list)
    for e in listed:
        out[e.size].append(e)
    return out
