"""The judge cache, resuming judged runs, judge limits and the judges selectors are given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from themis.core.base import content_hash
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.contexts import SelectContext
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult, Score, ScoreError
from themis.core.planner import judge_seed_for_call
from themis.core.prompts import PromptSpec
from themis.core.stores import InMemoryRunStore
from themis.core.subjects import CandidateSetSubject
from themis.testing import FakeGenerator, FakeJudge, RecordingSubscriber
from themis_builtins import BestOfN, ExactMatch, LLMRubric, PanelOfJudges
from themis_store_sqlite import SqliteRunStore

FAST = RuntimeConfig(judge_retry_delay=0.0, generation_retry_delay=0.0, retry_jitter=0.0)


def _dataset(n: int) -> Dataset:
    return Dataset(
        dataset_id="sample",
        cases=[Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(n)],
    )


class SwitchableJudge:
    """A judge whose verdict (and health) can change without changing its identity."""

    version = "1.0"
    blocking = False

    def __init__(self, component_id: str = "test/judge", verdict: str = "PASS") -> None:
        self.component_id = component_id
        self.verdict = verdict
        self.broken_on: set[str] = set()
        self.prompts: list[str] = []

    def fingerprint(self) -> str:
        return "switchable"

    def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.prompts.append(prompt)
        if any(marker in prompt for marker in self.broken_on):
            raise ValueError("judge backend rejected the prompt")
        return self.verdict


def _experiment(
    judges: list[Any], *, n: int = 3, metrics: list[Any] | None = None, **generation: Any
) -> Experiment:
    return Experiment(
        generation=GenerationConfig(generator=FakeGenerator(), **generation),
        evaluation=EvaluationConfig(
            metrics=metrics if metrics is not None else [ExactMatch(), LLMRubric()],
            judge_models=judges,
        ),
        datasets=[_dataset(n)],
        runtime=FAST,
    )


# ----------------------------------------------------------------------- cache
def test_a_second_identical_judging_is_served_from_the_judge_cache(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    judge = SwitchableJudge()
    experiment = _experiment([judge])
    first = experiment.run(store=store)
    assert len(judge.prompts) == 3
    subscriber = RecordingSubscriber()
    again = experiment.run(
        store=store,
        runtime=FAST.model_copy(update={"existing_run_policy": "rerun"}),
        subscribers=[subscriber],
    )
    assert len(judge.prompts) == 3  # no judge call the second time
    events = store.query_events(again.run_id, event_types=["evaluation_completed"])
    assert [(e.cache_hit, e.source_run_id) for e in events] == [(True, first.run_id)] * 3  # type: ignore[attr-defined]
    scores = store.query_events(again.run_id, event_types=["score_completed"])
    judged = [e for e in scores if e.metric_id == "builtin/llm_rubric"]  # type: ignore[attr-defined]
    assert [e.cache_hit for e in judged] == [True] * 3  # type: ignore[attr-defined]
    assert "before_judge" not in subscriber.hooks  # a cache hit skips the hooks
    assert [c.scores for c in again.cases] == [c.scores for c in first.cases]
    assert [c.evaluation_executions for c in again.cases] == [
        c.evaluation_executions for c in first.cases
    ]
    store.close()


def test_the_judge_cache_key_is_the_content_hash_of_its_fields(tmp_path: Path) -> None:
    """The key of §5.12 (subject hash, metric ref, judge refs, evaluation prompt spec,
    judge config, overrides, judge seed), whatever shortcut computes it, so runs of other
    versions hit the same entries."""
    outputs: dict[str, Any] = {
        "c0": {"answer": "caf\u00e9", "parts": [1, 2.5, None], "ok": True},
        "c1": 7,
        "c2": "na\u00efve \U0001f600\n\x7f",
        "c3": [{"b": 1, "a": 2}],
        "c4": True,
        "c5": -(2**70),
        "c6": 2.5,
        "c7": "",
    }
    experiment = Experiment(
        generation=GenerationConfig(generator=FakeGenerator(outputs)),
        evaluation=EvaluationConfig(
            metrics=[LLMRubric()],
            judge_models=[SwitchableJudge()],
            prompt_spec=PromptSpec(instructions="Judge strictly."),
            judge_config={"temperature": 0},
            workflow_overrides={"rubric": "Is it right?"},
        ),
        datasets=[_dataset(len(outputs))],
        runtime=FAST,
    )
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    result = experiment.run(store=store)
    identity = experiment.compile().identity
    for case_id, output in outputs.items():
        case_key = f"6:sample:{case_id}"
        subject = CandidateSetSubject(
            candidates=[
                GenerationResult(candidate_id=f"{case_id}-candidate-0", final_output=output)
            ]
        )
        key = content_hash(
            {
                "subject": subject.compute_hash(),
                "metric_ref": identity.metric_refs[0],
                "judge_model_refs": identity.judge_model_refs,
                "prompt_spec": identity.evaluation_prompt_spec,
                "judge_config": identity.judge_config,
                "workflow_overrides": identity.workflow_overrides,
                "judge_seed": judge_seed_for_call(
                    run_id=result.run_id,
                    case_key=case_key,
                    metric_id="builtin/llm_rubric",
                    judge_model_id="",
                    judge_index=None,
                    repeat_index=0,
                    dimension_id=None,
                    candidate_indices=(),
                ),
            }
        )
        cached = store.load_stage_cache("judge", key)
        assert cached is not None, case_id
        assert cached["source_run_id"] == result.run_id
    store.close()


def test_a_partial_execution_is_not_cached(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    judges = [SwitchableJudge("test/a"), SwitchableJudge("test/b")]
    judges[1].broken_on = {"q1"}
    experiment = _experiment(judges, metrics=[PanelOfJudges()])
    experiment.run(store=store)
    judges[1].broken_on = set()
    before = [len(j.prompts) for j in judges]
    experiment.run(store=store, runtime=FAST.model_copy(update={"existing_run_policy": "rerun"}))
    # Only c1, whose execution had a failure, is judged again.
    assert [len(j.prompts) - b for j, b in zip(judges, before, strict=True)] == [1, 1]
    store.close()


def test_the_memory_store_does_not_cache_judgments() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge()
    experiment = _experiment([judge], n=1)
    experiment.run(store=store)
    experiment.run(store=store, runtime=FAST.model_copy(update={"existing_run_policy": "rerun"}))
    assert len(judge.prompts) == 2


# ---------------------------------------------------------------------- resume
def test_resume_rejudges_only_executions_that_failed() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge()
    judge.broken_on = {"q2"}
    experiment = _experiment([judge])
    first = experiment.run(store=store)
    assert first.status.value == "partial_failure"
    assert isinstance(first.cases[2].scores[1], ScoreError)
    judge.broken_on = set()
    judge.prompts.clear()
    resumed = experiment.resume(store=store)
    assert resumed.status.value == "completed"
    assert len(judge.prompts) == 1 and "q2" in judge.prompts[0]
    assert resumed.cases[2].scores[1] == Score(
        metric_id="builtin/llm_rubric", value=1.0, details={"label": "pass"}
    )


# -------------------------------------------------------------------- limits
class CountingJudge:
    """An async judge that records how many of its calls overlap."""

    version = "1.0"

    def __init__(self, component_id: str, state: dict[str, int]) -> None:
        self.component_id = component_id
        self.state = state

    def fingerprint(self) -> str:
        return "counting"

    async def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.state["now"] += 1
        self.state["peak"] = max(self.state["peak"], self.state["now"])
        await anyio.sleep(0.005)
        self.state["now"] -= 1
        return "PASS"


@pytest.mark.parametrize(("limit", "expect_parallel"), [(1, False), (None, True)])
def test_judge_calls_hold_the_evaluation_stage_limit(
    limit: int | None, expect_parallel: bool
) -> None:
    state = {"now": 0, "peak": 0}
    judges = [CountingJudge(f"test/j{i}", state) for i in range(3)]
    runtime = FAST.model_copy(
        update={
            "max_concurrent_tasks": 8,
            "stage_concurrency": {"evaluation": limit} if limit else {},
        }
    )
    experiment = _experiment(judges, n=4, metrics=[PanelOfJudges()])
    result = experiment.run(store=InMemoryRunStore(), runtime=runtime)
    assert result.status.value == "completed"
    assert (state["peak"] > 1) is expect_parallel
    if limit:
        assert state["peak"] == limit


class SleepyJudge:
    """An async judge that takes ``delay`` seconds per call."""

    version = "1.0"

    def __init__(self, component_id: str, delay: float) -> None:
        self.component_id = component_id
        self.delay = delay

    def fingerprint(self) -> str:
        return "sleepy"

    async def judge(self, prompt: str, *, seed: int | None = None) -> str:
        await anyio.sleep(self.delay)
        return "PASS"


def test_waiting_for_the_evaluation_limit_does_not_count_against_judge_timeout() -> None:
    store = InMemoryRunStore()
    judges = [SleepyJudge(f"test/j{i}", 0.1) for i in range(6)]
    # Six 0.1 s calls run one at a time: the last waits 0.5 s for its slot, longer than
    # the 0.4 s timeout that bounds each call itself.
    runtime = FAST.model_copy(
        update={
            "judge_timeout": 0.4,
            "judge_retry_attempts": 1,
            "stage_concurrency": {"evaluation": 1},
        }
    )
    result = _experiment(judges, n=1, metrics=[PanelOfJudges()]).run(store=store, runtime=runtime)
    assert result.status.value == "completed"
    (score,) = result.cases[0].scores
    assert isinstance(score, Score) and score.details["count"] == 6
    assert store.query_events(result.run_id, event_types=["step_failed"]) == []


# ----------------------------------------------------- judges given to selectors
class JudgeSpy:
    """A selector that records the judges it is given and asks each one once."""

    component_id = "test/judge_spy"
    version = "1.0"

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.replies: list[Any] = []

    def fingerprint(self) -> str:
        return "spy"

    async def select(self, candidates: list[GenerationResult], ctx: SelectContext) -> Any:
        for judge in ctx.judge_models:
            self.seen.append(
                {
                    "component_id": judge.component_id,
                    "version": judge.version,
                    "fingerprint": judge.fingerprint(),
                    "model_id": getattr(judge, "model_id", None),
                }
            )
            self.replies.append(await judge.judge("which?", seed=7))
        return candidates[:1]


def test_selectors_get_guarded_judges_that_keep_identity_and_retry() -> None:
    flaky = FakeJudge("B", fail_on=[1], component_id="test/flaky")
    flaky.model_id = "flaky-1"
    spy = JudgeSpy()
    experiment = _experiment(
        [flaky],
        n=1,
        metrics=[ExactMatch()],
        candidate_policy={"num_samples": 2},
        selector=spy,
    )
    result = experiment.run(store=InMemoryRunStore())
    assert result.status.value == "completed"
    assert spy.seen == [
        {
            "component_id": "test/flaky",
            "version": "1.0",
            "fingerprint": flaky.fingerprint(),
            "model_id": "flaky-1",
        }
    ]
    (reply,) = spy.replies
    # The first attempt failed; the retry's reply carries the history.
    assert reply.raw_response == "B"
    assert [h["attempt"] for h in reply.retry_history] == [1]
    assert flaky.seeds == [7, 7]


def test_best_of_n_runs_through_the_guarded_judges() -> None:
    judge = FakeJudge("B", fail_on=[1], component_id="test/judge")
    experiment = _experiment(
        [judge],
        n=1,
        metrics=[ExactMatch()],
        candidate_policy={"num_samples": 3},
        selector=BestOfN(),
    )
    store = InMemoryRunStore()
    result = experiment.run(store=store)
    assert result.status.value == "completed"
    (selection,) = store.query_events(result.run_id, event_types=["selection_completed"])
    assert selection.candidate_ids == ["c0-candidate-2"]  # type: ignore[attr-defined]
    assert len(judge.prompts) == 3  # two rounds, the first retried once


def test_a_judge_that_never_recovers_fails_the_selection() -> None:
    judge = FakeJudge("B", fail_on=[1, 2, 3], component_id="test/judge")
    experiment = _experiment(
        [judge],
        n=1,
        metrics=[ExactMatch()],
        candidate_policy={"num_samples": 2},
        selector=BestOfN(),
    )
    store = InMemoryRunStore()
    result = experiment.run(store=store)
    (failed,) = store.query_events(result.run_id, event_types=["selection_failed"])
    assert "FakeJudge: scripted failure on call 3" in failed.error_message  # type: ignore[attr-defined]
