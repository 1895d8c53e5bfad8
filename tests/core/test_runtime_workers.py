"""The pool of case workers: how it is spawned, and the order it takes cases in."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from themis.core.case_refs import case_key_for
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.stores import InMemoryRunStore


class Recorder:
    """An async generator that records each call's case and the tasks alive at its start."""

    component_id = "test/recorder"
    version = "1"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[str] = []
        self.tasks_at_call: list[int] = []
        self.in_flight = 0
        self.peak = 0

    def fingerprint(self) -> str:
        return "recorder"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.calls.append(ctx.case_key)
        self.tasks_at_call.append(len(asyncio.all_tasks()))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.expected_output)


def _datasets(sizes: dict[str, int]) -> list[Dataset]:
    return [
        Dataset(
            dataset_id=dataset_id,
            cases=[Case(case_id=f"c:{i}/é", input=i, expected_output=str(i)) for i in range(size)],
        )
        for dataset_id, size in sizes.items()
    ]


def _run(generator: Recorder, datasets: list[Dataset], concurrency: int) -> Any:
    experiment = Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=datasets,
        runtime=RuntimeConfig(max_concurrent_tasks=concurrency),
    )
    return experiment.run(store=InMemoryRunStore())


def test_the_first_case_starts_before_the_whole_pool_is_spawned() -> None:
    generator = Recorder(delay=0.02)
    result = _run(generator, _datasets({"d": 200}), concurrency=128)
    assert result.progress.completed_cases == 200
    # Spawned all at once, 128 workers would be alive at the first call; the first worker
    # starts its case after one spawn, with the run's own few tasks beside it.
    assert generator.tasks_at_call[0] < 10
    # The pool still fills: 128 calls out at once.
    assert generator.peak == 128
    assert max(generator.tasks_at_call) >= 128


@pytest.mark.parametrize("concurrency", [1, 3, 64, 500])
def test_workers_take_every_case_once_in_dataset_order(concurrency: int) -> None:
    datasets = _datasets({"first:set": 70, "b": 5, "": 3})
    generator = Recorder(delay=0.001)
    result = _run(generator, datasets, concurrency=concurrency)
    expected = [case_key_for(d.dataset_id, c.case_id) for d in datasets for c in d.cases]
    # Each call starts in the order the cases are pulled: the datasets' order.
    assert generator.calls == expected
    assert sorted(c.case_key for c in result.cases) == sorted(expected)
    assert result.progress.completed_cases == len(expected)
    assert generator.peak <= concurrency
