"""What a folder holds, in three numbers: its fingerprint.

The folder stamp (sync/scope.py) records a folder's times only when what is
on disk is known to be what the state says.  A folder this pass wrote to is
checked by listing it again and comparing with what the pass leaves there --
not name by name (a million names held twice), but by fingerprint: the
number of names in cur/ and new/ and two sums of checksums of "cur/NAME"
(CRC-32 and Adler-32: a rename, a new or a lost file changes them; two
different sets agree by chance about once in 2^64).

The checksums do not depend on the process (Python's hash() does), so the
stamp keeps each folder's fingerprint: a partial pass that wrote into a
folder it did not scan expects the recorded fingerprint plus its own
actions there, instead of reading the folder's rows from the database.  And
listing a folder for its fingerprint is two os.listdir() calls and a sum in
C: 1 000 000 names in a fraction of a second.

A listing counts every entry of cur/ and new/ (dot-files, directories),
what a pass expects only message files: such an entry makes them differ, and
the folder is scanned next time -- never the other way round.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Mapping
from itertools import repeat
from pathlib import Path

from jmapsync.maildir.files import split_rel

Print = tuple[int, int, int]  # names, sum of CRC-32s, sum of Adler-32s
SUBS = ("cur", "new")  # what a fingerprint counts (and sync/watched.py watches)
_CRC = {sub: zlib.crc32(f"{sub}/".encode()) for sub in SUBS}
_ADLER = {sub: zlib.adler32(f"{sub}/".encode()) for sub in SUBS}


def listing(folder_path: Path) -> Print:
    """The fingerprint of what is on disk in a folder's cur/ and new/."""
    n = crc = adler = 0
    for sub in SUBS:
        try:
            names = os.listdir(os.fsencode(folder_path / sub))
        except FileNotFoundError:
            continue
        n += len(names)
        crc += sum(map(zlib.crc32, names, repeat(_CRC[sub])))
        adler += sum(map(zlib.adler32, names, repeat(_ADLER[sub])))
    return n, crc, adler


class Prints:
    """Fingerprints added up path by path: folder -> Print."""

    def __init__(self, known: Mapping[str, Print] | None = None) -> None:
        self._acc: dict[str, list[int]] = {f: list(p) for f, p in (known or {}).items()}

    def add(self, rel: str, sign: int = 1) -> None:
        """Count the file at relative path `rel` (sign -1: uncount it)."""
        folder, sub, name = split_rel(rel)
        self.add_name(folder, sub, os.fsencode(name), sign)

    def add_name(self, folder: str, sub: str, raw: bytes, sign: int = 1) -> None:
        """Count the entry `raw` of the folder's `sub` (as os.listdir(bytes)
        names it); only cur/ and new/ count."""
        if sub not in _CRC:
            return
        a = self._acc.setdefault(folder, [0, 0, 0])
        a[0] += sign
        a[1] += sign * zlib.crc32(raw, _CRC[sub])
        a[2] += sign * zlib.adler32(raw, _ADLER[sub])

    def add_all(self, rels: Iterable[str]) -> None:
        for rel in rels:
            self.add(rel)

    def of(self, folder: str) -> Print:
        a = self._acc.get(folder)
        return (a[0], a[1], a[2]) if a is not None else (0, 0, 0)

    def folders(self) -> set[str]:
        return set(self._acc)


def parse(raw: object) -> dict[str, Print]:
    """The fingerprints a stamp recorded (none from a stamp before them)."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Print] = {}
    for folder, value in raw.items():
        if isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value):
            out[str(folder)] = (value[0], value[1], value[2])
    return out
