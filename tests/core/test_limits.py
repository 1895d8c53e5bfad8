"""Concurrency limits, rate limits and blocking components (API §4.5, §5.8)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import anyio
import pytest
from themis.core._limits import RunLimits, TokenBucket
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.experiment import Experiment
from themis.core.models import (
    Case,
    Dataset,
    GenerationResult,
    ParsedOutput,
    ReducedCandidate,
    Score,
)
from themis.core.results import RunResult
from themis.core.stores import InMemoryRunStore
from themis_builtins import PanelOfJudges


class InFlight:
    """Counts calls in flight per label and keeps the peak of each."""

    def __init__(self) -> None:
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.total: Counter[str] = Counter()

    @contextmanager
    def track(self, label: str) -> Iterator[None]:
        self.now[label] += 1
        self.total[label] += 1
        self.peak[label] = max(self.peak[label], self.now[label])
        try:
            yield
        finally:
            self.now[label] -= 1


class SlowGenerator:
    """An async generator that takes ``delay`` seconds and records call start times."""

    component_id = "test/slow_generator"
    version = "1.0"

    def __init__(
        self,
        flight: InFlight,
        delay: float,
        *,
        provider_key: str | None = None,
        artifacts: dict[str, Any] | None = None,
    ) -> None:
        self.flight = flight
        self.delay = delay
        self.starts: list[float] = []
        self.artifacts = artifacts
        if provider_key is not None:
            self.provider_key = provider_key

    def fingerprint(self) -> str:
        return "slow"

    async def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.starts.append(anyio.current_time())
        with self.flight.track("generation"):
            if self.delay:
                await anyio.sleep(self.delay)
        return GenerationResult(
            candidate_id="x", final_output=case.expected_output, artifacts=self.artifacts
        )


class AsyncStages:
    """An async selector, reducer, parser and metric, each tracked under its stage."""

    def __init__(self, flight: InFlight, delay: float) -> None:
        self.flight = flight
        self.delay = delay

    async def _pause(self, label: str) -> None:
        with self.flight.track(label):
            await anyio.sleep(self.delay)


class AsyncSelector(AsyncStages):
    component_id = "test/async_selector"
    version = "1.0"

    def fingerprint(self) -> str:
        return "selector"

    async def select(self, candidates: list[GenerationResult], ctx: Any) -> Any:
        await self._pause("selection")
        return candidates


class AsyncReducer(AsyncStages):
    component_id = "test/async_reducer"
    version = "1.0"

    def fingerprint(self) -> str:
        return "reducer"

    async def reduce(self, candidates: list[GenerationResult], ctx: Any) -> ReducedCandidate:
        await self._pause("reduction")
        first = candidates[0]
        return ReducedCandidate(
            candidate_id=first.candidate_id,
            source_candidate_ids=[c.candidate_id for c in candidates],
            final_output=first.final_output,
        )


class AsyncParser(AsyncStages):
    component_id = "test/async_parser"
    version = "1.0"

    def fingerprint(self) -> str:
        return "parser"

    async def parse(self, candidate: ReducedCandidate, ctx: Any) -> ParsedOutput:
        await self._pause("parsing")
        return ParsedOutput(value=candidate.final_output)


class AsyncMetric(AsyncStages):
    component_id = "test/async_metric"
    version = "1.0"
    metric_family = "pure"

    def fingerprint(self) -> str:
        return "metric"

    async def score(self, parsed: ParsedOutput, case: Case, ctx: Any) -> Score:
        await self._pause("scoring")
        return Score(metric_id=self.component_id, value=1.0)


class SlowJudge:
    """An async judge taking ``delay`` seconds; its calls are tracked under ``judge``."""

    version = "1.0"

    def __init__(
        self, index: int, flight: InFlight, delay: float, provider_key: str | None = None
    ) -> None:
        self.component_id = f"test/judge_{index}"
        self.flight = flight
        self.delay = delay
        self.starts: list[float] = []
        if provider_key is not None:
            self.provider_key = provider_key

    def fingerprint(self) -> str:
        return "slow-judge"

    async def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.starts.append(anyio.current_time())
        with self.flight.track("judge"):
            await anyio.sleep(self.delay)
        return "PASS"


def _cases(n: int) -> list[Dataset]:
    return [
        Dataset(
            dataset_id="load",
            cases=[Case(case_id=f"c{i}", input=i, expected_output=f"a{i}") for i in range(n)],
        )
    ]


def _run(
    generator: Any, n: int, *, evaluation: EvaluationConfig | None = None, **runtime: Any
) -> RunResult:
    experiment = Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=evaluation or EvaluationConfig(),
        datasets=_cases(n),
        runtime=RuntimeConfig(**runtime),
    )
    result = experiment.run(store=InMemoryRunStore())
    assert result.status.value == "completed", result.progress
    return result


# ------------------------------------------------------------------ concurrency caps


def test_max_concurrent_tasks_caps_the_calls_in_flight() -> None:
    flight = InFlight()
    _run(SlowGenerator(flight, 0.02), 40, max_concurrent_tasks=5)
    assert flight.peak["generation"] == 5


def test_max_concurrent_tasks_caps_the_calls_of_fanned_out_candidates() -> None:
    """With one candidate a case makes one call at a time and the workers alone keep the
    cap (generation skips the global limiter then); with four candidates generated at
    once per case, the global limiter must hold them to it."""
    flight = InFlight()
    experiment = Experiment(
        generation=GenerationConfig(
            generator=SlowGenerator(flight, 0.02),
            candidate_policy={"num_samples": 4},
            reducer="builtin/majority_vote",
        ),
        evaluation=EvaluationConfig(),
        datasets=_cases(12),
        runtime=RuntimeConfig(max_concurrent_tasks=5),
    )
    result = experiment.run(store=InMemoryRunStore())
    assert result.status.value == "completed", result.progress
    assert flight.peak["generation"] == 5


def test_stage_concurrency_caps_generation_below_the_global_limit() -> None:
    flight = InFlight()
    _run(
        SlowGenerator(flight, 0.02),
        40,
        max_concurrent_tasks=16,
        stage_concurrency={"generation": 3},
    )
    assert flight.peak["generation"] == 3


def test_provider_concurrency_applies_to_the_generators_provider_key_only() -> None:
    flight = InFlight()
    _run(
        SlowGenerator(flight, 0.02, provider_key="acme"),
        40,
        max_concurrent_tasks=16,
        provider_concurrency={"acme": 2},
    )
    assert flight.peak["generation"] == 2
    other = InFlight()
    _run(
        SlowGenerator(other, 0.02, provider_key="elsewhere"),
        40,
        max_concurrent_tasks=8,
        provider_concurrency={"acme": 2},
    )
    assert other.peak["generation"] == 8, "a key missing from the map means the global limit"


@pytest.mark.parametrize("stage", ["selection", "reduction", "parsing", "scoring"])
def test_awaited_select_reduce_parse_and_score_calls_honour_their_stage_limit(
    stage: str,
) -> None:
    flight = InFlight()
    stages = (AsyncSelector, AsyncReducer, AsyncParser, AsyncMetric)
    selector, reducer, parser, metric = (cls(flight, 0.01) for cls in stages)
    experiment = Experiment(
        generation=GenerationConfig(
            generator=SlowGenerator(flight, 0.0),
            candidate_policy={"num_samples": 2},
            selector=selector,
            reducer=reducer,
        ),
        evaluation=EvaluationConfig(parsers=[parser], metrics=[metric]),
        datasets=_cases(40),
        runtime=RuntimeConfig(max_concurrent_tasks=8, stage_concurrency={stage: 2}),
    )
    result = experiment.run(store=InMemoryRunStore())
    assert result.status.value == "completed"
    assert flight.peak[stage] == 2
    assert flight.total[stage] == 40


def test_stage_concurrency_caps_judge_calls() -> None:
    flight = InFlight()
    judges = [SlowJudge(i, flight, 0.02) for i in range(4)]
    _run(
        SlowGenerator(flight, 0.0),
        12,
        evaluation=EvaluationConfig(metrics=[PanelOfJudges()], judge_models=judges),
        max_concurrent_tasks=16,
        stage_concurrency={"evaluation": 3},
    )
    assert flight.peak["judge"] == 3
    assert flight.total["judge"] == 48


# ------------------------------------------------------------------ rate limits


def test_a_rate_limited_provider_keeps_its_budget_while_another_runs_at_full_concurrency() -> None:
    """600 rpm for one provider and no rate limit for another, both judging every case of
    one run: each case asks one metered judge and four open ones at once."""
    metered = SlowJudge(0, InFlight(), 0.0, provider_key="metered")
    shared = InFlight()
    open_judges = [SlowJudge(i, shared, 0.3, provider_key="open") for i in range(1, 5)]
    started = time.monotonic()
    _run(
        SlowGenerator(InFlight(), 0.0),
        30,
        evaluation=EvaluationConfig(
            metrics=[PanelOfJudges()], judge_models=[metered, *open_judges]
        ),
        max_concurrent_tasks=32,
        provider_concurrency={"open": 8},
        provider_rate_limits={"metered": 600},
    )
    starts = sorted(metered.starts)
    assert len(starts) == 30
    # The budget counted per window: 600 per minute is 10 per second, so any 11
    # consecutive calls span at least a second (1 ms allowed for reading the clock).
    for first, eleventh in zip(starts, starts[10:], strict=False):
        assert eleventh - first >= 1.0 - 1e-3, f"11 calls within {eleventh - first:.3f}s"
    # The open provider is never paced: its calls fill its whole concurrency cap.
    assert shared.peak["judge"] == 8
    assert shared.total["judge"] == 120
    # A hang guard only; the metered calls alone need 2.9 s at 10 per second.
    assert time.monotonic() - started < 60


def test_a_generator_can_retune_its_providers_rate_limit_through_artifacts() -> None:
    flight = InFlight()
    generator = SlowGenerator(
        flight,
        0.0,
        provider_key="tunable",
        artifacts={"rate_limit": {"requests_per_minute": 300}},
    )
    _run(generator, 6, max_concurrent_tasks=1)
    starts = generator.starts
    # The first answer creates a 300 rpm bucket (one call per 0.2 s) for the provider.
    gaps = [b - a for a, b in itertools.pairwise(starts[1:])]
    assert len(gaps) == 4
    assert all(gap >= 0.2 - 1e-3 for gap in gaps), gaps


def test_calls_waiting_for_a_rate_limit_slot_hold_no_global_slot() -> None:
    async def scenario() -> None:
        limits = RunLimits(
            RuntimeConfig(max_concurrent_tasks=2, provider_rate_limits={"metered": 60})
        )
        waiting = anyio.Event()

        async def metered_call() -> None:
            async with AsyncExitStack() as stack:
                await limits.enter(stack, "generation", "metered")
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(metered_call)  # takes the first slot at once
            await anyio.sleep(0.01)
            for _ in range(3):
                tg.start_soon(metered_call)  # each waits up to 3 s for a slot
            await anyio.sleep(0.1)
            waiting.set()
            assert limits.global_limiter.borrowed_tokens == 0
            # Another provider's call gets a global slot at once.
            with anyio.fail_after(1):
                async with AsyncExitStack() as stack:
                    await limits.enter(stack, "generation", "open")
                    assert limits.global_limiter.borrowed_tokens == 1
            tg.cancel_scope.cancel()

    anyio.run(scenario)


def test_a_token_bucket_lets_calls_through_one_interval_apart() -> None:
    async def scenario() -> list[float]:
        bucket = TokenBucket(1200)  # one call per 50 ms
        times: list[float] = []

        async def call() -> None:
            await bucket.acquire()
            times.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(call)
        return times

    times = anyio.run(scenario)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 7
    assert all(gap >= 0.05 - 1e-3 for gap in gaps), gaps


# ------------------------------------------------------------------ blocking components


class ThreadProbe:
    """Records which thread each component method ran on."""

    def __init__(self) -> None:
        self.threads: dict[str, set[int]] = {}

    def seen(self, label: str) -> None:
        self.threads.setdefault(label, set()).add(threading.get_ident())


class BlockingGenerator:
    component_id = "test/blocking_generator"
    version = "1.0"

    def __init__(self, probe: ThreadProbe) -> None:
        self.probe = probe

    def fingerprint(self) -> str:
        return "blocking"

    def generate(self, case: Case, ctx: Any) -> GenerationResult:
        self.probe.seen("generate")
        time.sleep(0.005)
        return GenerationResult(candidate_id="x", final_output=case.expected_output)


class InlineGenerator(BlockingGenerator):
    component_id = "test/inline_generator"
    blocking = False


class SyncParser:
    component_id = "test/sync_parser"
    version = "1.0"

    def __init__(self, probe: ThreadProbe) -> None:
        self.probe = probe

    def fingerprint(self) -> str:
        return "sync-parser"

    def parse(self, candidate: ReducedCandidate, ctx: Any) -> ParsedOutput:
        self.probe.seen("parse")
        return ParsedOutput(value=candidate.final_output)


class SyncMetric:
    component_id = "test/sync_metric"
    version = "1.0"
    metric_family = "pure"

    def __init__(self, probe: ThreadProbe) -> None:
        self.probe = probe

    def fingerprint(self) -> str:
        return "sync-metric"

    def score(self, parsed: ParsedOutput, case: Case, ctx: Any) -> Score:
        self.probe.seen("score")
        return Score(metric_id=self.component_id, value=1.0)


@pytest.mark.parametrize(
    ("generator_class", "generator_on_loop"),
    [(BlockingGenerator, False), (InlineGenerator, True)],
)
def test_blocking_calls_go_to_threads_and_cheap_sync_calls_stay_on_the_loop(
    generator_class: type[BlockingGenerator], generator_on_loop: bool
) -> None:
    probe = ThreadProbe()
    loop_thread = threading.get_ident()  # Experiment.run runs its event loop here
    _run(
        generator_class(probe),
        20,
        evaluation=EvaluationConfig(parsers=[SyncParser(probe)], metrics=[SyncMetric(probe)]),
        max_concurrent_tasks=8,
    )
    assert probe.threads["parse"] == {loop_thread}
    assert probe.threads["score"] == {loop_thread}
    if generator_on_loop:
        assert probe.threads["generate"] == {loop_thread}
    else:
        assert loop_thread not in probe.threads["generate"]
        assert len(probe.threads["generate"]) > 1, "blocking calls should overlap in threads"


# ------------------------------------------------------------------ runtime-only


def test_no_runtime_setting_changes_the_run_id() -> None:
    def experiment(runtime: RuntimeConfig) -> Experiment:
        return Experiment(
            generation=GenerationConfig(generator=SlowGenerator(InFlight(), 0.0)),
            datasets=_cases(3),
            runtime=runtime,
        )

    baseline = experiment(RuntimeConfig()).compile().run_id
    changed = RuntimeConfig(
        max_concurrent_tasks=3,
        stage_concurrency={"generation": 1, "evaluation": 2},
        provider_concurrency={"acme": 1},
        provider_rate_limits={"acme": 60},
        generation_retry_attempts=9,
        generation_retry_delay=0.5,
        generation_retry_backoff=3.0,
        judge_retry_attempts=9,
        judge_retry_delay=0.5,
        judge_retry_backoff=3.0,
        retry_max_delay=5.0,
        retry_jitter=0.5,
        retry_after_max=10.0,
        generation_timeout=3.0,
        judge_timeout=3.0,
        store_retry_attempts=2,
        store_retry_delay=0.5,
        existing_run_policy="rerun",
        event_batch_size=7,
        event_flush_interval=1.0,
        inline_payload_limit=10,
        stage_cache=False,
    )
    assert experiment(changed).compile().run_id == baseline
    # The settings above cover every field that shapes execution.
    untouched = {"tracing_provider", "subscribers", "queue_root", "batch_root"}
    defaults = RuntimeConfig()
    covered = {f for f in RuntimeConfig.model_fields if getattr(changed, f) != getattr(defaults, f)}
    assert covered == set(RuntimeConfig.model_fields) - untouched
