"""The shape of the code (docs/DESIGN.md, "Layout"), checked so it cannot drift.

- no module of jmapsync/ imports another that imports it back (directly or
  through others): the stages of a pass depend one way;
- pure modules import only pure modules, and importing them loads nothing
  with side effects (no libc via ctypes, no SQLite, no event loop, no HTTP);
- no file of jmapsync/ passes ~450 lines (a file that does holds two stages);
- what a sync loads stays cheap to load: no two-way stage in a pull pass, no
  frozen dataclass where a NamedTuple does (start-up, issue 16).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "jmapsync"
MAX_LINES = 460

PURE = {
    "jmapsync.errors",
    "jmapsync.jmap.types",
    "jmapsync.maildir.files",
    "jmapsync.maildir.flags",
    "jmapsync.maildir.keywords",
    "jmapsync.maildir.lineendings",
    "jmapsync.maildir.message",
    "jmapsync.maildir.names",
    "jmapsync.maildir.paths",
    "jmapsync.restore.arrival",
    "jmapsync.restore.folders",
    "jmapsync.maildir.mutf7",
    "jmapsync.restore.plan",
    "jmapsync.send.args",
    "jmapsync.send.identity",
    # (jmapsync.send.message is pure too, but the stdlib's email.utils loads socket)
    "jmapsync.scrub",
    "jmapsync.sync.guards",
    "jmapsync.sync.merge",
    "jmapsync.sync.plan",
    "jmapsync.sync.selection",
    "jmapsync.sync.twoway",
}
# Loaded by a module with side effects or heavy start-up; never by pure code.
NOT_PURE = ("ctypes", "sqlite3", "asyncio", "httpx", "socket", "subprocess", "structlog")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The jmapsync modules `name` imports anywhere in its body (also under
    TYPE_CHECKING and inside functions: a cycle is a cycle)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _reaches(start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(GRAPH[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(GRAPH[m])
    return seen


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycles = sorted(m for m in MODULES if m in _reaches(m))
    assert cycles == [], f"import cycles through: {cycles}"


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_modules_import_only_pure_modules(name: str) -> None:
    # Package __init__ modules on the way are imported too: they must be pure.
    impure = {m for m in _reaches(name) if m not in PURE and MODULES[m].name != "__init__.py"}
    packages = {m for m in _reaches(name) if MODULES[m].name == "__init__.py"}
    assert impure == set(), f"{name} imports {sorted(impure)}"
    assert all(not GRAPH[p] for p in packages), f"{name}: a package imports more"


def _child(code: str) -> str:
    """What `code` prints, run by a fresh interpreter (nothing imported yet)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    return done.stdout.strip()


def test_importing_pure_code_loads_nothing_with_side_effects() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in sorted(PURE))
        + f"print(' '.join(m for m in {NOT_PURE!r} if m in sys.modules))"
    )
    assert _child(code) == ""


def test_no_file_holds_two_stages() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"files over {MAX_LINES} lines: {long}"


def test_a_pull_pass_does_not_load_the_two_way_stages() -> None:
    """The engine and its stages load local_to_remote/ and twoway.py only
    when a pass is two-way (~25 ms of start-up on every pull, and on every
    daemon-less cron run).  Broken once by a record.py import of a meta-key
    constant."""
    code = (
        "import sys\n"
        "import jmapsync.sync.engine, jmapsync.sync.execute, jmapsync.sync.stream\n"
        "print(' '.join(m for m in sys.modules"
        " if 'local_to_remote' in m or m == 'jmapsync.sync.twoway'))"
    )
    assert _child(code) == ""


# Frozen dataclasses a sync pass may still load, and why they are not NamedTuples.
FROZEN_DATACLASSES_KEPT = {
    "jmapsync.config.AccountConfig",  # 17 fields; tests and the daemon use dataclasses.replace
    "jmapsync.jmap.types.Session",  # dict fields with default_factory
    "jmapsync.maildir.keywords.Letters",  # cached_property needs an instance __dict__
}


def test_a_sync_pass_defines_few_frozen_dataclasses() -> None:
    """Creating a frozen dataclass costs 0.4-1.7 ms on Python 3.11 (each
    generated method is exec()ed), a NamedTuple ~0.1 ms: the 22 records a
    sync loaded took ~19 ms of every `jmapsync sync` (issue 16).  An
    immutable record on the sync path is a NamedTuple; a new frozen
    dataclass there fails this test (or joins the list above, with a reason)."""
    code = (
        "import sys, dataclasses\n"
        "import jmapsync.cli, jmapsync.sync.quick, jmapsync.sync.engine, jmapsync.sync.stream\n"
        "found = set()\n"
        "for name, mod in list(sys.modules.items()):\n"
        "    if not name.startswith('jmapsync'):\n"
        "        continue\n"
        "    for value in vars(mod).values():\n"
        "        if (isinstance(value, type) and value.__module__ == name\n"
        "                and dataclasses.is_dataclass(value)\n"
        "                and value.__dataclass_params__.frozen):\n"
        "            found.add(f'{name}.{value.__qualname__}')\n"
        "print(' '.join(sorted(found)))"
    )
    assert set(_child(code).split()) <= FROZEN_DATACLASSES_KEPT
