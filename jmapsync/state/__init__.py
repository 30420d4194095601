"""Persistent per-account sync state (SQLite)."""
