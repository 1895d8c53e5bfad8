"""The SQLite store takes a run's records (``record_maker``) as the writer hands them: it
stores each record's event JSON, the same text as the event's, and its folder reads the
records by position, folding what folding the events read back would."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from themis import Experiment
from themis.core._event_log import event_of
from themis.core._fold_state import folded_state
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.events import RunEvent
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.projections import build_run_result
from themis.core.results import ExecutionState
from themis_store_sqlite import SqliteRunStore

OpenStore = Callable[..., SqliteRunStore]


class _Answers:
    component_id = "test/answers"
    version = "1"

    def fingerprint(self) -> str:
        return "answers"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)


def _experiment(n: int = 40, *, samples: int = 2) -> Experiment:
    cases = [Case(case_id=f"c{i}", input=str(i % 3), expected_output="1") for i in range(n)]
    return Experiment(
        generation=GenerationConfig(
            generator=_Answers(),
            candidate_policy={"num_samples": samples},
            reducer="builtin/majority_vote" if samples > 1 else None,
        ),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match", "builtin/f1"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(event_batch_size=7),
    )


class _Watched(SqliteRunStore):
    """Records what the writer hands the store, without changing how it appends."""

    handed: list[tuple[list[Any], int]]

    def _append_items(self, run_id: str, items: list[Any], first_seq: int) -> None:
        self.handed.append((list(items), first_seq))
        super()._append_items(run_id, items, first_seq)


class _EventsOnly(SqliteRunStore):
    """A store whose own ``append_events`` must see every event: records never reach it."""

    appended: list[RunEvent]

    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
        assert all(isinstance(e, RunEvent) for e in events)
        self.appended.extend(events)
        super().append_events(run_id, events)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json")


def test_a_run_hands_records_and_stores_their_events_json(tmp_path: Path) -> None:
    store = _Watched(tmp_path / "runs.sqlite3")
    store.handed = []
    try:
        result = _experiment(samples=1).run(store=store)
        events = store.query_events(result.run_id)
        assert store._writer is not None
        rows = store._writer.execute(
            "SELECT seq, json FROM events WHERE run_id = ? ORDER BY seq", (result.run_id,)
        ).fetchall()
    finally:
        store.close()
    items = [(seq, item) for batch, first in store.handed for seq, item in enumerate(batch, first)]
    assert any(type(item) is tuple for _, item in items), "no record reached the store"
    assert [seq for seq, _ in items] == list(range(1, len(events) + 1))
    stored = dict(rows)
    for seq, item in items:
        # The stored text is the JSON of the event the record stands for.
        assert stored[seq] == event_of(item, seq).model_dump_json()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert result.status == "completed" and len(result.cases) == 40


def test_the_folder_folds_the_records_as_the_events_read_back_fold(
    open_store: OpenStore,
) -> None:
    store = open_store()
    result = _experiment().run(store=store)
    run_id = result.run_id
    events = store.query_events(run_id)
    snapshot = store.load_snapshot(run_id)
    assert snapshot is not None
    assert _dump(result) == _dump(build_run_result(snapshot, events))
    folder = store.projection_folder(run_id)
    assert folder is not None
    refolded = ExecutionState.from_events(run_id, events, snapshot=snapshot)
    assert _dump(folded_state(folder)) == _dump(refolded)
    # The run is at rest: a new store reads the kept result, and resumes from the kept
    # fold state, as it would have from the events' fold.
    reader = open_store()
    assert reader.get_projection(run_id, "run_result") == _dump(result)
    resumed = reader.projection_folder(run_id)
    assert resumed is not None
    assert _dump(folded_state(resumed)) == _dump(refolded)


def test_a_store_that_takes_events_gets_events_with_dense_seqs(
    open_store: OpenStore, tmp_path: Path
) -> None:
    plain = open_store()
    own = _EventsOnly(tmp_path / "own.sqlite3")
    own.appended = []
    try:
        assert plain._items_appender() is not None
        assert own._items_appender() is None
        first = _experiment().run(store=plain)
        second = _experiment().run(store=own)
    finally:
        own.close()
    assert [e.seq for e in own.appended] == list(range(1, len(own.appended) + 1))
    assert len(own.appended) == len(plain.query_events(first.run_id))
    assert _dump(first) == _dump(second)
