"""Projections are persisted with the seq they cover, so a finished run is not replayed."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from themis.core.events import RunEvent, RunStartedEvent
from themis.core.projections import PROJECTION_NAMES, build_projection
from themis.core.snapshot import RunSnapshot
from themis_store_sqlite import SqliteRunStore

OpenStore = Callable[..., SqliteRunStore]
MakeEvents = Callable[..., list[RunEvent]]


def _finished_run(
    store: SqliteRunStore, make_snapshot: Callable[..., RunSnapshot], make_events: MakeEvents
) -> tuple[RunSnapshot, list[RunEvent]]:
    snapshot = make_snapshot(200)
    events = make_events(snapshot.run_id, snapshot)
    store.persist_snapshot(snapshot)
    for start in range(0, len(events), 256):
        store.append_events(snapshot.run_id, events[start : start + 256])
    return snapshot, events


def _persisted(db_path: Path) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        return dict(conn.execute("SELECT name, seq FROM projections").fetchall())


def test_a_new_store_answers_a_finished_run_without_reading_its_events(
    store: SqliteRunStore,
    open_store: OpenStore,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: MakeEvents,
) -> None:
    snapshot, events = _finished_run(store, make_snapshot, make_events)
    for name in PROJECTION_NAMES:
        store.get_projection(snapshot.run_id, name)

    reader = open_store()
    for name in PROJECTION_NAMES:
        assert reader.get_projection(snapshot.run_id, name) == build_projection(
            name, snapshot, events
        ), name
    assert reader.events_decoded == 0


def test_the_first_reader_of_a_finished_run_folds_once_and_persists_for_the_next(
    store: SqliteRunStore,
    open_store: OpenStore,
    db_path: Path,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: MakeEvents,
) -> None:
    snapshot, events = _finished_run(store, make_snapshot, make_events)
    first = open_store()
    assert first.get_projection(snapshot.run_id, "run_result") == build_projection(
        "run_result", snapshot, events
    )
    assert first.events_decoded == len(events)
    assert _persisted(db_path) == {"run_result": len(events)}
    second = open_store()
    assert second.get_projection(snapshot.run_id, "run_result") == build_projection(
        "run_result", snapshot, events
    )
    assert second.events_decoded == 0


def test_a_persisted_payload_is_not_used_once_the_run_has_moved_on(
    store: SqliteRunStore,
    open_store: OpenStore,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: MakeEvents,
) -> None:
    """The kept fold state is continued instead: a reader folds only the events after it."""
    snapshot, events = _finished_run(store, make_snapshot, make_events)
    store.get_projection(snapshot.run_id, "execution_state")
    resumed = RunStartedEvent(run_id=snapshot.run_id, seq=len(events) + 1, mode="resume")
    store.append_events(snapshot.run_id, [resumed])
    reader = open_store()
    assert reader.get_projection(snapshot.run_id, "execution_state") == build_projection(
        "execution_state", snapshot, [*events, resumed]
    )
    # The state's last event (read back to prove the log is the same one), then the new one.
    assert reader.events_decoded == 2
    for name in PROJECTION_NAMES:
        # The timeline and the traces, which a fold state does not hold, read the log.
        assert reader.get_projection(snapshot.run_id, name) == build_projection(
            name, snapshot, [*events, resumed]
        ), name


def test_a_running_run_persists_no_projection(
    store: SqliteRunStore,
    db_path: Path,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: MakeEvents,
) -> None:
    snapshot = make_snapshot(20)
    events = make_events(snapshot.run_id, snapshot)[:-1]  # no run_completed yet
    store.persist_snapshot(snapshot)
    store.append_events(snapshot.run_id, events)
    for name in PROJECTION_NAMES:
        assert store.get_projection(snapshot.run_id, name) == build_projection(
            name, snapshot, events
        )
    assert _persisted(db_path) == {}


def test_the_writing_store_catches_up_instead_of_refolding(
    store: SqliteRunStore, make_snapshot: Callable[..., RunSnapshot], make_events: MakeEvents
) -> None:
    """Read-your-writes during a run costs the new events, not the whole log, per read."""
    snapshot = make_snapshot(50)
    events = make_events(snapshot.run_id, snapshot)
    store.persist_snapshot(snapshot)
    store.append_events(snapshot.run_id, events[:100])
    store.get_projection(snapshot.run_id, "run_result")
    decoded = store.events_decoded
    store.append_events(snapshot.run_id, events[100:])
    assert store.get_projection(snapshot.run_id, "run_result") == build_projection(
        "run_result", snapshot, events
    )
    # The catch-up rereads the last folded event to prove the log was not rewritten.
    assert store.events_decoded - decoded == len(events) - 100 + 1


def test_the_snapshot_projection_reads_no_events(
    store: SqliteRunStore,
    open_store: OpenStore,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: MakeEvents,
) -> None:
    snapshot, _ = _finished_run(store, make_snapshot, make_events)
    reader = open_store()
    assert reader.get_projection(snapshot.run_id, "snapshot") == snapshot.model_dump(mode="json")
    assert reader.events_decoded == 0
    assert reader.get_projection("0" * 64, "snapshot") is None


def test_the_run_writer_folds_on_append_and_reads_no_log_at_the_end(
    store: SqliteRunStore,
    open_store: OpenStore,
    db_path: Path,
    make_snapshot: Callable[..., RunSnapshot],
    make_events: MakeEvents,
) -> None:
    snapshot = make_snapshot(200)
    events = make_events(snapshot.run_id, snapshot)
    store.persist_snapshot(snapshot)
    store.acquire_run(snapshot.run_id)
    store.append_events(snapshot.run_id, events[:1])  # run_started, flushed alone
    for start in range(1, len(events), 256):
        store.append_events(snapshot.run_id, events[start : start + 256])
    for name in PROJECTION_NAMES:
        assert store.get_projection(snapshot.run_id, name) == build_projection(
            name, snapshot, events
        ), name
    store.release_run(snapshot.run_id)
    # The first batch is folded from the log; every later batch from the appended objects,
    # and each read re-checks only the last folded event. timeline_view alone reads the
    # log: a folder keeps no timeline rows.
    assert store.events_decoded == 1 + len(PROJECTION_NAMES) - 1 + len(events)
    # The writer answered from memory and persisted run_result and its fold state when the
    # run came to rest: another process re-running the finished run reads the result
    # without decoding the log, and one resuming it starts from the state.
    assert _persisted(db_path) == {"run_result": len(events), "execution_state": len(events)}
    reader = open_store()
    assert reader.get_projection(snapshot.run_id, "run_result") == build_projection(
        "run_result", snapshot, events
    )
    assert reader.events_decoded == 0


def test_a_run_being_written_and_reads_of_a_finished_run_share_one_store_from_threads(
    store: SqliteRunStore, make_snapshot: Callable[..., RunSnapshot], make_events: MakeEvents
) -> None:
    """The writer folds and commits while other threads read, persist and cache; none hangs."""
    finished, running = make_snapshot(100, label="done"), make_snapshot(100, label="live")
    done_events = make_events(finished.run_id, finished)
    live_events = make_events(running.run_id, running)
    for snap, events in ((finished, done_events), (running, [])):
        store.persist_snapshot(snap)
        if events:
            store.append_events(snap.run_id, events)
    store.acquire_run(running.run_id)
    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        return run

    def write() -> None:
        for start in range(0, len(live_events), 20):
            store.append_events(running.run_id, live_events[start : start + 20])
            store.store_stage_cache("parse", f"k{start}", {"result": start})

    def read() -> None:
        for round_ in range(10):
            for name in PROJECTION_NAMES:
                store.get_projection(finished.run_id, name)
                store.get_projection(running.run_id, name)
            if round_ % 3 == 0:
                store.clear_run("0" * 64)  # a write that also drops projection state

    threads = [threading.Thread(target=guarded(write))]
    threads += [threading.Thread(target=guarded(read)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)  # a hang guard: a deadlock leaves a thread alive
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck (deadlock)"
    assert errors == []
    store.release_run(running.run_id)
    for name in PROJECTION_NAMES:
        assert store.get_projection(running.run_id, name) == build_projection(
            name, running, live_events
        ), name
    assert store.load_stage_cache("parse", "k0") == {"result": 0}
