"""One SQLite file behind a store: its connections, write transactions and run leases."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from itertools import chain
from typing import Any

from themis.core.errors import StoreError
from themis.core.logs import get_logger
from themis.core.stores import BaseRunStore

from themis_store_sqlite._checkpointer import Checkpointer
from themis_store_sqlite._errors import translate
from themis_store_sqlite._key_filter import SEED_LIMIT, KeyFilter
from themis_store_sqlite._lease import LeaseOwner, take_lease
from themis_store_sqlite._schema import ensure_schema, open_connection

__all__ = ["SqliteDatabase", "insert_rows"]

log = get_logger(__name__)

# Rows per INSERT statement of ``insert_rows``: 128 rows of 4 values stay under SQLite's
# smallest limit on a statement's parameters (999 before 3.32).
ROWS_PER_INSERT = 128
_INSERT_CACHE = "INSERT OR REPLACE INTO stage_cache (stage, key, payload) VALUES "


def insert_rows(conn: sqlite3.Connection, head: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``conn.executemany(head + "(?, ..., ?)", rows)``, 128 rows to a statement.

    ``head`` is an ``INSERT ... VALUES`` without its rows, and every row has as many values
    as it names columns. ``executemany`` runs its statement once per row: a round trip
    through the sqlite3 module, and the GIL released and taken back, for each. A statement
    of 128 rows does that once, and SQLite's own work on a row is the same: about a fifth
    fewer instructions for a run's event and stage-cache rows. The same rows are written
    in the same order, with the same conflict clause for each row. The rows past the last
    full 128 go through ``executemany`` (a run's batches are mostly multiples of 128): a
    prepared statement of 128 rows takes about 100 KB, kept in the connection's statement
    cache, so one such statement a table, not one per batch size.
    """
    full = len(rows) - len(rows) % ROWS_PER_INSERT
    if full:
        sql = _values_sql(head, len(rows[0]), ROWS_PER_INSERT)
        for start in range(0, full, ROWS_PER_INSERT):
            conn.execute(sql, list(chain.from_iterable(rows[start : start + ROWS_PER_INSERT])))
    if full < len(rows):
        conn.executemany(_values_sql(head, len(rows[0]), 1), rows[full:])


