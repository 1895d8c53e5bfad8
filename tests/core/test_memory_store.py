"""InMemoryRunStore: the RunStore contract, its hot path, and the store factory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from themis.core.config import StorageConfig
from themis.core.errors import StoreConflictError, StoreError
from themis.core.events import RunEvent
from themis.core.projections import build_projection
from themis.core.protocols import RunStore
from themis.core.registry import Registry, use_registry
from themis.core.snapshot import RunSnapshot
from themis.core.stores import (
    BaseRunStore,
    InMemoryRunStore,
    available_store_backends,
    create_run_store,
    memory_store,
    register_store_backend,
)
from themis.testing import RunStoreContract
from themis.testing._run_events import RunEvents, sample_run, sample_snapshot


class TestInMemoryRunStoreContract(RunStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[RunStore]:
        store = InMemoryRunStore()
        store.initialize()
        yield store
        store.close()


class _CountingStore(InMemoryRunStore):
    """Counts ``query_events`` calls and the events they return."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[tuple[int | None, int]] = []

    def query_events(self, run_id: str, **kwargs: Any) -> list[RunEvent]:
        events = super().query_events(run_id, **kwargs)
        self.queries.append((kwargs.get("after_seq"), len(events)))
        return events


@pytest.fixture
def snapshot() -> RunSnapshot:
    return sample_snapshot()


def test_memory_store_does_not_block_the_event_loop() -> None:
    assert InMemoryRunStore.blocking is False
    assert BaseRunStore.blocking is True


def test_memory_store_keeps_the_appended_event_objects(snapshot: RunSnapshot) -> None:
    """The hot path stores events as given: no copy, no re-validation, no JSON."""
    store = InMemoryRunStore()
    events = sample_run(snapshot)
    store.append_events(snapshot.run_id, events)
    stored = store.query_events(snapshot.run_id)
    assert all(a is b for a, b in zip(stored, events, strict=True))


def test_append_without_seq_is_refused_with_the_fix(snapshot: RunSnapshot) -> None:
    store = InMemoryRunStore()
    event = RunEvents(snapshot).run_started().model_copy(update={"seq": None})
    with pytest.raises(StoreError, match="persist_event"):
        store.append_events(snapshot.run_id, [event])
    assert store.query_events(snapshot.run_id) == []


def test_append_under_another_run_id_is_refused(snapshot: RunSnapshot) -> None:
    store = InMemoryRunStore()
    event = RunEvents(snapshot).run_started()
    with pytest.raises(StoreError, match="its own run_id"):
        store.append_events("f" * 64, [event])


def test_conflict_inside_one_batch_is_refused(snapshot: RunSnapshot) -> None:
    store = InMemoryRunStore()
    first = RunEvents(snapshot).run_started()
    clash = RunEvents(snapshot).run_failed()
    with pytest.raises(StoreConflictError, match="seq=1"):
        store.append_events(snapshot.run_id, [first, clash])
    assert store.query_events(snapshot.run_id) == []


def test_out_of_order_batches_are_kept_in_seq_order(snapshot: RunSnapshot) -> None:
    store = InMemoryRunStore()
    events = sample_run(snapshot)
    store.append_events(snapshot.run_id, events[5:])
    store.append_events(snapshot.run_id, list(reversed(events[:5])))
    assert store.query_events(snapshot.run_id) == events
    assert store.query_events(snapshot.run_id, after_seq=4) == events[4:]


def test_persist_event_assigns_the_next_seq(snapshot: RunSnapshot) -> None:
    store = InMemoryRunStore()
    store.persist_snapshot(snapshot)
    store.append_events(snapshot.run_id, sample_run(snapshot)[:3])
    unnumbered = RunEvents(snapshot).run_failed().model_copy(update={"seq": None})
    store.persist_event(unnumbered)
    assert [e.seq for e in store.query_events(snapshot.run_id)] == [1, 2, 3, 4]


def test_list_runs_lists_persisted_runs_in_order() -> None:
    store = InMemoryRunStore()
    first, second = sample_snapshot(label="a"), sample_snapshot(label="b")
    store.persist_snapshot(first)
    store.persist_snapshot(second)
    assert store.list_runs() == [first.run_id, second.run_id]


