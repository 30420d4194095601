"""The local side: Maildir file names, folder names, and the store on disk.

``flags`` and ``names`` are pure (no I/O) so that the sync plan and its tests
can reason about names without touching a disk; only ``store`` does I/O.
"""