@cache
def _values_sql(head: str, width: int, count: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return head + ", ".join([row] * count)


class SqliteDatabase(BaseRunStore):
    """The file of a ``SqliteRunStore``: a writer and a reader connection, transactions that
    carry the buffered stage-cache writes, and the leases of the runs it executes."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.busy_timeout_s = float(busy_timeout_s)
        # The writer connection takes every write; reads use a second connection so a long
        # read (a resume, a projection catch-up) never holds up the run's writer. In memory
        # there is only one database, so both names point at one connection and one lock.
        # Lock order, to stay free of deadlocks: the writer's lock, then the base's projection
        # lock, then the reader's lock; no write starts while the projection lock is held.
        self._write_lock = threading.RLock()
        self._read_lock = self._write_lock if self._in_memory else threading.RLock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._owner = LeaseOwner.current()
        self._leases: set[str] = set()
        self._cache_buffer: dict[tuple[str, str], str] = {}
        # ``time.monotonic()`` when the oldest entry of the buffer was put there.
        self._cache_buffered_at = 0.0
        # The stage-cache rows as of the writer's last write transaction, so that a run's
        # lookups of absent keys skip the database (see ``_check_key_filter``). Asked for by
        # a run's first read that misses, scanned in the next write transaction, dropped for
        # good once another connection commits (``_key_filter_off``).
        self._key_filter: KeyFilter | None = None
        self._key_filter_wanted = False
        self._key_filter_off = False
        # Runs the WAL's checkpoints beside the writer once it is open on a WAL file.
        self._checkpointer: Checkpointer | None = None

    @property
    def _in_memory(self) -> bool:
        return self.path == ":memory:" or self.path == ""

    # -- connections -------------------------------------------------------------------

    def _open_writer(self) -> sqlite3.Connection:
        if self._writer is None:
            self._writer = writer = self._open_checked()
            if not self._in_memory and self._checkpointer is None:
                mode = writer.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() == "wal":
                    self._checkpointer = Checkpointer(self.path)
        return self._writer

    def _open_reader(self) -> sqlite3.Connection:
        if self._in_memory:
            return self._open_writer()
        if self._reader is None:
            # The reader checks the schema itself rather than through the writer, so a read
            # never waits for the writer's lock (see the lock order in ``__init__``).
            self._reader = self._open_checked()
        return self._reader

    def _open_checked(self) -> sqlite3.Connection:
        conn = open_connection(self.path, self.busy_timeout_s)
        try:
            ensure_schema(conn, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc, "initialize") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _translate(self, exc: sqlite3.Error, operation: str) -> StoreError:
        return translate(
            exc, path=self.path, operation=operation, busy_timeout_s=self.busy_timeout_s
        )

    @contextmanager
    def _reading(self, operation: str) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            conn = self._open_reader()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._translate(exc, operation) from exc

    @contextmanager
    def _writing(
        self, operation: str, *, flush_cache: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction, optionally carrying the buffered cache writes; all or nothing."""
        with self._write_lock:
            conn = self._open_writer()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._translate(exc, operation) from exc
            try:
                if self._key_filter is not None or self._key_filter_wanted:
                    self._check_key_filter(conn)
                yield conn
                if flush_cache and self._cache_buffer:
                    # In key order: the keys are hashes, and inserted as they came each one
                    # lands on a page of the table's index far from the last one's. In order,
                    # the inserts walk the index once; 200,000 rows in flushes of 4,096 took
                    # 2.5 s instead of 3.9 s (docs/performance.md, session 11).
                    insert_rows(
                        conn,
                        _INSERT_CACHE,
                        [
                            (stage, key, text)
                            for (stage, key), text in sorted(self._cache_buffer.items())
                        ],
                    )
                    key_filter = self._key_filter
                    if key_filter is not None:
                        # Before the buffer is cleared: a lookup that no longer finds a key
                        # there finds it here.
                        for stage, key in self._cache_buffer:
                            key_filter.add(stage, key)
                conn.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.nudge()
            except BaseException as exc:
                self._rollback(conn, operation)
                if isinstance(exc, sqlite3.Error):
                    raise self._translate(exc, operation) from exc
                raise
            if flush_cache:
                # Only now: on a rollback the buffered entries stay for the next attempt.
                self._cache_buffer.clear()

    def _check_key_filter(self, conn: sqlite3.Connection) -> None:
        """Keep the key filter true to the table, inside a write transaction.

        No other connection can commit while this one holds the write lock, so the table and
        ``PRAGMA data_version`` (which moves when another connection commits, never for this
        one's own commits) are read as one state. A filter whose version moved is dropped
        for good: another writer shares the file, and the lookups read the database again.
        A row another connection commits between two of this store's write transactions is
        missed by the lookups made in between, as if it had been committed a little later.
        """
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            key_filter = self._key_filter
            if key_filter is not None:
                if key_filter.version != version:
                    self._key_filter = None
                    self._key_filter_off = True
                return
            self._key_filter_wanted = False
            # Counted inside SQLite first: a cache too large to scan costs no Python rows.
            rows = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM stage_cache LIMIT ?)", (SEED_LIMIT + 1,)
            ).fetchone()[0]
            if rows > SEED_LIMIT:
                self._key_filter_off = True
                return
            key_filter = KeyFilter(int(version))
            for stage, key in conn.execute("SELECT stage, key FROM stage_cache"):
                key_filter.add(stage, key)
        except sqlite3.Error:
            # Only an optimisation: the transaction's own work decides what fails.
            self._key_filter = None
            self._key_filter_off = True
            return
        self._key_filter = key_filter

    def _rollback(self, conn: sqlite3.Connection, operation: str) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            # After an I/O error SQLite may have rolled back already; drop the connection so
            # the next call starts from a fresh one.
            log.warning(
                "store.rollback_failed", path=self.path, operation=operation, error=str(exc)
            )
            with self._read_lock:
                self._drop_connections()

    def _drop_connections(self) -> None:
        if self._checkpointer is not None:
            # First: the last connection to close checkpoints what is left and removes the WAL.
            self._checkpointer.close()
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
        self._reader = self._writer = None
        # A new writer connection counts ``data_version`` from its own start.
        self._key_filter = None
        self._key_filter_wanted = False

    def initialize(self) -> None:
        """Open the file and create or migrate the schema. Idempotent."""
        with self._write_lock:
            self._open_writer()

    # -- run leases ------------------------------------------------------------------------

    def acquire_run(self, run_id: str) -> None:
        """Take the run's lease; another live store holding it raises ``StoreConflictError``."""
        with self._writing("acquire_run") as conn:
            take_lease(conn, self.path, run_id, self._owner)
        self._leases.add(run_id)
        log.debug("store.lease_acquired", path=self.path, run_id=run_id)

    def release_run(self, run_id: str) -> None:
        """Give the run's lease back and commit buffered cache writes. Idempotent."""
        with self._writing("release_run", flush_cache=True) as conn:
            self._delete_lease(conn, run_id)
        self._leases.discard(run_id)

    def _delete_lease(self, conn: sqlite3.Connection, run_id: str) -> None:
        conn.execute(
            "DELETE FROM run_locks WHERE run_id = ? AND owner = ?", (run_id, self._owner.owner)
        )
