"""Cancellation and store failures leave a consistent log that a resume completes (§5.6, §5.9)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.errors import StoreError, TransientStoreError
from themis.core.events import RunEvent
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult, Score
from themis.core.stores import InMemoryRunStore


class CountingGenerator:
    """An async generator that answers after ``delay`` seconds and counts its calls."""

    component_id = "test/counting"
    version = "1.0"

    def __init__(self, delay: float = 0.005) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()

    def fingerprint(self) -> str:
        return "counting"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.calls[case.case_id] += 1
        await anyio.sleep(self.delay)
        return GenerationResult(candidate_id="x", final_output=case.expected_output)


class Metric:
    version = "1.0"
    metric_family = "pure"

    def __init__(self, component_id: str) -> None:
        self.component_id = component_id

    def fingerprint(self) -> str:
        return self.component_id

    def score(self, parsed: Any, case: Case, ctx: Any) -> Score:
        return Score(metric_id=self.component_id, value=float(parsed.value == case.expected_output))


def _experiment(generator: Any, n: int, **runtime: Any) -> Experiment:
    return Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=[Metric("test/m1"), Metric("test/m2")]),
        datasets=[
            Dataset(
                dataset_id="d",
                cases=[
                    Case(case_id=f"c{i}", input=i, expected_output=f"out-{i}") for i in range(n)
                ],
            )
        ],
        runtime=RuntimeConfig(**{"store_retry_delay": 0.001, **runtime}),
    )


def _assert_exactly_once(events: Sequence[RunEvent], n: int) -> None:
    """Dense seq, one generation per case and one score per (case, metric)."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq is not dense"
    generations = Counter(
        e.case_id  # type: ignore[attr-defined]
        for e in events
        if e.event_type == "generation_completed"
    )
    assert len(generations) == n and set(generations.values()) == {1}
    scores = Counter(
        (e.case_id, e.metric_id)  # type: ignore[attr-defined]
        for e in events
        if e.event_type == "score_completed"
    )
    assert len(scores) == 2 * n and set(scores.values()) == {1}


class CancelAfter:
    """A subscriber that cancels ``scope`` once ``count`` generations are stored."""

    def __init__(self, scope: anyio.CancelScope, count: int) -> None:
        self.scope = scope
        self.count = count
        self.seen = 0

    def on_event(self, event: RunEvent) -> None:
        if event.event_type == "generation_completed":
            self.seen += 1
            if self.seen == self.count:
                self.scope.cancel()


def test_a_cancelled_scope_records_run_failed_and_resume_redoes_no_committed_work() -> None:
    n = 300
    store = InMemoryRunStore()
    generator = CountingGenerator()
    experiment = _experiment(generator, n, max_concurrent_tasks=8, event_batch_size=16)
    run_id = experiment.compile().run_id

    async def interrupted() -> None:
        with anyio.CancelScope() as scope:
            await experiment.run_async(store=store, subscribers=[CancelAfter(scope, 60)])
        assert scope.cancelled_caught, "the run should have been cancelled, not finished"

    anyio.run(interrupted)
    events = store.query_events(run_id)
    last = events[-1]
    assert last.event_type == "run_failed" and last.cancelled is True  # type: ignore[attr-defined]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    committed = {e.case_id for e in events if e.event_type == "generation_completed"}  # type: ignore[attr-defined]
    assert 60 <= len(committed) < n
    calls_before = sum(generator.calls.values())

    result = experiment.run(store=store)  # the auto policy resumes the interrupted run
    assert result.status.value == "completed"
    resumed_calls = Counter(generator.calls)
    for case_id in committed:
        assert resumed_calls[case_id] == 1, f"{case_id} was generated again on resume"
    assert sum(generator.calls.values()) - calls_before == n - len(committed)
    events = store.query_events(run_id)
    _assert_exactly_once(events, n)
    modes = [e.mode for e in events if e.event_type == "run_started"]  # type: ignore[attr-defined]
    assert modes == ["fresh", "resume"]


class CancellingStore(InMemoryRunStore):
    """A store written from worker threads that cancels the run while writing a blob."""

    blocking = True

    def __init__(self, cancel_at_blob: int) -> None:
        super().__init__()
        self.cancel_at_blob = cancel_at_blob
        self.scope: anyio.CancelScope | None = None
        self.blob_refs: set[str] = set()

    def store_blob(self, blob: bytes, media_type: str) -> str:
        ref = super().store_blob(blob, media_type)
        self.blob_refs.add(ref)
        if len(self.blob_refs) == self.cancel_at_blob and self.scope is not None:
            anyio.from_thread.run_sync(self.scope.cancel)
            time.sleep(0.01)  # the cancellation is pending when the writer resumes
        return ref


