"""``RunProgress``: a live handle a progress bar polls while a run executes."""

from __future__ import annotations

import threading
from typing import Any

import anyio
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.errors import NonRetryableError
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult, Score
from themis.core.progress import RunProgress, RunProgressSnapshot
from themis.core.stores import InMemoryRunStore


class Generator:
    """An async generator taking ``delay`` seconds; cases named in ``broken`` fail."""

    component_id = "test/progress_generator"
    version = "1.0"

    def __init__(self, delay: float = 0.002, broken: frozenset[str] = frozenset()) -> None:
        self.delay = delay
        self.broken = broken

    def fingerprint(self) -> str:
        return "progress"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        await anyio.sleep(self.delay)
        if case.case_id in self.broken:
            raise NonRetryableError("broken on purpose")
        return GenerationResult(candidate_id="x", final_output=case.expected_output)


class Exact:
    component_id = "test/exact"
    version = "1.0"
    metric_family = "pure"

    def fingerprint(self) -> str:
        return "exact"

    def score(self, parsed: Any, case: Case, ctx: Any) -> Score:
        return Score(metric_id=self.component_id, value=1.0)


def _experiment(generator: Any, n: int, **runtime: Any) -> Experiment:
    return Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=[Exact()]),
        datasets=[
            Dataset(
                dataset_id="d",
                cases=[Case(case_id=f"c{i}", input=i, expected_output=i) for i in range(n)],
            )
        ],
        runtime=RuntimeConfig(**runtime),
    )


def test_a_new_handle_is_idle_with_no_eta() -> None:
    snapshot = RunProgress().snapshot()
    assert snapshot.state == "idle"
    assert snapshot.total_cases == snapshot.done_cases == 0
    assert snapshot.throughput == 0.0
    assert snapshot.eta_s is None
    assert snapshot.fraction == 1.0


def test_snapshots_polled_during_a_run_track_its_cases() -> None:
    n = 400
    experiment = _experiment(Generator(delay=0.005), n, max_concurrent_tasks=8)
    progress = RunProgress()
    readings: list[RunProgressSnapshot] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def poll() -> None:
                while True:
                    readings.append(progress.snapshot())
                    await anyio.sleep(0.01)

            tg.start_soon(poll)
            result = await experiment.run_async(store=InMemoryRunStore(), progress=progress)
            assert result.status.value == "completed"
            tg.cancel_scope.cancel()

    anyio.run(main)
    running = [r for r in readings if r.state == "running"]
    assert len(running) >= 5, "the run should have been observed while executing"
    assert all(r.total_cases == n and 0 <= r.in_flight <= 8 for r in running)
    assert any(r.in_flight > 1 for r in running)
    done = [r.done_cases for r in running]
    assert done == sorted(done), "the done count never goes back"
    assert any(0 < d < n for d in done)
    midway = next(r for r in running if r.done_cases > 0)
    assert midway.throughput > 0 and midway.eta_s is not None and midway.eta_s > 0
    final = progress.snapshot()
    assert (final.state, final.completed_cases, final.failed_cases) == ("finished", n, 0)
    assert (final.in_flight, final.remaining_cases, final.eta_s) == (0, 0, 0.0)
    assert final.fraction == 1.0


def test_failed_cases_are_counted_as_the_run_records_them() -> None:
    broken = frozenset({"c3", "c11", "c12", "c40"})
    progress = RunProgress()
    result = _experiment(Generator(broken=broken), 50).run(
        store=InMemoryRunStore(), progress=progress
    )
    snapshot = progress.snapshot()
    assert snapshot.failed_cases == 4 == result.progress.failed_cases
    assert snapshot.completed_cases == 46 == result.progress.completed_cases


def test_a_resume_counts_stored_cases_as_skipped() -> None:
    n = 120
    store = InMemoryRunStore()
    experiment = _experiment(Generator(), n, max_concurrent_tasks=4, event_batch_size=8)

    class CancelAfter:
        def __init__(self, scope: anyio.CancelScope) -> None:
            self.scope = scope
            self.scores = 0

        def on_event(self, event: Any) -> None:
            self.scores += event.event_type == "score_completed"
            if self.scores == 30:
                self.scope.cancel()

    first = RunProgress()

    async def interrupted() -> None:
        with anyio.CancelScope() as scope:
            await experiment.run_async(
                store=store, progress=first, subscribers=[CancelAfter(scope)]
            )

    anyio.run(interrupted)
    assert first.snapshot().state == "aborted"
    assert first.snapshot().eta_s is None
    stored = experiment.compile().run_id
    scored = {e.case_id for e in store.query_events(stored, event_types=["score_completed"])}
    second = RunProgress()
    experiment.run(store=store, progress=second)
    snapshot = second.snapshot()
    assert snapshot.skipped_cases == len(scored)
    assert snapshot.completed_cases == n - len(scored)
    assert snapshot.done_cases == n
    # A completed run asked for again returns the stored result: everything is skipped.
    third = RunProgress()
    experiment.run(store=store, progress=third)
    assert (third.snapshot().state, third.snapshot().skipped_cases) == ("finished", n)


def test_a_thread_can_poll_a_sync_run_while_it_executes() -> None:
    n = 300
    experiment = _experiment(Generator(delay=0.005), n, max_concurrent_tasks=8)
    progress = RunProgress()
    seen: list[RunProgressSnapshot] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            seen.append(progress.snapshot())
            stop.wait(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        experiment.run(store=InMemoryRunStore(), progress=progress)
    finally:
        stop.set()
        poller.join()
    assert any(s.state == "running" and 0 < s.done_cases < n for s in seen)
    assert progress.snapshot().completed_cases == n


def test_a_handle_passed_to_a_new_execution_starts_over() -> None:
    progress = RunProgress()
    _experiment(Generator(), 10).run(store=InMemoryRunStore(), progress=progress)
    _experiment(Generator(), 25).run(store=InMemoryRunStore(), progress=progress)
    snapshot = progress.snapshot()
    assert (snapshot.total_cases, snapshot.completed_cases) == (25, 25)
    assert "done=25/25" in repr(progress)
