"""`python -m jmapsync` is the `jmapsync` command."""

from jmapsync.cli import run

run()