def test_a_batch_being_written_when_the_run_is_cancelled_is_committed_whole() -> None:
    """Its blobs are written and then its events too, never one without the other."""
    n = 200
    store = CancellingStore(cancel_at_blob=120)
    # Every payload goes to a blob, so each batch writes blobs before its events.
    experiment = _experiment(
        CountingGenerator(), n, inline_payload_limit=0, event_batch_size=32, max_concurrent_tasks=8
    )
    run_id = experiment.compile().run_id

    async def interrupted() -> None:
        with anyio.CancelScope() as scope:
            store.scope = scope
            await experiment.run_async(store=store)
        assert scope.cancelled_caught

    anyio.run(interrupted)
    store.scope = None
    events = store.query_events(run_id)
    assert events[-1].event_type == "run_failed"
    referenced = {ref for e in events if (ref := getattr(e, "result_blob_ref", None)) is not None}
    assert store.blob_refs <= referenced, "a batch was dropped after its blobs were written"
    experiment.run(store=store)
    _assert_exactly_once(store.query_events(run_id), n)


class HangingBlockingGenerator:
    """A blocking sync generator whose calls hang until released."""

    component_id = "test/hanging_blocking"
    version = "1.0"

    def __init__(self) -> None:
        self.release = threading.Event()

    def fingerprint(self) -> str:
        return "hanging-blocking"

    def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.release.wait(timeout=60)
        return GenerationResult(candidate_id="x", final_output=case.expected_output)


def test_cancelling_a_run_does_not_wait_for_hung_generator_threads() -> None:
    generator = HangingBlockingGenerator()
    store = InMemoryRunStore()
    experiment = _experiment(generator, 20, max_concurrent_tasks=4)

    async def interrupted() -> float:
        started = anyio.current_time()
        with anyio.move_on_after(0.3):
            await experiment.run_async(store=store)
        return anyio.current_time() - started

    try:
        elapsed = anyio.run(interrupted)
    finally:
        generator.release.set()
    # A hang guard, generous: waiting for the threads would take the full 60 s.
    assert elapsed < 30
    last = store.query_events(experiment.compile().run_id)[-1]
    assert last.event_type == "run_failed" and last.cancelled is True  # type: ignore[attr-defined]


class FlakyStore(InMemoryRunStore):
    """A store whose ``append_events`` raises on the calls the test picks."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0
        self.times: list[float] = []
        self.fail: Any = lambda index, events: False

    def append_events(self, run_id: str, events: Sequence[RunEvent]) -> None:
        self.appends += 1
        self.times.append(time.monotonic())
        if self.fail(self.appends, events):
            raise TransientStoreError(f"FlakyStore.append_events: disk busy (call {self.appends})")
        super().append_events(run_id, events)


def test_a_store_write_failing_twice_then_succeeding_is_retried_and_the_run_completes() -> None:
    n = 50
    store = FlakyStore()
    store.fail = lambda index, events: index in (2, 3)
    experiment = _experiment(CountingGenerator(), n, store_retry_attempts=3, store_retry_delay=0.1)
    result = experiment.run(store=store)
    assert result.status.value == "completed"
    assert store.appends >= 4
    # The writer waits store_retry_delay times the attempt number before retrying.
    first, second, third = store.times[1:4]
    assert second - first >= 0.1 - 1e-3 and third - second >= 0.2 - 1e-3
    _assert_exactly_once(store.query_events(result.run_id), n)


def _has_case_events(events: Sequence[RunEvent]) -> bool:
    return any(e.event_type == "generation_completed" for e in events)


@pytest.mark.parametrize("run_failed_writable", [True, False])
def test_a_store_that_keeps_failing_aborts_with_store_error_and_a_resume_continues(
    run_failed_writable: bool,
) -> None:
    n = 200
    store = FlakyStore()
    broken = {"on": False}

    def fail(index: int, events: Sequence[RunEvent]) -> bool:
        if index == 4:
            broken["on"] = True  # from the fourth write on, the store is down
        if not broken["on"]:
            return False
        # When run_failed alone is writable, the best-effort record gets through.
        return _has_case_events(events) or not run_failed_writable

    store.fail = fail
    generator = CountingGenerator()
    experiment = _experiment(
        generator, n, store_retry_attempts=3, event_batch_size=8, max_concurrent_tasks=4
    )
    with pytest.raises(StoreError) as raised:
        experiment.run(store=store)
    assert type(raised.value) is StoreError, "the StoreError itself, not a wrapping group"
    message = str(raised.value)
    assert "FlakyStore.append_events failed after 3 attempts" in message
    assert "resume" in message
    events = store.query_events(experiment.compile().run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq is not dense"
    failed = [e for e in events if e.event_type == "run_failed"]
    if run_failed_writable:
        assert events[-1].event_type == "run_failed"
        assert failed[0].error_type == "StoreError"  # type: ignore[attr-defined]
        assert failed[0].cancelled is False  # type: ignore[attr-defined]
    else:
        assert not failed
    committed = {e.case_id for e in events if e.event_type == "generation_completed"}  # type: ignore[attr-defined]
    assert len(committed) < n

    broken["on"] = False
    store.fail = lambda index, events: False
    before = Counter(generator.calls)
    result = experiment.resume(store=store)
    assert result.status.value == "completed"
    for case_id in committed:
        assert generator.calls[case_id] == before[case_id], f"{case_id} was generated again"
    _assert_exactly_once(store.query_events(result.run_id), n)
