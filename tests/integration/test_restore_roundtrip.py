"""Round trip through a backup, against Cyrus: account A -> `jmapsync sync`
-> `jmapsync restore` into an empty account B -> `jmapsync sync` of B.

B must end up with A's folder tree, the same bytes (Cyrus Email ids are
content hashes, so equal ids mean equal bytes; the blobs are compared as
well), the same keywords -- the flags from the file names, custom ones from
the mirror's state database -- and B's mirror must be file for file what A's
is.  For both layouts and both line_endings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mailtools import Account
from restorekit import (
    Setup,
    account_view,
    blob_hashes,
    fill_account,
    mailbox_tree,
    tree_bytes,
)


@pytest.mark.parametrize("line_endings", ["lf", "exact"])
@pytest.mark.parametrize("layout", ["verbatim", "maildir++"])
def test_restore_round_trip(
    tmp_path: Path, account_factory: Callable[[], Account], layout: str, line_endings: str
) -> None:
    a, b = account_factory(), account_factory()
    want = fill_account(a)
    s = Setup(tmp_path)
    s.add("a", a, layout, line_endings)
    s.add("b", b, layout, line_endings)
    s.cli("sync", "--account", "a")

    done = s.cli("restore", "--account", "b", "--from", str(s.maildir("a")))
    assert f"imported:       {want['count']} messages" in done.stdout, done.stdout
    assert "skipped:        0 files" in done.stdout

    assert mailbox_tree(b) == mailbox_tree(a)
    va, vb = account_view(a), account_view(b)
    assert sorted(vb) == sorted(va)  # the same Email ids: the same bytes
    for eid, (boxes, keywords, received, _sent) in va.items():
        got_boxes, got_keywords, got_received, _ = vb[eid]
        assert got_boxes == boxes, eid
        assert got_keywords == keywords, eid
        # The mirror's mtimes are A's receivedAt (arrival dates on disk),
        # three hours and some minutes after each Date header.
        assert got_received == received, eid
    assert blob_hashes(b) == blob_hashes(a)

    s.cli("sync", "--account", "b")
    assert tree_bytes(s.maildir("b")) == tree_bytes(s.maildir("a"))

    again = s.cli("restore", "--account", "b", "--from", str(s.maildir("a")))
    assert "imported:       0 messages" in again.stdout
    assert f"already there:  {want['count']} messages" in again.stdout


def test_restore_dry_run_sends_nothing_to_cyrus(
    tmp_path: Path, account_factory: Callable[[], Account]
) -> None:
    a, b = account_factory(), account_factory()
    want = fill_account(a)
    s = Setup(tmp_path)
    s.add("a", a)
    s.add("b", b)
    s.cli("sync", "--account", "a")
    states = (b.jmap().state("Email"), b.jmap().state("Mailbox"))
    done = s.cli("restore", "--account", "b", "--from", str(s.maildir("a")), "--dry-run")
    assert f"would import:   {want['count']} messages" in done.stdout, done.stdout
    assert "would create:   mailbox Ünïcødé/Kïnd ✓" in done.stdout
    assert (b.jmap().state("Email"), b.jmap().state("Mailbox")) == states
    assert account_view(b) == {}


def test_restore_into_the_account_it_came_from_imports_nothing(
    tmp_path: Path, account_factory: Callable[[], Account]
) -> None:
    """A's own mirror back into A: every message is found there (by Message-ID
    and bytes), nothing is sent; the restore exits 0."""
    a = account_factory()
    fill_account(a)
    s = Setup(tmp_path)
    s.add("a", a)
    s.cli("sync", "--account", "a")
    state = a.jmap().state("Email")
    done = s.cli("restore", "--account", "a")
    assert "imported:       0 messages" in done.stdout
    assert a.jmap().state("Email") == state
