"""The README's first command, `./dev demo` (tools/demo.py), works end to end:
a throwaway Cyrus, a real sync both ways, and `jmapsync verify` at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mirror import ROOT


@pytest.mark.slow
def test_the_demo_runs_and_its_mirror_verifies(cyrus: object, tmp_path: Path) -> None:
    # (`cyrus`: the packages are installed; the demo starts its own server.)
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"JMAPSYNC_DEMO_DIR": str(tmp_path)},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "files checked: OK" in done.stdout
    assert "Traceback" not in done.stderr
    assert (tmp_path / "demo-mail" / "INBOX" / "cur").is_dir()
