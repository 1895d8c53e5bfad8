"""``DefaultWorkflowRunner`` on its own: planning, steps, retries, failures and judges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from themis.core.case_refs import case_key_for
from themis.core.config import RuntimeConfig
from themis.core.contexts import EvalScoreContext
from themis.core.errors import NonRetryableError, RetryableError, WorkflowBuildError
from themis.core.events import RunEvent
from themis.core.models import Case, GenerationResult, ParsedOutput, Score
from themis.core.planner import judge_seed_for_call
from themis.core.snapshot import ComponentRef
from themis.core.subjects import CandidateSetSubject
from themis.core.workflow_runner import DefaultWorkflowRunner
from themis.core.workflows import (
    AggregationResult,
    JudgeCall,
    JudgeResponse,
    ParsedJudgment,
    RenderedJudgePrompt,
)
from themis.testing import FakeJudge

pytestmark = pytest.mark.anyio

RUN_ID = "run-runner"
CASE = Case(case_id="case-1", input="2+2", expected_output="4")
KEY = case_key_for("sample", "case-1")
METRIC = "test/scripted_metric"
NO_WAIT = RuntimeConfig(judge_retry_delay=0.0, retry_jitter=0.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _ctx(judges: list[Any]) -> EvalScoreContext:
    return EvalScoreContext(
        run_id=RUN_ID,
        dataset_id="sample",
        case_key=KEY,
        case=CASE,
        parsed_output=ParsedOutput(value="4"),
        judge_model_refs=[
            ComponentRef(component_id=j.component_id, version="1.0", fingerprint="f")
            for j in judges
        ],
    )


SUBJECT = CandidateSetSubject(candidates=[GenerationResult(candidate_id="c0", final_output="4")])


class ScriptedWorkflow:
    """Plans the given calls; the judgment's score is the reply read as a float."""

    component_id = "test/scripted_workflow"
    version = "1.0"

    def __init__(
        self,
        calls: list[JudgeCall],
        *,
        render: Callable[[JudgeCall], str] | None = None,
        aggregate: Callable[[list[ParsedJudgment], list[Score]], Any] | None = None,
    ) -> None:
        self.calls = calls
        self._render = render or (lambda call: f"prompt for {call.call_id}")
        self._aggregate = aggregate
        self.parsed: list[str] = []

    def fingerprint(self) -> str:
        return "wf-fingerprint"

    def judge_calls(self) -> list[JudgeCall]:
        return list(self.calls)

    def render_prompt(self, call: JudgeCall, subject: Any, ctx: Any) -> RenderedJudgePrompt:
        return RenderedJudgePrompt(prompt_id=call.call_id, content=self._render(call))

    def parse_judgment(self, call: JudgeCall, response: JudgeResponse, ctx: Any) -> ParsedJudgment:
        self.parsed.append(call.call_id)
        return ParsedJudgment(label=response.raw_response, score=float(response.raw_response))

    def score_judgment(self, call: JudgeCall, judgment: ParsedJudgment, ctx: Any) -> Score | None:
        assert judgment.score is not None
        return Score(metric_id=METRIC, value=judgment.score)

    def aggregate(
        self, judgments: list[ParsedJudgment], scores: list[Score], ctx: Any
    ) -> AggregationResult | None:
        if self._aggregate is not None:
            result: AggregationResult | None = self._aggregate(judgments, scores)
            return result
        values = [s.value for s in scores]
        return AggregationResult(method="mean", value=sum(values) / len(values) if values else None)


class SyncJudge:
    """A sync, non-blocking judge that returns a plain string."""

    version = "2.0"
    blocking = False

    def __init__(self, component_id: str, reply: str) -> None:
        self.component_id = component_id
        self.reply = reply
        self.prompts: list[str] = []

    def fingerprint(self) -> str:
        return f"fp-{self.component_id}-{self.reply}"

    def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.prompts.append(prompt)
        return self.reply


def _call(call_id: str, judge_id: str, **extra: Any) -> JudgeCall:
    return JudgeCall(call_id=call_id, judge_model_id=judge_id, **extra)


