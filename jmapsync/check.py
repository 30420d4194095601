"""What `jmapsync check` prints for one account -- also `jmapsync init`'s
test of the answers it was given (one printer, so the two cannot differ)."""

from __future__ import annotations

from collections.abc import Callable

from jmapsync.config import AccountConfig
from jmapsync.errors import JmapsyncError
from jmapsync.jmap.client import JmapClient
from jmapsync.jmap.types import CORE, MAIL, WEBSOCKET


async def show(
    account: AccountConfig,
    out: Callable[[str], None] = print,
) -> bool:
    """Connect and print what the server offers; False (having printed why)
    when the connection or the session is unusable."""
    out(f"account {account.name}: {account.session_url}")
    try:
        async with JmapClient(account) as client:
            s = await client.connect()
    except JmapsyncError as exc:
        out(f"  FAILED: {exc}")
        return False
    lim = s.limits
    out(f"  session:      {s.url}")
    out(f"  username:     {s.username}")
    out("  accounts:     " + ", ".join(f"{k} ({v})" for k, v in s.accounts.items()))
    out(f"  mail account: {s.account_id}")
    out(f"  api:          {s.api_url}")
    out("  capabilities: " + ", ".join(sorted(s.capabilities)))
    push = []
    if s.websocket_url:
        push.append(f"websocket {s.websocket_url}")
    if s.event_source_url:
        push.append(f"eventsource {s.event_source_url}")
    push.append("poll")
    out("  push:         " + "; ".join(push))
    out(
        f"  limits:       maxConcurrentRequests={lim.max_concurrent_requests}"
        f" maxCallsInRequest={lim.max_calls_in_request}"
        f" maxObjectsInGet={lim.max_objects_in_get} maxObjectsInSet={lim.max_objects_in_set}"
        f" maxSizeRequest={lim.max_size_request} maxSizeUpload={lim.max_size_upload}"
    )
    out(f"  maildir:      {account.maildir} ({account.layout}, {account.direction})")
    missing = [c for c in (CORE, MAIL) if c not in s.capabilities]
    if missing:  # pragma: no cover - Session.parse refuses these already
        out("  MISSING: " + ", ".join(missing))
        return False
    if WEBSOCKET not in s.capabilities:
        out("  note: no WebSocket push; the daemon will use EventSource or polling")
    return True
