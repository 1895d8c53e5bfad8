"""Replay and rejudge: recompute from a stage on stored generations, never generating."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.errors import RunNotFoundError
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, Score
from themis.core.stores import InMemoryRunStore
from themis.testing import FakeGenerator
from themis_builtins import ExactMatch, LLMRubric, PanelOfJudges
from themis_store_sqlite import SqliteRunStore

FAST = RuntimeConfig(judge_retry_delay=0.0, generation_retry_delay=0.0, retry_jitter=0.0)
WORKFLOW = ("builtin/llm_rubric", "builtin/panel_of_judges")


class SwitchableJudge:
    """A judge whose verdict can change while its identity (and so the run_id) stays."""

    version = "1.0"
    blocking = False

    def __init__(self, component_id: str, verdict: str = "PASS") -> None:
        self.component_id = component_id
        self.verdict = verdict
        self.calls = 0

    def fingerprint(self) -> str:
        return "switchable"

    def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.calls += 1
        return self.verdict


def _experiment(
    n: int, judges: list[Any], metrics: list[Any] | None = None, **evaluation: Any
) -> tuple[Experiment, FakeGenerator]:
    generator = FakeGenerator()
    dataset = Dataset(
        dataset_id="big",
        cases=[Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(n)],
    )
    experiment = Experiment(
        generation=GenerationConfig(generator=generator),
        evaluation=EvaluationConfig(
            metrics=metrics or [ExactMatch(), LLMRubric(), PanelOfJudges()],
            judge_models=judges,
            **evaluation,
        ),
        datasets=[dataset],
        runtime=FAST,
    )
    return experiment, generator


def _after_replay(store: Any, run_id: str) -> list[Any]:
    events: list[Any] = store.query_events(run_id)
    (start,) = [i for i, e in enumerate(events) if e.event_type == "replay_started"]
    return events[start:]


def _values(result: Any, metric_id: str) -> list[float | None]:
    return [
        next(getattr(s, "value", None) for s in case.scores if s.metric_id == metric_id)
        for case in result.cases
    ]


def test_rejudging_a_thousand_case_run_reruns_only_the_workflow_metric() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge("test/a")
    experiment, generator = _experiment(1000, [judge], [ExactMatch(), LLMRubric()])
    first = experiment.run(store=store)
    assert first.status.value == "completed"
    assert len(generator.calls) == 1000 and judge.calls == 1000
    first_exact = [c.scores[0] for c in first.cases]

    judge.verdict = "FAIL"  # same identity, so the same run_id
    rejudged = experiment.rejudge(store=store)

    assert rejudged.run_id == first.run_id
    assert rejudged.status.value == "completed"
    assert len(generator.calls) == 1000  # the generator was never called again
    assert judge.calls == 2000
    assert _values(rejudged, "builtin/llm_rubric") == [0.0] * 1000
    assert [c.scores[0] for c in rejudged.cases] == first_exact  # pure scores untouched

    replayed = _after_replay(store, first.run_id)
    assert replayed[0].stage == "judge" and replayed[0].metric_ids is None
    assert replayed[-1].event_type == "run_completed"
    kinds = Counter(e.event_type for e in replayed)
    for stage_event in ("generation_completed", "reduction_completed", "parse_completed"):
        assert kinds[stage_event] == 0
    rescored = Counter(e.metric_id for e in replayed if e.event_type == "score_completed")
    assert rescored == {"builtin/llm_rubric": 1000}

    # Earlier judgments stay in the log next to the new ones.
    evaluations = store.query_events(first.run_id, event_types=["evaluation_completed"])
    verdicts = Counter(
        e.execution["judge_responses"][0]["raw_response"]  # type: ignore[attr-defined]
        for e in evaluations
    )
    assert verdicts == {"PASS": 1000, "FAIL": 1000}
    benchmark = store.get_projection(first.run_id, "benchmark_result")
    assert benchmark["metric_means"] == {"builtin/exact_match": 1.0, "builtin/llm_rubric": 0.0}


def test_rejudge_reruns_every_workflow_metric_with_every_judge() -> None:
    store = InMemoryRunStore()
    judges = [SwitchableJudge("test/a"), SwitchableJudge("test/b")]
    experiment, generator = _experiment(10, judges)
    experiment.run(store=store)
    judges[1].verdict = "FAIL"
    result = experiment.rejudge(store=store)
    assert len(generator.calls) == 10
    assert [j.calls for j in judges] == [40, 20]  # rubric asks only the first judge
    assert _values(result, "builtin/llm_rubric") == [1.0] * 10
    assert _values(result, "builtin/panel_of_judges") == [0.5] * 10
    rescored = Counter(
        e.metric_id
        for e in _after_replay(store, result.run_id)
        if e.event_type == "score_completed"
    )
    assert rescored == {metric_id: 10 for metric_id in WORKFLOW}


def test_rejudge_with_metric_ids_reruns_only_the_named_metric() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge("test/a")
    experiment, _ = _experiment(20, [judge])
    experiment.run(store=store)
    judge.verdict = "FAIL"
    calls_before = judge.calls
    result = experiment.rejudge(metric_ids=["builtin/llm_rubric"], store=store)
    assert judge.calls - calls_before == 20
    assert _values(result, "builtin/llm_rubric") == [0.0] * 20
    assert _values(result, "builtin/panel_of_judges") == [1.0] * 20
    replayed = _after_replay(store, result.run_id)
    assert replayed[0].metric_ids == ["builtin/llm_rubric"]
    touched = {e.metric_id for e in replayed if hasattr(e, "metric_id") and e.metric_id}
    assert touched == {"builtin/llm_rubric"}


def test_replay_from_score_recomputes_pure_and_workflow_metrics_without_generating() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge("test/a")
    experiment, generator = _experiment(5, [judge])
    experiment.run(store=store)
    judge.verdict = "0.5"
    result = experiment.replay(stage="score", store=store)
    assert len(generator.calls) == 5
    assert _values(result, "builtin/llm_rubric") == [0.5] * 5
    rescored = Counter(
        e.metric_id
        for e in _after_replay(store, result.run_id)
        if e.event_type == "score_completed"
    )
    assert rescored == {m: 5 for m in ("builtin/exact_match", *WORKFLOW)}


def test_rejudge_reads_no_cache_but_writes_it(tmp_path: Path) -> None:
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    judge = SwitchableJudge("test/a")
    experiment, _ = _experiment(3, [judge])
    experiment.run(store=store)
    calls = judge.calls
    judge.verdict = "FAIL"
    result = experiment.rejudge(store=store)
    assert judge.calls - calls == 6  # rubric + a one-judge panel, per case
    assert _values(result, "builtin/llm_rubric") == [0.0] * 3
    replayed = [
        e for e in _after_replay(store, result.run_id) if e.event_type == "evaluation_completed"
    ]
    assert [e.cache_hit for e in replayed] == [False] * 6
    # The fresh judgments replaced the cache entries: a rerun now serves FAIL from it.
    rerun = experiment.run(
        store=store, runtime=FAST.model_copy(update={"existing_run_policy": "rerun"})
    )
    assert judge.calls - calls == 6
    assert _values(rerun, "builtin/llm_rubric") == [0.0] * 3
    store.close()


def test_a_changed_rubric_is_another_run_so_rejudge_finds_nothing_stored() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge("test/a")
    experiment, _ = _experiment(2, [judge])
    experiment.run(store=store)
    changed, _ = _experiment(2, [judge], workflow_overrides={"rubric": "Be harsh."})
    assert changed.compile().run_id != experiment.compile().run_id
    with pytest.raises(RunNotFoundError, match=changed.compile().run_id):
        changed.rejudge(store=store)


class RubricReadingJudge:
    """Fails every candidate when the prompt carries the harsh rubric, passes it otherwise."""

    component_id = "test/rubric_reader"
    version = "1.0"
    blocking = False

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def fingerprint(self) -> str:
        return "rubric-reader"

    def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.prompts.append(prompt)
        return "FAIL" if "Be harsh." in prompt else "PASS"


def test_a_changed_rubric_rejudges_a_thousand_stored_generations(tmp_path: Path) -> None:
    """A changed rubric is another run_id (§5.2), so it is rejudged by running it on the
    store that holds the first run: generations and pure scores come from the stage cache
    (§5.12), only the workflow metric is judged again, and the first run's log keeps its
    judgments."""
    store = SqliteRunStore(tmp_path / "runs.sqlite3")
    judge = RubricReadingJudge()
    metrics: list[Any] = [ExactMatch(), LLMRubric()]
    experiment, generator = _experiment(1000, [judge], metrics)
    first = experiment.run(store=store)
    assert first.status.value == "completed" and len(generator.calls) == 1000

    harsh, harsh_generator = _experiment(
        1000, [judge], metrics, workflow_overrides={"rubric": "Be harsh."}
    )
    result = harsh.run(store=store)

    assert result.run_id != first.run_id
    assert harsh_generator.calls == []  # every generation came from the stage cache
    assert len(judge.prompts) == 2000
    assert all("Be harsh." in prompt for prompt in judge.prompts[1000:])
    assert result.status.value == "completed"
    assert _values(result, "builtin/llm_rubric") == [0.0] * 1000
    assert _values(result, "builtin/exact_match") == _values(first, "builtin/exact_match")
    events = store.query_events(result.run_id)
    generated = [e for e in events if e.event_type == "generation_completed"]
    assert len(generated) == 1000 and all(e.cache_hit for e in generated)  # type: ignore[attr-defined]
    scored = Counter(
        (e.metric_id, e.cache_hit)  # type: ignore[attr-defined]
        for e in events
        if e.event_type == "score_completed"
    )
    assert scored == {("builtin/exact_match", True): 1000, ("builtin/llm_rubric", False): 1000}

    # The first run's judgments stay in its log and in its read models.
    earlier = store.query_events(first.run_id, event_types=["evaluation_completed"])
    verdicts = Counter(
        e.execution["judge_responses"][0]["raw_response"]  # type: ignore[attr-defined]
        for e in earlier
    )
    assert verdicts == {"PASS": 1000}
    benchmark = store.get_projection(first.run_id, "benchmark_result")
    assert benchmark["metric_means"] == {"builtin/exact_match": 1.0, "builtin/llm_rubric": 1.0}
    store.close()


def test_replay_without_a_store_on_memory_storage_is_refused() -> None:
    experiment, _ = _experiment(1, [SwitchableJudge("test/a")])
    with pytest.raises(ValueError, match="pass the store that holds the run"):
        experiment.rejudge()


def test_replayed_workflow_scores_win_over_the_old_ones_in_every_read_model() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge("test/a")
    experiment, _ = _experiment(2, [judge])
    run_id = experiment.run(store=store).run_id
    judge.verdict = "FAIL"
    experiment.rejudge(store=store)
    trace = store.get_projection(run_id, "trace_view")["evaluation_traces"]
    assert len(trace) == 4  # one record per (case, metric): the rejudged one replaced it
    assert {r["execution"]["judge_responses"][0]["raw_response"] for r in trace} == {"FAIL"}
    rows = store.get_projection(run_id, "benchmark_result")["score_rows"]
    assert {(r["metric_id"], r["value"]) for r in rows if r["metric_id"] in WORKFLOW} == {
        ("builtin/llm_rubric", 0.0),
        ("builtin/panel_of_judges", 0.0),
    }
    state = store.get_projection(run_id, "execution_state")
    for case_state in state["case_states"].values():
        assert (
            Score.model_validate(case_state["successful_scores"]["builtin/llm_rubric"]).value == 0.0
        )


class FlakyExactMatch(ExactMatch):
    """A pure metric that fails while ``broken`` is set."""

    broken = True

    def score(self, parsed: Any, case: Case, ctx: Any) -> Any:
        if FlakyExactMatch.broken:
            raise RuntimeError("metric down")
        return super().score(parsed, case, ctx)


def test_rejudge_leaves_unnamed_failed_metrics_alone() -> None:
    """Only the named metric reruns, even where another metric (pure or judged) had failed."""
    store = InMemoryRunStore()
    judge = SwitchableJudge("test/a", verdict="???")  # unparseable: both rubrics fail
    experiment, _ = _experiment(
        6, [judge], metrics=[FlakyExactMatch(), LLMRubric(), PanelOfJudges()]
    )
    first = experiment.run(store=store)
    assert first.status.value == "partial_failure"
    judge.verdict = "PASS"
    FlakyExactMatch.broken = False
    try:
        result = experiment.rejudge(metric_ids=["builtin/llm_rubric"], store=store)
    finally:
        FlakyExactMatch.broken = True
    replayed = _after_replay(store, result.run_id)
    touched = {e.metric_id for e in replayed if getattr(e, "metric_id", None)}
    assert touched == {"builtin/llm_rubric"}
    assert _values(result, "builtin/llm_rubric") == [1.0] * 6
    assert _values(result, "builtin/panel_of_judges") == [None] * 6
    assert _values(result, "builtin/exact_match") == [None] * 6


def test_a_judge_replay_keeps_pure_results_even_failed_ones() -> None:
    store = InMemoryRunStore()
    judge = SwitchableJudge("test/a")
    experiment, _ = _experiment(4, [judge], metrics=[FlakyExactMatch(), LLMRubric()])
    experiment.run(store=store)
    FlakyExactMatch.broken = False
    try:
        result = experiment.rejudge(store=store)
    finally:
        FlakyExactMatch.broken = True
    touched = {
        e.metric_id for e in _after_replay(store, result.run_id) if getattr(e, "metric_id", None)
    }
    assert touched == {"builtin/llm_rubric"}
    assert _values(result, "builtin/exact_match") == [None] * 4
