"""The eight store primitives, the stage cache and the connection setup, on real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from themis.core.errors import StoreConflictError, StoreError
from themis.core.events import GenerationCompletedEvent, RunEvent, RunStartedEvent
from themis.core.snapshot import RunProvenance, RunSnapshot
from themis_store_sqlite import SqliteRunStore, sqlite_store

OpenStore = Callable[..., SqliteRunStore]
MakeEvents = Callable[..., list[RunEvent]]


def test_initialize_creates_every_table_and_is_idempotent(
    store: SqliteRunStore, db_path: Path
) -> None:
    store.initialize()
    store.initialize()
    with sqlite3.connect(db_path) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert {"runs", "events", "blobs", "stage_cache", "projections", "run_locks"} <= tables


def test_file_is_in_wal_mode_with_normal_sync(store: SqliteRunStore, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._writer is not None
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_memory_database_supports_every_primitive(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    store = open_store(":memory:")
    store.persist_snapshot(snapshot)
    events = make_events(snapshot.run_id, snapshot)
    store.append_events(snapshot.run_id, events)
    assert store.load_snapshot(snapshot.run_id) == snapshot
    assert store.query_events(snapshot.run_id) == events
    ref = store.store_blob(b"x", "text/plain")
    assert store.load_blob(ref) == ("text/plain", b"x")


def test_sqlite_store_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "runs.sqlite3"
    store = sqlite_store(path, busy_timeout_s=1.0)
    try:
        store.initialize()
        assert path.is_file()
        assert store.busy_timeout_s == 1.0
    finally:
        store.close()


def test_missing_directory_names_the_path_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "runs.sqlite3"
    with pytest.raises(StoreError) as info:
        SqliteRunStore(path).initialize()
    message = str(info.value)
    assert str(path) in message
    assert "sqlite_store" in message


def test_snapshot_round_trips_and_unknown_run_is_none(
    store: SqliteRunStore, snapshot: RunSnapshot
) -> None:
    store.persist_snapshot(snapshot)
    loaded = store.load_snapshot(snapshot.run_id)
    assert loaded == snapshot
    assert loaded is not None and loaded.run_id == snapshot.run_id
    assert store.load_snapshot("0" * 64) is None


def test_second_snapshot_of_a_run_is_a_no_op(
    store: SqliteRunStore, open_store: OpenStore, snapshot: RunSnapshot
) -> None:
    store.persist_snapshot(snapshot)
    other_provenance = snapshot.model_copy(
        update={"provenance": RunProvenance(themis_version="9.9")}
    )
    store.persist_snapshot(other_provenance)
    fresh = open_store()
    loaded = fresh.load_snapshot(snapshot.run_id)
    assert loaded is not None and loaded.provenance == snapshot.provenance


def test_stored_identity_that_differs_conflicts(
    store: SqliteRunStore,
    db_path: Path,
    snapshot: RunSnapshot,
    make_snapshot: Callable[..., RunSnapshot],
) -> None:
    store.persist_snapshot(snapshot)
    tampered = make_snapshot(label="other").model_dump_json()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE runs SET snapshot = ? WHERE run_id = ?", (tampered, snapshot.run_id))
    with pytest.raises(StoreConflictError, match=snapshot.run_id):
        store.persist_snapshot(snapshot)


def test_list_runs_gives_every_stored_run(
    store: SqliteRunStore, make_snapshot: Callable[..., RunSnapshot]
) -> None:
    first, second = make_snapshot(label="1"), make_snapshot(label="2")
    store.persist_snapshot(first)
    store.persist_snapshot(second)
    assert sorted(store.list_runs()) == sorted([first.run_id, second.run_id])


def test_events_round_trip_in_seq_order(
    store: SqliteRunStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    events = make_events(snapshot.run_id, snapshot)
    store.append_events(snapshot.run_id, events[5:])
    store.append_events(snapshot.run_id, events[:5])
    assert store.query_events(snapshot.run_id) == events
    assert [type(e) for e in store.query_events(snapshot.run_id)] == [type(e) for e in events]


def test_query_filters_by_seq_and_event_type(
    store: SqliteRunStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    events = make_events(snapshot.run_id, snapshot)
    store.append_events(snapshot.run_id, events)
    assert store.query_events(snapshot.run_id, after_seq=4) == events[4:]
    scored = store.query_events(snapshot.run_id, event_types={"score_completed", "run_started"})
    assert [e.event_type for e in scored] == ["run_started"] + ["score_completed"] * 3
    assert store.query_events(snapshot.run_id, event_types=[]) == []
    assert store.query_events("0" * 64) == []


def test_reappending_identical_events_is_a_no_op(
    store: SqliteRunStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    events = make_events(snapshot.run_id, snapshot)
    store.append_events(snapshot.run_id, events[:8])
    store.append_events(snapshot.run_id, events[:8])
    store.append_events(snapshot.run_id, events[4:])  # overlaps the stored tail
    assert store.query_events(snapshot.run_id) == events


def test_different_event_under_a_stored_seq_conflicts_and_writes_nothing(
    store: SqliteRunStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    run_id = snapshot.run_id
    events = make_events(run_id, snapshot)
    store.append_events(run_id, events[:3])
    impostor = RunStartedEvent(run_id=run_id, seq=2, mode="resume")
    with pytest.raises(StoreConflictError, match="seq 2"):
        store.append_events(run_id, [*events[3:6], impostor])
    assert store.query_events(run_id) == events[:3]


def test_conflicting_seq_within_one_batch_is_refused(
    store: SqliteRunStore, snapshot: RunSnapshot
) -> None:
    run_id = snapshot.run_id
    batch = [
        RunStartedEvent(run_id=run_id, seq=1),
        RunStartedEvent(run_id=run_id, seq=1, mode="resume"),
    ]
    with pytest.raises(StoreConflictError):
        store.append_events(run_id, batch)
    assert store.query_events(run_id) == []


def test_events_without_seq_continue_from_the_stored_maximum(
    store: SqliteRunStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    run_id = snapshot.run_id
    store.append_events(run_id, make_events(run_id, snapshot)[:4])
    store.append_events(run_id, [RunStartedEvent(run_id=run_id, mode="resume")] * 2)
    assert [e.seq for e in store.query_events(run_id)] == [1, 2, 3, 4, 5, 6]


def test_event_of_another_run_is_refused(store: SqliteRunStore) -> None:
    with pytest.raises(ValueError, match="another-run"):
        store.append_events("this-run", [RunStartedEvent(run_id="another-run", seq=1)])


def test_fields_from_a_newer_schema_survive_a_round_trip(store: SqliteRunStore) -> None:
    event = RunStartedEvent(run_id="r", seq=1, added_later={"x": 1})  # type: ignore[call-arg]
    store.append_events("r", [event])
    (loaded,) = store.query_events("r")
    assert loaded.model_extra == {"added_later": {"x": 1}}


def test_unknown_event_types_are_skipped_and_logged(store: SqliteRunStore, db_path: Path) -> None:
    store.append_events("r", [RunStartedEvent(run_id="r", seq=1)])
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO events VALUES ('r', 2, 'from_the_future', "
            '\'{"event_type": "from_the_future", "run_id": "r", "seq": 2}\')'
        )
    store.append_events("r", [RunStartedEvent(run_id="r", seq=3, mode="resume")])
    with capture_logs() as logs:
        events = store.query_events("r")
    assert [e.seq for e in events] == [1, 3]
    assert any(
        entry["event"] == "store.unknown_event_type_skipped"
        and entry["event_type"] == "from_the_future"
        for entry in logs
    )


def test_clear_run_removes_the_run_but_keeps_blobs_cache_and_other_runs(
    store: SqliteRunStore,
    db_path: Path,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: MakeEvents,
) -> None:
    doomed, kept = make_snapshot(label="doomed"), make_snapshot(label="kept")
    for snap in (doomed, kept):
        store.persist_snapshot(snap)
        store.append_events(snap.run_id, make_events(snap.run_id, snap))
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO projections VALUES (?, 'run_result', 1, '{}')", (doomed.run_id,))
    ref = store.store_blob(b"payload", "application/json")
    store.store_stage_cache("parse", "k", {"result": 1})

    store.clear_run(doomed.run_id)

    assert store.load_snapshot(doomed.run_id) is None
    assert store.query_events(doomed.run_id) == []
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM projections").fetchone()[0] == 0
    assert store.load_blob(ref) == ("application/json", b"payload")
    assert store.load_stage_cache("parse", "k") == {"result": 1}
    assert store.load_snapshot(kept.run_id) == kept
    assert len(store.query_events(kept.run_id)) == len(make_events(kept.run_id, kept))


def test_blobs_are_content_addressed_and_idempotent(store: SqliteRunStore) -> None:
    data = bytes(range(256)) * 4
    ref = store.store_blob(data, "application/octet-stream")
    assert ref.startswith("sha256:") and len(ref) == 7 + 64
    assert store.store_blob(data, "application/octet-stream") == ref
    assert store.load_blob(ref) == ("application/octet-stream", data)
    assert store.load_blob("sha256:" + "0" * 64) is None


def test_stage_cache_round_trips_and_last_write_wins(store: SqliteRunStore) -> None:
    assert store.load_stage_cache("generate", "k") is None
    store.store_stage_cache("generate", "k", {"source_run_id": "a", "result": {"x": 1}})
    store.store_stage_cache("generate", "k", {"source_run_id": "b", "result": {"x": 2}})
    assert store.load_stage_cache("generate", "k") == {"source_run_id": "b", "result": {"x": 2}}
    assert store.load_stage_cache("parse", "k") is None


def test_stage_cache_is_shared_by_two_stores_on_one_file(open_store: OpenStore) -> None:
    writer, reader = open_store(), open_store()
    writer.store_stage_cache("score", "key", {"source_run_id": "r1", "result": 0.5})
    assert reader.load_stage_cache("score", "key") == {"source_run_id": "r1", "result": 0.5}
    reader.store_stage_cache("score", "key", {"source_run_id": "r2", "result": 1.0})
    assert writer.load_stage_cache("score", "key") == {"source_run_id": "r2", "result": 1.0}


def test_cache_writes_during_a_run_commit_with_a_run_level_batch_and_on_release(
    open_store: OpenStore,
) -> None:
    runner, other = open_store(), open_store()
    runner.acquire_run("r")
    runner.store_stage_cache("parse", "k", {"result": 1})
    assert runner.load_stage_cache("parse", "k") == {"result": 1}
    assert other.load_stage_cache("parse", "k") is None  # still buffered in the runner
    runner.append_events("r", [RunStartedEvent(run_id="r", seq=1)])
    assert other.load_stage_cache("parse", "k") == {"result": 1}
    runner.store_stage_cache("parse", "k2", {"result": 2})
    runner.release_run("r")
    assert other.load_stage_cache("parse", "k2") == {"result": 2}


def test_close_is_idempotent_and_a_closed_store_reopens_on_use(
    store: SqliteRunStore, snapshot: RunSnapshot
) -> None:
    store.persist_snapshot(snapshot)
    store.close()
    store.close()
    assert store.load_snapshot(snapshot.run_id) == snapshot


def test_writes_from_one_store_are_read_by_another(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    writer, reader = open_store(), open_store()
    events = make_events(snapshot.run_id, snapshot)
    writer.persist_snapshot(snapshot)
    writer.append_events(snapshot.run_id, events[:5])
    assert reader.query_events(snapshot.run_id) == events[:5]
    writer.append_events(snapshot.run_id, events[5:])
    assert reader.query_events(snapshot.run_id, after_seq=5) == events[5:]


def test_threads_appending_different_runs_and_reading_share_one_store(
    store: SqliteRunStore,
) -> None:
    """Calls arrive from worker threads; the store serialises them on its connections."""
    errors: list[BaseException] = []

    def work(run_id: str) -> None:
        try:
            for batch in range(20):
                events = [
                    GenerationCompletedEvent(
                        run_id=run_id, seq=batch * 10 + i + 1, case_id=f"c{i}", candidate_id="x"
                    )
                    for i in range(10)
                ]
                store.append_events(run_id, events)
                assert len(store.query_events(run_id)) == (batch + 1) * 10
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i in range(4):
        assert [e.seq for e in store.query_events(f"run-{i}")] == list(range(1, 201))
