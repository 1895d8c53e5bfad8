"""The scoring stage of a case: its pure metrics, each scored or read from the cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from themis.core._case import _CASE, _SCORE_CONTEXT, CaseStage, _error_text, _wrong_type
from themis.core._construct import maker
from themis.core._fold_speed import _score_dump, exact_makers, output_dump
from themis.core._invoke import maybe_awaitable
from themis.core.base import HashTemplate
from themis.core.contexts import ScoreContext
from themis.core.events import ScoreCompletedEvent, ScoreFailedEvent
from themis.core.logs import get_logger
from themis.core.models import Score, ScoreError

if TYPE_CHECKING:
    from themis.core._case import CaseInput
    from themis.core.models import ParsedOutput, ReducedCandidate

__all__ = ["ScoringStage"]

log = get_logger(__name__)

# Built with ``maker`` for the reason given above ``_CASE`` in ``_case``.
_new_score_context = maker(ScoreContext, *_SCORE_CONTEXT)
_SCORE_COMPLETED = (*_CASE, "candidate_id", "metric_id", "score", "cache_hit", "source_run_id")
_score_completed = maker(ScoreCompletedEvent, *_SCORE_COMPLETED, shared=_CASE)
# For an exact dump, which the fold takes back unvalidated (see ``ExactFields``).
SCORE_EXACT = exact_makers(ScoreCompletedEvent, *_SCORE_COMPLETED, shared=_CASE)


class ScoringStage(CaseStage):
    """Scores a case's parsed output with each pure metric and emits an event for each."""

    _score_keys: dict[int, HashTemplate]
    _eval_spec_canonical: Any
    # The maker of an exact success: an event or a record (see ``exact_makers``).
    score_exact: Callable[..., Any]

    def _score_key(self, metric: Any) -> HashTemplate:
        """The template of ``metric``'s score-cache keys, made on its first use."""
        template = self._score_keys.get(id(metric))
        if template is None:
            ref = {
                "component_id": metric.component_id,
                "version": metric.version,
                "fingerprint": _fingerprint(metric),
            }
            template = self._score_keys[id(metric)] = HashTemplate(
                {"metric_ref": ref, "prompt_spec": self._eval_spec_canonical},
                ("case", "parsed"),
            )
        return template

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
        direct: Any = None,
    ) -> None:
        metric_id: str = metric.component_id
        fields = item.fields or self.case_fields(item)
        writer = self.ctx.writer
        cache_key = None
        if self.ctx.cache_enabled:
            # The key's variables in sorted order: case, parsed.
            cache_key = self._score_key(metric).sorted_hash(
                item.hash_of_case(), parsed.compute_hash()
            )
            cached = (
                None
                if self._cache_reader.absent("score", cache_key)
                else await self.cache_read("score", cache_key)
            )
            if isinstance(cached, dict) and isinstance(cached.get("result"), dict):
                writer.emit(
                    _score_completed(
                        fields,
                        candidate_id=reduced.candidate_id,
                        metric_id=metric_id,
                        score=cached["result"],
                        cache_hit=True,
                        source_run_id=cached.get("source_run_id"),
                    )
                )
                return
        # ``score_context``, written out (a call fewer per case and metric).
        dataset = item.dataset
        ctx = _new_score_context(
            run_id=self.run_id,
            dataset_id=dataset.dataset_id,
            case_key=item.case_key,
            metadata={},
            case=item.case,
            parsed_output=parsed,
            seed=self.ctx.seeds[0],
            dataset_metadata=dict(dataset.metadata),
        )
        observers = self.ctx.observers
        if "before_score" in observers.hooks:
            await observers.call("before_score", parsed, ctx)
        span = (
            observers.start_span("score", self.span_attrs(item, metric_id=metric_id))
            if self.tracing
            else None
        )
        error: BaseException | None = None
        try:
            if direct is None:
                outcome = await call(parsed, item.case, ctx)
            else:
                outcome = direct(parsed, item.case, ctx)
                # A score is never awaitable: the usual outcome skips the test.
                if type(outcome) is not Score and maybe_awaitable(outcome):
                    outcome = await outcome
            # The exact class first: isinstance on a model class goes through ABCMeta.
            scored = type(outcome) is Score or isinstance(outcome, Score)
            if scored:
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
            scored = False
            outcome = ScoreError(metric_id=metric_id, reason=_error_text(exc))
        if "after_score" in observers.hooks:
            await observers.call("after_score", outcome, ctx)
        if scored:
            if span is not None:
                observers.end_span(span, "ok")
            # The usual score's dump written out at once (``output_dump`` would find it).
            written = _score_dump(outcome) if type(outcome) is Score else None
            if written is not None:
                data, exact = written, True
            else:
                data, exact = output_dump(outcome)
            writer.emit(
                (self.score_exact if exact else _score_completed)(
                    fields,
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
