"""What "someone else" does to the account (another client, a delivery), and
the handles tests use to point jmapsync at it.

These act on the store directly, under its lock, from the test's thread; the
state counters and EventSource streams see them like any change.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store import Email

if TYPE_CHECKING:
    from .personality import Personality
    from .server import Knobs
    from .store import Store

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from mailtools import Account, Jmap  # noqa: E402


class BearerJmap(Jmap):
    """mailtools.Jmap with a Bearer token instead of Basic auth."""

    def __init__(self, token: str, session_url: str) -> None:
        super().__init__(user="token", password="", session_url=session_url)
        self._auth = "Bearer " + token


class ServerAccount(Account):
    """A mailtools.Account for this server: what Mirror and assert_exact_mirror
    need (user, password, session_url, jmap()); no IMAP."""

    token: str | None = None

    def jmap(self) -> Jmap:
        if self._jmap is None:
            self._jmap = BearerJmap(self.token, self.session_url) if self.token else Jmap(self)
        return self._jmap


class RemoteOps:
    """Mixed into JmapServer."""

    store: Store
    knobs: Knobs
    personality: Personality
    user: str
    password: str
    token: str
    readonly_token: str | None
    session_url: str

    # -- mailboxes -------------------------------------------------------------------

    def mailbox_id(self, path_or_role: str) -> str:
        """ "INBOX" and "Inbox" both name the inbox; else a "/" path or a role."""
        if path_or_role.upper() == "INBOX":
            path_or_role = "inbox"
        return self.store.by_path(path_or_role)

    def create_mailbox(self, name: str, parent: str | None = None, role: str | None = None) -> str:
        return self.store.add_mailbox(name, self.mailbox_id(parent) if parent else None, role)

    def rename_mailbox(self, path: str, name: str) -> None:
        self.store.update_mailbox(self.mailbox_id(path), name=name)

    def destroy_mailbox(self, path: str, *, remove_emails: bool = False) -> None:
        self.store.destroy_mailbox(self.mailbox_id(path), remove_emails=remove_emails)

    # -- emails ----------------------------------------------------------------------

    def deliver(
        self,
        raw: bytes,
        mailbox: str | Iterable[str] = "INBOX",
        keywords: Iterable[str] = (),
        received_at: str | None = None,
    ) -> str:
        """A new Email (as a delivery or another client's import would make it)."""
        boxes = [mailbox] if isinstance(mailbox, str) else list(mailbox)
        return self.store.add_email(
            raw, [self.mailbox_id(b) for b in boxes], keywords, received_at
        ).id

    def set_keywords(self, eid: str, keywords: Iterable[str]) -> None:
        self.store.update_email(eid, keywords=keywords)

    def add_keyword(self, eid: str, keyword: str) -> None:
        with self.store.lock:
            self.store.update_email(eid, keywords=self.store.emails[eid].keywords | {keyword})

    def remove_keyword(self, eid: str, keyword: str) -> None:
        with self.store.lock:
            self.store.update_email(eid, keywords=self.store.emails[eid].keywords - {keyword})

    def set_mailboxes(self, eid: str, mailboxes: Iterable[str]) -> None:
        self.store.update_email(eid, mailbox_ids=[self.mailbox_id(m) for m in mailboxes])

    def move(self, eid: str, to: str) -> None:
        self.set_mailboxes(eid, [to])

    def destroy(self, eid: str) -> None:
        self.store.destroy_email(eid)

    # -- looking ---------------------------------------------------------------------

    def emails(self) -> dict[str, Email]:
        """A snapshot: Email id -> a copy of the Email."""
        with self.store.lock:
            return {
                i: Email(
                    e.id,
                    e.blob_id,
                    set(e.mailbox_ids),
                    set(e.keywords),
                    e.received_at,
                    e.size,
                    list(e.message_id),
                    e.seq,
                )
                for i, e in self.store.emails.items()
            }

    def blob(self, blob_id: str) -> bytes:
        with self.store.lock:
            return self.store.blobs[blob_id]

    def paths(self) -> dict[str, str]:
        """Mailbox id -> "/" path."""
        with self.store.lock:
            return {m: self.store.path(m) for m in self.store.mailboxes}

    def by_message_id(self, message_id: str) -> list[str]:
        with self.store.lock:
            return sorted(e.id for e in self.store.emails.values() if message_id in e.message_id)

    # -- for jmapsync ----------------------------------------------------------------

    def account(self, *, read_only: bool = False) -> ServerAccount:
        """A handle for Mirror / assert_exact_mirror.  Bearer-only servers get
        the token (the config then needs token_command: see `config_lines`)."""
        acc = ServerAccount(self.user, self.password, self.session_url, imap_port=0, server=self)
        if self.personality.bearer_only or read_only:
            acc.token = self.readonly_token if read_only else self.token
        return acc

    def credentials(self, *, read_only: bool = False) -> dict[str, Any]:
        """The config keys for jmapsync: Basic where allowed, else a token_command."""
        if self.personality.bearer_only or read_only:
            token = self.readonly_token if read_only else self.token
            return {"token_command": f"printf %s {token}"}
        return {"username": self.user, "password": self.password}
