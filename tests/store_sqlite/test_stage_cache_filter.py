"""A run's lookups of keys the stage cache certainly lacks skip the database (key filter)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from themis import Experiment
from themis.core._cache_reader import CacheReader
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.models import Case, Dataset, GenerationResult
from themis_store_sqlite import SqliteRunStore, _database
from themis_store_sqlite._key_filter import KeyFilter

OpenStore = Callable[..., SqliteRunStore]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=70)), max_size=60))
def test_a_filter_never_forgets_a_key_it_was_given(pairs: list[tuple[str, str]]) -> None:
    key_filter = KeyFilter(0)
    for stage, key in pairs:
        key_filter.add(stage, key)
    assert all(key_filter.may_contain(stage, key) for stage, key in pairs)


def test_a_filter_rules_out_most_keys_it_was_not_given() -> None:
    key_filter = KeyFilter(0)
    for index in range(20_000):
        key_filter.add("score", f"k{index}")
    maybe = sum(key_filter.may_contain("score", f"other{index}") for index in range(20_000))
    assert maybe < 100  # about 0.01% expected at this load


def _record_reads(store: SqliteRunStore) -> list[Sequence[tuple[str, str]]]:
    """The items of each database read of the stage cache, recorded on the instance only."""
    reads: list[Sequence[tuple[str, str]]] = []
    read = store._read_stage_cache

    def recording(conn: Any, items: Sequence[tuple[str, str]]) -> list[Any]:
        reads.append(list(items))
        return read(conn, items)

    store._read_stage_cache = recording  # type: ignore[method-assign]
    return reads


def _look_up(store: SqliteRunStore, stage: str, key: str) -> Any:
    reader = CacheReader(store)

    async def main() -> Any:
        return await reader.load(stage, key)

    return anyio.run(main)


def _seeded(store: SqliteRunStore, run_id: str = "r") -> None:
    """Hold a run's lease and let a lookup ask for the filter, then scan it in a write."""
    store.acquire_run(run_id)
    _look_up(store, "score", "first")
    store.acquire_run(run_id + "-next")  # a write transaction
    assert store._key_filter is not None


def test_misses_of_a_run_skip_the_database_and_hits_still_read_it(open_store: OpenStore) -> None:
    open_store().store_stage_cache("score", "stored", {"result": 1})
    store = open_store()
    _seeded(store)
    reads = _record_reads(store)
    assert [_look_up(store, "score", f"absent-{i}") for i in range(50)] == [None] * 50
    assert _look_up(store, "score", "stored") == {"result": 1}
    assert reads == [[("score", "stored")]]


def test_writes_of_this_store_are_found_buffered_and_after_their_commit(
    open_store: OpenStore,
) -> None:
    store = open_store()
    _seeded(store)
    store.store_stage_cache("generate", "mine", {"result": 2})
    assert not store._stage_cache_absent("generate", "mine")  # in the buffer
    store.acquire_run("flush")
    store.release_run("flush")  # commits the buffer
    assert store._cache_buffer == {}
    assert not store._stage_cache_absent("generate", "mine")
    assert _look_up(store, "generate", "mine") == {"result": 2}
    assert store._stage_cache_absent("generate", "other")


def test_a_commit_of_another_connection_turns_the_filter_off_at_the_next_write(
    open_store: OpenStore,
) -> None:
    store, other = open_store(), open_store()
    _seeded(store)
    other.store_stage_cache("score", "theirs", {"result": 3})
    store.acquire_run("next")  # sees data_version move
    assert store._key_filter is None and store._key_filter_off
    assert not store._stage_cache_absent("score", "theirs")
    assert _look_up(store, "score", "theirs") == {"result": 3}


def test_a_run_whose_lookups_all_hit_never_scans_the_cache(open_store: OpenStore) -> None:
    open_store().store_stage_cache("score", "stored", {"result": 1})
    store = open_store()
    store.acquire_run("r")
    assert _look_up(store, "score", "stored") == {"result": 1}
    assert not store._key_filter_wanted
    store.acquire_run("r-next")
    assert store._key_filter is None and not store._key_filter_off
    assert _look_up(store, "score", "absent") is None  # a miss asks for it
    store.acquire_run("r-last")
    assert store._key_filter is not None


def test_a_cache_too_large_to_scan_gets_no_filter(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_database, "SEED_LIMIT", 2)
    writer = open_store()
    for index in range(3):
        writer.store_stage_cache("score", f"k{index}", {"result": index})
    store = open_store()
    store.acquire_run("r")
    _look_up(store, "score", "first")
    store.acquire_run("r-next")
    assert store._key_filter is None and store._key_filter_off
    assert _look_up(store, "score", "k2") == {"result": 2}


def test_a_filter_answers_only_while_the_store_runs_a_run(open_store: OpenStore) -> None:
    store = open_store()
    assert not store._stage_cache_absent("score", "k")  # no lease: never asked for
    assert not store._key_filter_wanted
    _seeded(store)
    assert store._stage_cache_absent("score", "k")
    for run_id in ("r", "r-next"):
        store.release_run(run_id)
    assert not store._stage_cache_absent("score", "k")


def test_a_subclass_that_reads_the_cache_its_own_way_gets_no_filter(tmp_path: Path) -> None:
    db_path = tmp_path / "runs.sqlite3"

    class Reading(SqliteRunStore):
        def load_stage_cache(self, stage: str, key: str) -> Any:
            return super().load_stage_cache(stage, key)

    store = Reading(db_path)
    try:
        store.acquire_run("r")
        _look_up(store, "score", "first")
        store.acquire_run("r-next")
        assert store._key_filter is None
        assert not store._stage_cache_absent("score", "first")
    finally:
        store.close()


class Echo:
    """Answers each case with its input and counts the calls."""

    component_id = "test/echo"
    version = "1"

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> str:
        return "echo"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.calls += 1
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)


def _experiment(generator: Echo, n: int) -> Experiment:
    cases = [Case(case_id=f"c{i}", input=str(i), expected_output=str(i % 3)) for i in range(n)]
    return Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(
            existing_run_policy="rerun", max_concurrent_tasks=4, event_batch_size=8
        ),
        git_commit="test",
    )


def _cache_hits(store: SqliteRunStore, run_id: str) -> list[bool]:
    return [
        bool(event.cache_hit)  # type: ignore[attr-defined]
        for event in store.query_events(
            run_id, event_types=["generation_completed", "score_completed"]
        )
    ]


def test_a_first_run_reads_the_database_for_only_its_first_lookups(tmp_path: Path) -> None:
    db_path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(db_path)
    reads = _record_reads(store)
    try:
        generator = Echo()
        result = _experiment(generator, 300).run(store=store)
        assert generator.calls == 300
        assert _cache_hits(store, result.run_id) == [False] * 600
    finally:
        store.close()
    # 600 lookups in batches of at most 4: without the filter, more than 150 reads.
    assert 0 < len(reads) <= 10


@pytest.mark.parametrize("same_store", [True, False])
def test_a_second_run_hits_every_entry_of_the_first(tmp_path: Path, same_store: bool) -> None:
    db_path = tmp_path / "runs.sqlite3"
    store = SqliteRunStore(db_path)
    try:
        _experiment(Echo(), 60).run(store=store)
        if not same_store:
            store.close()
            store = SqliteRunStore(db_path)
        generator = Echo()
        result = _experiment(generator, 60).run(store=store)
        assert generator.calls == 0
        assert _cache_hits(store, result.run_id) == [True] * 120
    finally:
        store.close()
