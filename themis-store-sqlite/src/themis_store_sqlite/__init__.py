"""Themis run store in one SQLite file: durable (WAL), batched, crash-safe, shareable.

``SqliteRunStore`` and ``sqlite_store`` are resolved lazily so that loading the plugin
(which imports this package first) does not import the store and ``sqlite3``; every
``themis`` command loads every plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from themis_store_sqlite import plugin

if TYPE_CHECKING:
    from themis_store_sqlite.store import SqliteRunStore, sqlite_store

__all__ = ["SqliteRunStore", "plugin", "sqlite_store"]

_LAZY = frozenset({"SqliteRunStore", "sqlite_store"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from themis_store_sqlite import store

        value = getattr(store, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'themis_store_sqlite' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
