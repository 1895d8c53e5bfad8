"""The generation stage of a case: its candidates, each generated or read from the cache."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from themis.core._case import (
    _CASE,
    _CONTEXT,
    _RESULT,
    CaseStage,
    ComponentOutputError,
    _error_text,
    _wrong_type,
    generation_units,
)
from themis.core._construct import maker
from themis.core._fold_speed import _generation_dump, exact_makers, output_dump
from themis.core._limits import Slot
from themis.core._retry import RetryExhaustedError, RetryPolicy, call_with_retries
from themis.core.base import HashTemplate
from themis.core.contexts import GenerateContext
from themis.core.events import GenerationCompletedEvent, GenerationFailedEvent
from themis.core.models import GenerationResult

if TYPE_CHECKING:
    from themis.core._case import CaseInput
    from themis.core._invoke import Invoker

__all__ = ["GenerationStage"]

# Built with ``maker`` for the reason given above ``_CASE`` in ``_case``.
_new_generate_context = maker(
    GenerateContext, *_CONTEXT, "seed", "prompt_spec", "candidate_index", "candidate_id"
)
_GENERATION_COMPLETED = (*_CASE, "candidate_index", "seed", "provider_key", *_RESULT)
_generation_completed = maker(GenerationCompletedEvent, *_GENERATION_COMPLETED, shared=_CASE)
# For an exact dump inline, which the fold takes back unvalidated (see ``ExactFields``).
GENERATION_EXACT = exact_makers(GenerationCompletedEvent, *_GENERATION_COMPLETED, shared=_CASE)


# The retry history of a call that succeeded at once (read, never changed).
_NO_HISTORY: list[dict[str, Any]] = []


class GenerationStage(CaseStage):
    """Generates a case's candidates, one per seed, and emits an event for each."""

    generator: Any
    generate_call: Invoker
    provider_key: str | None
    candidate_count: int
    gen_policy: RetryPolicy
    # False when no generation call can ever wait for the global limiter (see CasePipeline).
    global_binds: bool
    _generate_key: HashTemplate
    # The maker of an exact success: an event or a record (see ``exact_makers``).
    generation_exact: Callable[..., Any]

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
        fields = item.fields or self.case_fields(item)
        identity = self.ctx.snapshot.identity
        cache_key = None
        if self.ctx.cache_enabled:
            # The key's variables in sorted order: candidate_index, case, seed.
            cache_key = self._generate_key.sorted_hash(index, item.hash_of_case(), seed)
            cached = (
                None
                if self._cache_reader.absent("generate", cache_key)
                else await self.cache_read("generate", cache_key)
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                data = dict(cached["result"])
                data["candidate_id"] = candidate_id
                inline, ref = self.payload(data)
                self.ctx.writer.emit(
                    _generation_completed(
                        fields,
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
        if "before_generate" in observers.hooks:
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
        hold: Callable[[], AbstractAsyncContextManager[Any]] | None = None
        if limits.stage or limits.provider or limits.buckets:

            def hold() -> AbstractAsyncContextManager[Any]:
                return limits.hold("generation", provider_key)

        elif self.global_binds:
            global_limiter = limits.global_limiter

            def hold() -> AbstractAsyncContextManager[Any]:
                return Slot(global_limiter)

        try:
            if hold is None and self.gen_policy.timeout is None:
                # The first attempt awaited here: a call that succeeds then costs no
                # coroutine of ``call_with_retries``, and no frame more on the chain every
                # suspension and wake-up of the model call walks. One that fails goes on
                # there, from its error, as if it had made the attempt itself.
                history = _NO_HISTORY
                try:
                    result = await generate(case, ctx)
                except Exception as first:
                    result, history = await call_with_retries(
                        generate, self.gen_policy, args=(case, ctx), failed=first
                    )
            else:
                result, history = await call_with_retries(
                    generate, self.gen_policy, hold=hold, args=(case, ctx)
                )
            # The exact class first: isinstance on a model class goes through ABCMeta.
            if type(result) is not GenerationResult and not isinstance(result, GenerationResult):
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
        if "after_generate" in observers.hooks:
            await observers.call("after_generate", result, ctx)
        if span is not None:
            observers.end_span(span, "ok")
        # The usual result's dump written out at once (``output_dump`` would find it).
        written = _generation_dump(result) if type(result) is GenerationResult else None
        if written is not None:
            data, exact = written, True
        else:
            data, exact = output_dump(result)
        inline, ref, units = self.sized_payload(
            data,
            generation_units(data, self.inline_limit) if type(result) is GenerationResult else None,
        )
        item.generated = (candidate_id, units, data)
        make = self.generation_exact if exact and inline is not None else _generation_completed
        self.ctx.writer.emit(
            make(
                fields,
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