async def test_calls_are_sorted_and_seeded_by_the_planner_rule() -> None:
    judge = SyncJudge("test/judge", "1")
    calls = [
        _call("b", "test/judge", repeat_index=1),
        _call("a", "test/judge", dimension_id="z"),
        _call("b", "test/judge", repeat_index=0, candidate_indices=[0, 1]),
    ]
    # Two calls share call_id "b": that is a planning error, caught before any judge call.
    with pytest.raises(WorkflowBuildError, match="call_id 'b'"):
        await DefaultWorkflowRunner([judge]).run_evaluation(
            ScriptedWorkflow(calls), SUBJECT, METRIC, _ctx([judge])
        )
    assert judge.prompts == []

    calls = [_call("c", "test/judge", repeat_index=2), _call("a", "test/judge", dimension_id="z")]
    execution = await DefaultWorkflowRunner([judge]).run_evaluation(
        ScriptedWorkflow(calls), SUBJECT, METRIC, _ctx([judge])
    )
    assert [c.call_id for c in execution.judge_calls] == ["a", "c"]
    for call in execution.judge_calls:
        assert call.effective_seed == judge_seed_for_call(
            run_id=RUN_ID,
            case_key=KEY,
            metric_id=METRIC,
            judge_model_id="test/judge",
            judge_index=None,
            repeat_index=call.repeat_index,
            dimension_id=call.dimension_id,
            candidate_indices=call.candidate_indices,
        )
    assert [r.effective_seed for r in execution.judge_responses] == [
        c.effective_seed for c in execution.judge_calls
    ]


async def test_a_string_reply_becomes_the_raw_response_with_the_judge_identity() -> None:
    judge = SyncJudge("test/judge", "0.5")
    execution = await DefaultWorkflowRunner([judge]).run_evaluation(
        ScriptedWorkflow([_call("only", "test/judge")]), SUBJECT, METRIC, _ctx([judge])
    )
    (response,) = execution.judge_responses
    assert response.raw_response == "0.5"
    assert (response.judge_model_id, response.judge_model_version) == ("test/judge", "2.0")
    assert response.judge_model_fingerprint == "fp-test/judge-0.5"
    assert response.latency_ms is not None and response.retry_history == []
    assert execution.status == "completed"
    assert execution.execution_id == f"{RUN_ID}:{KEY}:{METRIC}:wf-fingerprint"
    assert execution.aggregation_output is not None
    assert execution.aggregation_output.value == 0.5
    assert execution.subject_kind == "candidate_set"


async def test_every_step_emits_events_and_the_trace_groups_steps_by_call() -> None:
    events: list[RunEvent] = []
    judges = [SyncJudge("test/a", "1"), SyncJudge("test/b", "0")]
    calls = [_call("second", "test/b"), _call("first", "test/a")]
    runner = DefaultWorkflowRunner(judges, event_sink=events.append)
    execution = await runner.run_evaluation(ScriptedWorkflow(calls), SUBJECT, METRIC, _ctx(judges))
    steps = [s.step_name for s in execution.trace.steps]
    assert steps == [
        "first:render_prompt",
        "first:model_call",
        "first:parse_judgment",
        "first:emit_score",
        "second:render_prompt",
        "second:model_call",
        "second:parse_judgment",
        "second:emit_score",
        "aggregate",
    ]
    started = [e.step_id for e in events if e.event_type == "step_started"]  # type: ignore[attr-defined]
    completed = [e.step_id for e in events if e.event_type == "step_completed"]  # type: ignore[attr-defined]
    assert sorted(started) == sorted(steps) == sorted(completed)
    # Every prompt is rendered before any judge is called.
    assert started[:2] == ["first:render_prompt", "second:render_prompt"]
    for event in events:
        data = event.__dict__
        assert (data["case_id"], data["dataset_id"], data["case_key"]) == ("case-1", "sample", KEY)
        assert data["metric_id"] == METRIC
        assert data["workflow_id"] == "test/scripted_workflow"
    assert [p.content for p in execution.rendered_prompts] == [
        "prompt for first",
        "prompt for second",
    ]
    assert [r.raw_response for r in execution.judge_responses] == ["1", "0"]


async def test_a_judge_that_fails_once_succeeds_on_retry_and_keeps_the_history() -> None:
    judge = FakeJudge("1", fail_on=[1], component_id="test/flaky")
    execution = await DefaultWorkflowRunner([judge], runtime=NO_WAIT).run_evaluation(
        ScriptedWorkflow([_call("only", "test/flaky")]), SUBJECT, METRIC, _ctx([judge])
    )
    assert len(judge.prompts) == 2
    assert execution.status == "completed" and execution.failures == []
    (history,) = [r.retry_history for r in execution.judge_responses]
    assert [h["attempt"] for h in history] == [1]
    assert history[0]["error_type"] == "RetryableError"
    assert history[0]["reason"] == "explicit"


