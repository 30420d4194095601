"""`python -m jmapsync` is the `jmapsync` command."""

from jmapsync.cli import main

raise SystemExit(main())