def test_base_store_cannot_list_runs_and_says_so() -> None:
    class Minimal(InMemoryRunStore):
        list_runs = BaseRunStore.list_runs

    with pytest.raises(NotImplementedError, match="cannot list its runs"):
        Minimal().list_runs()


def test_memory_store_has_no_stage_cache() -> None:
    store = InMemoryRunStore()
    store.store_stage_cache("generate", "k", {"result": 1})
    assert store.load_stage_cache("generate", "k") is None


def test_get_projection_catches_up_from_the_last_folded_seq(snapshot: RunSnapshot) -> None:
    """Build on read never re-reads the whole log once it has folded it."""
    store = _CountingStore()
    store.persist_snapshot(snapshot)
    events = sample_run(snapshot)
    store.append_events(snapshot.run_id, events[:6])
    store.get_projection(snapshot.run_id, "run_result")
    store.append_events(snapshot.run_id, events[6:])
    store.queries.clear()
    store.get_projection(snapshot.run_id, "run_result")
    assert store.queries == [(5, len(events) - 5)]
    store.queries.clear()
    store.get_projection(snapshot.run_id, "trace_view")
    assert store.queries == [(len(events) - 1, 1)]


def test_subclass_without_super_init_still_folds_projections(snapshot: RunSnapshot) -> None:
    class Bare(BaseRunStore):
        def __init__(self) -> None:
            self.inner = InMemoryRunStore()

        def initialize(self) -> None: ...

        def persist_snapshot(self, snapshot: RunSnapshot) -> None:
            self.inner.persist_snapshot(snapshot)

        def load_snapshot(self, run_id: str) -> RunSnapshot | None:
            return self.inner.load_snapshot(run_id)

        def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
            self.inner.append_events(run_id, events)

        def query_events(self, run_id: str, **kwargs: Any) -> list[RunEvent]:
            return self.inner.query_events(run_id, **kwargs)

        def store_blob(self, blob: bytes, media_type: str) -> str:
            return self.inner.store_blob(blob, media_type)

        def load_blob(self, ref: str) -> tuple[str, bytes] | None:
            return self.inner.load_blob(ref)

        def clear_run(self, run_id: str) -> None:
            self.inner.clear_run(run_id)

    store = Bare()
    store.persist_snapshot(snapshot)
    events = sample_run(snapshot)
    store.append_events(snapshot.run_id, events)
    expected = build_projection("benchmark_result", snapshot, events)
    assert store.get_projection(snapshot.run_id, "benchmark_result") == expected
    assert store.resume(snapshot.run_id) is not None


def test_clear_run_without_forgetting_is_detected_as_stale(snapshot: RunSnapshot) -> None:
    """A third-party clear_run that forgets the projection cache still reads right."""

    class Forgetful(InMemoryRunStore):
        def clear_run(self, run_id: str) -> None:
            self._snapshots.pop(run_id, None)
            self._logs.pop(run_id, None)

    store = Forgetful()
    store.persist_snapshot(snapshot)
    store.append_events(snapshot.run_id, sample_run(snapshot))
    store.get_projection(snapshot.run_id, "run_result")
    store.clear_run(snapshot.run_id)
    store.persist_snapshot(snapshot)
    rerun = RunEvents(snapshot, start=RunEvents(snapshot)._start.replace(year=2030))
    fresh = [rerun.run_started(until_stage="parse")] + [
        rerun.generated(f"c{i}") for i in range(1, 14)
    ]
    store.append_events(snapshot.run_id, fresh)
    assert store.get_projection(snapshot.run_id, "timeline_view") == build_projection(
        "timeline_view", snapshot, fresh
    )


