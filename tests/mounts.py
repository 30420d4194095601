"""Real file systems with real faults, for tests (root only; CI runs as root).

* ``tmpfs(size)``: a small tmpfs -- ENOSPC when it is full; ``grow()`` it
  afterwards (``mount -o remount,size=``); ``read_only()`` remounts it ro.
* ``ext4_coarse()``: a loop-mounted ``mkfs.ext4 -I 128`` image -- 128-byte
  inodes have no nanosecond field, so every time stamp is a whole second
  (as on ext3, old small file systems, and NFS servers with coarse clocks).

Each is a context manager that unmounts (lazily, so a stuck process cannot
block the test run) and removes its directory at the end.  ``skip_reason()``
says why mounting is impossible here (not root, no loop device), for a
``pytest.skip`` that names what would un-skip it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def skip_reason() -> str | None:
    """Why this machine cannot mount test file systems, or None."""
    if os.geteuid() != 0:
        return "mounting test file systems needs root (run the suite as root, as CI does)"
    if shutil.which("mount") is None:
        return "no mount(8) on this machine (Debian: apt-get install mount)"
    return None


class Mount:
    def __init__(self, path: Path) -> None:
        self.path = path

    def grow(self, size: str = "256m") -> None:
        _run("mount", "-o", f"remount,size={size}", str(self.path))

    def read_only(self, ro: bool = True) -> None:
        _run("mount", "-o", "remount," + ("ro" if ro else "rw"), str(self.path))


@contextlib.contextmanager
def tmpfs(size: str = "1m") -> Iterator[Mount]:
    d = Path(tempfile.mkdtemp(prefix="jms-tmpfs-", dir="/tmp"))
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d))
    try:
        yield Mount(d)
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False, capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def ext4_coarse(size_mb: int = 96) -> Iterator[Mount]:
    """ext4 with 128-byte inodes: 1-second time stamps (mkfs warns about 2038)."""
    work = Path(tempfile.mkdtemp(prefix="jms-ext4-", dir="/tmp"))
    image, mnt = work / "fs.img", work / "mnt"
    mnt.mkdir()
    try:
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        _run("mkfs.ext4", "-q", "-F", "-I", "128", str(image))
        _run("mount", "-o", "loop", str(image), str(mnt))
        try:
            yield Mount(mnt)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
