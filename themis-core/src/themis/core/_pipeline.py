"""The pipeline of one case: generate → select → reduce → parse → score → judge."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from themis.core._cache_reader import CacheReader
from themis.core._case import STAGE_ORDER, CaseInput, RunContext, _error_text
from themis.core._invoke import Invoker, default_blocking, make_invoker
from themis.core._retry import RetryPolicy
from themis.core._stage_generation import GENERATION_EXACT, GenerationStage
from themis.core._stage_outputs import PARSE_EXACT, REDUCTION_EXACT, OutputStages
from themis.core._stage_scoring import SCORE_EXACT, ScoringStage
from themis.core.base import HashTemplate, to_canonical
from themis.core.events import CaseFailedEvent
from themis.core.logs import get_logger

if TYPE_CHECKING:
    from themis.core.models import GenerationResult, ParsedOutput, ReducedCandidate

__all__ = ["STAGE_ORDER", "CaseInput", "CasePipeline", "RunContext"]

log = get_logger(__name__)


class CasePipeline(GenerationStage, OutputStages, ScoringStage):
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
        self.pure_metrics: list[tuple[Any, Invoker, Any]] = []
        for metric, kind in zip(comps.metrics, comps.metric_kinds, strict=True):
            if kind == "pure":
                call = self._limited(metric, "score", "scoring")
                # A cheap sync ``score`` is called straight, without the invoker's coroutine.
                self.pure_metrics.append((metric, call, getattr(call, "inline_method", None)))
        self.workflow_metrics = [
            (metric, kind)
            for metric, kind in zip(comps.metrics, comps.metric_kinds, strict=True)
            if kind != "pure"
        ]
        self.candidate_count = len(ctx.seeds)
        # At most max_concurrent_tasks workers run one case each. With one candidate and
        # no judge calls (from workflow metrics or a selector's judges), a case makes one
        # limited call at a time, so calls never outnumber the global limiter's tokens:
        # a generation call then skips it (a take and a release, two coroutines, ~3 us).
        self.global_binds = not (
            self.candidate_count == 1 and not self.workflow_metrics and comps.selector is None
        )
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
        # The cache keys (§5.12), their per-run parts encoded once rather than
        # re-canonicalised (fingerprints recomputed) for every case.
        self._generate_key = HashTemplate(
            {
                "generator_ref": self.generator_ref,
                "candidate_policy": identity.candidate_policy,
                "prompt_spec": identity.generation_prompt_spec,
            },
            ("case", "seed", "candidate_index"),
        )
        self._reduce_key = HashTemplate(
            {"selector_ref": identity.selector_ref, "reducer_ref": identity.reducer_ref},
            ("candidates",),
        )
        self._parse_key = (
            HashTemplate({"parser_ref": identity.parser_refs[0]}, ("reduced",))
            if identity.parser_refs
            else None
        )
        self._eval_spec_canonical = to_canonical(self.eval_spec)
        self._score_keys: dict[int, HashTemplate] = {}
        self.inline_limit = runtime.inline_payload_limit
        # Exact successes are made as the records the store keeps when it keeps them, else
        # as events (see ``exact_makers``).
        form = 1 if ctx.writer.takes_records else 0
        self.generation_exact = GENERATION_EXACT[form]
        self.reduction_exact = REDUCTION_EXACT[form]
        self.parse_exact = PARSE_EXACT[form]
        self.score_exact = SCORE_EXACT[form]
        self.tracing = ctx.observers.tracer is not None
        self._judge_stage: Any = None
        if self.workflow_metrics and self.until >= STAGE_ORDER["judge"]:
            from themis.core._judging import JudgeStage

            self._judge_stage = JudgeStage(self)
        self.reduction_internal = self.parser is None and self._judge_stage is None
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

    # -------------------------------------------------------------- the case
    async def run(self, item: CaseInput) -> None:
        stage = "generate"
        try:
            prior = item.prior
            if prior is None and self.candidate_count == 1 and self.ctx.allow_generate:
                # A fresh case with one candidate, the usual one: no candidate
                # bookkeeping, and no coroutine for ``_generation_stage``.
                generated = await self._generate(item, 0)
                survivors, dirty = ([] if generated is None else [generated]), True
            else:
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
                reduced = (
                    self._pass_through(item, selected)
                    if self.reducer is None
                    else await self._reduce(item, selected)
                )
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
                parsed = (
                    self._parse_as_is(item, reduced)
                    if self.parser is None
                    else await self._parse(item, reduced)
                )
            if parsed is None or self.until < STAGE_ORDER["score"]:
                return
            stage = "score"
            only = self.ctx.only_metrics
            for metric, call, direct in self.pure_metrics:
                if only is not None and metric.component_id not in only:
                    continue
                if (
                    not dirty
                    and prior is not None
                    and metric.component_id in prior.successful_scores
                ):
                    continue
                await self._score(item, reduced, parsed, metric, call, direct)
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
