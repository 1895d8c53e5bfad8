"""The schema version, its migrations, and databases that are not ours or are too new."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from themis.core.errors import StoreError
from themis.core.events import RunEvent, RunStartedEvent
from themis.core.projections import build_projection
from themis.core.snapshot import RunSnapshot
from themis_store_sqlite import SqliteRunStore, _schema

from .conftest import _case_events

OpenStore = Callable[..., SqliteRunStore]


def _header(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute("PRAGMA application_id").fetchone()[0],
            conn.execute("PRAGMA user_version").fetchone()[0],
        )


def test_fresh_file_is_stamped_with_the_current_version(
    store: SqliteRunStore, db_path: Path
) -> None:
    assert _header(db_path) == (_schema.APPLICATION_ID, _schema.SCHEMA_VERSION)


def _pragma(path: Path, name: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


def test_a_new_file_has_8_kb_pages_and_an_older_file_keeps_its_own(
    open_store: OpenStore, snapshot: RunSnapshot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = tmp_path / "new.sqlite3"
    store = open_store(new)
    store.persist_snapshot(snapshot)
    store.close()
    assert _pragma(new, "page_size") == _schema.PAGE_SIZE == 8192
    # A file an earlier version made, with SQLite's default pages, opens as it is.
    older = tmp_path / "older.sqlite3"
    with monkeypatch.context() as earlier:
        earlier.setattr(_schema, "PAGE_SIZE", 4096)
        open_store(older).initialize()
    store = open_store(older)
    store.persist_snapshot(snapshot)
    events = _case_events(snapshot.run_id, snapshot)
    store.append_events(snapshot.run_id, events)
    assert len(store.query_events(snapshot.run_id)) == len(events)
    writer = store._writer
    assert writer is not None
    # Its fallback checkpoint still comes at 40 MB of WAL, counted in its own pages.
    assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 40 * 2**20 // 4096
    store.close()
    assert _pragma(older, "page_size") == 4096


def test_newer_schema_is_refused_naming_the_path_and_both_versions(
    store: SqliteRunStore, db_path: Path, open_store: OpenStore
) -> None:
    store.append_events("r", [RunStartedEvent(run_id="r", seq=1)])
    store.close()
    newer = _schema.SCHEMA_VERSION + 7
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(StoreError) as info:
        open_store().initialize()
    message = str(info.value)
    assert str(db_path) in message
    assert f"schema version {newer}" in message
    assert f"up to {_schema.SCHEMA_VERSION}" in message
    assert "pip install -U themis-store-sqlite" in message
    assert _header(db_path)[1] == newer  # refused without touching the file


def test_every_call_on_a_newer_schema_is_refused(
    store: SqliteRunStore, db_path: Path, open_store: OpenStore
) -> None:
    store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {_schema.SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        open_store().query_events("r")


def test_database_of_another_application_is_refused_and_left_alone(
    tmp_path: Path, open_store: OpenStore
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
        conn.execute("INSERT INTO events (what) VALUES ('theirs')")
    with pytest.raises(StoreError) as info:
        open_store(path).initialize()
    assert str(path) in str(info.value)
    assert "another application" in str(info.value)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT what FROM events").fetchall() == [("theirs",)]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0


def test_pending_migrations_run_once_and_in_order(
    store: SqliteRunStore, db_path: Path, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append_events("r", [RunStartedEvent(run_id="r", seq=1)])
    store.close()
    applied: list[int] = []
    first, second = _schema.SCHEMA_VERSION + 1, _schema.SCHEMA_VERSION + 2

    def to_first(conn: sqlite3.Connection) -> None:
        applied.append(first)
        conn.execute("CREATE TABLE added_next (x INTEGER)")

    def to_second(conn: sqlite3.Connection) -> None:
        applied.append(second)
        conn.execute("INSERT INTO added_next VALUES (3)")

    monkeypatch.setattr(
        _schema, "MIGRATIONS", {**_schema.MIGRATIONS, first: to_first, second: to_second}
    )
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", second)
    migrated = open_store()
    migrated.initialize()
    open_store().initialize()
    assert applied == [first, second]
    assert _header(db_path)[1] == second
    assert [e.seq for e in migrated.query_events("r")] == [1]  # data kept across migrations


def test_a_failing_migration_leaves_the_previous_version_intact(
    store: SqliteRunStore, db_path: Path, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.close()
    current = _schema.SCHEMA_VERSION

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(_schema, "MIGRATIONS", {**_schema.MIGRATIONS, current + 1: broken})
    monkeypatch.setattr(_schema, "SCHEMA_VERSION", current + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        open_store().initialize()
    assert _header(db_path)[1] == current
    with sqlite3.connect(db_path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "half_done" not in names


def test_a_version_1_file_opens_migrated_with_its_runs_and_payloads(
    open_store: OpenStore,
    db_path: Path,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: Callable[..., list[RunEvent]],
) -> None:
    """A file written by schema version 1: the same tables, a complete run_result payload."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot = make_snapshot(5)
    events = make_events(snapshot.run_id, snapshot)
    expected = build_projection("run_result", snapshot, events)
    with sqlite3.connect(db_path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        _schema.MIGRATIONS[1](conn)
        conn.execute(f"PRAGMA application_id={_schema.APPLICATION_ID}")
        conn.execute("PRAGMA user_version=1")
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, '2026-01-01T00:00:00+00:00')",
            (snapshot.run_id, snapshot.model_dump_json()),
        )
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            [(e.run_id, e.seq, e.event_type, e.model_dump_json()) for e in events],
        )
        conn.execute(
            "INSERT INTO projections VALUES (?, 'run_result', ?, ?)",
            (snapshot.run_id, len(events), json.dumps(expected)),
        )
    conn.close()

    store = open_store()
    assert store.get_projection(snapshot.run_id, "run_result") == expected
    assert store.events_decoded == 0  # answered from the version 1 payload
    assert _header(db_path) == (_schema.APPLICATION_ID, _schema.SCHEMA_VERSION)
    assert store.load_snapshot(snapshot.run_id) == snapshot
    assert store.query_events(snapshot.run_id) == events


