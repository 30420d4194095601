"""The local side: Maildir file names, folder names, and the store on disk.

``files``, ``flags``, ``names``, ``paths``, ``lineendings`` and ``message`` are pure (no
I/O) so that the sync plan and its tests can reason about names and bytes
without touching a disk; only ``store`` (and its ``durable`` helpers) do I/O.
"""
