"""Themis run store in one SQLite file: durable (WAL), batched, crash-safe, shareable."""

from __future__ import annotations

from themis_store_sqlite import plugin
from themis_store_sqlite.store import SqliteRunStore, sqlite_store

__all__ = ["SqliteRunStore", "plugin", "sqlite_store"]
