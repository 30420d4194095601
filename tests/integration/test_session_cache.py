"""The cached session belongs to one session URL and one user name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mailtools import Account, make_message
from mirror import Mirror, assert_exact_mirror


def test_another_user_on_the_same_session_url_gets_its_own_session(
    account_factory: Callable[[], Account], tmp_path: Path
) -> None:
    """Pointing an account at another user of the same server (same URL) must
    not reuse the first user's cached session and accountId."""
    alice, bob = account_factory(), account_factory()
    alice.append("INBOX", make_message(1, subject="for alice"))
    bob.append("INBOX", make_message(2, subject="for bob"))
    mirror = Mirror(alice, tmp_path)
    mirror.sync()
    assert_exact_mirror(mirror)

    mirror.set("username", bob.user)
    mirror.set("password", bob.password)
    mirror.account = bob
    report = mirror.sync()
    assert report.mode == "full"  # bob's states are not alice's
    assert_exact_mirror(mirror)
