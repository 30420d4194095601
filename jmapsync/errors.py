"""Every error jmapsync raises on purpose, in one tree.

Each error carries a retry class that tells the caller (the CLI today, the
daemon later) what to do without looking at the concrete type::

    JmapsyncError                 retry: see subclass
    ├── ConfigError               fatal    the config file is wrong; needs the user
    ├── SecretError               fatal    password_command / token_command failed
    ├── LockedError               backoff  another jmapsync process syncs this account
    ├── StateError                fatal    the state database is unusable (schema too new, corrupt)
    ├── LocalError                fatal    the Maildir cannot be used (permissions, not a directory)
    │   ├── DiskError             backoff  a file-system call failed: ENOSPC, EDQUOT, EROFS, EIO,
    │   │                                  EACCES (space may be freed, a disk remounted)
    │   └── DeletionRefused       fatal    a pass would delete too much (--force-deletes)
    ├── MessageError              fatal    `jmapsync send` got a message it cannot send as it is
    │                                      (no header block, no From, no recipient)
    └── RemoteError               see subclass
        ├── TransportError        temporary  connection refused / reset / timed out
        ├── AuthError             fatal    HTTP 401 / 403: wrong credentials
        ├── HTTPStatusError       backoff  any other unexpected HTTP status
        ├── RateLimited           backoff  HTTP 429 or `rateLimit` SetErrors that outlasted
        │                                  a few tries (retry_after: the server's wish)
        ├── DownloadsFailed       backoff  some downloads of a pass failed (the others
        │                                  are in place; the next pass fetches the rest)
        ├── ProtocolError         fatal    the server broke the protocol (bad JSON, missing
        │                                  capability, unsafe mailbox name, absurd size)
        ├── PushUnavailable       fatal    this push transport is not offered (the daemon
        │                                  falls back to the next one)
        ├── SubmissionRefused     fatal    the server will not send this message (forbiddenFrom,
        │                                  tooManyRecipients...): it stays in the outbox, held
        └── MethodError           backoff  a JMAP method answered ["error", {...}]
            └── CannotCalculateChanges   (plan: full reconcile, never retried as is)

The retry classes mirror isync's FAIL_TEMP / FAIL_WAIT / FAIL_FINAL.  Messages
never contain credentials or terminal controls: every message goes through
scrub.line() when the error is made (a server may echo the password or send
escape sequences in its error text), so str(error) is safe wherever it goes --
terminal, log, state database, status file.

TransportError carries two fields that decide about retries (jmap/http.py):
`sent` (False: the request provably never left, e.g. connection refused) and
`stalled` (True: dropped by the progress timeout).
"""

from __future__ import annotations

import enum
from typing import Any

from jmapsync import scrub


class Retry(enum.Enum):
    """What a caller may do after the error."""

    TEMPORARY = "temporary"  # retry now
    BACKOFF = "backoff"  # retry later, with growing delays
    FATAL = "fatal"  # needs the user; retrying changes nothing


class JmapsyncError(Exception):
    """Base of all errors jmapsync raises on purpose."""

    retry: Retry = Retry.FATAL

    def __init__(self, message: str, **fields: Any) -> None:
        message = scrub.line(message)
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __str__(self) -> str:
        return self.message


class ConfigError(JmapsyncError):
    """The configuration file is missing, unreadable or invalid."""


class SecretError(JmapsyncError):
    """A password_command or token_command failed or printed nothing."""


class LockedError(JmapsyncError):
    """Another process holds the per-account lock."""

    retry = Retry.BACKOFF


class StateError(JmapsyncError):
    """The state database cannot be used."""


class LocalError(JmapsyncError):
    """The local Maildir cannot be used as asked."""


class DiskError(LocalError):
    """A file-system call on the Maildir or the state directory failed.

    The pass stops where it is, which is as safe as a crash there (every write
    goes through tmp/ and a rename; the states advance only at the end)."""

    retry = Retry.BACKOFF


def disk_error(exc: OSError) -> DiskError:
    """One line naming the path(s) and the error, e.g.
    ``/home/me/Mail/INBOX/tmp/M1.jmapsync-part: No space left on device``."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    what = exc.strerror or type(exc).__name__
    return DiskError(f"{' -> '.join(paths)}: {what}" if paths else what, errno=exc.errno)


class DeletionRefused(LocalError):
    """A pass would delete more than looks intended (see sync/twoway.py guards)."""


class MessageError(JmapsyncError):
    """The message handed to `jmapsync send` cannot be sent as it is."""


class RemoteError(JmapsyncError):
    """Anything that went wrong talking to the server."""

    retry = Retry.BACKOFF


class TransportError(RemoteError):
    """The connection failed (refused, reset, timed out)."""

    retry = Retry.TEMPORARY


class AuthError(RemoteError):
    """The server refused the credentials."""

    retry = Retry.FATAL


class HTTPStatusError(RemoteError):
    """An HTTP status the protocol does not explain."""

    def __init__(self, message: str, *, status: int, **fields: Any) -> None:
        super().__init__(message, status=status, **fields)
        self.status = status


class RateLimited(RemoteError):
    """The server asked us to slow down (HTTP 429, or `rateLimit` SetErrors,
    RFC 8620 5.3) and a few paced tries did not get through.

    `retry_after`: seconds the server asked for (Retry-After), if it said.
    Nothing was lost: a write refused this way was not applied."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class DownloadsFailed(RemoteError):
    """Downloads of a pass failed after their retries; the others were committed.

    The pass records nothing (its states do not advance): the next pass reads
    the same changes, finds the committed files in place, and downloads only
    what is missing."""

    def __init__(self, message: str, *, failed: int, total: int) -> None:
        super().__init__(message, failed=failed, total=total)
        self.failed = failed
        self.total = total


class ProtocolError(RemoteError):
    """The server sent something that breaks RFC 8620/8621 or our safety rules."""

    retry = Retry.FATAL


class PushUnavailable(RemoteError):
    """The server does not offer this push transport (no capability, HTTP 204/404).

    Retrying the same transport changes nothing; the daemon takes the next
    one in its order (WebSocket, EventSource, polling)."""

    retry = Retry.FATAL


class SubmissionRefused(RemoteError):
    """The server refused this message for good (a SetError of Email/import or
    EmailSubmission/set, no matching Identity, no submission capability).

    Retrying as is changes nothing; the outbox holds the message with
    `reason` until the user acts (`jmapsync send --flush` tries again)."""

    retry = Retry.FATAL

    def __init__(self, reason: str, *, kind: str) -> None:
        super().__init__(reason, kind=kind)
        self.kind = kind


class MethodError(RemoteError):
    """A JMAP method call answered with an error invocation."""

    def __init__(self, method: str, error_type: str, description: str | None = None) -> None:
        text = f"{method} failed: {error_type}"
        if description:
            text += f" ({description})"
        super().__init__(text, method=method, type=error_type)
        self.method = method
        self.type = error_type
        self.description = scrub.line(description) if description is not None else None


class CannotCalculateChanges(MethodError):
    """The server cannot compute changes since our state: do a full reconcile."""


def method_error(method: str, args: dict[str, Any]) -> MethodError:
    """Build the typed error for an ["error", args] response."""
    error_type = str(args.get("type", "serverFail"))
    description = args.get("description")
    desc = str(description) if description is not None else None
    if error_type == "cannotCalculateChanges":
        return CannotCalculateChanges(method, error_type, desc)
    return MethodError(method, error_type, desc)
