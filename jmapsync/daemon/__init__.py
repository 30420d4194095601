"""`jmapsync daemon`: keeps every account mirrored, driven by push, a Maildir
watcher and timers.  supervisor.py owns the process (signals, systemd, the
status file, config reloads); account.py runs one account; the other
modules are small pure-ish helpers with unit tests."""
