"""``DefaultWorkflowRunner``: plan, render, call, parse, score and aggregate a judge workflow."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio

from themis.core._construct import maker
from themis.core._judge_calls import GuardedJudge, judge_retry_policy
from themis.core._retry import RetryExhaustedError
from themis.core._workflow_steps import EventSink, Steps, error_text
from themis.core.errors import WorkflowBuildError
from themis.core.models import Score, TraceStep, WorkflowTrace
from themis.core.planner import judge_seed_for_call
from themis.core.subjects import ConversationSubject, TraceSubject
from themis.core.workflows import (
    AggregationResult,
    EvaluationExecution,
    JudgeCall,
    JudgeResponse,
    ParsedJudgment,
    RenderedJudgePrompt,
    WorkflowFailure,
)

if TYPE_CHECKING:
    from themis.core.config import RuntimeConfig
    from themis.core.contexts import EvalScoreContext

__all__ = ["DefaultWorkflowRunner", "WorkflowBuildError"]

_Record = TypeVar("_Record", JudgeCall, JudgeResponse)
_PLAIN_RECORDS = (JudgeCall, JudgeResponse)
_new = object.__new__
_set = object.__setattr__

_new_execution = maker(
    EvaluationExecution,
    "execution_id",
    "subject_kind",
    "status",
    "judge_calls",
    "rendered_prompts",
    "judge_responses",
    "parsed_judgments",
    "scores",
    "failures",
    "aggregation_output",
    "trace",
)
_new_workflow_trace = maker(WorkflowTrace, "trace_id", "steps")


def _checked(workflow: Any, method: str, expected: type, *args: Any) -> Any:
    """Call a workflow method and check its result type (None passes only for Score/Agg)."""
    result = getattr(workflow, method)(*args)
    if isinstance(result, expected) or (result is None and expected in (Score, AggregationResult)):
        return result
    raise TypeError(
        f"{workflow.component_id}.{method}() returned {type(result).__name__}; "
        f"expected {expected.__name__}"
    )


@dataclass
class _CallOutcome:
    """What one judge call produced; the parts after a failed step stay None."""

    steps: Steps
    response: JudgeResponse | None = None
    judgment: ParsedJudgment | None = None
    score: Score | None = None


def _call_order(call: JudgeCall) -> tuple[Any, ...]:
    return (
        call.call_id,
        call.dimension_id or "",
        call.judge_model_id,
        -1 if call.judge_index is None else call.judge_index,
        call.repeat_index,
        list(call.candidate_indices),
    )


class DefaultWorkflowRunner:
    """Runs a workflow's judge calls concurrently and records every step of each.

    Inside a run, the runtime binds the runner to the run's judge models (behind the judge
    limits and retries) and its event writer; passing ``DefaultWorkflowRunner()`` as
    ``workflow_runner=`` is therefore the same as passing nothing. Used on its own, it
    calls ``judge_models`` directly with the judge retry policy of ``runtime`` and sends
    step events to ``event_sink`` when one is given.
    """

    def __init__(
        self,
        judge_models: Sequence[Any] = (),
        *,
        runtime: RuntimeConfig | None = None,
        event_sink: EventSink | None = None,
    ) -> None:
        policy = judge_retry_policy(runtime)
        self._judges: list[Any] = [
            j if isinstance(j, GuardedJudge) else GuardedJudge(j, policy=policy)
            for j in judge_models
        ]
        self._sink = event_sink

    def bound_to_run(
        self, judges: Sequence[GuardedJudge], event_sink: EventSink | None
    ) -> DefaultWorkflowRunner:
        """A copy that calls the run's guarded judges and emits into the run's writer."""
        bound = copy.copy(self)
        bound._judges = list(judges)
        bound._sink = event_sink
        return bound

    async def run_evaluation(
        self, workflow: Any, subject: Any, metric_id: str, ctx: EvalScoreContext
    ) -> EvaluationExecution:
        """Plan, render every prompt, run the calls, then aggregate what succeeded."""
        raw_fp = workflow.fingerprint
        fingerprint = str(raw_fp() if callable(raw_fp) else raw_fp)
        fields = {
            "run_id": ctx.run_id,
            "case_id": ctx.case.case_id,
            "dataset_id": ctx.dataset_id,
            "case_key": ctx.case_key,
            "metric_id": metric_id,
            "workflow_id": str(workflow.component_id),
        }
        calls = self._plan(workflow, metric_id, ctx)
        outcomes = [_CallOutcome(Steps(self._sink, fields, c.call_id)) for c in calls]
        prompts = [
            self._render(workflow, call, subject, ctx, outcome.steps)
            for call, outcome in zip(calls, outcomes, strict=True)
        ]
        if len(calls) == 1:
            await self._run_call(workflow, calls[0], prompts[0], ctx, outcomes[0])
        elif calls:
            async with anyio.create_task_group() as tg:
                for call, prompt, outcome in zip(calls, prompts, outcomes, strict=True):
                    tg.start_soon(self._run_call, workflow, call, prompt, ctx, outcome)

        # Assembled in call order, so the record does not depend on completion order.
        trace_steps: list[TraceStep] = []
        failures: list[WorkflowFailure] = []
        for outcome in outcomes:
            trace_steps += outcome.steps.steps
            failures += outcome.steps.failures
        judgments = [o.judgment for o in outcomes if o.judgment is not None]
        scores = [o.score for o in outcomes if o.score is not None]
        own = Steps(self._sink, fields, None)
        own.start("aggregate")
        aggregation: AggregationResult | None = None
        try:
            aggregation = _checked(workflow, "aggregate", AggregationResult, judgments, scores, ctx)
        except Exception as exc:
            own.fail("aggregate", exc)
        else:
            value = None if aggregation is None else aggregation.value
            own.done(
                "aggregate",
                {
                    "method": None if aggregation is None else aggregation.method,
                    "value": value if _is_number(value) else None,
                },
            )
        execution_id = f"{ctx.run_id}:{ctx.case_key}:{metric_id}:{fingerprint}"
        failures += own.failures
        return _new_execution(
            execution_id=execution_id,
            subject_kind=_subject_kind(subject),
            status="partial_failure" if failures else "completed",
            judge_calls=calls,
            rendered_prompts=prompts,
            judge_responses=[o.response for o in outcomes if o.response is not None],
            parsed_judgments=judgments,
            scores=scores,
            failures=failures,
            aggregation_output=aggregation,
            trace=_new_workflow_trace(
                trace_id=f"{execution_id}:trace", steps=trace_steps + own.steps
            ),
        )

    # ---------------------------------------------------------------- planning
    def _plan(self, workflow: Any, metric_id: str, ctx: EvalScoreContext) -> list[JudgeCall]:
        try:
            planned = list(workflow.judge_calls())
        except Exception as exc:
            raise WorkflowBuildError(
                f"{workflow.component_id}.judge_calls() failed for metric {metric_id!r}: "
                f"{error_text(exc)}"
            ) from exc
        bad = [c for c in planned if not isinstance(c, JudgeCall)]
        if bad:
            raise WorkflowBuildError(
                f"{workflow.component_id}.judge_calls() returned {type(bad[0]).__name__}; "
                "every call must be a themis.core.workflows.JudgeCall"
            )
        planned.sort(key=_call_order)
        seen: set[str] = set()
        calls: list[JudgeCall] = []
        for call in planned:
            if call.call_id in seen:
                raise WorkflowBuildError(
                    f"{workflow.component_id} plans two judge calls with call_id "
                    f"{call.call_id!r}; call ids name the steps and must be unique"
                )
            seen.add(call.call_id)
            if call.effective_seed is None:
                seed = judge_seed_for_call(
                    run_id=ctx.run_id,
                    case_key=ctx.case_key or ctx.case.case_id,
                    metric_id=metric_id,
                    judge_model_id=call.judge_model_id,
                    judge_index=call.judge_index,
                    repeat_index=call.repeat_index,
                    dimension_id=call.dimension_id,
                    candidate_indices=call.candidate_indices,
                )
                call = _updated(call, {"effective_seed": seed})
            calls.append(call)
        return calls

    def _render(
        self, workflow: Any, call: JudgeCall, subject: Any, ctx: EvalScoreContext, steps: Steps
    ) -> RenderedJudgePrompt:
        steps.start("render_prompt")
        try:
            prompt: RenderedJudgePrompt = _checked(
                workflow, "render_prompt", RenderedJudgePrompt, call, subject, ctx
            )
        except Exception as exc:
            steps.fail("render_prompt", exc)
            # A prompt that cannot be rendered fails the metric for the case (API §3.3).
            raise WorkflowBuildError(
                f"{workflow.component_id} could not render the prompt of judge call "
                f"{call.call_id!r}: {error_text(exc)}"
            ) from exc
        steps.done("render_prompt", {"prompt_id": prompt.prompt_id})
        return prompt

    # ------------------------------------------------------------------- calls
    def _judge_for(self, call: JudgeCall) -> GuardedJudge:
        judges = self._judges
        if call.judge_index is not None:
            if not 0 <= call.judge_index < len(judges):
                raise LookupError(
                    f"judge call {call.call_id!r} names judge_index {call.judge_index}, but "
                    f"the run has {len(judges)} judge model(s); check evaluation.judge_models"
                )
            judge: GuardedJudge = judges[call.judge_index]
            if judge.component_id != call.judge_model_id:
                raise LookupError(
                    f"judge call {call.call_id!r} expects {call.judge_model_id!r} at "
                    f"judge_index {call.judge_index}, but that judge is {judge.component_id!r}"
                )
            return judge
        for judge in judges:
            if judge.component_id == call.judge_model_id:
                return judge
        known = [j.component_id for j in judges]
        raise LookupError(
            f"judge call {call.call_id!r} names judge model {call.judge_model_id!r}, which "
            f"is not among the run's judge models {known}; add it to evaluation.judge_models"
        )

    async def _run_call(
        self,
        workflow: Any,
        call: JudgeCall,
        prompt: RenderedJudgePrompt,
        ctx: EvalScoreContext,
        out: _CallOutcome,
    ) -> None:
        steps = out.steps
        steps.start("model_call")
        history: list[dict[str, Any]] = []
        try:
            judge = self._judge_for(call)
            started = time.perf_counter()
            try:
                reply, history = await judge.call(prompt.content, call.effective_seed)
            except RetryExhaustedError as failure:
                history = failure.history
                raise failure.error from None
            latency_ms = (time.perf_counter() - started) * 1000.0
            response = _response_of(reply, judge, call, history, latency_ms)
        except Exception as exc:
            steps.fail("model_call", exc, history)
            return
        out.response = response
        steps.done(
            "model_call", {"judge_model_id": judge.component_id, "attempts": len(history) + 1}
        )

        steps.start("parse_judgment")
        try:
            judgment: ParsedJudgment = _checked(
                workflow, "parse_judgment", ParsedJudgment, call, response, ctx
            )
        except Exception as exc:
            steps.fail("parse_judgment", exc)
            return
        out.judgment = judgment
        steps.done("parse_judgment", {"label": judgment.label, "score": judgment.score})

        steps.start("emit_score")
        try:
            score: Score | None = _checked(workflow, "score_judgment", Score, call, judgment, ctx)
        except Exception as exc:
            steps.fail("emit_score", exc)
            return
        out.score = score
        steps.done("emit_score", {"value": None if score is None else score.value})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _response_of(
    reply: Any,
    judge: GuardedJudge,
    call: JudgeCall,
    history: list[dict[str, Any]],
    latency_ms: float,
) -> JudgeResponse:
    identity: dict[str, Any] = {
        "judge_model_id": judge.component_id,
        "judge_model_version": judge.version,
        "judge_model_fingerprint": judge.fingerprint(),
        "effective_seed": call.effective_seed,
        "retry_history": history,
    }
    if isinstance(reply, str):
        return JudgeResponse(raw_response=reply, latency_ms=latency_ms, **identity)
    if isinstance(reply, JudgeResponse):
        if reply.latency_ms is None:
            identity["latency_ms"] = latency_ms
        if not history:
            identity["retry_history"] = reply.retry_history
        return _updated(reply, identity)
    raise TypeError(
        f"{judge.component_id}.judge() returned {type(reply).__name__}; "
        "expected a JudgeResponse or a str"
    )


def _updated(model: _Record, update: dict[str, Any]) -> _Record:
    """``model.model_copy(update=update)`` for the plain workflow records, built directly.

    pydantic's copy goes through ``__copy__`` and a generic update, and ``construct``
    through the class's defaults; the runner copies a call (its seed) and a reply (its
    judge's identity) per judge call, every field already in hand. A subclass, which may
    carry private state or extra fields, still takes pydantic's path.
    """
    if type(model) not in _PLAIN_RECORDS:
        return model.model_copy(update=update)
    copied = _new(type(model))
    _set(copied, "__dict__", {**model.__dict__, **update})
    _set(copied, "__pydantic_fields_set__", model.__pydantic_fields_set__.union(update))
    # The plain records forbid extra fields and have no private attributes.
    _set(copied, "__pydantic_extra__", None)
    _set(copied, "__pydantic_private__", None)
    return copied


def _subject_kind(subject: Any) -> Literal["candidate_set", "trace", "conversation"]:
    if isinstance(subject, TraceSubject):
        return "trace"
    if isinstance(subject, ConversationSubject):
        return "conversation"
    return "candidate_set"
