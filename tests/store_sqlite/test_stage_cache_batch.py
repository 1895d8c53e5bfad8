"""Stage-cache lookups of concurrent cases are answered in one query; writes stay JSON."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from themis.core._cache_reader import CacheReader
from themis_store_sqlite import SqliteRunStore

OpenStore = Callable[..., SqliteRunStore]


def test_many_lookups_answer_each_in_order(open_store: OpenStore) -> None:
    writer, store = open_store(), open_store()
    writer.store_stage_cache("generate", "g1", {"result": 1})
    writer.store_stage_cache("score", "s1", {"result": 2.5})
    writer.store_stage_cache("score", "g1", {"result": "same key, other stage"})
    items = [
        ("score", "s1"),
        ("generate", "missing"),
        ("generate", "g1"),
        ("score", "g1"),
        ("parse", "g1"),
        ("score", "s1"),
    ]
    assert store._load_stage_cache_many(items) == [
        store.load_stage_cache(stage, key) for stage, key in items
    ]
    assert store._load_stage_cache_many(items) == [
        {"result": 2.5},
        None,
        {"result": 1},
        {"result": "same key, other stage"},
        None,
        {"result": 2.5},
    ]


def test_a_key_asked_twice_gets_two_payloads(open_store: OpenStore) -> None:
    store = open_store()
    store.store_stage_cache("score", "k", {"result": [1]})
    first, second = store._load_stage_cache_many([("score", "k"), ("score", "k")])
    assert first == second
    assert first is not second


def test_many_lookups_see_the_writes_a_run_has_buffered(open_store: OpenStore) -> None:
    runner = open_store()
    runner.acquire_run("r")
    runner.store_stage_cache("parse", "buffered", {"result": 1})
    assert runner._load_stage_cache_many([("parse", "buffered"), ("parse", "other")]) == [
        {"result": 1},
        None,
    ]
    runner.release_run("r")


def test_more_lookups_than_one_query_takes(open_store: OpenStore) -> None:
    writer, store = open_store(), open_store()
    for index in range(0, 1300, 3):
        writer.store_stage_cache("generate", f"k{index}", {"result": index})
    items = [("generate", f"k{index}") for index in range(1300)]
    assert store._load_stage_cache_many(items) == [
        {"result": index} if index % 3 == 0 else None for index in range(1300)
    ]


def test_a_subclass_that_reads_the_cache_its_own_way_is_asked_each_time(
    open_store: OpenStore,
) -> None:
    class Counting(SqliteRunStore):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.asked: list[tuple[str, str]] = []

        def load_stage_cache(self, stage: str, key: str) -> Any:
            self.asked.append((stage, key))
            return super().load_stage_cache(stage, key)

    store = Counting(open_store().path)
    store.store_stage_cache("score", "k", {"result": 1})
    assert store._load_stage_cache_many([("score", "k"), ("score", "x")]) == [{"result": 1}, None]
    assert store.asked == [("score", "k"), ("score", "x")]
    store.close()


def test_concurrent_lookups_reach_the_store_in_one_call(open_store: OpenStore) -> None:
    class Batching(SqliteRunStore):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.calls: list[int] = []

        def _load_stage_cache_many(self, items: Any) -> list[Any]:
            self.calls.append(len(items))
            return super()._load_stage_cache_many(items)

    writer = open_store()
    writer.store_stage_cache("score", "k3", {"result": 3})
    store = Batching(writer.path)
    reader = CacheReader(store)
    found: dict[int, Any] = {}

    async def look(index: int) -> None:
        found[index] = await reader.load("score", f"k{index}")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for index in range(8):
                tg.start_soon(look, index)

    anyio.run(main)
    assert store.calls == [8]
    assert found == {index: ({"result": 3} if index == 3 else None) for index in range(8)}
    store.close()


def test_a_failing_batch_fails_each_lookup_in_it(open_store: OpenStore) -> None:
    class Broken(SqliteRunStore):
        def _load_stage_cache_many(self, items: Any) -> list[Any]:
            raise sqlite3.OperationalError("disk I/O error")

    store = Broken(open_store().path)
    reader = CacheReader(store)
    errors: list[BaseException] = []

    async def look(index: int) -> None:
        try:
            await reader.load("score", f"k{index}")
        except sqlite3.OperationalError as exc:
            errors.append(exc)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for index in range(3):
                tg.start_soon(look, index)

    anyio.run(main)
    assert len(errors) == 3
    store.close()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_payload_that_is_not_json_is_refused(store: SqliteRunStore, value: float) -> None:
    with pytest.raises(ValueError):
        store.store_stage_cache("score", "k", {"result": {"value": [value]}})
    assert store.load_stage_cache("score", "k") is None


def test_payloads_round_trip_through_the_file(open_store: OpenStore) -> None:
    payload = {
        "source_run_id": "r",
        "result": {"text": "NaN and Infinity are words here", "big": 2**70, "x": -0.5},
        "unicode": "héllo ✓",
        "nested": [None, True, {"k": [1, 2.5e-8]}],
    }
    writer = open_store()
    writer.store_stage_cache("generate", "k", payload)
    assert open_store().load_stage_cache("generate", "k") == payload
