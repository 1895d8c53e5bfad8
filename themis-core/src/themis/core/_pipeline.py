"""The pipeline of one case: generate → select → reduce → parse → score → judge."""

from __future__ import annotations

import inspect
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from themis.core._cache_reader import CacheReader
from themis.core._construct import maker
from themis.core._invoke import Invoker, default_blocking, make_invoker
from themis.core._limits import Slot
from themis.core._retry import RetryExhaustedError, RetryPolicy, call_with_retries
from themis.core.base import canonical_json, content_hash, to_canonical
from themis.core.contexts import (
    GenerateContext,
    ParseContext,
    ReduceContext,
    ScoreContext,
    SelectContext,
)
from themis.core.events import (
    CaseFailedEvent,
    GenerationCompletedEvent,
    GenerationFailedEvent,
    ParseCompletedEvent,
    ParseFailedEvent,
    ReductionCompletedEvent,
    ReductionFailedEvent,
    ScoreCompletedEvent,
    ScoreFailedEvent,
    SelectionCompletedEvent,
    SelectionFailedEvent,
)
from themis.core.logs import get_logger
from themis.core.models import (
    Case,
    GenerationResult,
    ParsedOutput,
    ReducedCandidate,
    Score,
    ScoreError,
)

if TYPE_CHECKING:
    from themis.core._compile import CompiledComponents
    from themis.core._limits import RunLimits
    from themis.core._observers import Observers
    from themis.core._writer import EventWriter
    from themis.core.config import RuntimeConfig
    from themis.core.models import Dataset
    from themis.core.protocols import RunStore
    from themis.core.results import CaseExecutionState
    from themis.core.snapshot import RunSnapshot

__all__ = ["STAGE_ORDER", "CaseInput", "CasePipeline", "RunContext"]

log = get_logger(__name__)

STAGE_ORDER = {"generate": 0, "reduce": 1, "parse": 2, "score": 3, "judge": 4}

# The models every case builds, each from the fields its call site always passes (see
# ``maker``): several per case, so a generic ``model_construct`` was a fifth of a case.
_CASE = ("run_id", "case_id", "dataset_id", "case_key")
_CONTEXT = ("run_id", "dataset_id", "case_key", "metadata", "case_id")
_RESULT = ("candidate_id", "result", "result_blob_ref", "cache_hit", "source_run_id")
_new_generate_context = maker(
    GenerateContext, *_CONTEXT, "seed", "prompt_spec", "candidate_index", "candidate_id"
)
_new_reduce_context = maker(ReduceContext, *_CONTEXT, "candidate_ids", "seed")
_new_parse_context = maker(ParseContext, *_CONTEXT, "candidate_id")
_new_score_context = maker(
    ScoreContext,
    "run_id",
    "dataset_id",
    "case_key",
    "metadata",
    "case",
    "parsed_output",
    "seed",
    "dataset_metadata",
)
_new_reduced = maker(
    ReducedCandidate, "candidate_id", "source_candidate_ids", "final_output", "metadata"
)
_new_parsed = maker(ParsedOutput, "value", "format", "metadata")
_generation_completed = maker(
    GenerationCompletedEvent, *_CASE, "candidate_index", "seed", "provider_key", *_RESULT
)
_reduction_completed = maker(ReductionCompletedEvent, *_CASE, "source_candidate_ids", *_RESULT)
_parse_completed = maker(ParseCompletedEvent, *_CASE, *_RESULT)
_score_completed = maker(
    ScoreCompletedEvent,
    *_CASE,
    "candidate_id",
    "metric_id",
    "score",
    "cache_hit",
    "source_run_id",
)


class ComponentOutputError(TypeError):
    """A component returned something other than what its protocol promises."""


