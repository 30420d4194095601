"""One account's data: mailboxes, Emails, blobs, and a change log per type.

Plain RFC 8620/8621 semantics, no personality: every change to a record is one
step of its type's state counter (so */changes can stop at any intermediate
state, RFC 8620 5.2), Mailbox counts (totalEmails, unreadEmails) are Mailbox
properties whose change is a Mailbox update, as on Cyrus.  How ids and state
strings look is the personality's business (`Ids`).

Every method takes the store's lock: the HTTP thread and the test thread use
the store at the same time.  Listeners (EventSource streams) are called after
the lock is released.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

TYPES = ("Email", "Mailbox", "Thread")


class Ids(Protocol):
    """How the personality names things (see personality.py)."""

    def email(self, raw: bytes) -> str: ...
    def blob(self, raw: bytes) -> str: ...
    def mailbox(self) -> str: ...
    def state(self, n: int) -> str: ...
    def parse_state(self, value: object) -> int | None: ...


@dataclass
class Mailbox:
    id: str
    name: str
    parent_id: str | None
    role: str | None
    sort_order: int = 0
    is_subscribed: bool = True


@dataclass
class Email:
    id: str
    blob_id: str
    mailbox_ids: set[str]
    keywords: set[str]
    received_at: str
    size: int
    message_id: list[str]
    seq: int  # arrival order: ties in receivedAt sort by it

    @property
    def thread_id(self) -> str:
        return "T" + self.id  # one thread per Email: jmapsync never reads threads


@dataclass
class ChangeLog:
    """(step, id, "created" | "updated" | "destroyed"), one step per change."""

    n: int = 0
    floor: int = 0  # changes from states below this are forgotten
    entries: list[tuple[int, str, str]] = field(default_factory=list)

    def record(self, oid: str, kind: str) -> None:
        self.n += 1
        self.entries.append((self.n, oid, kind))

    def forget(self) -> None:
        """Drop the history: every state handed out so far is too old."""
        self.entries.clear()
        self.floor = self.n

    def since(self, start: int, max_changes: int) -> tuple[int, dict[str, str]] | None:
        """(new step, id -> kind) from `start`, cut at max_changes distinct ids
        (an intermediate state, oldest changes first); None: cannot calculate."""
        if not self.floor <= start <= self.n:
            return None
        first: dict[str, str] = {}
        last: dict[str, str] = {}
        end = self.n
        for step, oid, kind in self.entries:
            if step <= start:
                continue
            if oid not in first and len(first) >= max_changes:
                end = step - 1  # an intermediate state: the client asks again from here
                break
            first.setdefault(oid, kind)
            last[oid] = kind
        out: dict[str, str] = {}
        for oid, kind in first.items():
            if kind == "created":
                if last[oid] != "destroyed":  # created and destroyed: omitted (RFC 8620 5.2)
                    out[oid] = "created"
            else:
                out[oid] = "destroyed" if last[oid] == "destroyed" else "updated"
        return end, out


_MSGID = re.compile(rb"<([^<>\s]+)>")


def header_values(raw: bytes, name: str) -> list[bytes]:
    """Unfolded values of every header field `name` (case-insensitive)."""
    m = re.search(rb"\r?\n\r?\n", raw)
    head = raw if m is None else raw[: m.start()]
    want = name.lower().encode()
    out: list[bytearray] = []
    current: bytearray | None = None
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.extend(b" " + line.strip())
            continue
        current = None
        fname, sep, rest = line.partition(b":")
        if sep and fname.strip().lower() == want:
            current = bytearray(rest.strip())
            out.append(current)
    return [bytes(v) for v in out]


class Store:
    """The account's records.  `now()` gives receivedAt for deliveries."""

    def __init__(self, ids: Ids, now: Callable[[], str]) -> None:
        self.lock = threading.RLock()
        self.ids = ids
        self.now = now
        self.mailboxes: dict[str, Mailbox] = {}
        self.emails: dict[str, Email] = {}
        self.blobs: dict[str, bytes] = {}
        self.logs = {t: ChangeLog() for t in TYPES}
        self.listeners: list[Callable[[], None]] = []
        self._seq = 0

    # -- states ----------------------------------------------------------------------

    def state(self, type_: str) -> str:
        with self.lock:
            return self.ids.state(self.logs[type_].n)

    def states(self) -> dict[str, str]:
        with self.lock:
            return {t: self.ids.state(log.n) for t, log in self.logs.items()}

    def changed(self) -> None:
        """Tell the listeners (outside the lock: they may take other locks)."""
        for listener in list(self.listeners):
            listener()

    # -- blobs -----------------------------------------------------------------------

    def put_blob(self, raw: bytes) -> str:
        with self.lock:
            blob_id = self.ids.blob(raw)
            self.blobs[blob_id] = raw
            return blob_id

    # -- mailboxes -------------------------------------------------------------------

    def counts(self, mid: str) -> tuple[int, int]:
        """(totalEmails, unreadEmails) of a mailbox."""
        total = unread = 0
        for e in self.emails.values():
            if mid in e.mailbox_ids:
                total += 1
                unread += "$seen" not in e.keywords
        return total, unread

    def add_mailbox(self, name: str, parent_id: str | None = None, role: str | None = None) -> str:
        with self.lock:
            mid = self.ids.mailbox()
            self.mailboxes[mid] = Mailbox(mid, name, parent_id, role)
            self.logs["Mailbox"].record(mid, "created")
        self.changed()
        return mid

    def update_mailbox(self, mid: str, **patch: Any) -> None:
        with self.lock:
            box = self.mailboxes[mid]
            for key, value in patch.items():
                setattr(box, key, value)
            self.logs["Mailbox"].record(mid, "updated")
        self.changed()

    def destroy_mailbox(self, mid: str, *, remove_emails: bool = False) -> None:
        """Remove a mailbox; its Emails leave it (and those left in no
        mailbox are destroyed when `remove_emails`, else it must be empty)."""
        with self.lock:
            for e in list(self.emails.values()):
                if mid not in e.mailbox_ids:
                    continue
                if e.mailbox_ids == {mid}:
                    if not remove_emails:
                        raise ValueError("mailboxHasEmail")
                    self.destroy_email(e.id)
                else:
                    self.update_email(e.id, mailbox_ids=e.mailbox_ids - {mid})
            del self.mailboxes[mid]
            self.logs["Mailbox"].record(mid, "destroyed")
        self.changed()

    def _touch_mailboxes(self, mids: Iterable[str]) -> None:
        for mid in sorted(set(mids)):
            if mid in self.mailboxes:
                self.logs["Mailbox"].record(mid, "updated")

    # -- emails ----------------------------------------------------------------------

    def find_same_bytes(self, raw: bytes) -> Email | None:
        with self.lock:
            for e in self.emails.values():
                if self.blobs.get(e.blob_id) == raw:
                    return e
            return None

    def add_email(
        self,
        raw: bytes,
        mailbox_ids: Iterable[str],
        keywords: Iterable[str] = (),
        received_at: str | None = None,
    ) -> Email:
        """A new Email of these bytes (dedup, if any, is the caller's rule)."""
        with self.lock:
            boxes = set(mailbox_ids)
            if not boxes or not boxes <= set(self.mailboxes):
                raise ValueError("invalidProperties: mailboxIds")
            blob_id = self.put_blob(raw)
            eid = self.ids.email(raw)
            if eid in self.emails:
                raise ValueError(f"id {eid} in use")
            self._seq += 1
            mids = [
                m.group(1).decode("utf-8", "replace")
                for v in header_values(raw, "Message-ID")
                for m in [_MSGID.search(v)]
                if m
            ]
            email = Email(
                eid,
                blob_id,
                boxes,
                {k.lower() for k in keywords},
                received_at or self.now(),
                len(raw),
                mids[:1],
                self._seq,
            )
            self.emails[eid] = email
            self.logs["Email"].record(eid, "created")
            self.logs["Thread"].record(email.thread_id, "created")
            self._touch_mailboxes(boxes)
        self.changed()
        return email

    def update_email(
        self,
        eid: str,
        *,
        mailbox_ids: Iterable[str] | None = None,
        keywords: Iterable[str] | None = None,
    ) -> None:
        with self.lock:
            e = self.emails[eid]
            touched: set[str] = set()
            if mailbox_ids is not None:
                boxes = set(mailbox_ids)
                if not boxes or not boxes <= set(self.mailboxes):
                    raise ValueError("invalidProperties: mailboxIds")
                touched |= boxes ^ e.mailbox_ids
                e.mailbox_ids = boxes
            if keywords is not None:
                kws = {k.lower() for k in keywords}
                if ("$seen" in kws) != ("$seen" in e.keywords):
                    touched |= e.mailbox_ids
                e.keywords = kws
            self.logs["Email"].record(eid, "updated")
            self._touch_mailboxes(touched)
        self.changed()

    def destroy_email(self, eid: str) -> None:
        with self.lock:
            e = self.emails.pop(eid)
            self.logs["Email"].record(eid, "destroyed")
            self.logs["Thread"].record(e.thread_id, "destroyed")
            self._touch_mailboxes(e.mailbox_ids)
        self.changed()

    def by_path(self, path: str) -> str:
        """The id of the mailbox with this "/" path, or this role."""
        with self.lock:
            for mid, box in self.mailboxes.items():
                if self.path(mid) == path or box.role == path.lower():
                    return mid
        raise KeyError(path)

    def path(self, mid: str) -> str:
        names: list[str] = []
        box: Mailbox | None = self.mailboxes[mid]
        while box is not None and len(names) < 64:
            names.append(box.name)
            box = self.mailboxes.get(box.parent_id) if box.parent_id else None
        return "/".join(reversed(names))
