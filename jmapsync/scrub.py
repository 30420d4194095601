"""Make text safe to show: no terminal control sequences, no known secret.

A server's words reach the user in error messages (a problem `detail`, a
method error's `description`), in log fields (mailbox names) and in `check`
output.  A hostile or broken server can put terminal escape sequences there
(`ESC ] 52` writes the clipboard, `ESC [ 2 J` clears the screen, a fake log
line after a newline) or echo back the password it was sent.  So:

* `line()` / `text()` drop ESC sequences (CSI, OSC, two-byte), C0 controls
  (but tab; newline only in `text()`), DEL, C1 controls and the Unicode
  bidirectional overrides that make text read differently than it is;
* every secret registered with `add_secret` -- the password or token, the
  `user:password` pair and its base64 (the Basic header) -- becomes `***`.

Applied at the source (errors.py cleans every error message, so a message
stored in the state database or the daemon's status file is clean too) and
at the outputs (the log processor below, the CLI's stdout and stderr, its
traceback hook).  Pure: imports only the standard library.
"""

from __future__ import annotations

import base64
import re
from collections.abc import MutableMapping
from typing import Any

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC / DCS / SOS / PM / APC strings
    r"|\x1b[ -/]*[0-~]"  # two-byte escapes (ESC c resets the terminal)
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROLS_AND_NEWLINE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_MIN_SECRET = 3  # shorter "secrets" would turn ordinary words into ***

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def add_secret(value: str) -> None:
    """Never show `value` again in anything this process prints or logs."""
    global _pattern  # noqa: PLW0603 - one registry per process, by design
    if len(value) >= _MIN_SECRET and value not in _secrets:
        _secrets.add(value)
        # Longest first: a secret that contains another is redacted whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def add_basic_auth(username: str, password: str) -> None:
    """The password, `user:password` and the Basic header's base64 of it."""
    pair = f"{username}:{password}"
    add_secret(password)
    add_secret(pair)
    add_secret(base64.b64encode(pair.encode()).decode("ascii"))


def redact(text: str) -> str:
    return text if _pattern is None else _pattern.sub("***", text)


def line(text: str) -> str:
    """One line for a terminal or a log: controls and newlines become ' '."""
    return redact(_CONTROLS_AND_NEWLINE.sub(" ", _ESCAPES.sub("", text)))


def text(value: str) -> str:
    """Like line() but keeps newlines (tracebacks, multi-line output)."""
    return redact(_CONTROLS.sub(" ", _ESCAPES.sub("", value)))


def _value(value: Any, multiline: bool) -> Any:
    if isinstance(value, str):
        return text(value) if multiline else line(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_value(v, multiline) for v in value]
    if isinstance(value, dict):
        return {_value(k, False): _value(v, multiline) for k, v in value.items()}
    return line(str(value))


def processor(_logger: object, _name: str, event: MutableMapping[str, Any]) -> Any:
    """structlog processor: every key and value of a log line, scrubbed.

    Runs after format_exc_info, so a traceback (the `exception` field, which
    keeps its newlines) is scrubbed too."""
    return {line(str(k)): _value(v, k == "exception") for k, v in event.items()}
