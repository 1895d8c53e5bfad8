"""The judge stage of a case: workflow metrics, their subjects, the judge cache and proxies."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

import anyio
from pydantic_core import to_json

from themis.core._case import _SCORE_CONTEXT, json_dump
from themis.core._compile import component_ref
from themis.core._construct import maker
from themis.core._judge_calls import GuardedJudge, judge_retry_policy
from themis.core.base import HashTemplate, to_canonical
from themis.core.contexts import EvalScoreContext
from themis.core.errors import WorkflowBuildError
from themis.core.events import (
    EvaluationCompletedEvent,
    EvaluationFailedEvent,
    ScoreCompletedEvent,
    ScoreFailedEvent,
)
from themis.core.logs import get_logger
from themis.core.models import (
    ConversationTrace,
    GenerationResult,
    ParsedOutput,
    ReducedCandidate,
    Score,
    ScoreError,
    WorkflowTrace,
)
from themis.core.subjects import (
    CandidateSetSubject,
    ConversationSubject,
    TraceSubject,
    candidate_set_subject_for_selection_metric,
)
from themis.core.workflow_runner import DefaultWorkflowRunner
from themis.core.workflows import EvaluationExecution

if TYPE_CHECKING:
    from themis.core._pipeline import CaseInput, CasePipeline
    from themis.core.results import CaseExecutionState
    from themis.core.snapshot import ComponentRef

__all__ = ["JudgeStage", "final_score", "judge_proxies"]

log = get_logger(__name__)

# Models built once or more per judged case, each by a maker specialised to its call site.
_CASE = ("run_id", "case_id", "dataset_id", "case_key", "candidate_id", "metric_id")
# The ids of the case's events, passed as one dict (see ``maker``'s ``shared``).
_IDS = _CASE[:4]
_new_evaluation_completed = maker(
    EvaluationCompletedEvent,
    *_CASE,
    "execution",
    "execution_blob_ref",
    "cache_hit",
    "source_run_id",
    shared=_IDS,
)
_new_score_completed = maker(
    ScoreCompletedEvent, *_CASE, "score", "cache_hit", "source_run_id", shared=_IDS
)
_new_candidate = maker(GenerationResult, *GenerationResult.model_fields)
_new_candidate_set = maker(CandidateSetSubject, "candidates")
_new_eval_context = maker(
    EvalScoreContext,
    *_SCORE_CONTEXT,
    "judge_model_refs",
    "judge_seed",
    "prompt_spec",
    "judge_config",
    "eval_workflow_config",
)
# ``canonical_json``'s encoder, for data already in canonical form (no second walk over it).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)
# The canonical JSON of a payload is at most this many bytes per byte of its compact UTF-8
# JSON: a one-byte character escapes to at most 6 (``\u007f``), a 2-4 byte one to 6 or 12.
_CANONICAL_BYTES_PER_BYTE = 6


def judge_proxies(pipeline: CasePipeline) -> list[Any]:
    """The run's judge models, in order, behind the judge limits and retries."""
    ctx = pipeline.ctx
    policy = judge_retry_policy(ctx.runtime)
    return [
        GuardedJudge(
            model, policy=policy, limits=ctx.limits, thread_limiter=ctx.limits.thread_limiter
        )
        for model in ctx.components.judge_models
    ]


def final_score(execution: EvaluationExecution, metric_id: str) -> Score | ScoreError:
    """The metric's score for a case from its execution, by the rule of API §5.5 step 6."""
    aggregation = execution.aggregation_output
    if aggregation is not None:
        value = aggregation.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                return Score(
                    metric_id=metric_id, value=float(value), details=dict(aggregation.details)
                )
    if len(execution.scores) == 1 and not execution.failures:
        only = execution.scores[0]
        return (
            only
            if only.metric_id == metric_id
            else only.model_copy(update={"metric_id": metric_id})
        )
    failures = "; ".join(f"{f.step_id}: {f.error_message}" for f in execution.failures)
    return ScoreError(
        metric_id=metric_id,
        reason=(
            f"the evaluation execution produced no usable final score (aggregation "
            f"{'missing' if aggregation is None else 'not numeric'}, "
            f"{len(execution.scores)} score(s), {len(execution.failures)} failure(s))"
            + (f": {failures}" if failures else "")
        ),
        details={"execution_id": execution.execution_id, "status": execution.status},
    )


@dataclass(frozen=True)
class _WorkflowMetric:
    metric: Any
    kind: str
    metric_id: str
    ref: ComponentRef
    # The metric's judge cache key (§5.12) with every run-wide part encoded once; a case
    # adds its subject's hash and its judge seed.
    key: HashTemplate
    # The text ``judge_seed_for_call`` hashes for the metric's seed in this run (no judge,
    # repeat 0), either side of the case key.
    seed_text: tuple[str, str]


