"""The judge stage of a run: subjects, events, hooks, spans, failures and the final score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from themis.core._judging import final_score
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.contexts import EvalScoreContext, GenerateContext
from themis.core.errors import NonRetryableError
from themis.core.experiment import Experiment
from themis.core.models import (
    Case,
    Dataset,
    GenerationResult,
    Message,
    ReducedCandidate,
    Score,
    ScoreError,
    TraceStep,
    WorkflowTrace,
)
from themis.core.planner import judge_seed_for_call
from themis.core.prompts import PromptSpec
from themis.core.stores import InMemoryRunStore
from themis.core.subjects import CandidateSetSubject, ConversationSubject, TraceSubject
from themis.core.workflow_runner import DefaultWorkflowRunner
from themis.core.workflows import (
    AggregationResult,
    EvaluationExecution,
    JudgeCall,
    JudgeResponse,
    ParsedJudgment,
    RenderedJudgePrompt,
    WorkflowFailure,
)
from themis.testing import FakeGenerator, FakeJudge, RecordingSubscriber, RecordingTracer
from themis_builtins import ExactMatch, LLMRubric, MajorityVote, PairwiseJudge

FAST = RuntimeConfig(judge_retry_delay=0.0, generation_retry_delay=0.0, retry_jitter=0.0)


def _dataset(n: int = 2) -> Dataset:
    return Dataset(
        dataset_id="sample",
        cases=[Case(case_id=f"c{i}", input=f"q{i}", expected_output=f"a{i}") for i in range(n)],
    )


def _experiment(
    metrics: list[Any],
    judges: list[Any],
    *,
    generator: Any = None,
    samples: int = 1,
    reducer: Any = None,
    n: int = 2,
    **evaluation: Any,
) -> Experiment:
    return Experiment(
        generation=GenerationConfig(
            generator=generator or FakeGenerator(),
            candidate_policy={"num_samples": samples} if samples > 1 else {},
            reducer=reducer if reducer is not None else (MajorityVote() if samples > 1 else None),
        ),
        evaluation=EvaluationConfig(metrics=metrics, judge_models=judges, **evaluation),
        datasets=[_dataset(n)],
        runtime=FAST,
    )


def _events(store: InMemoryRunStore, run_id: str, *types: str) -> list[Any]:
    return list(store.query_events(run_id, event_types=types or None))


def _scores(result: Any, case_index: int) -> dict[str, Score | ScoreError]:
    return {s.metric_id: s for s in result.cases[case_index].scores}


# --------------------------------------------------------------------- llm metrics
def test_an_llm_metric_appends_its_execution_then_its_final_score() -> None:
    store = InMemoryRunStore()
    judge = FakeJudge("PASS because it matches", component_id="test/judge")
    result = _experiment([ExactMatch(), LLMRubric()], [judge]).run(store=store)
    assert result.status.value == "completed"
    for case in result.cases:
        scores = {s.metric_id: s for s in case.scores}
        assert scores["builtin/llm_rubric"] == Score(
            metric_id="builtin/llm_rubric", value=1.0, details={"label": "pass"}
        )
    # Per case: evaluation_completed precedes the metric's score_completed.
    judged = [
        e.event_type
        for e in _events(store, result.run_id, "evaluation_completed", "score_completed")
        if e.metric_id == "builtin/llm_rubric" and e.case_id == "c0"
    ]
    assert judged == ["evaluation_completed", "score_completed"]
    (evaluation,) = [
        e for e in _events(store, result.run_id, "evaluation_completed") if e.case_id == "c0"
    ]
    assert evaluation.candidate_id == "c0-candidate-0"
    assert evaluation.execution["status"] == "completed"
    assert evaluation.cache_hit is False


def test_hooks_see_the_subject_the_context_and_the_execution() -> None:
    subscriber = RecordingSubscriber()
    judge = FakeJudge("PASS", component_id="test/judge")
    spec = PromptSpec(instructions="Grade strictly.")
    experiment = _experiment(
        [LLMRubric()],
        [judge],
        n=1,
        prompt_spec=spec,
        judge_config={"temperature": 0},
        workflow_overrides={"rubric": "Says a0."},
    )
    experiment.run(store=InMemoryRunStore(), subscribers=[subscriber])
    (before,) = [args for hook, args in subscriber.arguments if hook == "before_judge"]
    (after,) = [args for hook, args in subscriber.arguments if hook == "after_judge"]
    subject, ctx = before
    assert isinstance(subject, CandidateSetSubject)
    assert [c.final_output for c in subject.candidates] == ["a0"]
    assert isinstance(ctx, EvalScoreContext)
    assert ctx.case.case_id == "c0" and ctx.parsed_output.value == "a0"
    assert [r.component_id for r in ctx.judge_model_refs] == ["test/judge"]
    assert ctx.prompt_spec == spec
    assert ctx.judge_seed == judge_seed_for_call(
        run_id=ctx.run_id,
        case_key=ctx.case_key,
        metric_id="builtin/llm_rubric",
        judge_model_id="",
        judge_index=None,
        repeat_index=0,
        dimension_id=None,
        candidate_indices=(),
    )
    assert ctx.judge_config == {"temperature": 0}
    assert ctx.eval_workflow_config == {"rubric": "Says a0."}
    assert isinstance(after[0], EvaluationExecution) and after[1] is ctx
    # The evaluation spec and the rubric reach the judge's prompt.
    assert "Instructions:\nGrade strictly." in judge.prompts[0]
    assert "Rubric:\nSays a0." in judge.prompts[0]
    hooks = [h for h in subscriber.hooks if h in ("before_judge", "after_judge", "after_score")]
    assert hooks == ["before_judge", "after_judge"]


def test_each_workflow_metric_gets_a_judge_span() -> None:
    tracer = RecordingTracer()
    judges = [FakeJudge("PASS", component_id="test/judge")]
    _experiment([ExactMatch(), LLMRubric()], judges, n=1).run(
        store=InMemoryRunStore(), tracing_provider=tracer
    )
    (span,) = [s for s in tracer.started if s.name == "judge"]
    assert span.attributes["metric_id"] == "builtin/llm_rubric"
    assert span.attributes["case_key"] == "6:sample:c0"
    assert span.status == "ok" and span.parent is not None and span.parent.name == "run"
    assert tracer.problems == []


# ------------------------------------------------------------- failure isolation
def test_a_selection_subject_that_cannot_be_built_fails_only_that_metric_on_that_case() -> None:
    store = InMemoryRunStore()
    # c1 keeps one candidate of two: too few for a pairwise comparison.
    generator = FakeGenerator(fail_on=["c1-candidate-1"], error=NonRetryableError)
    judge = FakeJudge("A", component_id="test/judge")
    experiment = _experiment(
        [ExactMatch(), PairwiseJudge(), LLMRubric()], [judge], generator=generator, samples=2
    )
    result = experiment.run(store=store)
    c0, c1 = _scores(result, 0), _scores(result, 1)
    assert isinstance(c0["builtin/pairwise_judge"], Score)
    assert c0["builtin/pairwise_judge"].value == 1.0
    failed = c1["builtin/pairwise_judge"]
    assert isinstance(failed, ScoreError)
    assert "builtin/pairwise_judge" in failed.reason and "at least 2 candidates" in failed.reason
    # The other metrics of c1 still ran; LLMRubric's verdict "A" is not a rubric label.
    assert isinstance(c1["builtin/exact_match"], Score)
    assert isinstance(c1["builtin/llm_rubric"], ScoreError)
    assert "cannot read a verdict" in c1["builtin/llm_rubric"].reason
    (evaluation_failed,) = _events(store, result.run_id, "evaluation_failed")
    assert (evaluation_failed.case_id, evaluation_failed.metric_id) == (
        "c1",
        "builtin/pairwise_judge",
    )
    assert result.cases[1].evaluation_failures == {"builtin/pairwise_judge": failed.reason}


class TracingGenerator:
    """Returns a trace, a conversation or neither, per case id."""

    component_id = "test/tracing_generator"
    version = "1.0"

    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds = kinds

    def fingerprint(self) -> str:
        return repr(sorted(self.kinds.items()))

    async def generate(self, case: Case, ctx: GenerateContext) -> GenerationResult:
        kind = self.kinds.get(case.case_id, "none")
        step = TraceStep(step_name=f"step-{ctx.candidate_index}", step_type="tool")
        return GenerationResult(
            candidate_id=ctx.candidate_id,
            final_output=case.expected_output,
            trace=[step] if kind == "trace" else None,
            conversation=[Message(role="user", content=case.input)]
            if kind == "conversation"
            else None,
        )


class StepCountWorkflow:
    """Scores the subject without a judge: 1.0 per trace step or conversation message."""

    component_id = "test/step_count_workflow"
    version = "1.0"

    def __init__(self, size: int) -> None:
        self.size = size

    def fingerprint(self) -> str:
        return str(self.size)

    def judge_calls(self) -> list[JudgeCall]:
        return []

    def render_prompt(self, call: JudgeCall, subject: Any, ctx: Any) -> RenderedJudgePrompt:
        raise AssertionError("no calls are planned")

    def parse_judgment(self, call: JudgeCall, response: JudgeResponse, ctx: Any) -> ParsedJudgment:
        raise AssertionError("no calls are planned")

    def score_judgment(self, call: JudgeCall, judgment: ParsedJudgment, ctx: Any) -> None:
        return None

    def aggregate(self, judgments: Any, scores: Any, ctx: Any) -> AggregationResult:
        return AggregationResult(method="count", value=float(self.size))


class StepCountMetric:
    """A trace metric that records the subjects it was given."""

    component_id = "test/step_count"
    version = "1.0"
    metric_family = "trace"

    def __init__(self) -> None:
        self.subjects: list[Any] = []

    def fingerprint(self) -> str:
        return "step-count"

    def build_workflow(self, subject: Any, ctx: EvalScoreContext) -> StepCountWorkflow:
        self.subjects.append(subject)
        if isinstance(subject, TraceSubject):
            return StepCountWorkflow(len(subject.trace.steps))
        return StepCountWorkflow(len(subject.conversation.messages))


def test_a_trace_metric_without_a_trace_fails_only_that_metric_on_that_case() -> None:
    store = InMemoryRunStore()
    metric = StepCountMetric()
    generator = TracingGenerator({"c0": "trace", "c1": "none", "c2": "conversation"})
    judge = FakeJudge("PASS", component_id="test/judge")
    result = _experiment([ExactMatch(), metric], [judge], generator=generator, n=3).run(store=store)
    scores = [_scores(result, i) for i in range(3)]
    assert scores[0]["test/step_count"] == Score(metric_id="test/step_count", value=1.0)
    assert scores[2]["test/step_count"] == Score(metric_id="test/step_count", value=1.0)
    missing = scores[1]["test/step_count"]
    assert isinstance(missing, ScoreError)
    assert "needs a trace or a conversation" in missing.reason
    assert "'c1-candidate-0' has neither" in missing.reason
    assert all(isinstance(s["builtin/exact_match"], Score) for s in scores)
    trace_subject, conversation_subject = metric.subjects
    assert isinstance(trace_subject, TraceSubject)
    assert trace_subject.trace == WorkflowTrace(
        trace_id="c0-candidate-0:trace", steps=[TraceStep(step_name="step-0", step_type="tool")]
    )
    assert isinstance(conversation_subject, ConversationSubject)
    assert conversation_subject.conversation.trace_id == "c2-candidate-0:conversation"


class PickLast:
    """A reducer that keeps the last candidate and names it in its metadata."""

    component_id = "test/pick_last"
    version = "1.0"

    def fingerprint(self) -> str:
        return "pick-last"

    def reduce(self, candidates: list[GenerationResult], ctx: Any) -> ReducedCandidate:
        last = candidates[-1]
        return ReducedCandidate(
            candidate_id=f"{ctx.case_id}-reduced",
            source_candidate_ids=[c.candidate_id for c in candidates],
            final_output=last.final_output,
            metadata={"selected_candidate_id": last.candidate_id},
        )


def test_a_trace_metric_judges_the_candidate_the_reducer_selected() -> None:
    store = InMemoryRunStore()
    metric = StepCountMetric()
    judge = FakeJudge("PASS", component_id="test/judge")
    experiment = _experiment(
        [metric],
        [judge],
        generator=TracingGenerator({"c0": "trace"}),
        samples=3,
        reducer=PickLast(),
        n=1,
    )
    result = experiment.run(store=store)
    (subject,) = metric.subjects
    assert subject.trace.trace_id == "c0-candidate-2:trace"
    assert subject.trace.steps[0].step_name == "step-2"
    (evaluation,) = _events(store, result.run_id, "evaluation_completed")
    assert evaluation.candidate_id == "c0-candidate-2"
    assert evaluation.execution["subject_kind"] == "trace"


class BrokenMetric:
    component_id = "test/broken"
    version = "1.0"
    metric_family = "llm"

    def fingerprint(self) -> str:
        return "broken"

    def build_workflow(self, subject: Any, ctx: Any) -> Any:
        raise RuntimeError("the rubric file is missing")


def test_a_failing_build_workflow_fails_only_that_metric() -> None:
    store = InMemoryRunStore()
    judge = FakeJudge("PASS", component_id="test/judge")
    result = _experiment([BrokenMetric(), LLMRubric()], [judge], n=1).run(store=store)
    scores = _scores(result, 0)
    broken = scores["test/broken"]
    assert isinstance(broken, ScoreError)
    assert broken.reason == "test/broken.build_workflow() failed: the rubric file is missing"
    assert isinstance(scores["builtin/llm_rubric"], Score)
    types = [
        e.event_type
        for e in _events(store, result.run_id)
        if e.__dict__.get("metric_id") == "test/broken"
    ]
    assert types == ["evaluation_failed", "score_failed"]


# ------------------------------------------------------------------ the runners
class CannedRunner:
    """A custom runner: it never calls a judge and returns a canned execution."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def run_evaluation(
        self, workflow: Any, subject: Any, metric_id: str, ctx: EvalScoreContext
    ) -> EvaluationExecution:
        self.calls.append((workflow.component_id, metric_id))
        return EvaluationExecution(
            execution_id=f"canned:{ctx.case_key}",
            subject_kind="candidate_set",
            aggregation_output=AggregationResult(method="canned", value=0.25),
            trace=WorkflowTrace(trace_id="canned"),
        )