def test_a_version_2_file_migrates_dropping_its_execution_state_payload(
    open_store: OpenStore,
    db_path: Path,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: Callable[..., list[RunEvent]],
) -> None:
    """Version 2 kept execution_state as the projection alone, which version 3 cannot
    continue from: the payload goes, run_result stays, the next rest keeps a fold state."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot = make_snapshot(5)
    events = make_events(snapshot.run_id, snapshot)
    state = build_projection("execution_state", snapshot, events)
    result = build_projection("run_result", snapshot, events)
    with sqlite3.connect(db_path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        _schema.MIGRATIONS[1](conn)
        _schema.MIGRATIONS[2](conn)
        conn.execute(f"PRAGMA application_id={_schema.APPLICATION_ID}")
        conn.execute("PRAGMA user_version=2")
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, '2026-01-01T00:00:00+00:00')",
            (snapshot.run_id, snapshot.model_dump_json()),
        )
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            [(e.run_id, e.seq, e.event_type, e.model_dump_json()) for e in events],
        )
        conn.executemany(
            "INSERT INTO projections VALUES (?, ?, ?, ?)",
            [
                (snapshot.run_id, "execution_state", len(events), json.dumps(state)),
                (snapshot.run_id, "run_result", len(events), json.dumps(result)),
            ],
        )
    conn.close()

    store = open_store()
    store.initialize()
    assert _header(db_path) == (_schema.APPLICATION_ID, _schema.SCHEMA_VERSION)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT name FROM projections").fetchall() == [("run_result",)]
    assert store.get_projection(snapshot.run_id, "run_result") == result
    assert store.events_decoded == 0
    assert store.get_projection(snapshot.run_id, "execution_state") == state
    assert store.events_decoded == len(events)  # folded from the log, then kept at rest

    reader = open_store()
    assert reader.get_projection(snapshot.run_id, "execution_state") == state
    assert reader.projection_folder(snapshot.run_id) is not None
    assert reader.events_decoded == 1  # continued from the kept state, after its last event


def test_processes_initialising_one_new_file_at_once_all_succeed(
    db_path: Path, script: Callable[..., list[str]], script_env: dict[str, str]
) -> None:
    db_path.parent.mkdir(parents=True)
    procs = [
        subprocess.Popen(
            script("try_store.py", db_path, "initialize"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=script_env,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    outcomes = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    assert outcomes == [{"ok": True, "result": None}] * 4
    # The schema was created once: the others saw it done once they had the write lock.
    assert sum("store.migrated" in output for output in outputs) == 1
    assert sum(output.count("store.migrated") for output in outputs) == _schema.SCHEMA_VERSION
    assert _header(db_path) == (_schema.APPLICATION_ID, _schema.SCHEMA_VERSION)
