"""The stages between generation and scoring: selection, reduction and parsing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from themis.core._case import (
    _CASE,
    _CONTEXT,
    _RESULT,
    _WORST_BYTES_PER_CHAR,
    CaseStage,
    _error_text,
    _wrong_type,
)
from themis.core._construct import maker
from themis.core._fold_speed import exact_makers, output_dump, rebuild
from themis.core.contexts import ParseContext, ReduceContext, SelectContext
from themis.core.events import (
    ParseCompletedEvent,
    ParseFailedEvent,
    ReductionCompletedEvent,
    ReductionFailedEvent,
    SelectionCompletedEvent,
    SelectionFailedEvent,
)
from themis.core.models import GenerationResult, ParsedOutput, ReducedCandidate

if TYPE_CHECKING:
    from themis.core._case import CaseInput
    from themis.core._invoke import Invoker
    from themis.core.base import HashTemplate

__all__ = ["OutputStages"]

# Built with ``maker`` for the reason given above ``_CASE`` in ``_case``.
_new_reduce_context = maker(ReduceContext, *_CONTEXT, "candidate_ids", "seed")
_new_parse_context = maker(ParseContext, *_CONTEXT, "candidate_id")
_new_reduced = maker(
    ReducedCandidate, "candidate_id", "source_candidate_ids", "final_output", "metadata"
)
_new_parsed = maker(ParsedOutput, "value", "format", "metadata")
_REDUCTION_COMPLETED = (*_CASE, "source_candidate_ids", *_RESULT)
_reduction_completed = maker(ReductionCompletedEvent, *_REDUCTION_COMPLETED, shared=_CASE)
_parse_completed = maker(ParseCompletedEvent, *_CASE, *_RESULT, shared=_CASE)
# For an exact dump inline, which the fold takes back unvalidated (see ``ExactFields``).
REDUCTION_EXACT = exact_makers(ReductionCompletedEvent, *_REDUCTION_COMPLETED, shared=_CASE)
PARSE_EXACT = exact_makers(ParseCompletedEvent, *_CASE, *_RESULT, shared=_CASE)


# The JSON-mode values a pass-through reduction's payload takes from its candidate's dump.
_SCALARS = frozenset({str, int, float, bool, type(None)})
# ``CaseInput.generated`` of a case whose candidates were not generated in this run.
_NOT_GENERATED: tuple[str, int, dict[str, Any]] = ("", -1, {})


# ``pass_through_extra([selected], selected)`` less twice the id's length.
_ONE_EXTRA = len("source_candidate_ids") + 1 + 2 + len("metadata") + 1 + 1
_ONE_EXTRA += len("selected_candidate_id") + 1 + 1


def pass_through_extra(ids: list[str], selected: str) -> int:
    """How much more a pass-through reduction's payload can take than the payload of the
    candidate it passes on, in the units of ``_units`` (which it never exceeds).

    Both hold the candidate's id and output under the same keys; the candidate's other
    fields count zero or more; the reduction adds ``source_candidate_ids`` (a list of
    ``ids``) and ``metadata`` (``{"selected_candidate_id": selected}``), each counted as
    ``_units`` counts a key and a container value.
    """
    if len(ids) == 1 and ids[0] == selected:
        return _ONE_EXTRA + 2 * len(selected)  # the usual case, the sum below written out
    ids_list = 1 + sum(map(len, ids)) + len(ids)
    metadata = 1 + len("selected_candidate_id") + 1 + len(selected) + 1
    return len("source_candidate_ids") + 1 + ids_list + len("metadata") + 1 + metadata


class OutputStages(CaseStage):
    """Selects among a case's candidates, reduces them to one, and parses it."""

    selector: Any
    select_call: Invoker | None
    selector_judges: list[Any]
    reducer: Any
    reduce_call: Invoker | None
    parser: Any
    parse_call: Invoker | None
    # The makers of exact successes: events or records (see ``exact_makers``).
    reduction_exact: Callable[..., Any]
    # True when the reduced candidate goes to no component (no parser, no judge): the
    # pass-through may then build it around the payload of its event.
    reduction_internal: bool
    parse_exact: Callable[..., Any]

    # ------------------------------------------------------------- selection
    async def _select(
        self, item: CaseInput, candidates: list[GenerationResult]
    ) -> list[GenerationResult] | None:
        assert self.selector is not None and self.select_call is not None
        fields = item.fields or self.case_fields(item)
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
        if span is not None:
            observers.end_span(span, "ok")
        metadata = {"selector_id": self.selector.component_id, **metadata}
        self.ctx.writer.emit(
            SelectionCompletedEvent.model_construct(
                **fields, candidate_ids=[c.candidate_id for c in selected], metadata=metadata
            )
        )
        return list(selected)

    # ------------------------------------------------------------- reduction
    _reduce_key: HashTemplate
    _parse_key: HashTemplate | None

    def _pass_through(
        self, item: CaseInput, candidates: list[GenerationResult]
    ) -> ReducedCandidate:
        """No reducer: the first candidate, as a ``ReducedCandidate``.

        A plain function, so the pipeline calls it without making a coroutine for it.
        """
        ids = [c.candidate_id for c in candidates]
        first = candidates[0]
        reduced: ReducedCandidate | None = None
        # The candidate's id, size bound and dump when it was generated in this run.
        _, units, dump = (
            item.generated
            if item.generated is not None
            and item.generated[0] == first.candidate_id
            # A subclass may serialize its output its own way.
            and type(first) is GenerationResult
            else _NOT_GENERATED
        )
        output = dump.get("final_output")
        if dump and type(output) in _SCALARS:
            # The candidate's dump holds its output's JSON form already; a scalar is
            # shared, a container gets a dump of its own (results never share one).
            data: dict[str, Any] = {
                "candidate_id": first.candidate_id,
                "source_candidate_ids": list(ids),
                "final_output": output,
                "metadata": {"selected_candidate_id": first.candidate_id},
            }
            exact = True
            if self.reduction_internal and output is first.final_output:
                # Only the pipeline reads this model (no parser, no judge gets it): it is
                # built around its exact dump, as the fold builds its own (``rebuild``).
                # The output must be the candidate's own (JSON mode makes a NaN None).
                reduced = rebuild(ReducedCandidate, data)
        else:
            reduced = self._new_pass_through(first, ids)
            data, exact = output_dump(reduced)
        if reduced is None:
            reduced = self._new_pass_through(first, ids)
        budget = self.inline_limit // _WORST_BYTES_PER_CHAR
        if units >= 0 and units + pass_through_extra(ids, first.candidate_id) <= budget:
            # Bounded by the candidate's own payload, whose size the cheap bound gave.
            inline: dict[str, Any] | None = data
            ref = None
        else:
            inline, ref = self.payload(data)
        self._emit_reduction(item, data, exact, inline, ref)
        return reduced

    @staticmethod
    def _new_pass_through(first: GenerationResult, ids: list[str]) -> ReducedCandidate:
        return _new_reduced(
            candidate_id=first.candidate_id,
            source_candidate_ids=ids,
            final_output=first.final_output,
            metadata={"selected_candidate_id": first.candidate_id},
        )

    def _emit_reduction(
        self,
        item: CaseInput,
        data: dict[str, Any],
        exact: bool,
        inline: dict[str, Any] | None,
        ref: str | None,
    ) -> None:
        """Emit the ``reduction_completed`` of a reduction whose dump is ``data``."""
        item.reduced_inline = inline is not None
        make = self.reduction_exact if exact and inline is not None else _reduction_completed
        self.ctx.writer.emit(
            make(
                item.fields or self.case_fields(item),
                candidate_id=data["candidate_id"],
                # The dump's list, which the fold's model keeps too: one list, not two.
                source_candidate_ids=data["source_candidate_ids"],
                result=inline,
                result_blob_ref=ref,
                cache_hit=False,
                source_run_id=None,
            )
        )

    async def _reduce(
        self, item: CaseInput, candidates: list[GenerationResult]
    ) -> ReducedCandidate | None:
        if self.reducer is None:
            return self._pass_through(item, candidates)
        fields = item.fields or self.case_fields(item)
        writer = self.ctx.writer
        ids = [c.candidate_id for c in candidates]
        assert self.reduce_call is not None
        cache_key = None
        if self.ctx.cache_enabled:
            cache_key = self._reduce_key.sorted_hash([c.compute_hash() for c in candidates])
            cached = (
                None
                if self._cache_reader.absent("reduce", cache_key)
                else await self.cache_read("reduce", cache_key)
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                reduced = ReducedCandidate.model_validate(cached["result"])
                inline, ref = self.payload(cached["result"])
                writer.emit(
                    _reduction_completed(
                        fields,
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
        if "before_reduce" in observers.hooks:
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
        if "after_reduce" in observers.hooks:
            await observers.call("after_reduce", result, ctx)
        if span is not None:
            observers.end_span(span, "ok")
        data, exact = output_dump(result)
        inline, ref = self.payload(data)
        self._emit_reduction(item, data, exact, inline, ref)
        if cache_key is not None:
            writer.add_cache_write(
                "reduce", cache_key, {"source_run_id": self.run_id, "result": data}
            )
        return result

    # ---------------------------------------------------------------- parsing
    def _parse_as_is(self, item: CaseInput, reduced: ReducedCandidate) -> ParsedOutput:
        """No parser: the reduced output as the parsed value (a plain function, as
        ``_pass_through`` is)."""
        fields = item.fields or self.case_fields(item)
        writer = self.ctx.writer
        parsed = _new_parsed(value=reduced.final_output, format=None, metadata={})
        # Its payload holds the whole output, so it is bounded like any other; it is
        # ``parsed``'s exact dump: validating it gives ``parsed`` (see ``output_dump``).
        data = {"value": reduced.final_output, "format": None, "metadata": {}}
        if item.reduced_inline:
            # Smaller than the reduction's inline payload, which holds the same output
            # under a longer key beside the candidate ids: no need to measure it again.
            inline: dict[str, Any] | None = data
            ref = None
        else:
            inline, ref = self.payload(data)
        writer.emit(
            (_parse_completed if inline is None else self.parse_exact)(
                fields,
                candidate_id=reduced.candidate_id,
                result=inline,
                result_blob_ref=ref,
                cache_hit=False,
                source_run_id=None,
            )
        )
        return parsed

    async def _parse(self, item: CaseInput, reduced: ReducedCandidate) -> ParsedOutput | None:
        if self.parser is None:
            return self._parse_as_is(item, reduced)
        fields = item.fields or self.case_fields(item)
        writer = self.ctx.writer
        assert self.parse_call is not None
        cache_key = None
        if self.ctx.cache_enabled:
            assert self._parse_key is not None  # a parser implies its ref
            cache_key = self._parse_key.sorted_hash(reduced.compute_hash())
            cached = (
                None
                if self._cache_reader.absent("parse", cache_key)
                else await self.cache_read("parse", cache_key)
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                inline, ref = self.payload(cached["result"])
                writer.emit(
                    _parse_completed(
                        fields,
                        candidate_id=reduced.candidate_id,
                        result=inline,
                        result_blob_ref=ref,
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
        if "before_parse" in observers.hooks:
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
        if "after_parse" in observers.hooks:
            await observers.call("after_parse", parsed, ctx)
        if span is not None:
            observers.end_span(span, "ok")
        data, exact = output_dump(parsed)
        inline, ref = self.payload(data)
        make = self.parse_exact if exact and inline is not None else _parse_completed
        writer.emit(
            make(
                fields,
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