def test_a_custom_runner_replaces_the_default_one() -> None:
    store = InMemoryRunStore()
    runner = CannedRunner()
    judge = FakeJudge("PASS", component_id="test/judge")
    result = _experiment([LLMRubric()], [judge]).run(store=store, workflow_runner=runner)
    assert runner.calls == [("builtin/rubric_workflow", "builtin/llm_rubric")] * 2
    assert judge.prompts == []
    assert [_scores(result, i)["builtin/llm_rubric"].value for i in range(2)] == [0.25, 0.25]  # type: ignore[union-attr]
    assert _events(store, result.run_id, "step_started") == []


def test_passing_a_default_runner_binds_it_to_the_run() -> None:
    store = InMemoryRunStore()
    judge = FakeJudge("FAIL", component_id="test/judge")
    runner = DefaultWorkflowRunner()
    result = _experiment([LLMRubric()], [judge], n=1).run(store=store, workflow_runner=runner)
    assert len(judge.prompts) == 1
    assert _scores(result, 0)["builtin/llm_rubric"].value == 0.0  # type: ignore[union-attr]
    steps = [e.step_id for e in _events(store, result.run_id, "step_completed")]
    assert steps == [
        "rubric:render_prompt",
        "rubric:model_call",
        "rubric:parse_judgment",
        "rubric:emit_score",
        "aggregate",
    ]


