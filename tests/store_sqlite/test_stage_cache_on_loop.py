"""A run's stage-cache lookups are read on the event loop when the store can answer at once."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pytest
from themis.core._cache_reader import CacheReader
from themis.core.errors import StoreError
from themis_store_sqlite import SqliteRunStore

OpenStore = Callable[..., SqliteRunStore]


def _look_up_all(reader: CacheReader, keys: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def look(key: str) -> None:
        found[key] = await reader.load("score", key)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(look, key)

    anyio.run(main)
    return found


def _record_threads(store: SqliteRunStore) -> list[int]:
    """The thread of each read the store makes, recorded on the instance only."""
    threads: list[int] = []
    read = store._read_stage_cache

    def recording(conn: Any, items: Sequence[tuple[str, str]]) -> list[Any]:
        threads.append(threading.get_ident())
        return read(conn, items)

    store._read_stage_cache = recording  # type: ignore[method-assign]
    return threads


def test_lookups_are_read_on_the_loop_without_a_worker_thread(open_store: OpenStore) -> None:
    writer, store = open_store(), open_store()
    writer.store_stage_cache("score", "k1", {"result": 1})
    store.load_stage_cache("score", "warm")  # opens the reader connection
    threads = _record_threads(store)
    found = _look_up_all(CacheReader(store), ["k0", "k1", "k2"])
    assert found == {"k0": None, "k1": {"result": 1}, "k2": None}
    assert threads == [threading.get_ident()]


def test_nowait_reads_see_the_writes_a_run_has_buffered(open_store: OpenStore) -> None:
    runner = open_store()
    runner.acquire_run("r")
    runner.store_stage_cache("parse", "buffered", {"result": 1})
    runner.load_stage_cache("parse", "other")
    assert runner._load_stage_cache_many_nowait([("parse", "buffered"), ("parse", "x")]) == [
        {"result": 1},
        None,
    ]
    runner.release_run("r")
    assert runner._load_stage_cache_many_nowait([("parse", "buffered")]) == [{"result": 1}]


def test_nowait_reads_of_a_store_in_memory(open_store: OpenStore) -> None:
    store = open_store(":memory:")
    store.store_stage_cache("score", "k", {"result": 2})
    assert store._load_stage_cache_many_nowait([("score", "k")]) == [{"result": 2}]


def test_a_reader_not_opened_yet_is_opened_in_a_worker_thread(open_store: OpenStore) -> None:
    """Opening checks (and may migrate) the schema, which can wait for another process."""
    writer = open_store()
    writer.store_stage_cache("score", "k1", {"result": 1})
    store = open_store()
    assert store._load_stage_cache_many_nowait([("score", "k1")]) is None
    threads = _record_threads(store)
    assert _look_up_all(CacheReader(store), ["k1", "k2"]) == {"k1": {"result": 1}, "k2": None}
    assert threads != [threading.get_ident()]
    assert store._load_stage_cache_many_nowait([("score", "k1")]) == [{"result": 1}]


def test_lookups_go_to_a_worker_thread_while_another_thread_reads(
    open_store: OpenStore,
) -> None:
    """The loop never waits for the reader's lock: it hands the batch to a thread instead."""
    store = open_store()
    store.store_stage_cache("score", "k1", {"result": 1})
    store.load_stage_cache("score", "warm")
    held, in_thread = threading.Event(), threading.Event()

    def hold_the_reader() -> None:
        with store._read_lock:
            held.set()
            in_thread.wait()

    holder = threading.Thread(target=hold_the_reader)
    holder.start()
    held.wait()
    assert store._load_stage_cache_many_nowait([("score", "k1")]) is None
    many = store._load_stage_cache_many

    def reached_the_thread(items: Sequence[tuple[str, str]]) -> list[Any]:
        in_thread.set()  # the holder lets go once the batch is on its way in a thread
        return many(items)

    store._load_stage_cache_many = reached_the_thread  # type: ignore[method-assign]
    try:
        found = _look_up_all(CacheReader(store), ["k1", "k2"])
    finally:
        in_thread.set()
        holder.join()
    assert found == {"k1": {"result": 1}, "k2": None}


def test_a_subclass_that_reads_its_own_way_is_never_read_on_the_loop(
    open_store: OpenStore,
) -> None:
    class Counting(SqliteRunStore):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.threads: list[int] = []

        def load_stage_cache(self, stage: str, key: str) -> Any:
            self.threads.append(threading.get_ident())
            return super().load_stage_cache(stage, key)

    store = Counting(open_store().path)
    try:
        store.store_stage_cache("score", "k1", {"result": 1})
        store.load_stage_cache("score", "warm")
        store.threads.clear()
        assert store._load_stage_cache_many_nowait([("score", "k1")]) is None
        assert _look_up_all(CacheReader(store), ["k1", "k2"]) == {"k1": {"result": 1}, "k2": None}
        assert len(store.threads) == 2
        assert threading.get_ident() not in store.threads
    finally:
        store.close()


def test_a_failing_read_on_the_loop_names_the_file(open_store: OpenStore) -> None:
    store = open_store()
    store.load_stage_cache("score", "warm")
    writer = open_store()
    writer.initialize()
    assert writer._writer is not None
    writer._writer.execute("ALTER TABLE stage_cache RENAME TO stage_cache_gone")
    with pytest.raises(StoreError, match=re.escape(store.path)):
        store._load_stage_cache_many_nowait([("score", "k1")])
    assert store._read_lock.acquire(blocking=False)  # released after the failure
    store._read_lock.release()
