"""Opening the database file, its pragmas, and the versioned schema with its migrations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable

from themis.core.logs import get_logger

from themis_store_sqlite._errors import store_error, translate

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "ensure_schema", "open_connection"]

log = get_logger(__name__)

# Written to the file header (``PRAGMA application_id``) so that a Themis store can be told
# from any other SQLite database; the bytes spell "THMS".
APPLICATION_ID = 0x54484D53

# The page size of a new database file (SQLite's default: 4,096). A run's events are rows
# of about 500 bytes in a table clustered on (run_id, seq), and a 4 KB page holds seven of
# them: every seventh insert split a page. At 8 KB, 100,000 cases took 1.0 s instead of
# 1.2 s to insert their events and 0.9 s instead of 1.8 s in their largest commits. At
# 16 KB the stage cache's random index inserts dirty twice the bytes for each key.
PAGE_SIZE = 8192
# Bytes of WAL after which a commit checkpoints (SQLite's default: 1,000 pages, 4 MB).
WAL_AUTOCHECKPOINT_BYTES = 40 * 2**20

_V1 = (
    # The snapshot is stored whole; the run's identity is inside it.
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        snapshot TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    # Clustered on (run_id, seq): every read is a range scan of one run in seq order.
    """CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE blobs (
        ref TEXT PRIMARY KEY,
        media_type TEXT NOT NULL,
        data BLOB NOT NULL
    )""",
    """CREATE TABLE stage_cache (
        stage TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (stage, key)
    )""",
    # Folded projection state and the last seq it covers, so reads catch up instead of
    # replaying the whole log.
    """CREATE TABLE projections (
        run_id TEXT NOT NULL,
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        json TEXT NOT NULL,
        PRIMARY KEY (run_id, name)
    )""",
    # One row per run being executed: the lease that keeps two processes from writing one run.
    """CREATE TABLE run_locks (
        run_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        pid_start TEXT,
        acquired_at REAL NOT NULL,
        heartbeat REAL NOT NULL
    )""",
)


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    """Version 2 persists ``run_result`` without the fields at their defaults.

    The complete payloads of version 1 are valid version 2 text, so nothing is rewritten;
    the bump keeps older versions, which would hand the shortened text out as the
    payload, from opening the file.
    """


def _migrate_to_3(conn: sqlite3.Connection) -> None:
    """Version 3 keeps a run's ``execution_state`` as its fold's whole state.

    That text holds the projection's model plus the fold's own bookkeeping and the last
    event it covers, so that a resume, replay or rejudge starts from it and folds only the
    events appended after. A version 2 payload under that name is the projection alone,
    which cannot be continued from: it is dropped (it is a cache; the next run to come to
    rest keeps a new one). The bump keeps version 2, which would hand the fold state out
    as the projection, from opening the file.
    """
    conn.execute("DELETE FROM projections WHERE name = 'execution_state'")


def _migrate_to_4(conn: sqlite3.Connection) -> None:
    """Version 4 writes a projection's JSON zlib-compressed, as a BLOB (``_at_rest``).

    The TEXT rows of earlier versions are read as they are (a row's SQLite type tells the
    two apart), so nothing is rewritten; a run's rows are written compressed the next time
    it comes to rest. The bump keeps version 3, which would read a BLOB as JSON, from
    opening the file.
    """


# MIGRATIONS[v] brings a database at version v - 1 to version v, inside one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_to_1,
    2: _migrate_to_2,
    3: _migrate_to_3,
    4: _migrate_to_4,
}
SCHEMA_VERSION = max(MIGRATIONS)


def open_connection(path: str, busy_timeout_s: float) -> sqlite3.Connection:
    """Open the one long-lived connection of a store, with its pragmas set."""
    if path != ":memory:":
        if os.path.isdir(path):
            raise store_error(
                path, "initialize", "the path is a directory", "pass the path of a file inside it"
            )
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise store_error(
                path,
                "initialize",
                f"its directory {parent} does not exist",
                "create the directory, or use sqlite_store(path), which creates it",
            )
    try:
        # Autocommit mode (isolation_level=None): transactions are explicit BEGIN IMMEDIATE
        # blocks, so a writer takes the write lock up front instead of upgrading a read lock,
        # an upgrade that fails at once with SQLITE_BUSY instead of waiting. Calls arrive from
        # worker threads; the store serialises them with its own lock.
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise translate(
            exc, path=path, operation="initialize", busy_timeout_s=busy_timeout_s
        ) from exc
    try:
        _configure(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise translate(
            exc, path=path, operation="initialize", busy_timeout_s=busy_timeout_s
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: str) -> None:
    # Reading the header first turns "not a database" into an error before anything is written.
    conn.execute("PRAGMA application_id").fetchone()
    if path != ":memory:":
        # Only a file with no pages yet takes it; an older file keeps the size it has.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("store.wal_unavailable", path=path, journal_mode=mode)
    # In WAL mode NORMAL syncs at checkpoints, not at each commit: a committed transaction
    # survives a crash of the process (it is in the WAL file, which the OS holds); only a power
    # loss or OS crash can roll back the last few commits, never corrupt the database.
    conn.execute("PRAGMA synchronous=NORMAL")
    # A run's commits rewrite the same pages over and over (the last page of its events,
    # the stage-cache index pages its random keys land on); checkpointing every 40 MB of WAL
    # instead of SQLite's 4 MB copies each such page into the database once, not ten times.
    # SQLite still checkpoints on the last close, and the WAL is then removed. A file store
    # checkpoints in a thread of its own (``_checkpointer``) long before that: this is the
    # writer's fallback, should that thread fall behind.
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_BYTES // page_size}")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA cache_size=-16384")  # 16 MiB page cache per connection


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create or migrate the schema; refuse foreign databases and newer schema versions."""
    app_id, version = _header(conn)
    _check_newer(path, version)
    if app_id == APPLICATION_ID and version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the write lock.
        app_id, version = _header(conn)
        _check_newer(path, version)
        if app_id != APPLICATION_ID:
            _check_empty(conn, path, app_id)
            version = 0
        for target in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[target](conn)
            log.info("store.migrated", path=path, schema_version=target)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _header(conn: sqlite3.Connection) -> tuple[int, int]:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return app_id, version


def _check_newer(path: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise store_error(
            path,
            "initialize",
            f"the database has schema version {version}, written by a newer "
            f"themis-store-sqlite; this version reads schema versions up to {SCHEMA_VERSION}",
            "upgrade themis-store-sqlite (pip install -U themis-store-sqlite), or use another path",
        )


def _check_empty(conn: sqlite3.Connection, path: str, app_id: int) -> None:
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    if tables or app_id != 0:
        shown = ", ".join(sorted(tables)[:5]) or "none"
        raise store_error(
            path,
            "initialize",
            f"the file is a SQLite database of another application "
            f"(application_id={app_id}, tables: {shown}), not a Themis run store",
            "point the store at a new path; Themis never writes into a database it did not create",
        )
