"""Mirror (mirror.py) pointed at the in-memory server (tests/jmapserver).

The same Mirror as the Cyrus tests use, so the same Engine constructor and
sync() run; only the credentials differ: a Bearer-only personality gets a
`token_command` instead of username + password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jmapserver import JmapServer
from mirror import Mirror


def memory_mirror(server: JmapServer, base: Path, *, read_only: bool = False, **kw: Any) -> Mirror:
    m = Mirror(server.account(read_only=read_only), base, **kw)
    creds = server.credentials(read_only=read_only)
    if "token_command" in creds:
        lines = [
            line
            for line in m.config_path.read_text().splitlines()
            if not line.startswith(("username", "password"))
        ]
        lines.append(f"token_command = {creds['token_command']}")
        m.config_path.write_text("\n".join(lines) + "\n")
    return m