def _wrong_type(component: Any, method: str, expected: str, got: Any) -> ComponentOutputError:
    return ComponentOutputError(
        f"{component.component_id}.{method}() returned {type(got).__name__} "
        f"({_preview(got)}); expected {expected}"
    )


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass
class RunContext:
    """Everything the case pipelines of one execution share."""

    snapshot: RunSnapshot
    components: CompiledComponents
    store: RunStore
    runtime: RuntimeConfig
    limits: RunLimits
    writer: EventWriter
    observers: Observers
    until_stage: str
    workflow_runner: Any = None
    cache_enabled: bool = False
    read_cache: bool = True
    allow_generate: bool = True
    # A replay recomputes only these metrics (§5.10); None means every metric may run.
    only_metrics: frozenset[str] | None = None
    seeds: list[int] = field(default_factory=list)


@dataclass
class CaseInput:
    dataset: Dataset
    case: Case
    case_key: str
    prior: CaseExecutionState | None
    # The case's content hash, computed once for the cache keys of all its stages.
    case_hash: str | None = None
    # The fields every event of the case carries, built once for all of them.
    fields: dict[str, Any] | None = None

    def hash_of_case(self) -> str:
        if self.case_hash is None:
            self.case_hash = self.case.compute_hash()
        return self.case_hash


