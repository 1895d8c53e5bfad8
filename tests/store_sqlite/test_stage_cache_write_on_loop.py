"""A run's stage-cache writes are buffered on the event loop when that needs no database work.

The run's writer hands each batch's cache entries to ``_store_stage_cache_many_nowait`` on
the loop; the store takes them only while they just go into its in-memory buffer, and
otherwise stores none and answers False (the writer then stores them in a worker thread).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from themis.core._observers import Observers
from themis.core._writer import EventWriter
from themis.core.events import RunEvent
from themis.core.snapshot import RunSnapshot
from themis_store_sqlite import SqliteRunStore
from themis_store_sqlite import store as store_module

OpenStore = Callable[..., SqliteRunStore]
MakeEvents = Callable[..., list[RunEvent]]


def _running(open_store: OpenStore, run_id: str = "r") -> SqliteRunStore:
    runner = open_store()
    runner.acquire_run(run_id)
    return runner


def test_entries_are_buffered_readable_here_and_committed_with_a_run_level_batch(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    runner = open_store()
    other = open_store()
    run_id = snapshot.run_id
    events = make_events(run_id, snapshot)
    runner.persist_snapshot(snapshot)
    runner.acquire_run(run_id)
    runner.append_events(run_id, events[:1])  # run_started

    entries = [("generate", "k0", {"result": 0}), ("parse", "k1", [1, "x"])]
    assert runner._store_stage_cache_many_nowait(entries) is True

    assert runner.load_stage_cache("generate", "k0") == {"result": 0}
    assert runner._load_stage_cache_many([("parse", "k1")]) == [[1, "x"]]
    assert other.load_stage_cache("generate", "k0") is None  # buffered, not committed
    runner.append_events(run_id, events[1:])  # ends with run_completed
    assert other.load_stage_cache("generate", "k0") == {"result": 0}
    assert other.load_stage_cache("parse", "k1") == [1, "x"]


def test_the_last_write_of_a_key_wins(open_store: OpenStore) -> None:
    runner = _running(open_store)
    assert runner._store_stage_cache_many_nowait([("s", "k", 1), ("s", "k", 2)]) is True
    assert runner.load_stage_cache("s", "k") == 2
    runner.store_stage_cache("s", "k", 3)
    assert runner._store_stage_cache_many_nowait([("s", "k", 4)]) is True
    assert runner.load_stage_cache("s", "k") == 4


def test_no_entry_is_taken_when_no_run_holds_the_store(open_store: OpenStore) -> None:
    # Outside a run each write is committed at once: that is database work.
    store = open_store()
    assert store._store_stage_cache_many_nowait([("s", "k", 1)]) is False
    assert store._cache_buffer == {}
    assert store.load_stage_cache("s", "k") is None


def test_no_entry_is_taken_when_the_batch_could_fill_the_buffer(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_CACHE_BUFFER_LIMIT", 3)
    runner = _running(open_store)
    assert runner._store_stage_cache_many_nowait([("s", "a", 1), ("s", "b", 2)]) is True
    assert runner._store_stage_cache_many_nowait([("s", "c", 3)]) is False
    assert set(runner._cache_buffer) == {("s", "a"), ("s", "b")}


def test_no_entry_is_taken_when_a_payload_cannot_be_encoded(open_store: OpenStore) -> None:
    runner = _running(open_store)
    entries = [("s", "ok", 1), ("s", "nan", math.nan)]
    assert runner._store_stage_cache_many_nowait(entries) is False
    assert runner._cache_buffer == {}


def test_no_entry_is_taken_while_another_thread_holds_the_writers_lock(
    open_store: OpenStore,
) -> None:
    runner = _running(open_store)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with runner._write_lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        assert runner._store_stage_cache_many_nowait([("s", "k", 1)]) is False
    finally:
        release.set()
        thread.join()
    assert runner._cache_buffer == {}
    assert runner._store_stage_cache_many_nowait([("s", "k", 1)]) is True


def test_a_subclass_that_stores_its_own_way_is_not_bypassed(open_store: OpenStore) -> None:
    class Custom(SqliteRunStore):
        def store_stage_cache(self, stage: str, key: str, payload: Any) -> None:
            super().store_stage_cache(stage, key, payload)

    custom = Custom(open_store().path)
    try:
        custom.acquire_run("r")
        assert custom._store_stage_cache_many_nowait([("s", "k", 1)]) is False
        assert custom._cache_buffer == {}
    finally:
        custom.close()


def test_the_writer_buffers_a_batchs_cache_writes_on_the_loop(
    open_store: OpenStore, snapshot: RunSnapshot, make_events: MakeEvents
) -> None:
    run_id = snapshot.run_id
    runner = open_store()
    runner.persist_snapshot(snapshot)
    runner.acquire_run(run_id)
    events = make_events(run_id, snapshot)
    threads: list[int] = []
    store_one = runner.store_stage_cache

    def recording(stage: str, key: str, payload: Any) -> None:
        threads.append(threading.get_ident())
        store_one(stage, key, payload)

    runner.store_stage_cache = recording  # type: ignore[method-assign]
    writer = EventWriter(
        runner,
        run_id,
        next_seq=0,
        batch_size=256,
        flush_interval=60.0,
        retry_attempts=1,
        retry_delay=0.0,
        observers=Observers([], None),
    )

    async def main() -> None:
        for event in events[:-1]:
            writer.emit(event)
        writer.add_cache_write("generate", "k0", {"result": 0})
        writer.add_cache_write("score", "k1", {"result": 1})
        await writer.flush()

    anyio.run(main)
    assert threads == []  # no entry went through store_stage_cache (a worker thread)
    assert runner.load_stage_cache("generate", "k0") == {"result": 0}
    assert runner.load_stage_cache("score", "k1") == {"result": 1}
    assert len(runner.query_events(run_id)) == len(events) - 1