def _scalar_json(value: Any) -> str | None:
    """The canonical JSON of a string or an int, as ``canonical_json`` writes it; else None."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    return None


def _settled(prior: CaseExecutionState | None, metric_id: str) -> bool:
    """True when a stored execution finished cleanly with a successful score."""
    if prior is None or metric_id not in prior.successful_scores:
        return False
    execution = prior.evaluation_executions.get(metric_id)
    return execution is not None and execution.status == "completed" and not execution.failures


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class JudgeStage:
    """Runs one case's workflow metrics concurrently and records each as events."""

    def __init__(self, pipeline: CasePipeline) -> None:
        self.pipeline = pipeline
        ctx = pipeline.ctx
        identity = ctx.snapshot.identity
        self.judges = judge_proxies(pipeline)
        self.judge_refs = list(identity.judge_model_refs)
        self.judge_config = dict(identity.judge_config)
        self.overrides = dict(identity.workflow_overrides)
        self.eval_spec = identity.evaluation_prompt_spec
        # The run-wide parts of the judge cache key (§5.12); the key is the content hash
        # of the whole, as of the models themselves.
        run_parts = {
            "judge_model_refs": self.judge_refs,
            "prompt_spec": self.eval_spec,
            "judge_config": self.judge_config,
            "workflow_overrides": self.overrides,
        }
        self.metrics = []
        for metric, kind in pipeline.workflow_metrics:
            ref = component_ref(metric)
            key = HashTemplate({**run_parts, "metric_ref": ref}, ("subject", "judge_seed"))
            metric_id = metric.component_id
            seed_text = (f"{pipeline.run_id}:", f":{metric_id}:::0::")
            self.metrics.append(_WorkflowMetric(metric, kind, metric_id, ref, key, seed_text))
        # The canonical form of the llm subject built from a reduced candidate, less the two
        # fields that change per case (see ``_llm_subject_hash``).
        probe = _new_candidate_set(candidates=[self._llm_candidate("", None)])
        self._subject_template = probe.canonical_data()
        self._candidate_template = self._subject_template["candidates"][0]
        # Its canonical JSON either side of the two: a case with a string id and a string
        # or integer output (the usual) fills in their JSON and encodes nothing else.
        marked = _CANONICAL.encode(
            {
                **self._subject_template,
                "candidates": [
                    {**self._candidate_template, "candidate_id": "\x00", "final_output": "\x01"}
                ],
            }
        )
        head, rest = marked.split('"\\u0000"')
        middle, tail = rest.split('"\\u0001"')
        self._subject_text = (head, middle, tail)
        runner = ctx.workflow_runner
        if runner is None:
            runner = DefaultWorkflowRunner()
        if isinstance(runner, DefaultWorkflowRunner):
            # The default runner calls the run's judges and writes to the run's log; a
            # custom runner only ever gets ``run_evaluation(workflow, subject, id, ctx)``.
            runner = runner.bound_to_run(self.judges, ctx.writer.emit)
        self.runner = runner

    async def run(
        self,
        item: CaseInput,
        survivors: list[GenerationResult],
        reduced: ReducedCandidate,
        parsed: ParsedOutput,
        dirty: bool,
    ) -> None:
        """Judge every workflow metric not already settled for this case."""
        prior = item.prior
        only = self.pipeline.ctx.only_metrics
        todo = [
            m
            for m in self.metrics
            if (only is None or m.metric_id in only) and (dirty or not _settled(prior, m.metric_id))
        ]
        if len(todo) == 1:
            await self._judge(todo[0], item, survivors, reduced, parsed)
        elif todo:
            async with anyio.create_task_group() as tg:
                for spec in todo:
                    tg.start_soon(self._judge, spec, item, survivors, reduced, parsed)

    # ---------------------------------------------------------------- subjects
    def _subject(
        self, spec: _WorkflowMetric, survivors: list[GenerationResult], reduced: ReducedCandidate
    ) -> tuple[Any, str]:
        """(subject, candidate id) for the metric's kind; raises when it cannot be built."""
        if spec.kind == "selection":
            return candidate_set_subject_for_selection_metric(list(survivors)), (
                reduced.candidate_id
            )
        if spec.kind == "trace":
            return _trace_subject(spec.metric_id, survivors, reduced)
        candidate = self._llm_candidate(reduced.candidate_id, reduced.final_output)
        return _new_candidate_set(candidates=[candidate]), reduced.candidate_id

    @staticmethod
    def _llm_candidate(candidate_id: str, final_output: Any) -> GenerationResult:
        return _new_candidate(
            candidate_id=candidate_id,
            final_output=final_output,
            trace=None,
            conversation=None,
            artifacts=None,
            token_usage=None,
            latency_ms=None,
        )

    def _subject_hash(self, spec: _WorkflowMetric, subject: Any) -> str:
        """``subject.compute_hash()``; an llm subject's from its template, not its fields."""
        if spec.kind != "llm" or type(subject) is not CandidateSetSubject:
            return str(subject.compute_hash())
        candidate = subject.candidates[0]
        candidate_id = _scalar_json(candidate.candidate_id)
        output = _scalar_json(candidate.final_output)
        if candidate_id is not None and output is not None:
            head, middle, tail = self._subject_text
            text = f"{head}{candidate_id}{middle}{output}{tail}"
            return hashlib.sha256(text.encode("ascii")).hexdigest()
        data = dict(self._subject_template)
        data["candidates"] = [
            {
                **self._candidate_template,
                "candidate_id": to_canonical(candidate.candidate_id),
                "final_output": to_canonical(candidate.final_output),
            }
        ]
        return hashlib.sha256(_CANONICAL.encode(data).encode("utf-8")).hexdigest()

    def _context(
        self, item: CaseInput, parsed: ParsedOutput, spec: _WorkflowMetric
    ) -> EvalScoreContext:
        pipeline = self.pipeline
        # ``judge_seed_for_call`` (the first 8 hex digits of the digest) from text built once.
        before, after = spec.seed_text
        digest = hashlib.sha256(f"{before}{item.case_key}{after}".encode()).digest()
        judge_seed = int.from_bytes(digest[:4], "big")
        return _new_eval_context(
            run_id=pipeline.run_id,
            dataset_id=item.dataset.dataset_id,
            case_key=item.case_key,
            metadata={},
            case=item.case,
            parsed_output=parsed,
            seed=pipeline.ctx.seeds[0] if pipeline.ctx.seeds else None,
            dataset_metadata=dict(item.dataset.metadata),
            judge_model_refs=self.judge_refs,
            judge_seed=judge_seed,
            prompt_spec=self.eval_spec,
            judge_config=dict(self.judge_config),
            eval_workflow_config=dict(self.overrides),
        )

    # ------------------------------------------------------------------ judge
    async def _judge(
        self,
        spec: _WorkflowMetric,
        item: CaseInput,
        survivors: list[GenerationResult],
        reduced: ReducedCandidate,
        parsed: ParsedOutput,
    ) -> None:
        pipeline = self.pipeline
        observers = pipeline.ctx.observers
        metric_id = spec.metric_id
        try:
            subject, candidate_id = self._subject(spec, survivors, reduced)
        except Exception as exc:
            span = observers.start_span("judge", pipeline.span_attrs(item, metric_id=metric_id))
            observers.end_span(span, "error", exc)
            self._fail(item, reduced.candidate_id, metric_id, f"{metric_id}: {_error_text(exc)}")
            return
        eval_ctx = self._context(item, parsed, spec)
        cache_key = None
        if pipeline.ctx.cache_enabled:
            cache_key = spec.key.hash(
                subject=self._subject_hash(spec, subject), judge_seed=eval_ctx.judge_seed
            )
            cached = await pipeline.cache_read("judge", cache_key)
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                try:
                    execution = EvaluationExecution.model_validate(cached["result"])
                except ValueError as exc:  # a stale or foreign entry counts as a miss
                    log.warning("stage_cache.bad_entry", stage="judge", error=str(exc))
                else:
                    self._record(
                        item,
                        candidate_id,
                        metric_id,
                        execution,
                        cached["result"],
                        cache_hit=True,
                        source_run_id=cached.get("source_run_id"),
                    )
                    return
        span = (
            observers.start_span("judge", pipeline.span_attrs(item, metric_id=metric_id))
            if pipeline.tracing
            else None
        )
        try:
            if observers.has("before_judge"):
                await observers.call("before_judge", subject, eval_ctx)
            try:
                workflow = spec.metric.build_workflow(subject, eval_ctx)
            except WorkflowBuildError:
                raise
            except Exception as exc:
                raise WorkflowBuildError(
                    f"{metric_id}.build_workflow() failed: {_error_text(exc)}"
                ) from exc
            execution = await self.runner.run_evaluation(workflow, subject, metric_id, eval_ctx)
            if not isinstance(execution, EvaluationExecution):
                raise TypeError(
                    f"{type(self.runner).__name__}.run_evaluation() returned "
                    f"{type(execution).__name__}; expected EvaluationExecution"
                )
        except Exception as exc:
            observers.end_span(span, "error", exc)
            log.info("judge.failed", metric_id=metric_id, case_key=item.case_key, error=str(exc))
            self._fail(item, candidate_id, metric_id, _error_text(exc))
            return
        if observers.has("after_judge"):
            await observers.call("after_judge", execution, eval_ctx)
        data = json_dump(execution)
        score = self._record(
            item, candidate_id, metric_id, execution, data, cache_hit=False, source_run_id=None
        )
        clean = isinstance(score, Score) and execution.status == "completed"
        observers.end_span(span, "ok" if clean else "error")
        if cache_key is not None and clean and not execution.failures:
            pipeline.ctx.writer.add_cache_write(
                "judge", cache_key, {"source_run_id": pipeline.run_id, "result": data}
            )

    def _record(
        self,
        item: CaseInput,
        candidate_id: str,
        metric_id: str,
        execution: EvaluationExecution,
        data: dict[str, Any],
        *,
        cache_hit: bool,
        source_run_id: str | None,
    ) -> Score | ScoreError:
        """Append ``evaluation_completed`` and the final score event; return the score."""
        pipeline = self.pipeline
        fields = pipeline.case_fields(item)
        writer = pipeline.ctx.writer
        inline, ref = self._payload(data)
        writer.emit(
            _new_evaluation_completed(
                fields,
                candidate_id=candidate_id,
                metric_id=metric_id,
                execution=inline,
                execution_blob_ref=ref,
                cache_hit=cache_hit,
                source_run_id=source_run_id,
            )
        )
        score = final_score(execution, metric_id)
        if isinstance(score, Score):
            writer.emit(
                _new_score_completed(
                    fields,
                    candidate_id=candidate_id,
                    metric_id=metric_id,
                    score=json_dump(score),
                    cache_hit=cache_hit,
                    source_run_id=source_run_id,
                )
            )
        else:
            writer.emit(
                ScoreFailedEvent.model_construct(
                    **fields,
                    candidate_id=candidate_id,
                    metric_id=metric_id,
                    error=score.model_dump(mode="json"),
                )
            )
        return score

    def _payload(self, data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """``pipeline.payload``, short-cut for the common small execution: a bound on its
        canonical size that fits proves it fits. pydantic-core's compact encoding is the
        cheap bound (a quarter of the stdlib encoder's time on an execution); the stdlib's
        spaced JSON, never shorter than the canonical form, is the tighter one."""
        limit = self.pipeline.inline_limit
        if len(to_json(data)) * _CANONICAL_BYTES_PER_BYTE <= limit:
            return data, None
        if len(json.dumps(data)) <= limit:
            return data, None
        return self.pipeline.payload(data)

    def _fail(self, item: CaseInput, candidate_id: str, metric_id: str, message: str) -> None:
        fields = self.pipeline.case_fields(item)
        writer = self.pipeline.ctx.writer
        writer.emit(
            EvaluationFailedEvent.model_construct(
                **fields,
                candidate_id=candidate_id,
                metric_id=metric_id,
                error_message=message,
            )
        )
        writer.emit(
            ScoreFailedEvent.model_construct(
                **fields,
                candidate_id=candidate_id,
                metric_id=metric_id,
                error=ScoreError(metric_id=metric_id, reason=message).model_dump(mode="json"),
            )
        )


def _trace_subject(
    metric_id: str, survivors: list[GenerationResult], reduced: ReducedCandidate
) -> tuple[TraceSubject | ConversationSubject, str]:
    """The subject of a trace metric: the trace (or conversation) of the reduced candidate."""
    by_id = {c.candidate_id: c for c in survivors}
    named = reduced.metadata.get("selected_candidate_id")
    candidate = by_id.get(named) if isinstance(named, str) else None
    if candidate is None:
        for source_id in reduced.source_candidate_ids:
            source = by_id.get(source_id)
            if source is not None and source.final_output == reduced.final_output:
                candidate = source
                break
    if candidate is None and reduced.source_candidate_ids:
        candidate = by_id.get(reduced.source_candidate_ids[0])
    if candidate is None:
        raise ValueError(
            f"trace metric {metric_id!r} could not find the candidate behind reduced "
            f"candidate {reduced.candidate_id!r} among the stored generations "
            f"{sorted(by_id)}; the reducer should set metadata['selected_candidate_id']"
        )
    cid = candidate.candidate_id
    if candidate.trace:
        trace = WorkflowTrace(trace_id=f"{cid}:trace", steps=list(candidate.trace))
        return TraceSubject(trace=trace), cid
    if candidate.conversation:
        conversation = ConversationTrace(
            trace_id=f"{cid}:conversation", messages=list(candidate.conversation)
        )
        return ConversationSubject(conversation=conversation), cid
    raise ValueError(
        f"trace metric {metric_id!r} needs a trace or a conversation, but candidate {cid!r} "
        "has neither; have the generator return GenerationResult.trace or .conversation"
    )