class FlakySyncJudge(SyncJudge):
    """A sync, non-blocking judge that raises on its first ``failures`` calls."""

    def __init__(self, component_id: str, reply: str, failures: int) -> None:
        super().__init__(component_id, reply)
        self.failures = failures

    def judge(self, prompt: str, *, seed: int | None = None) -> str:
        self.prompts.append(prompt)
        if len(self.prompts) <= self.failures:
            raise RetryableError(f"flaky call {len(self.prompts)}")
        return self.reply


async def test_an_inline_judge_that_fails_once_is_retried_and_keeps_the_history() -> None:
    """An inline judge's first attempt is called outside the retry loop, yet counts in it."""
    judge = FlakySyncJudge("test/flaky", "1", failures=1)
    execution = await DefaultWorkflowRunner([judge], runtime=NO_WAIT).run_evaluation(
        ScriptedWorkflow([_call("only", "test/flaky")]), SUBJECT, METRIC, _ctx([judge])
    )
    assert len(judge.prompts) == 2
    assert execution.status == "completed" and execution.failures == []
    (history,) = [r.retry_history for r in execution.judge_responses]
    assert [(h["attempt"], h["error_message"], h["reason"]) for h in history] == [
        (1, "flaky call 1", "explicit")
    ]


async def test_an_inline_judge_that_keeps_failing_is_tried_as_often_as_the_policy_says() -> None:
    judge = FlakySyncJudge("test/flaky", "1", failures=5)
    execution = await DefaultWorkflowRunner([judge], runtime=NO_WAIT).run_evaluation(
        ScriptedWorkflow([_call("only", "test/flaky")]), SUBJECT, METRIC, _ctx([judge])
    )
    assert len(judge.prompts) == 3  # judge_retry_attempts
    (failure,) = execution.failures
    assert failure.error_message == "RetryableError: flaky call 3"
    assert [h["error_message"] for h in failure.retry_history] == [
        "flaky call 1",
        "flaky call 2",
        "flaky call 3",
    ]


async def test_an_inline_judge_may_return_an_awaitable() -> None:
    class DeferredJudge(SyncJudge):
        def judge(self, prompt: str, *, seed: int | None = None) -> Any:
            async def reply() -> str:
                return self.reply

            return reply()

    judge = DeferredJudge("test/deferred", "1")
    execution = await DefaultWorkflowRunner([judge], runtime=NO_WAIT).run_evaluation(
        ScriptedWorkflow([_call("only", "test/deferred")]), SUBJECT, METRIC, _ctx([judge])
    )
    assert [r.raw_response for r in execution.judge_responses] == ["1"]


async def test_a_judge_that_keeps_failing_records_a_failure_and_skips_the_rest_of_the_call() -> (
    None
):
    events: list[RunEvent] = []
    good = SyncJudge("test/good", "1")
    bad = FakeJudge("1", fail_on=[1, 2, 3], component_id="test/bad")
    workflow = ScriptedWorkflow([_call("a", "test/good"), _call("b", "test/bad")])
    runner = DefaultWorkflowRunner([good, bad], runtime=NO_WAIT, event_sink=events.append)
    execution = await runner.run_evaluation(workflow, SUBJECT, METRIC, _ctx([good, bad]))
    assert len(bad.prompts) == 3  # judge_retry_attempts
    assert execution.status == "partial_failure"
    (failure,) = execution.failures
    assert (failure.call_id, failure.step_id, failure.step_type) == (
        "b",
        "b:model_call",
        "model_call",
    )
    assert [h["attempt"] for h in failure.retry_history] == [1, 2, 3]
    assert workflow.parsed == ["a"]  # the failed call never reached parse_judgment
    # Aggregation ran on what succeeded.
    assert execution.aggregation_output is not None and execution.aggregation_output.value == 1.0
    (step_failed,) = [e for e in events if e.event_type == "step_failed"]
    assert step_failed.__dict__["step_id"] == "b:model_call"
    assert len(step_failed.__dict__["retry_history"]) == 3


async def test_a_non_retryable_judge_error_is_not_retried() -> None:
    judge = FakeJudge("1", fail_on=[1], component_id="test/judge", error=NonRetryableError)
    execution = await DefaultWorkflowRunner([judge], runtime=NO_WAIT).run_evaluation(
        ScriptedWorkflow([_call("only", "test/judge")]), SUBJECT, METRIC, _ctx([judge])
    )
    assert len(judge.prompts) == 1
    assert execution.failures[0].error_message.startswith("NonRetryableError")


