"""Turn sqlite3 exceptions into Themis store errors that name the file and the fix."""

from __future__ import annotations

import sqlite3

from themis.core.errors import StoreError, TransientStoreError

__all__ = ["store_error", "translate"]

_KEPT = "everything committed before this call is kept"

# (error-name prefix, what happened, how to fix it). The first matching prefix wins, so the
# more specific names (SQLITE_IOERR_...) come before their families.
_KNOWN: tuple[tuple[str, str, str], ...] = (
    (
        "SQLITE_FULL",
        "the disk, or the database's size limit, is full",
        f"free disk space (or raise the limit) and resume the run; {_KEPT}",
    ),
    (
        "SQLITE_IOERR",
        "a disk I/O error occurred (a full disk, a file-size limit such as `ulimit -f`, "
        "or a failing device)",
        f"check free space, file-size limits and the device, then resume the run; {_KEPT}",
    ),
    (
        "SQLITE_NOTADB",
        "the file is not a SQLite database",
        "point the store at another path, or move this file aside",
    ),
    (
        "SQLITE_CORRUPT",
        "the database file is corrupt",
        "restore it from a backup, or recover what it holds with "
        "`sqlite3 {path} .recover | sqlite3 {path}.recovered` and point the store there",
    ),
    (
        "SQLITE_READONLY",
        "the database is read-only",
        "make the file and its directory writable (WAL mode creates the -wal and -shm "
        "files beside it), or choose a writable path",
    ),
    (
        "SQLITE_CANTOPEN",
        "the file cannot be opened",
        "check that its directory exists and is writable and that the path is not a directory",
    ),
    (
        "SQLITE_PERM",
        "permission was denied",
        "make the file and its directory readable and writable by this user",
    ),
)


def store_error(
    path: str, operation: str, problem: str, fix: str, *, cls: type[StoreError] = StoreError
) -> StoreError:
    """Build a store error whose message names the store, the operation, the path and the fix."""
    return cls(f"SqliteRunStore.{operation} on {path}: {problem}. Fix: {fix}.")


def translate(
    exc: sqlite3.Error, *, path: str, operation: str, busy_timeout_s: float
) -> StoreError:
    """Map one sqlite3 error onto ``StoreError`` (or ``TransientStoreError`` when busy)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    detail = str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in detail:
        return store_error(
            path,
            operation,
            f"the database stayed locked by another connection for longer than "
            f"busy_timeout_s={busy_timeout_s:g} ({detail})",
            "retry; if it keeps happening, raise busy_timeout_s or stop the other writer",
            cls=TransientStoreError,
        )
    for prefix, problem, fix in _KNOWN:
        if name.startswith(prefix):
            return store_error(
                path, operation, f"{problem} ({name}: {detail})", fix.format(path=path)
            )
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in detail:
        return store_error(
            path, operation, f"the store is closed ({detail})", "open a new SqliteRunStore"
        )
    label = f"{name}: {detail}" if name else f"{type(exc).__name__}: {detail}"
    return store_error(
        path,
        operation,
        f"SQLite failed ({label})",
        "check the file and its directory; if the file is damaged, move it aside",
    )