class CasePipeline:
    """Runs cases through the stages, appending an event for every outcome."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        comps = ctx.components
        runtime = ctx.runtime
        limiter = ctx.limits.thread_limiter
        self.run_id = ctx.snapshot.run_id
        self.until = STAGE_ORDER[ctx.until_stage]
        self.generator = comps.generator
        # A blocking generator call is abandoned on a timeout or Ctrl-C: its thread cannot
        # be interrupted, and waiting for it would defeat generation_timeout.
        self.generate_call = make_invoker(
            comps.generator.generate,
            blocking=default_blocking(comps.generator, io_bound=True),
            thread_limiter=limiter,
            abandon_on_cancel=True,
        )
        self.provider_key: str | None = getattr(comps.generator, "provider_key", None)
        self.selector = comps.selector
        # A selector's judge calls take the global limiter, so the selector holds only its
        # stage limiter (holding both would deadlock at max_concurrent_tasks=1).
        self.select_call = (
            self._limited(comps.selector, "select", "selection", hold_global=False)
            if comps.selector is not None
            else None
        )
        self.reducer = comps.reducer
        self.reduce_call = (
            self._limited(comps.reducer, "reduce", "reduction")
            if comps.reducer is not None
            else None
        )
        self.parser = comps.parsers[0] if comps.parsers else None
        self.parse_call = (
            self._limited(self.parser, "parse", "parsing") if self.parser is not None else None
        )
        self.pure_metrics = [
            (metric, self._limited(metric, "score", "scoring"))
            for metric, kind in zip(comps.metrics, comps.metric_kinds, strict=True)
            if kind == "pure"
        ]
        self.workflow_metrics = [
            (metric, kind)
            for metric, kind in zip(comps.metrics, comps.metric_kinds, strict=True)
            if kind != "pure"
        ]
        self.candidate_count = len(ctx.seeds)
        self.gen_policy = RetryPolicy(
            attempts=runtime.generation_retry_attempts,
            delay=runtime.generation_retry_delay,
            backoff=runtime.generation_retry_backoff,
            max_delay=runtime.retry_max_delay,
            jitter=runtime.retry_jitter,
            retry_after_max=runtime.retry_after_max,
            timeout=runtime.generation_timeout,
        )
        identity = ctx.snapshot.identity
        self.generator_ref = identity.generator_ref
        self.eval_spec = identity.evaluation_prompt_spec
        self._cache_reader = CacheReader(ctx.store)
        # The parts of the cache keys that are the same for every case, in canonical form
        # once, rather than re-canonicalised (fingerprints recomputed) per case.
        self._generate_key = {
            "generator_ref": to_canonical(self.generator_ref),
            "candidate_policy": to_canonical(identity.candidate_policy),
            "prompt_spec": to_canonical(identity.generation_prompt_spec),
        }
        self._eval_spec_canonical = to_canonical(self.eval_spec)
        self._metric_refs: dict[int, dict[str, Any]] = {}
        self.inline_limit = runtime.inline_payload_limit
        self.tracing = ctx.observers.tracer is not None
        self._judge_stage: Any = None
        if self.workflow_metrics and self.until >= STAGE_ORDER["judge"]:
            from themis.core._judging import JudgeStage

            self._judge_stage = JudgeStage(self)
        self.selector_judges: list[Any] = []
        if self.selector is not None and comps.judge_models:
            from themis.core._judging import judge_proxies

            self.selector_judges = judge_proxies(self)

    # ----------------------------------------------------------------- helpers
    def _limited(
        self, component: Any, method: str, stage: str, *, hold_global: bool = True
    ) -> Invoker:
        """The invoker of a non-generator method, under the limits when it leaves the loop.

        A cheap sync method runs inline and holds no limiter (§5.8); an awaited one or one
        sent to a thread holds its stage limiter and the global one.
        """
        bound = getattr(component, method)
        blocking = default_blocking(component, io_bound=False)
        limits = self.ctx.limits
        invoke = make_invoker(bound, blocking=blocking, thread_limiter=limits.thread_limiter)
        if blocking or inspect.iscoroutinefunction(bound):
            return limits.limit(invoke, stage, hold_global=hold_global)
        return invoke

    def case_fields(self, item: CaseInput) -> dict[str, Any]:
        """The run and case ids of the case's events (shared: never change the dict)."""
        fields = item.fields
        if fields is None:
            fields = item.fields = {
                "run_id": self.run_id,
                "case_id": item.case.case_id,
                "dataset_id": item.dataset.dataset_id,
                "case_key": item.case_key,
            }
        return fields

    def payload(self, data: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The payload inline, or a blob ref when its JSON exceeds the inline limit."""
        if _small(data, self.inline_limit):
            return data, None
        encoded = canonical_json(data).encode("utf-8")
        if len(encoded) <= self.inline_limit:
            return data, None
        return None, self.ctx.writer.add_blob(encoded, "application/json")

    def span_attrs(self, item: CaseInput, **extra: Any) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "case_id": item.case.case_id,
            "dataset_id": item.dataset.dataset_id,
            "case_key": item.case_key,
        }
        attrs.update({k: v for k, v in extra.items() if v is not None})
        return attrs

    async def cache_lookup(self, stage: str, key_fields: dict[str, Any]) -> tuple[str, Any]:
        """(key, payload-or-None); a failing cache read counts as a miss."""
        key = content_hash(key_fields)
        if not self.ctx.read_cache:
            return key, None
        try:
            return key, await self._cache_reader.load(stage, key)
        except Exception as exc:
            log.warning("stage_cache.read_failed", stage=stage, error=str(exc))
            return key, None

    def _metric_ref(self, metric: Any) -> dict[str, Any]:
        ref = self._metric_refs.get(id(metric))
        if ref is None:
            ref = self._metric_refs[id(metric)] = {
                "component_id": metric.component_id,
                "version": metric.version,
                "fingerprint": _fingerprint(metric),
            }
        return ref

    # -------------------------------------------------------------- the case
    async def run(self, item: CaseInput) -> None:
        stage = "generate"
        try:
            prior = item.prior
            survivors, dirty = await self._generation_stage(item)
            if not survivors or self.until < STAGE_ORDER["reduce"]:
                return
            stage = "reduce"
            selected: list[GenerationResult] | None = survivors
            if self.selector is not None:
                if (
                    not dirty
                    and prior is not None
                    and prior.selected_candidate_ids is not None
                    and prior.selection_error is None
                ):
                    by_id = {c.candidate_id: c for c in survivors}
                    selected = [by_id[c] for c in prior.selected_candidate_ids if c in by_id]
                else:
                    dirty = True
                    selected = await self._select(item, survivors)
                if not selected:
                    return
            assert selected is not None
            if (
                not dirty
                and prior is not None
                and prior.reduced_candidate is not None
                and prior.reduction_error is None
            ):
                reduced: ReducedCandidate | None = prior.reduced_candidate
            else:
                dirty = True
                reduced = await self._reduce(item, selected)
            if reduced is None or self.until < STAGE_ORDER["parse"]:
                return
            stage = "parse"
            if (
                not dirty
                and prior is not None
                and prior.parsed_output is not None
                and prior.parse_error is None
            ):
                parsed: ParsedOutput | None = prior.parsed_output
            else:
                dirty = True
                parsed = await self._parse(item, reduced)
            if parsed is None or self.until < STAGE_ORDER["score"]:
                return
            stage = "score"
            only = self.ctx.only_metrics
            for metric, call in self.pure_metrics:
                if only is not None and metric.component_id not in only:
                    continue
                if (
                    not dirty
                    and prior is not None
                    and metric.component_id in prior.successful_scores
                ):
                    continue
                await self._score(item, reduced, parsed, metric, call)
            if self._judge_stage is not None:
                stage = "judge"
                await self._judge_stage.run(item, survivors, reduced, parsed, dirty)
        except Exception as exc:
            log.error(
                "case.failed",
                run_id=self.run_id,
                case_key=item.case_key,
                stage=stage,
                error=_error_text(exc),
                exc_info=exc,
            )
            self.ctx.writer.emit(
                CaseFailedEvent.model_construct(
                    **self.case_fields(item),
                    stage=stage,
                    error_message=_error_text(exc),
                    error_type=type(exc).__name__,
                )
            )

    # ------------------------------------------------------------ generation
    async def _generation_stage(self, item: CaseInput) -> tuple[list[GenerationResult], bool]:
        prior = item.prior
        by_index: dict[int, GenerationResult] = (
            dict(prior.generated_candidates_by_index) if prior is not None else {}
        )
        todo = [i for i in range(self.candidate_count) if i not in by_index]
        dirty = False
        if todo and self.ctx.allow_generate:
            dirty = True
            if len(todo) == 1:
                result = await self._generate(item, todo[0])
                if result is not None:
                    by_index[todo[0]] = result
            else:
                found: dict[int, GenerationResult] = {}

                async def one(index: int) -> None:
                    generated = await self._generate(item, index)
                    if generated is not None:
                        found[index] = generated

                async with anyio.create_task_group() as tg:
                    for index in todo:
                        tg.start_soon(one, index)
                by_index.update(found)
        return [by_index[i] for i in sorted(by_index)], dirty

    async def _generate(self, item: CaseInput, index: int) -> GenerationResult | None:
        case = item.case
        seed = self.ctx.seeds[index]
        candidate_id = f"{case.case_id}-candidate-{index}"
        fields = self.case_fields(item)
        identity = self.ctx.snapshot.identity
        cache_key = None
        if self.ctx.cache_enabled:
            cache_key, cached = await self.cache_lookup(
                "generate",
                {
                    **self._generate_key,
                    "case": item.hash_of_case(),
                    "seed": seed,
                    "candidate_index": index,
                },
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                data = dict(cached["result"])
                data["candidate_id"] = candidate_id
                inline, ref = self.payload(data)
                self.ctx.writer.emit(
                    _generation_completed(
                        **fields,
                        candidate_id=candidate_id,
                        candidate_index=index,
                        seed=seed,
                        provider_key=cached.get("provider_key"),
                        result=inline,
                        result_blob_ref=ref,
                        cache_hit=True,
                        source_run_id=cached.get("source_run_id"),
                    )
                )
                return GenerationResult.model_validate(data)
        ctx = _new_generate_context(
            run_id=self.run_id,
            dataset_id=item.dataset.dataset_id,
            case_key=item.case_key,
            metadata={},
            case_id=case.case_id,
            seed=seed,
            prompt_spec=identity.generation_prompt_spec,
            candidate_index=index,
            candidate_id=candidate_id,
        )
        observers = self.ctx.observers
        if observers.has("before_generate"):
            await observers.call("before_generate", case, ctx)
        span = None
        if self.tracing:
            span = observers.start_span(
                "generation",
                self.span_attrs(
                    item,
                    candidate_index=index,
                    component_id=self.generator.component_id,
                    seed=seed,
                    provider_key=self.provider_key,
                    model_id=getattr(self.generator, "model_id", None),
                ),
            )
        limits = self.ctx.limits
        generate = self.generate_call
        provider_key = self.provider_key
        simple_limits = not limits.stage and not limits.provider and not limits.buckets
        global_limiter = limits.global_limiter

        def hold() -> AbstractAsyncContextManager[Any]:
            if simple_limits:
                return Slot(global_limiter)
            return limits.hold("generation", provider_key)

        try:
            result, history = await call_with_retries(
                generate, self.gen_policy, hold=hold, args=(case, ctx)
            )
            if not isinstance(result, GenerationResult):
                raise _wrong_type(self.generator, "generate", "GenerationResult", result)
        except (RetryExhaustedError, ComponentOutputError) as failure:
            error = failure.error if isinstance(failure, RetryExhaustedError) else failure
            history = failure.history if isinstance(failure, RetryExhaustedError) else []
            retryable = failure.retryable if isinstance(failure, RetryExhaustedError) else False
            observers.end_span(span, "error", error)
            self.ctx.writer.emit(
                GenerationFailedEvent.model_construct(
                    **fields,
                    candidate_id=candidate_id,
                    candidate_index=index,
                    error_message=_error_text(error),
                    retry_history=history,
                    error_type=type(error).__name__,
                    retryable=retryable,
                )
            )
            return None
        artifacts = result.artifacts
        if result.candidate_id != candidate_id or history:
            artifacts = dict(artifacts or {})
            if result.candidate_id != candidate_id:
                artifacts["generator_candidate_id"] = result.candidate_id
            if history:
                artifacts["retry_history"] = history
            result = result.model_copy(
                update={"candidate_id": candidate_id, "artifacts": artifacts}
            )
        if artifacts:
            hint = artifacts.get("rate_limit")
            rpm = (
                hint.get("requests_per_minute")
                if isinstance(hint, dict)
                else artifacts.get("rate_limit.requests_per_minute")
            )
            if rpm is not None:
                limits.retune(provider_key, rpm)
        if span is not None and result.token_usage:
            usage = result.token_usage
            observers.set_attributes(
                span,
                {
                    "input_tokens": usage.get("input_tokens", usage.get("prompt_tokens")),
                    "output_tokens": usage.get("output_tokens", usage.get("completion_tokens")),
                },
            )
        if observers.has("after_generate"):
            await observers.call("after_generate", result, ctx)
        observers.end_span(span, "ok")
        data = result.model_dump(mode="json")
        inline, ref = self.payload(data)
        self.ctx.writer.emit(
            _generation_completed(
                **fields,
                candidate_id=candidate_id,
                candidate_index=index,
                seed=seed,
                provider_key=provider_key,
                result=inline,
                result_blob_ref=ref,
                cache_hit=False,
                source_run_id=None,
            )
        )
        if cache_key is not None:
            self.ctx.writer.add_cache_write(
                "generate",
                cache_key,
                {"source_run_id": self.run_id, "result": data, "provider_key": provider_key},
            )
        return result

    # ------------------------------------------------------------- selection
    async def _select(
        self, item: CaseInput, candidates: list[GenerationResult]
    ) -> list[GenerationResult] | None:
        assert self.selector is not None and self.select_call is not None
        fields = self.case_fields(item)
        metadata: dict[str, Any] = {}
        ctx = SelectContext.model_construct(
            run_id=self.run_id,
            dataset_id=item.dataset.dataset_id,
            case_key=item.case_key,
            metadata=metadata,
            case_id=item.case.case_id,
            candidate_ids=[c.candidate_id for c in candidates],
            seed=self.ctx.seeds[0],
            judge_models=self.selector_judges,
        )
        observers = self.ctx.observers
        await observers.call("before_select", candidates, ctx)
        span = observers.start_span("selection", self.span_attrs(item))
        try:
            selected = await self.select_call(candidates, ctx)
            if not isinstance(selected, list) or not all(
                isinstance(c, GenerationResult) for c in selected
            ):
                raise _wrong_type(self.selector, "select", "list[GenerationResult]", selected)
            if not selected:
                raise ValueError(
                    f"{self.selector.component_id}.select() returned no candidates; "
                    "a selection must keep at least one"
                )
        except Exception as exc:
            observers.end_span(span, "error", exc)
            self.ctx.writer.emit(
                SelectionFailedEvent.model_construct(**fields, error_message=_error_text(exc))
            )
            return None
        await observers.call("after_select", selected, ctx)
        observers.end_span(span, "ok")
        metadata = {"selector_id": self.selector.component_id, **metadata}
        self.ctx.writer.emit(
            SelectionCompletedEvent.model_construct(
                **fields, candidate_ids=[c.candidate_id for c in selected], metadata=metadata
            )
        )
        return list(selected)

    # ------------------------------------------------------------- reduction
    async def _reduce(
        self, item: CaseInput, candidates: list[GenerationResult]
    ) -> ReducedCandidate | None:
        fields = self.case_fields(item)
        writer = self.ctx.writer
        ids = [c.candidate_id for c in candidates]
        if self.reducer is None:
            first = candidates[0]
            reduced = _new_reduced(
                candidate_id=first.candidate_id,
                source_candidate_ids=ids,
                final_output=first.final_output,
                metadata={"selected_candidate_id": first.candidate_id},
            )
            inline, ref = self.payload(reduced.model_dump(mode="json"))
            writer.emit(
                _reduction_completed(
                    **fields,
                    candidate_id=reduced.candidate_id,
                    source_candidate_ids=ids,
                    result=inline,
                    result_blob_ref=ref,
                    cache_hit=False,
                    source_run_id=None,
                )
            )
            return reduced
        assert self.reduce_call is not None
        cache_key = None
        identity = self.ctx.snapshot.identity
        if self.ctx.cache_enabled:
            cache_key, cached = await self.cache_lookup(
                "reduce",
                {
                    "selector_ref": identity.selector_ref,
                    "reducer_ref": identity.reducer_ref,
                    "candidates": [c.compute_hash() for c in candidates],
                },
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                reduced = ReducedCandidate.model_validate(cached["result"])
                inline, ref = self.payload(cached["result"])
                writer.emit(
                    _reduction_completed(
                        **fields,
                        candidate_id=reduced.candidate_id,
                        source_candidate_ids=reduced.source_candidate_ids,
                        result=inline,
                        result_blob_ref=ref,
                        cache_hit=True,
                        source_run_id=cached.get("source_run_id"),
                    )
                )
                return reduced
        metadata: dict[str, Any] = {}
        if self.selector is not None:
            metadata["selector_id"] = self.selector.component_id
        ctx = _new_reduce_context(
            run_id=self.run_id,
            dataset_id=item.dataset.dataset_id,
            case_key=item.case_key,
            metadata=metadata,
            case_id=item.case.case_id,
            candidate_ids=ids,
            seed=self.ctx.seeds[0],
        )
        observers = self.ctx.observers
        if observers.has("before_reduce"):
            await observers.call("before_reduce", candidates, ctx)
        span = observers.start_span("reduction", self.span_attrs(item)) if self.tracing else None
        try:
            result = await self.reduce_call(candidates, ctx)
            if not isinstance(result, ReducedCandidate):
                raise _wrong_type(self.reducer, "reduce", "ReducedCandidate", result)
        except Exception as exc:
            observers.end_span(span, "error", exc)
            writer.emit(
                ReductionFailedEvent.model_construct(**fields, error_message=_error_text(exc))
            )
            return None
        if observers.has("after_reduce"):
            await observers.call("after_reduce", result, ctx)
        observers.end_span(span, "ok")
        data = result.model_dump(mode="json")
        inline, ref = self.payload(data)
        writer.emit(
            _reduction_completed(
                **fields,
                candidate_id=result.candidate_id,
                source_candidate_ids=list(result.source_candidate_ids),
                result=inline,
                result_blob_ref=ref,
                cache_hit=False,
                source_run_id=None,
            )
        )
        if cache_key is not None:
            writer.add_cache_write(
                "reduce", cache_key, {"source_run_id": self.run_id, "result": data}
            )
        return result

    # ---------------------------------------------------------------- parsing
    async def _parse(self, item: CaseInput, reduced: ReducedCandidate) -> ParsedOutput | None:
        fields = self.case_fields(item)
        writer = self.ctx.writer
        if self.parser is None:
            parsed = _new_parsed(value=reduced.final_output, format=None, metadata={})
            writer.emit(
                _parse_completed(
                    **fields,
                    candidate_id=reduced.candidate_id,
                    result={"value": reduced.final_output, "format": None, "metadata": {}},
                    result_blob_ref=None,
                    cache_hit=False,
                    source_run_id=None,
                )
            )
            return parsed
        assert self.parse_call is not None
        cache_key = None
        if self.ctx.cache_enabled:
            cache_key, cached = await self.cache_lookup(
                "parse",
                {
                    "reduced": reduced.compute_hash(),
                    "parser_ref": self.ctx.snapshot.identity.parser_refs[0],
                },
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                writer.emit(
                    _parse_completed(
                        **fields,
                        candidate_id=reduced.candidate_id,
                        result=cached["result"],
                        result_blob_ref=None,
                        cache_hit=True,
                        source_run_id=cached.get("source_run_id"),
                    )
                )
                return ParsedOutput.model_validate(cached["result"])
        ctx = _new_parse_context(
            run_id=self.run_id,
            dataset_id=item.dataset.dataset_id,
            case_key=item.case_key,
            metadata={},
            case_id=item.case.case_id,
            candidate_id=reduced.candidate_id,
        )
        observers = self.ctx.observers
        if observers.has("before_parse"):
            await observers.call("before_parse", reduced, ctx)
        span = observers.start_span("parse", self.span_attrs(item)) if self.tracing else None
        try:
            parsed = await self.parse_call(reduced, ctx)
            if not isinstance(parsed, ParsedOutput):
                raise _wrong_type(self.parser, "parse", "ParsedOutput", parsed)
        except Exception as exc:
            observers.end_span(span, "error", exc)
            writer.emit(
                ParseFailedEvent.model_construct(
                    **fields, candidate_id=reduced.candidate_id, error_message=_error_text(exc)
                )
            )
            return None
        if observers.has("after_parse"):
            await observers.call("after_parse", parsed, ctx)
        observers.end_span(span, "ok")
        data = parsed.model_dump(mode="json")
        inline, ref = self.payload(data)
        writer.emit(
            _parse_completed(
                **fields,
                candidate_id=reduced.candidate_id,
                result=inline,
                result_blob_ref=ref,
                cache_hit=False,
                source_run_id=None,
            )
        )
        if cache_key is not None:
            writer.add_cache_write(
                "parse", cache_key, {"source_run_id": self.run_id, "result": data}
            )
        return parsed

    # ---------------------------------------------------------------- scoring
    def score_context(self, item: CaseInput, parsed: ParsedOutput) -> ScoreContext:
        return _new_score_context(
            run_id=self.run_id,
            dataset_id=item.dataset.dataset_id,
            case_key=item.case_key,
            metadata={},
            case=item.case,
            parsed_output=parsed,
            seed=self.ctx.seeds[0],
            dataset_metadata=dict(item.dataset.metadata),
        )

    async def _score(
        self,
        item: CaseInput,
        reduced: ReducedCandidate,
        parsed: ParsedOutput,
        metric: Any,
        call: Any,
    ) -> None:
        metric_id: str = metric.component_id
        fields = self.case_fields(item)
        writer = self.ctx.writer
        cache_key = None
        if self.ctx.cache_enabled:
            cache_key, cached = await self.cache_lookup(
                "score",
                {
                    "case": item.hash_of_case(),
                    "parsed": parsed.compute_hash(),
                    "metric_ref": self._metric_ref(metric),
                    "prompt_spec": self._eval_spec_canonical,
                },
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                writer.emit(
                    _score_completed(
                        **fields,
                        candidate_id=reduced.candidate_id,
                        metric_id=metric_id,
                        score=cached["result"],
                        cache_hit=True,
                        source_run_id=cached.get("source_run_id"),
                    )
                )
                return
        ctx = self.score_context(item, parsed)
        observers = self.ctx.observers
        if observers.has("before_score"):
            await observers.call("before_score", parsed, ctx)
        span = (
            observers.start_span("score", self.span_attrs(item, metric_id=metric_id))
            if self.tracing
            else None
        )
        error: BaseException | None = None
        try:
            outcome = await call(parsed, item.case, ctx)
            if isinstance(outcome, Score):
                if not outcome.metric_id:
                    outcome = outcome.model_copy(update={"metric_id": metric_id})
                elif outcome.metric_id != metric_id:
                    log.warning(
                        "score.metric_id_mismatch",
                        metric=metric_id,
                        returned=outcome.metric_id,
                    )
            elif not isinstance(outcome, ScoreError):
                raise _wrong_type(metric, "score", "Score or ScoreError", outcome)
        except Exception as exc:
            error = exc
            outcome = ScoreError(metric_id=metric_id, reason=_error_text(exc))
        if observers.has("after_score"):
            await observers.call("after_score", outcome, ctx)
        if isinstance(outcome, Score):
            observers.end_span(span, "ok")
            data = outcome.model_dump(mode="json")
            writer.emit(
                _score_completed(
                    **fields,
                    candidate_id=reduced.candidate_id,
                    metric_id=metric_id,
                    score=data,
                    cache_hit=False,
                    source_run_id=None,
                )
            )
            if cache_key is not None:
                writer.add_cache_write(
                    "score", cache_key, {"source_run_id": self.run_id, "result": data}
                )
        else:
            observers.end_span(span, "error", error)
            writer.emit(
                ScoreFailedEvent.model_construct(
                    **fields,
                    candidate_id=reduced.candidate_id,
                    metric_id=metric_id,
                    error=outcome.model_dump(mode="json"),
                )
            )


def _fingerprint(component: Any) -> str:
    fingerprint = component.fingerprint
    return str(fingerprint() if callable(fingerprint) else fingerprint)


_SCALARS = (type(None), bool, int, float)


def _small(data: Any, limit: int) -> bool:
    """True when ``data`` certainly encodes under ``limit`` bytes, judged cheaply."""
    budget = limit // 2  # JSON escaping can at most roughly double a string's size
    if type(data) is dict and len(data) <= 64:
        # The usual payload: a model's dump whose values are scalars and short strings.
        total = 2
        for k, v in data.items():
            kind = type(v)
            if kind is str:
                total += len(k) + len(v) + 8
            elif kind in _SCALARS:
                total += len(k) + 30
            elif not v and (kind is dict or kind is list):
                total += len(k) + 8
            else:
                break
        else:
            return total <= budget
    stack = [data]
    total = 0
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value) + 2
        elif isinstance(value, dict):
            total += 2 + 4 * len(value)
            for k, v in value.items():
                total += len(k)
                stack.append(v)
        elif isinstance(value, list):
            total += 2 + len(value)
            stack.extend(value)
        else:
            total += 24
        if total > budget:
            return False
    return True