async def test_an_unparseable_reply_is_a_parse_failure_and_the_response_is_kept() -> None:
    judges = [SyncJudge("test/a", "0.25"), SyncJudge("test/b", "not a number")]
    workflow = ScriptedWorkflow([_call("a", "test/a"), _call("b", "test/b")])
    execution = await DefaultWorkflowRunner(judges).run_evaluation(
        workflow, SUBJECT, METRIC, _ctx(judges)
    )
    assert execution.status == "partial_failure"
    (failure,) = execution.failures
    assert failure.step_id == "b:parse_judgment"
    assert "could not convert string to float" in failure.error_message
    assert [r.raw_response for r in execution.judge_responses] == ["0.25", "not a number"]
    assert [j.label for j in execution.parsed_judgments] == ["0.25"]
    assert execution.aggregation_output is not None
    assert execution.aggregation_output.value == 0.25


async def test_judges_resolve_by_index_so_duplicate_ids_stay_distinct() -> None:
    first = SyncJudge("test/same", "1")
    second = SyncJudge("test/same", "0")
    calls = [_call("x", "test/same", judge_index=1), _call("y", "test/same")]
    execution = await DefaultWorkflowRunner([first, second]).run_evaluation(
        ScriptedWorkflow(calls), SUBJECT, METRIC, _ctx([first, second])
    )
    # judge_index=1 picks the second judge; no index picks the first with that id.
    assert [r.raw_response for r in execution.judge_responses] == ["0", "1"]
    assert len(first.prompts) == len(second.prompts) == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (_call("x", "test/unknown"), "not among the run's judge models ['test/a']"),
        (_call("x", "test/a", judge_index=3), "judge_index 3, but the run has 1 judge model"),
        (_call("x", "test/other", judge_index=0), "expects 'test/other' at judge_index 0"),
    ],
)
async def test_an_unresolvable_judge_fails_the_model_call_step(
    call: JudgeCall, message: str
) -> None:
    judge = SyncJudge("test/a", "1")
    execution = await DefaultWorkflowRunner([judge]).run_evaluation(
        ScriptedWorkflow([call]), SUBJECT, METRIC, _ctx([judge])
    )
    (failure,) = execution.failures
    assert failure.step_type == "model_call"
    assert message in failure.error_message
    assert execution.aggregation_output is not None
    assert execution.aggregation_output.value is None


async def test_a_prompt_that_cannot_be_rendered_fails_the_whole_metric() -> None:
    judge = SyncJudge("test/a", "1")

    def broken(call: JudgeCall) -> str:
        raise KeyError("candidate_output")

    events: list[RunEvent] = []
    with pytest.raises(WorkflowBuildError, match="could not render the prompt of judge call 'x'"):
        await DefaultWorkflowRunner([judge], event_sink=events.append).run_evaluation(
            ScriptedWorkflow([_call("x", "test/a")], render=broken), SUBJECT, METRIC, _ctx([judge])
        )
    assert judge.prompts == []
    assert [e.event_type for e in events] == ["step_started", "step_failed"]


async def test_an_aggregate_that_raises_is_recorded_as_a_failure() -> None:
    judge = SyncJudge("test/a", "1")

    def explode(judgments: list[ParsedJudgment], scores: list[Score]) -> Any:
        raise ZeroDivisionError("no scores")

    execution = await DefaultWorkflowRunner([judge]).run_evaluation(
        ScriptedWorkflow([_call("x", "test/a")], aggregate=explode), SUBJECT, METRIC, _ctx([judge])
    )
    assert execution.status == "partial_failure"
    assert [f.step_id for f in execution.failures] == ["aggregate"]
    assert execution.aggregation_output is None
    assert [s.value for s in execution.scores] == [1.0]


async def test_a_wrong_reply_type_fails_the_call_without_retrying() -> None:
    class NumberJudge(SyncJudge):
        def judge(self, prompt: str, *, seed: int | None = None) -> Any:
            self.prompts.append(prompt)
            return 42

    judge = NumberJudge("test/num", "")
    execution = await DefaultWorkflowRunner([judge]).run_evaluation(
        ScriptedWorkflow([_call("x", "test/num")]), SUBJECT, METRIC, _ctx([judge])
    )
    assert len(judge.prompts) == 1
    assert "returned int; expected a JudgeResponse or a str" in execution.failures[0].error_message
