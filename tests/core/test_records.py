"""Events made as records: the pipeline's exact successes travel and are kept as tuples.

What a store, a subscriber or a reader gets is the event each record stands for, equal
to the one the generated ``maker`` builds; the in-memory store's folder reads the records
by position and must fold exactly what folding the events read back would.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from themis import Experiment, InMemoryRunStore
from themis.core._construct import maker
from themis.core._event_log import EventLog, event_of, record_maker
from themis.core._fold_speed import ExactFields
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.events import (
    GenerationCompletedEvent,
    RunEvent,
    RunStartedEvent,
    ScoreCompletedEvent,
)
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.projections import ProjectionFolder, build_run_result

_CASE = ("run_id", "case_id", "dataset_id", "case_key")
_NAMES = (*_CASE, "candidate_id", "candidate_index", "result")
_IDS = {"run_id": "r", "case_id": "c", "dataset_id": "d", "case_key": "d:c"}


def test_a_record_stands_for_the_event_the_maker_builds() -> None:
    before = dt.datetime.now(dt.UTC)
    record = record_maker(
        GenerationCompletedEvent, *_NAMES, fields_set=ExactFields(_NAMES), shared=_CASE
    )(_IDS, candidate_id="c-0", candidate_index=0, result={"final_output": "7"})
    after = dt.datetime.now(dt.UTC)
    assert type(record) is tuple and record[0] is GenerationCompletedEvent
    event = event_of(record, 12)
    built = maker(GenerationCompletedEvent, *_NAMES, shared=_CASE)(
        _IDS, candidate_id="c-0", candidate_index=0, result={"final_output": "7"}
    )
    # The record's time is a float until the event is rebuilt: then an aware UTC datetime.
    assert type(event.occurred_at) is dt.datetime
    assert event.occurred_at.tzinfo is dt.UTC
    assert before - dt.timedelta(microseconds=1) <= event.occurred_at <= after
    built.__dict__.update(occurred_at=event.occurred_at, seq=12)
    assert event == built
    assert list(event.__dict__) == list(built.__dict__)  # declared order, as pydantic's
    assert event.model_dump_json() == built.model_dump_json()
    assert type(event.model_fields_set) is ExactFields
    assert event.model_fields_set == set(_NAMES)
    assert event.__pydantic_extra__ == {}


def test_a_record_maker_refuses_what_cannot_be_a_record() -> None:
    with pytest.raises(TypeError, match="no record maker"):
        record_maker(GenerationCompletedEvent, *_NAMES, "seq", fields_set=set())
    with pytest.raises(TypeError, match="must set"):
        record_maker(ScoreCompletedEvent, *_CASE, fields_set=set())


def _records(n: int) -> list[tuple[Any, ...]]:
    make = record_maker(
        GenerationCompletedEvent, *_NAMES, fields_set=ExactFields(_NAMES), shared=_CASE
    )
    return [
        make(_IDS, candidate_id=f"c-{i}", candidate_index=i, result={"final_output": str(i)})
        for i in range(n)
    ]


def test_the_log_keeps_records_and_reads_back_events_with_their_seqs() -> None:
    log = EventLog()
    started = RunStartedEvent(run_id="r", seq=1)
    log.extend([started])
    items: list[Any] = [*_records(3), RunStartedEvent(run_id="r", seq=5), *_records(2)]
    log.extend_items(items, 2)
    log.extend_items(_records(1), 8)
    assert log.last_seq() == 8
    read = log.after(None)
    assert [e.seq for e in read] == list(range(1, 9))
    assert all(isinstance(e, RunEvent) for e in read)
    assert read[0] == started
    assert [e.candidate_id for e in read if e.event_type == "generation_completed"] == [
        "c-0",
        "c-1",
        "c-2",
        "c-0",
        "c-1",
        "c-0",
    ]
    assert log.find(3) == read[2]
    assert [e.seq for e in log.after(4, {"generation_completed"})] == [6, 7, 8]
    # The records are kept as they came, and handed to a fold as they are.
    kept, seqs = log.items_after(5)
    assert list(seqs) == [6, 7, 8]
    assert kept[0] is items[4]


class _Answers:
    component_id = "test/answers"
    version = "1"

    def fingerprint(self) -> str:
        return "answers"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)


def _experiment(n: int = 40) -> Experiment:
    cases = [Case(case_id=f"c{i}", input=str(i % 3), expected_output="1") for i in range(n)]
    return Experiment(
        generation=GenerationConfig(
            generator=_Answers(),
            candidate_policy={"num_samples": 2},
            reducer="builtin/majority_vote",
        ),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match", "builtin/f1"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(event_batch_size=7),
    )


def _dump(result: Any) -> Any:
    return result.model_dump(mode="json")


def test_a_run_folds_its_records_as_the_events_read_back_fold() -> None:
    store = InMemoryRunStore()
    experiment = _experiment()
    result = experiment.run(store=store)
    run_id = result.run_id
    # The log kept records: no event object was built for the run's exact successes.
    assert any(type(item) is tuple for item in store._logs[run_id]._records)
    events = store.query_events(run_id)
    assert all(isinstance(e, RunEvent) for e in events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    times = [e.occurred_at for e in events]
    assert all(type(t) is dt.datetime and t.tzinfo is not None for t in times)
    assert times == sorted(times)
    snapshot = store.load_snapshot(run_id)
    assert snapshot is not None
    refolded = build_run_result(snapshot, events)
    assert _dump(result) == _dump(refolded)
    assert result.status == "completed"
    assert len(result.cases) == 40


class _EventsOnly(InMemoryRunStore):
    """A store whose own ``append_events`` must see every event: records never reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.appended: list[RunEvent] = []

    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
        assert all(isinstance(e, RunEvent) for e in events)
        self.appended.extend(events)
        super().append_events(run_id, events)


