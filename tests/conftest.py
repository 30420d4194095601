"""pytest fixtures for the project's own Cyrus IMAP test server (tools/cyrus.py).

* ``cyrus`` (session): one server in ``tempfile.mkdtemp(prefix="jmsc-",
  dir="/tmp")`` (parent overridable with $JMAPSYNC_TEST_CYRUS_PARENT, e.g.
  /dev/shm: no fsync cost), stopped and removed at the end
  (JMAPSYNC_TEST_KEEP_CYRUS=1 keeps the directory).
* ``account`` (function): a fresh, isolated user per test (``u<n><random>``,
  password "secret") with INBOX, Sent, Drafts, Trash, Junk, Archive; a
  ``mailtools.Account`` (``.user .password .session_url .imap_port .server``,
  ``.imap()``, ``.jmap()``, ``.append()``, ``.import_message()``, ...).

* ``cyrus_ws`` / ``cyrus_stock`` (session, started on first use): servers
  whose httpd speaks WebSocket and EventSource (built once from Debian's
  source package into ~/.cache/jmapsync when none is there; the tests are
  skipped with the reason when that fails), and Debian's own httpd (no
  WebSocket; its eventSourceUrl answers 204).  ``new_account(server)``
  makes a fresh user on either.

Tests using any of these fixtures are marked ``cyrus`` automatically
(``pytest -m "not cyrus"`` skips them).  The server needs root on first use
(it apt-get installs the Cyrus packages); see tools/cyrus.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import shutil
import string
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:  # "import mailtools" from tests at any depth
    sys.path.insert(0, str(HERE))

from mailtools import Account  # noqa: E402

CYRUS_FIXTURES = frozenset({"cyrus", "account", "cyrus_ws", "cyrus_stock", "cyrus_deleteonsend"})


def _load_cyrus_module() -> ModuleType:
    """tools.cyrus, also when the repo root is not on sys.path (plain ``pytest``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        import tools.cyrus as mod

        if Path(mod.__file__ or "").resolve() == ROOT / "tools" / "cyrus.py":
            return mod
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location("tools.cyrus", ROOT / "tools" / "cyrus.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["tools.cyrus"] = mod
    spec.loader.exec_module(mod)
    return mod


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CYRUS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cyrus)


_kept: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for d in _kept:
        terminalreporter.write_line(
            f"[cyrus] kept the test server directory {d} "
            f"(restart it: python3 tools/cyrus.py start {d})"
        )


def _server(websocket: bool | None, extra_config: dict[str, str] | None = None) -> Iterator[Any]:
    mod = _load_cyrus_module()
    parent = os.environ.get("JMAPSYNC_TEST_CYRUS_PARENT", "/tmp")
    d = tempfile.mkdtemp(prefix="jmsc-", dir=parent)
    os.chmod(d, 0o755)  # noqa: S103 - Cyrus runs as user cyrus
    keep = os.environ.get("JMAPSYNC_TEST_KEEP_CYRUS") == "1"
    srv = mod.CyrusServer(d, websocket=websocket, extra_config=extra_config)
    try:
        try:
            srv.start()
        except mod.CyrusError as exc:
            if websocket:
                pytest.skip(
                    f"no WebSocket-capable Cyrus httpd: {exc}. To run these tests set"
                    " JMAPSYNC_CYRUS_HTTPD to an httpd built with libwslay, or let"
                    " tools/build-httpd-wslay.sh build one (needs Debian deb-src access)"
                )
            raise
        yield srv
    finally:
        try:
            srv.stop()
        finally:
            if keep:
                _kept.append(d)
            else:
                shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cyrus() -> Iterator[Any]:
    """The session's running tools.cyrus.CyrusServer."""
    yield from _server(None)


@pytest.fixture(scope="session")
def cyrus_ws() -> Iterator[Any]:
    """A second server whose httpd speaks WebSocket (RFC 8887) and EventSource:
    $JMAPSYNC_CYRUS_HTTPD, the cached build, or one built now (tools/cyrus.py);
    tests using it are skipped, with the reason, when none can be had."""
    yield from _server(True)


@pytest.fixture(scope="session")
def cyrus_stock() -> Iterator[Any]:
    """A server with Debian's own httpd: no WebSocket, eventSourceUrl answers 204
    (``cyrus`` is one too unless $JMAPSYNC_CYRUS_HTTPD names another httpd)."""
    yield from _server(False)


@pytest.fixture(scope="session")
def cyrus_deleteonsend() -> Iterator[Any]:
    """A server with Cyrus's DEFAULT `jmapsubmission_deleteonsend: yes` (the
    session server keeps them): every EmailSubmission is destroyed right after
    sending, so EmailSubmission/query finds nothing (tests of `jmapsync send`)."""
    yield from _server(None, {"jmapsubmission_deleteonsend": "yes"})


def new_account(server: Any, password: str = "secret") -> Account:  # noqa: S107
    """A fresh user on `server`, unique per test run."""
    suffix = "".join(_rng.choices(string.ascii_lowercase + string.digits, k=5))
    name = f"u{next(_counter)}{suffix}"
    server.add_user(name, password)
    return Account.of(server, name, password)


_counter = itertools.count(1)
_rng = random.Random()


@pytest.fixture
def account(cyrus: Any) -> Account:
    """A fresh user on the session server, unique per test."""
    return new_account(cyrus)


@pytest.fixture
def account_factory(cyrus: Any) -> Callable[[], Account]:
    """Fresh users on demand, for tests that need one per round."""
    return lambda: new_account(cyrus)


@pytest.fixture(autouse=True)
def small_stream_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass that looks at everything is streamed in chunks (sync/stream.py);
    small chunks in the tests, so that every such pass of the suite crosses
    chunk boundaries (an Email and its files must never be split).  Passes
    run by a child process (the CLI) keep the real size."""
    from jmapsync.sync import stream

    monkeypatch.setattr(stream, "CHUNK", 3)
