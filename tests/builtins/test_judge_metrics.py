"""The builtin judge metrics: rubric, panel, majority vote and pairwise, with scripted judges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig
from themis.core.contexts import EvalScoreContext
from themis.core.errors import WorkflowBuildError
from themis.core.experiment import Experiment
from themis.core.models import (
    Case,
    Dataset,
    GenerationResult,
    ParsedOutput,
    Score,
    ScoreError,
    WorkflowTrace,
)
from themis.core.prompts import PromptSpec
from themis.core.snapshot import ComponentRef
from themis.core.stores import InMemoryRunStore
from themis.core.subjects import CandidateSetSubject, TraceSubject
from themis.core.workflow_runner import DefaultWorkflowRunner
from themis.core.workflows import EvaluationExecution
from themis.testing import FakeGenerator, FakeJudge
from themis_builtins import LLMRubric, MajorityVoteJudge, PairwiseJudge, PanelOfJudges
from themis_builtins.judge_metrics import DEFAULT_RUBRIC, rubric_label_score

pytestmark = pytest.mark.anyio

CASE = Case(case_id="case-1", input="What is 2+2?", expected_output="4")
FAST = RuntimeConfig(judge_retry_delay=0.0, retry_jitter=0.0)


def _subject(*outputs: str) -> CandidateSetSubject:
    return CandidateSetSubject(
        candidates=[
            GenerationResult(candidate_id=f"case-1-candidate-{i}", final_output=o)
            for i, o in enumerate(outputs)
        ]
    )


def _ctx(judges: Sequence[Any], **extra: Any) -> EvalScoreContext:
    return EvalScoreContext(
        run_id="run-judge-metrics",
        dataset_id="sample",
        case_key="6:sample:case-1",
        case=CASE,
        parsed_output=ParsedOutput(value="4"),
        judge_model_refs=[
            ComponentRef(component_id=j.component_id, version=j.version, fingerprint="fp")
            for j in judges
        ],
        **extra,
    )


async def _judge(
    metric: Any, judges: list[Any], subject: Any, **extra: Any
) -> tuple[EvaluationExecution, Score | ScoreError]:
    from themis.core._judging import final_score

    ctx = _ctx(judges, **extra)
    workflow = metric.build_workflow(subject, ctx)
    runner = DefaultWorkflowRunner(judges, runtime=FAST)
    execution = await runner.run_evaluation(workflow, subject, metric.component_id, ctx)
    return execution, final_score(execution, metric.component_id)


def _judges(*replies: str) -> list[FakeJudge]:
    return [FakeJudge(r, component_id=f"test/judge{i}") for i, r in enumerate(replies)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------------------ rubric rules
@pytest.mark.parametrize(
    ("reply", "label", "score"),
    [
        ("PASS.", "pass", 1.0),
        ("Yes, it is right", "yes", 1.0),
        ("correct!", "correct", 1.0),
        ("TRUE", "true", 1.0),
        ("1", "1", 1.0),
        ("FAIL: wrong sum", "fail", 0.0),
        ("no", "no", 0.0),
        ("Incorrect.", "incorrect", 0.0),
        ("false", "false", 0.0),
        ("0", "0", 0.0),
        ("0.75 mostly right", "0.75", 0.75),
        ("  \n pass", "pass", 1.0),
    ],
)
def test_rubric_labels_score_by_the_documented_rules(reply: str, label: str, score: float) -> None:
    assert rubric_label_score(reply) == (label, score)


@pytest.mark.parametrize("reply", ["", "maybe", "nan", "inf", "A"])
def test_an_unknown_rubric_label_is_refused(reply: str) -> None:
    with pytest.raises(ValueError, match="cannot read a verdict"):
        rubric_label_score(reply)


# -------------------------------------------------------------------- llm_rubric
async def test_llm_rubric_asks_only_the_first_judge() -> None:
    judges = _judges("PASS good", "FAIL bad")
    execution, score = await _judge(LLMRubric(), judges, _subject("4"))
    assert len(judges[0].prompts) == 1 and judges[1].prompts == []
    assert score == Score(metric_id="builtin/llm_rubric", value=1.0, details={"label": "pass"})
    (call,) = execution.judge_calls
    assert (call.call_id, call.judge_index) == ("rubric", 0)
    (judgment,) = execution.parsed_judgments
    assert judgment.rationale == "good"


async def test_the_rubric_prompt_holds_spec_rubric_input_output_and_the_question() -> None:
    judges = _judges("PASS")
    spec = PromptSpec(instructions="Be terse.", blocks=[{"title": "Units", "body": "none"}])
    await _judge(
        LLMRubric(),
        judges,
        _subject("4"),
        prompt_spec=spec,
        eval_workflow_config={"rubric": "The answer is exactly 4."},
    )
    (prompt,) = judges[0].prompts
    sections = prompt.split("\n\n")
    assert sections[:2] == ["Instructions:\nBe terse.", "Units:\nnone"]
    assert sections[2:5] == [
        "Rubric:\nThe answer is exactly 4.",
        "Case input:\nWhat is 2+2?",
        "Candidate output:\n4",
    ]
    assert "PASS or FAIL" in sections[5]


async def test_without_a_rubric_override_the_default_rubric_is_used() -> None:
    judges = _judges("PASS")
    await _judge(LLMRubric(), judges, _subject("4"))
    assert f"Rubric:\n{DEFAULT_RUBRIC}" in judges[0].prompts[0]


async def test_an_unparseable_verdict_fails_the_rubric_score() -> None:
    execution, score = await _judge(LLMRubric(), _judges("I think so"), _subject("4"))
    assert execution.status == "partial_failure"
    assert execution.failures[0].step_id == "rubric:parse_judgment"
    assert isinstance(score, ScoreError)


async def test_a_judge_that_fails_once_is_retried_and_the_history_kept() -> None:
    judge = FakeJudge("PASS", fail_on=[1], component_id="test/judge0")
    execution, score = await _judge(LLMRubric(), [judge], _subject("4"))
    assert isinstance(score, Score) and score.value == 1.0
    assert len(judge.prompts) == 2
    assert [h["attempt"] for h in execution.judge_responses[0].retry_history] == [1]


# --------------------------------------------------------------- panel_of_judges
async def test_panel_of_judges_averages_every_judge_with_agreement() -> None:
    judges = _judges("PASS", "FAIL", "pass.")
    execution, score = await _judge(PanelOfJudges(), judges, _subject("4"))
    assert [len(j.prompts) for j in judges] == [1, 1, 1]
    assert [c.judge_index for c in execution.judge_calls] == [0, 1, 2]
    assert isinstance(score, Score)
    assert score.value == pytest.approx(2 / 3)
    assert score.details["count"] == 3
    assert score.details["agreement"] == pytest.approx(1 / 3)  # 1 of 3 pairs agree
    assert score.details["per_judge"] == [
        {"judge_index": 0, "judge_model_id": "test/judge0", "label": "pass", "score": 1.0},
        {"judge_index": 1, "judge_model_id": "test/judge1", "label": "fail", "score": 0.0},
        {"judge_index": 2, "judge_model_id": "test/judge2", "label": "pass", "score": 1.0},
    ]


async def test_panel_aggregates_what_succeeded_when_a_judge_is_unreadable() -> None:
    judges = _judges("PASS", "unsure, sorry", "FAIL")
    execution, score = await _judge(PanelOfJudges(), judges, _subject("4"))
    assert execution.status == "partial_failure"
    assert [f.call_id for f in execution.failures] == ["judge-001"]
    assert isinstance(score, Score)
    assert score.value == 0.5 and score.details["count"] == 2
    assert score.details["agreement"] == 0.0


async def test_panel_keeps_duplicate_judges_apart_by_index() -> None:
    same = [
        FakeJudge("PASS", component_id="test/same"),
        FakeJudge("FAIL", component_id="test/same"),
    ]
    _, score = await _judge(PanelOfJudges(), same, _subject("4"))
    assert isinstance(score, Score) and score.value == 0.5
    assert [len(j.prompts) for j in same] == [1, 1]


async def test_panel_orders_more_than_ten_judges_by_index() -> None:
    judges = _judges(*(["PASS"] * 11 + ["FAIL"]))
    execution, _ = await _judge(PanelOfJudges(), judges, _subject("4"))
    assert [c.judge_index for c in execution.judge_calls] == list(range(12))


# ---------------------------------------------------------- majority_vote_judge
async def test_majority_vote_judge_takes_the_most_common_label() -> None:
    _, score = await _judge(MajorityVoteJudge(), _judges("FAIL", "PASS", "fail"), _subject("4"))
    assert score == Score(
        metric_id="builtin/majority_vote_judge",
        value=0.0,
        details={"winner": "fail", "counts": {"fail": 2, "pass": 1}},
    )


async def test_a_majority_tie_goes_to_the_label_seen_first() -> None:
    _, score = await _judge(MajorityVoteJudge(), _judges("PASS", "FAIL"), _subject("4"))
    assert isinstance(score, Score)
    assert (score.value, score.details["winner"]) == (1.0, "pass")
    _, score = await _judge(MajorityVoteJudge(), _judges("FAIL", "PASS"), _subject("4"))
    assert isinstance(score, Score)
    assert (score.value, score.details["winner"]) == (0.0, "fail")


# ------------------------------------------------------------------ pairwise
@pytest.mark.parametrize(
    ("replies", "value", "winner"),
    [
        (["A"], 1.0, "A"),
        (["B."], 0.0, "B"),
        (["tie"], 0.5, "TIE"),
        (["A", "B", "A"], pytest.approx(2 / 3), "A"),
        (["B", "TIE"], 0.25, "B"),
    ],
)
async def test_pairwise_judge_scores_a_b_and_tie(
    replies: list[str], value: Any, winner: str
) -> None:
    judges = _judges(*replies)
    execution, score = await _judge(PairwiseJudge(), judges, _subject("4", "five"))
    assert isinstance(score, Score)
    assert score.value == value and score.details["winner"] == winner
    for call in execution.judge_calls:
        assert (call.dimension_id, call.candidate_indices) == ("winner", [0, 1])
    prompt = judges[0].prompts[0]
    assert "Candidate A:\n4" in prompt and "Candidate B:\nfive" in prompt
    assert "Case input:\nWhat is 2+2?" in prompt


async def test_pairwise_refuses_an_answer_that_is_not_a_b_or_tie() -> None:
    execution, score = await _judge(PairwiseJudge(), _judges("PASS"), _subject("4", "5"))
    assert "should be A, B or TIE" in execution.failures[0].error_message
    assert isinstance(score, ScoreError)


# ------------------------------------------- every multi-judge metric, scripted
@pytest.mark.parametrize(
    ("metric", "replies", "outputs", "value"),
    [
        (PanelOfJudges(), ("PASS", "FAIL"), ("4",), 0.5),
        (MajorityVoteJudge(), ("FAIL", "FAIL"), ("4",), 0.0),
        (PairwiseJudge(), ("A", "TIE"), ("4", "5"), 0.75),
    ],
)
async def test_a_judge_that_fails_once_is_retried_in_every_multi_judge_metric(
    metric: Any, replies: tuple[str, str], outputs: tuple[str, ...], value: float
) -> None:
    judges = [
        FakeJudge(replies[0], fail_on=[1], component_id="test/judge0"),
        FakeJudge(replies[1], component_id="test/judge1"),
    ]
    execution, score = await _judge(metric, judges, _subject(*outputs))
    assert execution.status == "completed" and execution.failures == []
    assert isinstance(score, Score) and score.value == pytest.approx(value)
    assert [len(j.prompts) for j in judges] == [2, 1]
    histories = [r.retry_history for r in execution.judge_responses]
    assert [[h["attempt"] for h in history] for history in histories] == [[1], []]


async def test_majority_vote_counts_what_succeeded_when_a_judge_is_unreadable() -> None:
    judges = _judges("PASS", "unsure, sorry", "FAIL", "FAIL")
    execution, score = await _judge(MajorityVoteJudge(), judges, _subject("4"))
    assert execution.status == "partial_failure"
    assert [f.step_id for f in execution.failures] == ["judge-001:parse_judgment"]
    assert score == Score(
        metric_id="builtin/majority_vote_judge",
        value=0.0,
        details={"winner": "fail", "counts": {"pass": 1, "fail": 2}},
    )


# ------------------------------------------------------------------ building
@pytest.mark.parametrize("metric", [LLMRubric(), PanelOfJudges(), MajorityVoteJudge()])
def test_rubric_metrics_need_one_candidate_and_a_judge(metric: Any) -> None:
    judges = _judges("PASS")
    with pytest.raises(WorkflowBuildError, match="exactly 1 candidate"):
        metric.build_workflow(_subject("4", "5"), _ctx(judges))
    with pytest.raises(WorkflowBuildError, match="needs at least one judge model"):
        metric.build_workflow(_subject("4"), _ctx([]))
    trace = TraceSubject(trace=WorkflowTrace(trace_id="t"))
    with pytest.raises(WorkflowBuildError, match="judges a candidate set, got a TraceSubject"):
        metric.build_workflow(trace, _ctx(judges))


def test_pairwise_needs_two_candidates() -> None:
    with pytest.raises(WorkflowBuildError, match="at least 2 candidate"):
        PairwiseJudge().build_workflow(_subject("4"), _ctx(_judges("A")))


def test_metric_families_and_estimated_judge_calls() -> None:
    assert [m.metric_family for m in (LLMRubric(), PanelOfJudges(), MajorityVoteJudge())] == [
        "llm"
    ] * 3
    assert PairwiseJudge().metric_family == "selection"
    assert [LLMRubric().estimated_judge_calls(n) for n in (0, 1, 4)] == [0, 1, 1]
    for metric in (PanelOfJudges(), MajorityVoteJudge(), PairwiseJudge()):
        assert not hasattr(metric, "estimated_judge_calls")  # the default: one per judge


def test_the_workflow_fingerprint_follows_its_parameters() -> None:
    judges = _judges("PASS")
    one = LLMRubric().build_workflow(_subject("4"), _ctx(judges))
    again = LLMRubric().build_workflow(_subject("5"), _ctx(judges))
    other = LLMRubric().build_workflow(
        _subject("4"), _ctx(judges, eval_workflow_config={"rubric": "stricter"})
    )
    assert one.component_id == "builtin/rubric_workflow"
    assert one.fingerprint() == again.fingerprint() != other.fingerprint()
    pairwise = PairwiseJudge().build_workflow(_subject("4", "5"), _ctx(judges))
    assert pairwise.component_id == "builtin/pairwise_workflow"


@pytest.mark.parametrize("metric", [LLMRubric(), PanelOfJudges(), MajorityVoteJudge()])
def test_a_rubric_metric_builds_one_workflow_for_the_cases_of_a_run(metric: Any) -> None:
    """Cases that differ only in their subject share a workflow (and its one fingerprint)."""
    judges = _judges("PASS")
    one = metric.build_workflow(_subject("4"), _ctx(judges))
    assert metric.build_workflow(_subject("5"), _ctx(judges)) is one
    stricter = _ctx(judges, eval_workflow_config={"rubric": "stricter"})
    assert metric.build_workflow(_subject("4"), stricter) is not one
    other_judge = [FakeJudge("PASS", component_id="test/other")]
    assert metric.build_workflow(_subject("4"), _ctx(other_judge)) is not one


def test_a_pairwise_workflow_is_shared_by_the_cases_of_a_run() -> None:
    judges = _judges("A")
    one = PairwiseJudge().build_workflow(_subject("4", "5"), _ctx(judges))
    assert PairwiseJudge().build_workflow(_subject("6", "7"), _ctx(judges)) is one
    assert PairwiseJudge().build_workflow(_subject("4", "5"), _ctx(_judges("A", "B"))) is not one


# ------------------------------------------------------------- through a run
def test_the_judge_metrics_run_by_registry_id() -> None:
    experiment = Experiment(
        generation=GenerationConfig(
            generator=FakeGenerator(),
            candidate_policy={"num_samples": 2},
            reducer="builtin/majority_vote",
        ),
        evaluation=EvaluationConfig(
            metrics=[
                "builtin/llm_rubric",
                "builtin/panel_of_judges",
                "builtin/majority_vote_judge",
                "builtin/pairwise_judge",
            ],
            judge_models=["builtin/demo_judge", "builtin/demo_judge"],
        ),
        datasets=[Dataset(dataset_id="sample", cases=[CASE])],
    )
    assert experiment.estimate().planned_judge_calls == 1 + 2 + 2 + 2
    result = experiment.run(store=InMemoryRunStore())
    scores = {s.metric_id: s for s in result.cases[0].scores}
    # The demo judge answers "pass": a rubric pass everywhere, and no pairwise verdict.
    for metric_id in ("builtin/llm_rubric", "builtin/panel_of_judges"):
        assert scores[metric_id] == Score(
            metric_id=metric_id, value=1.0, details=scores[metric_id].details
        )
    assert scores["builtin/panel_of_judges"].details["agreement"] == 1.0
    assert scores["builtin/majority_vote_judge"].details["winner"] == "pass"
    assert isinstance(scores["builtin/pairwise_judge"], ScoreError)
