"""Rows go into SQLite as multi-row INSERTs: the same rows as one statement per row, in a
statement per 128 rows (``insert_rows``), for a batch's events and the buffered stage-cache
rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from themis.core.events import RunEvent
from themis.core.snapshot import RunSnapshot
from themis_store_sqlite import SqliteRunStore
from themis_store_sqlite._database import ROWS_PER_INSERT, insert_rows

OpenStore = Callable[..., SqliteRunStore]

_HEAD = "INSERT OR IGNORE INTO t (a, b, c) VALUES "


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, c BLOB)")
    return conn


def _statements(conn: sqlite3.Connection) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    return seen


@pytest.mark.parametrize("count", [0, 1, 2, 3, 127, 128, 129, 255, 256, 300, 1000])
def test_the_rows_of_executemany_in_few_statements(count: int) -> None:
    rows = [(i, f"text {i} 'quoted' é", bytes([i % 256]) * (i % 5)) for i in range(count)]
    expected, actual = _table(), _table()
    expected.executemany(_HEAD + "(?, ?, ?)", rows)
    seen = _statements(actual)
    insert_rows(actual, _HEAD, rows)
    actual.set_trace_callback(None)
    assert (
        actual.execute("SELECT * FROM t ORDER BY a").fetchall()
        == expected.execute("SELECT * FROM t ORDER BY a").fetchall()
    )
    assert actual.total_changes == expected.total_changes == count
    # A statement per 128 rows, then one per row of the rest.
    full, rest = divmod(count, ROWS_PER_INSERT)
    assert len(seen) == full + rest


def test_each_row_keeps_its_conflict_clause() -> None:
    conn = _table()
    insert_rows(conn, _HEAD, [(1, "first", b""), (2, "second", b"")])
    before = conn.total_changes
    # OR IGNORE: a row whose key is stored is skipped, the others are written.
    insert_rows(conn, _HEAD, [(1, "changed", b""), (3, "third", b""), (2, "changed", b"")])
    assert conn.total_changes - before == 1
    assert conn.execute("SELECT a, b FROM t ORDER BY a").fetchall() == [
        (1, "first"),
        (2, "second"),
        (3, "third"),
    ]
    replace = "INSERT OR REPLACE INTO t (a, b, c) VALUES "
    insert_rows(conn, replace, [(2, "replaced", b"x"), (4, "fourth", b"")])
    assert conn.execute("SELECT a, b FROM t ORDER BY a").fetchall() == [
        (1, "first"),
        (2, "replaced"),
        (3, "third"),
        (4, "fourth"),
    ]


def test_a_failing_row_fails_the_statement() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL, c BLOB)")
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(
            conn,
            "INSERT INTO t (a, b, c) VALUES ",
            [(1, "ok", b""), (2, None, b""), (3, "ok", b"")],
        )
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def _event_statements(store: SqliteRunStore) -> list[str]:
    assert store._writer is not None
    return _statements(store._writer)


def test_an_event_batch_is_inserted_in_few_statements(
    store: SqliteRunStore,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: Callable[..., list[RunEvent]],
) -> None:
    snapshot = make_snapshot(100)
    events = make_events(snapshot.run_id, snapshot)  # 402 events
    store.persist_snapshot(snapshot)
    seen = _event_statements(store)
    store.append_events(snapshot.run_id, events)
    assert store._writer is not None
    store._writer.set_trace_callback(None)
    inserts = [sql for sql in seen if sql.startswith("INSERT OR IGNORE INTO events")]
    full, rest = divmod(len(events), ROWS_PER_INSERT)
    assert full == 3
    assert len(inserts) == full + rest
    stored = store.query_events(snapshot.run_id)
    assert [e.model_dump_json() for e in stored] == [e.model_dump_json() for e in events]
    # An identical re-append is a no-op; a different event under a stored seq conflicts.
    store.append_events(snapshot.run_id, events)
    assert len(store.query_events(snapshot.run_id)) == len(events)


def test_buffered_cache_rows_are_inserted_in_few_statements(open_store: OpenStore) -> None:
    store = open_store()
    store.initialize()
    store.acquire_run("run-a")
    payloads: dict[str, Any] = {f"k{i}": {"result": i, "text": f"t{i}"} for i in range(300)}
    for key, payload in payloads.items():
        store.store_stage_cache("generate", key, payload)
    store.store_stage_cache("generate", "k7", {"result": "last write wins"})
    seen = _event_statements(store)
    store.release_run("run-a")
    inserts = [sql for sql in seen if sql.startswith("INSERT OR REPLACE INTO stage_cache")]
    assert len(inserts) == 2 + 300 - 2 * ROWS_PER_INSERT
    reader = open_store()
    payloads["k7"] = {"result": "last write wins"}
    for key, payload in payloads.items():
        assert reader.load_stage_cache("generate", key) == payload