def test_fold_on_append_hook_feeds_a_cached_folder(snapshot: RunSnapshot) -> None:
    class FoldOnAppend(_CountingStore):
        def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
            super().append_events(run_id, events)
            self._fold_appended(run_id, events)

    store = FoldOnAppend()
    store.persist_snapshot(snapshot)
    events = sample_run(snapshot)
    store.append_events(snapshot.run_id, events[:2])
    folder = store.projection_folder(snapshot.run_id)
    assert folder is not None and folder.last_seq == 2
    store.append_events(snapshot.run_id, events[2:])
    assert folder.last_seq == len(events)
    store.queries.clear()
    payload = store.get_projection(snapshot.run_id, "execution_state")
    assert store.queries == [(len(events) - 1, 1)]
    assert payload == build_projection("execution_state", snapshot, events)


def test_corpus_scorers_set_on_the_store_fill_metric_aggregates(snapshot: RunSnapshot) -> None:
    store = InMemoryRunStore()
    store.persist_snapshot(snapshot)
    store.append_events(snapshot.run_id, sample_run(snapshot))
    before = store.get_projection(snapshot.run_id, "benchmark_result")
    assert before["metric_aggregates"] == {}
    store.set_corpus_scorers(snapshot.run_id, {"test/exact": lambda scores: 0.25 * len(scores)})
    after = store.get_projection(snapshot.run_id, "benchmark_result")
    assert after["metric_aggregates"] == {"test/exact": 0.25}


def test_memory_store_helper_returns_an_empty_store() -> None:
    first, second = memory_store(), memory_store()
    assert isinstance(first, InMemoryRunStore)
    assert first is not second
    assert first.list_runs() == []


@pytest.fixture
def registry() -> Iterator[Registry]:
    with use_registry(Registry(autoload=False, env={})) as registry:
        yield registry


def test_create_run_store_resolves_the_memory_alias(registry: Registry) -> None:
    store = create_run_store(StorageConfig(store="memory"))
    assert isinstance(store, InMemoryRunStore)
    assert isinstance(create_run_store(StorageConfig(store="core/memory")), InMemoryRunStore)


def test_registered_backend_builds_from_storage_parameters(registry: Registry) -> None:
    built: list[StorageConfig] = []

    def builder(storage: StorageConfig) -> RunStore:
        built.append(storage)
        return InMemoryRunStore()

    register_store_backend("scratch", builder)
    store = create_run_store(StorageConfig(store="scratch", parameters={"root": "/tmp/x"}))
    assert isinstance(store, InMemoryRunStore)
    assert built == [StorageConfig(store="scratch", parameters={"root": "/tmp/x"})]
    assert isinstance(create_run_store(StorageConfig(store="local/scratch")), InMemoryRunStore)


def test_available_store_backends_names_aliases(registry: Registry) -> None:
    register_store_backend("scratch", lambda storage: InMemoryRunStore())
    names = available_store_backends()
    assert "memory" in names and "scratch" in names
    assert "core/memory" not in names


def test_create_run_store_refuses_a_non_store(registry: Registry) -> None:
    from themis.core.errors import ComponentContractError

    registry.register("store", "local/not_a_store", lambda: object(), aliases=("notastore",))
    with pytest.raises(ComponentContractError, match="not a RunStore"):
        create_run_store(StorageConfig(store="notastore"))


def test_a_store_folder_keeps_no_timeline_and_the_view_comes_from_the_log(
    snapshot: RunSnapshot,
) -> None:
    store = InMemoryRunStore()
    store.persist_snapshot(snapshot)
    events = sample_run(snapshot)
    store.append_events(snapshot.run_id, events[:3])
    assert store.get_projection(snapshot.run_id, "timeline_view") == build_projection(
        "timeline_view", snapshot, events[:3]
    )
    folder = store.projection_folder(snapshot.run_id)
    assert folder is not None and not folder.keeps_timeline
    with pytest.raises(ValueError, match="build_timeline_view"):
        folder.timeline_view()
    # Events appended after the folder was built show up too: the view is read, not kept.
    store.append_events(snapshot.run_id, events[3:])
    timeline = store.get_projection(snapshot.run_id, "timeline_view")
    assert timeline == build_projection("timeline_view", snapshot, events)
    assert [entry["index"] for entry in timeline["entries"]] == list(range(1, len(events) + 1))
