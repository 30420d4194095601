"""What `jmapsync check` notices about a server's habits.

Servers differ where RFC 8620/8621 leave room, and a few of those
differences change what jmapsync does or can do.  Each note says what was
seen and what it means for the user; tests/jmapserver/personality.py has the
sources for the Fastmail and Stalwart habits named here.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from jmapsync.errors import JmapsyncError
from jmapsync.jmap import push
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import Session

SUBMISSION = "urn:ietf:params:jmap:submission"
# How long `check` listens on the event source for a first state event.
PUSH_LISTEN_S = 2.0
_BIG = 1_000_000


def session_notes(session: Session, direction: str) -> list[str]:
    """Habits visible in the session resource alone."""
    notes = []
    api, download = urlsplit(session.api_url), urlsplit(session.download_url)
    if (download.scheme, download.netloc) != (api.scheme, api.netloc):
        notes.append(
            f"downloads come from another host ({download.netloc}) than the API"
            f" ({api.netloc}), as on Fastmail: the credentials are sent there too"
        )
    if session.read_only:
        what = (
            "two-way sync (this account's direction)" if direction == "two-way" else "two-way sync"
        )
        notes.append(
            "the account is READ-ONLY for these credentials (a read-only token?):"
            f" pull works; {what} and sending will not"
        )
    elif SUBMISSION not in session.capabilities:
        notes.append(f"no {SUBMISSION} for these credentials: sending will not work")
    return notes


async def push_note(client: JmapClient, session: Session) -> str | None:
    """Open the event source briefly: are its state events typed?"""
    if session.event_source_url is None:
        return None
    events = push.eventsource_events(client, session)
    try:
        async with contextlib.aclosing(events):
            async with asyncio.timeout(PUSH_LISTEN_S):
                async for event in events:
                    if isinstance(event, push.StateChange):
                        if event.typeless:
                            return (
                                'push: state events come without "@type": "StateChange"'
                                " (as Fastmail's); jmapsync takes them"
                            )
                        return "push: state events are standard StateChange objects"
    except TimeoutError:
        return (
            f"push: no state event within {PUSH_LISTEN_S:g} s of connecting (a server that"
            " pushes only on a change, as Stalwart does, is fine)"
        )
    except JmapsyncError as exc:
        return f"push: the event source did not work ({exc}); the daemon will poll"
    return None


async def query_note(client: JmapClient, session: Session) -> str | None:
    """Does Email/query clamp `limit`?  (RFC 8620 5.5; Stalwart: max-results.)"""
    args = {"accountId": session.account_id, "limit": _BIG, "calculateTotal": True}
    try:
        result = (await client.call([("Email/query", args, "q")])).result("q")
    except JmapsyncError:
        return None
    limit = result.get("limit")
    if isinstance(limit, int) and limit < _BIG:
        return f"Email/query clamps limit to {limit}: a full read pages by it"
    return None


async def notice(client: JmapClient, session: Session, direction: str) -> list[str]:
    """Every note for one account, in a stable order."""
    notes = session_notes(session, direction)
    for note in (await query_note(client, session), await push_note(client, session)):
        if note is not None:
            notes.append(note)
    return notes