def test_a_store_that_takes_events_gets_events_with_dense_seqs() -> None:
    plain, own = InMemoryRunStore(), _EventsOnly()
    assert own._items_appender() is None
    first = _experiment().run(store=plain)
    second = _experiment().run(store=own)
    assert [e.seq for e in own.appended] == list(range(1, len(own.appended) + 1))
    assert len(own.appended) == len(plain.query_events(first.run_id))
    assert type(own.appended[2].model_fields_set) is ExactFields
    assert _dump(first) == _dump(second)


def test_subscribers_see_events_not_records() -> None:
    seen: list[Any] = []

    class Watch:
        def on_event(self, event: RunEvent) -> None:
            seen.append(event)

    store = InMemoryRunStore()
    result = _experiment(n=5).run(store=store, subscribers=[Watch()])
    assert seen, "the subscriber saw no event"
    assert all(isinstance(e, RunEvent) for e in seen)
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert seen == store.query_events(result.run_id)


class _Flaky:
    """Answers most cases; fails some until told not to, and returns a non-scalar output
    for others."""

    component_id = "test/flaky"
    version = "1"

    def __init__(self) -> None:
        self.failing = True

    def fingerprint(self) -> str:
        return "flaky"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        number = int(case.case_id[1:])
        if self.failing and number % 7 == 3:
            raise RuntimeError(f"no answer for {case.case_id}")
        output: Any = {"nested": case.input} if number % 5 == 1 else case.input
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=output)


@functools.cache
def _mixed_run() -> tuple[Any, list[Any], list[int], list[RunEvent]]:
    cases = [Case(case_id=f"c{i}", input=str(i % 3), expected_output="1") for i in range(30)]
    generator = _Flaky()
    experiment = Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[Dataset(dataset_id="d", cases=cases)],
        runtime=RuntimeConfig(event_batch_size=5, generation_retry_attempts=1),
    )
    store = InMemoryRunStore()
    assert experiment.run(store=store).status == "partial_failure"
    # The resume's successes arrive as records for cases the fold holds as failed.
    generator.failing = False
    result = experiment.resume(store=store)
    assert result.status == "completed"
    log = store._logs[result.run_id]
    snapshot = store.load_snapshot(result.run_id)
    return snapshot, list(log._records), list(log._seqs), store.query_events(result.run_id)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_folding_records_in_any_batches_equals_folding_the_events(cuts: list[int]) -> None:
    snapshot, items, seqs, events = _mixed_run()
    cuts = [cut % (len(items) + 1) for cut in cuts]
    # Records and events both, and failures that send records down the events' path.
    assert any(type(item) is tuple for item in items)
    assert any(e.event_type == "generation_failed" for e in events)
    folder = ProjectionFolder(snapshot, keep_timeline=False)
    bounds = [0, *sorted(set(cuts)), len(items)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            folder.apply_items(items[start:end], seqs[start:end])
    expected = build_run_result(snapshot, events)
    assert _dump(folder.run_result()) == _dump(expected)
    whole = ProjectionFolder(snapshot, keep_timeline=False)
    whole.apply_all(events)
    assert _dump(folder.execution_state()) == _dump(whole.execution_state())
    assert folder.last_event == events[-1]


def test_a_writer_makes_records_into_events_for_a_store_that_takes_events_only() -> None:
    import anyio
    from themis.core._observers import Observers
    from themis.core._writer import EventWriter

    store = _EventsOnly()
    writer = EventWriter(
        store,
        "r",
        next_seq=0,
        batch_size=100,
        flush_interval=60.0,
        retry_attempts=1,
        retry_delay=0.0,
        observers=Observers([], None),
    )
    assert not writer.takes_records
    started = RunStartedEvent(run_id="r")
    writer.emit(started)
    for record in _records(2):
        writer.emit(record)
    anyio.run(writer.flush)
    assert [e.seq for e in store.appended] == [1, 2, 3]
    assert store.appended[0] is started
    assert [e.candidate_id for e in store.appended[1:]] == ["c-0", "c-1"]
    assert store.query_events("r") == store.appended
