"""A run's stage-cache writes are committed in bulk, not with every event batch.

Each batch's cache entries land at random pages of the cache's index (the keys are
hashes), so committing them with every batch rewrote about a page per entry. They are
committed once enough have gathered, once the oldest has waited long enough, and with the
batches that start or end a run; the events are committed with every batch as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from themis.core.events import RunEvent
from themis.core.snapshot import RunSnapshot
from themis_store_sqlite import SqliteRunStore
from themis_store_sqlite import store as store_module

OpenStore = Callable[..., SqliteRunStore]
MakeEvents = Callable[..., list[RunEvent]]


def _running(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> tuple[SqliteRunStore, list[RunEvent]]:
    """A store running ``snapshot`` with its run_started batch appended; the other events."""
    runner = open_store()
    events = make_events(snapshot.run_id, snapshot)
    runner.persist_snapshot(snapshot)
    runner.acquire_run(snapshot.run_id)
    runner.append_events(snapshot.run_id, events[:1])
    return runner, events[1:]


def _committed(other: SqliteRunStore, keys: list[str]) -> list[bool]:
    return [other.load_stage_cache("generate", key) is not None for key in keys]


def test_a_case_batch_leaves_a_few_entries_buffered_and_readable_here(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    runner, events = _running(open_store, snapshot, make_events)
    other = open_store()
    runner.store_stage_cache("generate", "k0", {"result": 0})
    runner.append_events(snapshot.run_id, events[:4])  # one case's events, no run-level one

    assert _committed(other, ["k0"]) == [False]  # not committed with this batch
    assert runner.load_stage_cache("generate", "k0") == {"result": 0}
    assert runner._load_stage_cache_many([("generate", "k0")]) == [{"result": 0}]
    # The events themselves are committed with their batch, as always.
    assert len(other.query_events(snapshot.run_id)) == 5


def test_a_batch_commits_the_entries_once_enough_have_gathered(
    open_store: OpenStore,
    snapshot: RunSnapshot,
    make_events: MakeEvents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "_CACHE_FLUSH_ROWS", 3)
    runner, events = _running(open_store, snapshot, make_events)
    other = open_store()
    runner.store_stage_cache("generate", "k0", {"result": 0})
    runner.store_stage_cache("generate", "k1", {"result": 1})
    runner.append_events(snapshot.run_id, events[:4])
    assert _committed(other, ["k0", "k1"]) == [False, False]

    runner.store_stage_cache("generate", "k2", {"result": 2})
    runner.append_events(snapshot.run_id, events[4:8])
    assert _committed(other, ["k0", "k1", "k2"]) == [True, True, True]
    assert runner._cache_buffer == {}


def test_a_batch_commits_the_entries_once_the_oldest_has_waited(
    open_store: OpenStore,
    snapshot: RunSnapshot,
    make_events: MakeEvents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(store_module.time, "monotonic", lambda: now[0])
    runner, events = _running(open_store, snapshot, make_events)
    other = open_store()
    runner.store_stage_cache("generate", "old", {"result": 0})
    now[0] += store_module._CACHE_FLUSH_SECONDS / 2
    runner.store_stage_cache("generate", "new", {"result": 1})
    runner.append_events(snapshot.run_id, events[:4])
    assert _committed(other, ["old", "new"]) == [False, False]

    # Counted from the oldest entry: "new" has waited only half as long.
    now[0] += store_module._CACHE_FLUSH_SECONDS / 2
    runner.append_events(snapshot.run_id, events[4:8])
    assert _committed(other, ["old", "new"]) == [True, True]

    # An empty buffer starts the count again with its next entry.
    now[0] += 10 * store_module._CACHE_FLUSH_SECONDS
    runner.store_stage_cache("generate", "later", {"result": 2})
    runner.append_events(snapshot.run_id, events[8:12])
    assert _committed(other, ["later"]) == [False]


def test_the_batch_that_ends_the_run_commits_the_entries_before_the_run_is_at_rest(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    runner, events = _running(open_store, snapshot, make_events)
    other = open_store()
    runner.store_stage_cache("generate", "k0", {"result": 0})
    runner.append_events(snapshot.run_id, events[:-1])
    assert _committed(other, ["k0"]) == [False]

    persisted_with: list[dict[tuple[str, str], str]] = []
    at_rest = runner._persist_result_at_rest

    def spy(run_id: str) -> None:
        persisted_with.append(dict(runner._cache_buffer))
        at_rest(run_id)

    runner._persist_result_at_rest = spy  # type: ignore[method-assign]
    runner.append_events(snapshot.run_id, events[-1:])  # run_completed
    assert _committed(other, ["k0"]) == [True]
    assert persisted_with == [{}]  # the buffer was empty when the run came to rest


def test_the_batch_that_starts_a_run_commits_what_is_buffered(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    runner, other = open_store(), open_store()
    events = make_events(snapshot.run_id, snapshot)
    runner.persist_snapshot(snapshot)
    runner.acquire_run(snapshot.run_id)
    runner.store_stage_cache("generate", "k0", {"result": 0})
    runner.append_events(snapshot.run_id, events[:1])  # run_started
    assert _committed(other, ["k0"]) == [True]


def test_releasing_the_run_commits_the_entries_buffered_after_its_last_batch(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    runner, events = _running(open_store, snapshot, make_events)
    other = open_store()
    runner.append_events(snapshot.run_id, events[:4])
    runner.store_stage_cache("generate", "k0", {"result": 0})
    runner.release_run(snapshot.run_id)
    assert _committed(other, ["k0"]) == [True]


def test_a_flush_inserts_its_entries_in_key_order(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents, db_path: Path
) -> None:
    runner, events = _running(open_store, snapshot, make_events)
    # Buffered out of order, and in two stages: inserted as they came, each would land on
    # an index page far from the last one's.
    written = [("score", "b"), ("generate", "z"), ("score", "a"), ("generate", "c")]
    for index, (stage, key) in enumerate(written):
        runner.store_stage_cache(stage, key, {"result": index})
    runner.append_events(snapshot.run_id, events[-1:])  # run_completed: commits the buffer
    conn = sqlite3.connect(db_path)
    try:
        inserted = conn.execute("SELECT stage, key FROM stage_cache ORDER BY rowid").fetchall()
    finally:
        conn.close()
    assert inserted == sorted(written)
    assert [runner.load_stage_cache(stage, key) for stage, key in written] == [
        {"result": index} for index in range(len(written))
    ]