# ------------------------------------------------------------------ final score
def _execution(
    aggregation: Any = None,
    scores: Sequence[float] = (),
    failures: int = 0,
) -> EvaluationExecution:
    return EvaluationExecution(
        execution_id="x",
        subject_kind="candidate_set",
        status="partial_failure" if failures else "completed",
        scores=[Score(metric_id="dimension", value=v) for v in scores],
        failures=[
            WorkflowFailure(step_id=f"c{i}:model_call", step_type="model_call", error_message="x")
            for i in range(failures)
        ],
        aggregation_output=aggregation,
        trace=WorkflowTrace(trace_id="t"),
    )


def test_a_numeric_aggregation_is_the_final_score_with_its_details() -> None:
    aggregation = AggregationResult(method="mean", value=1, details={"n": 2})
    score = final_score(_execution(aggregation, [1.0, 0.0], failures=1), "m")
    assert score == Score(metric_id="m", value=1.0, details={"n": 2})


def test_without_a_numeric_aggregation_a_single_clean_score_is_final() -> None:
    for aggregation in (None, AggregationResult(method="label", value="pass")):
        score = final_score(_execution(aggregation, [0.5]), "m")
        assert score == Score(metric_id="m", value=0.5)


@pytest.mark.parametrize(
    ("aggregation", "scores", "failures"),
    [
        (None, [], 0),
        (None, [0.5, 1.0], 0),
        (None, [0.5], 1),
        (AggregationResult(method="flag", value=True), [], 0),
        (AggregationResult(method="mean", value=float("nan")), [], 0),
    ],
)
def test_anything_else_gives_a_score_error(
    aggregation: Any, scores: list[float], failures: int
) -> None:
    score = final_score(_execution(aggregation, scores, failures), "m")
    assert isinstance(score, ScoreError)
    assert score.reason.startswith("the evaluation execution produced no usable final score")
    if failures:
        assert "c0:model_call: x" in score.reason
