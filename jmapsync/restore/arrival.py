"""PURE: the arrival time (JMAP ``receivedAt``) of a message restored from a file.

A Maildir keeps no arrival time of its own, but the file's mtime usually is
one: Dovecot reads its received date from the mtime
(dovecot/core src/lib-storage/index/maildir/maildir-mail.c,
maildir_mail_get_received_date), mbsync with ``CopyArrivalDate yes`` and
jmapsync's own mirror write it there, and mutt keeps it when it saves a
message elsewhere.  When the files were merely copied -- mbsync with its
default ``CopyArrivalDate no``, OfflineIMAP, ``cp -r`` -- every mtime is the
moment of the copy, and the Date header is a far better guess than that.

The rule, per folder:

* Take the files whose Date header parses.  If there are at least two, and
  their Date headers span at least a day, the folder can be judged: its
  mtimes are **copy times** when they span less than 1/100 of the Date span
  (a mailbox that received mail over a year, written to disk within a few
  minutes).  Real arrival times spread like the Date headers do, so they
  never come close to that.
* A folder that cannot be judged (too few dated files, or all mail of a
  single day) takes the verdict of the whole tree, judged the same way over
  all its files; a tree that cannot be judged either keeps its mtimes.
* Copy times: each file's receivedAt is its Date header (its mtime if it has
  none).  Otherwise: its mtime.

A message found in several folders takes the earliest time its files give.
Times are whole seconds, UTC (what JMAP servers store).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_DATE_SPAN_S = 86_400.0
COPY_RATIO = 100.0


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a file tells about its arrival: its mtime and its Date header."""

    mtime: float
    date: float | None


def mtimes_are_copy_times(stamps: Sequence[Stamp]) -> bool | None:
    """True: these mtimes are the time of a copy; False: arrival times;
    None: these files alone cannot tell."""
    dated = [s for s in stamps if s.date is not None]
    if len(dated) < 2:
        return None
    dates = [s.date for s in dated if s.date is not None]
    date_span = max(dates) - min(dates)
    if date_span < MIN_DATE_SPAN_S:
        return None
    mtimes = [s.mtime for s in dated]
    return max(mtimes) - min(mtimes) < date_span / COPY_RATIO


def received_times(folders: Mapping[str, Sequence[Stamp]]) -> dict[str, list[float]]:
    """Per folder, the arrival time of each file (same order as given)."""
    tree = mtimes_are_copy_times([s for stamps in folders.values() for s in stamps])
    out: dict[str, list[float]] = {}
    for folder, stamps in folders.items():
        verdict = mtimes_are_copy_times(stamps)
        copied = tree if verdict is None else verdict
        out[folder] = [s.date if copied and s.date is not None else s.mtime for s in stamps]
    return out


def utc_date(t: float) -> str:
    """RFC 3339 UTCDate in whole seconds (RFC 8620 1.4), as Email/import wants."""
    return dt.datetime.fromtimestamp(int(t), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
