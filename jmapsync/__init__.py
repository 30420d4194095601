"""jmapsync: mirror JMAP mail accounts (RFC 8620/8621) into local Maildir folders."""

__version__ = "0.1.0"
