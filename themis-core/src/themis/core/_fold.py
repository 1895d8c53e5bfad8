"""The per-case half of the event fold: one handler per case event type (API §2.9)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from themis.core._construct import SET_DICT, SET_EXTRA, SET_FIELDS_SET, SET_PRIVATE
from themis.core._event_log import record_index
from themis.core._fold_speed import (
    ExactFields,
    full_fields_set,
    own,
    rebuild,
    set_case_error_rank,
    share_fields_set,
)
from themis.core.case_refs import resolve_case_key
from themis.core.events import (
    GenerationCompletedEvent,
    ParseCompletedEvent,
    ReductionCompletedEvent,
    ScoreCompletedEvent,
)
from themis.core.logs import get_logger
from themis.core.models import (
    GenerationResult,
    ParsedOutput,
    ReducedCandidate,
    Score,
    ScoreError,
)
from themis.core.workflows import EvaluationExecution

if TYPE_CHECKING:
    from themis.core.events import RunEvent
    from themis.core.results import CaseExecutionState

log = get_logger(__name__)

M = TypeVar("M", bound=BaseModel)

# Resolves a ``*_blob_ref`` to the JSON payload it stands for (the store's blob, decoded).
PayloadLoader = Callable[[str], dict[str, Any]]


class Fold:
    """What a fold tracks besides the state's data.

    Kept in one plain object because pydantic's private-attribute access is slow, and the
    fold reads it on every event.
    """

    __slots__ = ("failed_keys", "load_payload", "until_stage", "workflow_metric_ids")

    def __init__(self) -> None:
        self.until_stage = "judge"
        self.workflow_metric_ids: frozenset[str] = frozenset()
        self.load_payload: PayloadLoader | None = None
        # Case keys with a recorded failure, so ``run_completed`` decides in O(1).
        self.failed_keys: set[str] = set()


def payload_of(fold: Fold, event: Any, inline: str, ref_field: str) -> dict[str, Any] | None:
    fields = event.__dict__
    payload: dict[str, Any] | None = fields.get(inline)
    if payload is not None:
        return payload
    ref: str | None = fields.get(ref_field)
    if ref is None:
        return None
    if fold.load_payload is None:
        from themis.core.errors import StoreError

        raise StoreError(
            f"event seq={event.seq} ({event.event_type}) of run {event.run_id} stores its "
            f"payload as blob {ref}, but no blob loader was given; fold with "
            "load_payload=themis.core.stores.blob_payload_loader(store), or read it "
            "through the store (get_projection, get_execution_state)"
        )
    return fold.load_payload(ref)


def _output(fold: Fold, event: Any, cls: type[M], validate: Callable[[Any], M]) -> M | None:
    """The output model in a ``*_completed`` event's ``result`` payload; None when missing.

    The pipeline's own exact dump in this process is taken back as it is (see
    ``ExactFields``); anything else is read (a blob ref resolved) and validated.
    """
    payload = event.__dict__.get("result")
    if payload is not None and type(event.__pydantic_fields_set__) is ExactFields:
        return rebuild(cls, payload)
    payload = payload_of(fold, event, "result", "result_blob_ref")
    if payload is None:
        _missing_payload(event)
        return None
    return share_fields_set(validate(payload))


# Payloads are validated straight by pydantic-core, skipping ``model_validate``'s wrapper.
_validate_generation = GenerationResult.__pydantic_validator__.validate_python
_validate_reduction = ReducedCandidate.__pydantic_validator__.validate_python
_validate_parse = ParsedOutput.__pydantic_validator__.validate_python
_validate_score = Score.__pydantic_validator__.validate_python
_validate_score_error = ScoreError.__pydantic_validator__.validate_python
_validate_execution = EvaluationExecution.__pydantic_validator__.validate_python

# A pipeline stage's position, used to decide which success clears a case_failed error
# and which errors a replay from a stage clears.
STAGE_RANK = {
    "generate": 0,
    "generation": 0,
    "select": 1,
    "selection": 1,
    "reduce": 2,
    "reduction": 2,
    "parse": 3,
    "parsing": 3,
    "score": 4,
    "scoring": 4,
    "judge": 5,
    "evaluate": 5,
    "evaluation": 5,
}


def case_key_of(event: Any) -> str:
    key: str | None = event.case_key
    if key:
        return key
    return resolve_case_key(case_id=event.case_id, dataset_id=event.dataset_id)


def clear_case_error(case_state: CaseExecutionState, rank: int) -> None:
    if case_state.case_error is not None and rank >= case_state._case_error_rank:
        case_state.case_error = None
        set_case_error_rank(case_state, 0)


def _missing_payload(event: RunEvent) -> None:
    log.warning(
        "fold.payload_missing", run_id=event.run_id, seq=event.seq, event_type=event.event_type
    )


def clear_metrics(case_state: CaseExecutionState, metric_ids: set[str] | None) -> None:
    if metric_ids is None:
        case_state.successful_scores.clear()
        case_state.score_failures.clear()
        case_state.evaluation_executions.clear()
        case_state.evaluation_execution_blob_refs.clear()
        case_state.evaluation_failures.clear()
        return
    for metric_id in metric_ids:
        case_state.successful_scores.pop(metric_id, None)
        case_state.score_failures.pop(metric_id, None)
        case_state.evaluation_executions.pop(metric_id, None)
        case_state.evaluation_execution_blob_refs.pop(metric_id, None)
        case_state.evaluation_failures.pop(metric_id, None)


# Case events: a success clears the matching failure, a failure clears the matching success.


def _generation_completed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    result = _output(fold, event, GenerationResult, _validate_generation)
    if result is not None:
        _put_generation(
            cs, result, event.candidate_id, event.candidate_index, event.result_blob_ref
        )


def _put_generation(
    cs: CaseExecutionState,
    result: GenerationResult,
    candidate_id: str,
    index: int | None,
    ref: str | None,
) -> None:
    # The state's fields from its dict: a model's attribute costs a type lookup first.
    fields = cs.__dict__
    fields["generated_candidates"][candidate_id] = result
    if index is not None:
        fields["generated_candidates_by_index"][index] = result
        if fields["generation_failure_keys_by_index"]:
            fields["generation_failure_keys_by_index"].pop(index, None)
    if ref is not None:
        own(cs, "generated_candidate_blob_refs")[candidate_id] = ref
    elif fields["generated_candidate_blob_refs"]:
        fields["generated_candidate_blob_refs"].pop(candidate_id, None)
    if fields["generation_failures"]:
        fields["generation_failures"].pop(candidate_id, None)
    if fields["case_error"] is not None:
        clear_case_error(cs, 0)


def _generation_failed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    candidate_id: str = event.candidate_id
    own(cs, "generation_failures")[candidate_id] = event.error_message
    index: int | None = event.candidate_index
    if index is not None:
        own(cs, "generation_failure_keys_by_index")[index] = candidate_id
        cs.generated_candidates_by_index.pop(index, None)
    if cs.generated_candidates.pop(candidate_id, None) is not None:
        by_index = cs.generated_candidates_by_index
        stale = [i for i, r in by_index.items() if r.candidate_id == candidate_id]
        for i in stale:
            del cs.generated_candidates_by_index[i]
    cs.generated_candidate_blob_refs.pop(candidate_id, None)


def _selection_completed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    cs.selected_candidate_ids = list(event.candidate_ids)
    cs.selection_metadata = dict(event.metadata)
    cs.selection_error = None
    if cs.case_error is not None:
        clear_case_error(cs, 1)


def _selection_failed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    cs.selection_error = event.error_message
    cs.selected_candidate_ids = None
    cs.selection_metadata = {}


# What a success sets, written straight into the state's dict and fields set, as pydantic's
# ``__setattr__`` would after two Python calls per field (once per case in every fold).
_REDUCTION_FIELDS = ("reduced_candidate", "reduction_error")
_PARSE_FIELDS = ("parsed_output", "parse_error")


def _reduction_completed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    output = _output(fold, event, ReducedCandidate, _validate_reduction)
    if output is not None:
        _put_reduction(cs, output)


def _put_reduction(cs: CaseExecutionState, output: ReducedCandidate) -> None:
    fields = cs.__dict__
    fields["reduced_candidate"] = output
    fields["reduction_error"] = None
    cs.__pydantic_fields_set__.update(_REDUCTION_FIELDS)
    if fields["case_error"] is not None:
        clear_case_error(cs, 2)


def _reduction_failed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    cs.reduction_error = event.error_message
    cs.reduced_candidate = None


def _parse_completed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    output = _output(fold, event, ParsedOutput, _validate_parse)
    if output is not None:
        _put_parse(cs, output)


def _put_parse(cs: CaseExecutionState, output: ParsedOutput) -> None:
    fields = cs.__dict__
    fields["parsed_output"] = output
    fields["parse_error"] = None
    cs.__pydantic_fields_set__.update(_PARSE_FIELDS)
    if fields["case_error"] is not None:
        clear_case_error(cs, 3)


def _parse_failed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    cs.parse_error = event.error_message
    cs.parsed_output = None


def _score_completed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    metric_id: str = event.metric_id
    score = event.score
    if type(event.__pydantic_fields_set__) is ExactFields:
        _put_score(cs, metric_id, rebuild(Score, score))
    else:
        data = dict(score)
        data.setdefault("metric_id", metric_id)
        _put_score(cs, metric_id, share_fields_set(_validate_score(data)))


def _put_score(cs: CaseExecutionState, metric_id: str, score: Score) -> None:
    fields = cs.__dict__
    fields["successful_scores"][metric_id] = score
    if fields["score_failures"]:
        fields["score_failures"].pop(metric_id, None)
    if fields["case_error"] is not None:
        clear_case_error(cs, 4)


def _score_failed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    metric_id: str = event.metric_id
    data = dict(event.error)
    data.setdefault("metric_id", metric_id)
    data.setdefault("reason", "the metric failed without giving a reason")
    own(cs, "score_failures")[metric_id] = share_fields_set(_validate_score_error(data))
    cs.successful_scores.pop(metric_id, None)


def _evaluation_completed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    payload = payload_of(fold, event, "execution", "execution_blob_ref")
    if payload is None:
        _missing_payload(event)
        return
    metric_id: str = event.metric_id
    own(cs, "evaluation_executions")[metric_id] = share_fields_set(_validate_execution(payload))
    ref: str | None = event.execution_blob_ref
    if ref is not None:
        own(cs, "evaluation_execution_blob_refs")[metric_id] = ref
    else:
        cs.evaluation_execution_blob_refs.pop(metric_id, None)
    cs.evaluation_failures.pop(metric_id, None)
    if cs.case_error is not None:
        clear_case_error(cs, 5)


def _evaluation_failed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    metric_id: str = event.metric_id
    own(cs, "evaluation_failures")[metric_id] = event.error_message
    cs.evaluation_executions.pop(metric_id, None)
    cs.evaluation_execution_blob_refs.pop(metric_id, None)


def _case_failed(fold: Fold, cs: CaseExecutionState, event: Any) -> None:
    cs.case_error = event.error_message
    set_case_error_rank(cs, STAGE_RANK.get(str(event.stage).lower(), 0))


# Successes that cannot add a failure (an evaluation can: its execution may be partial).
CANNOT_ADD_A_FAILURE = frozenset(
    {
        "generation_completed",
        "selection_completed",
        "reduction_completed",
        "parse_completed",
        "score_completed",
    }
)

CASE_HANDLERS: dict[str, Callable[[Fold, CaseExecutionState, Any], None]] = {
    "generation_completed": _generation_completed,
    "generation_failed": _generation_failed,
    "selection_completed": _selection_completed,
    "selection_failed": _selection_failed,
    "reduction_completed": _reduction_completed,
    "reduction_failed": _reduction_failed,
    "parse_completed": _parse_completed,
    "parse_failed": _parse_failed,
    "score_completed": _score_completed,
    "score_failed": _score_failed,
    "evaluation_completed": _evaluation_completed,
    "evaluation_failed": _evaluation_failed,
    "case_failed": _case_failed,
}


# The records of the pipeline's exact successes (``exact_makers``), folded by position:
# each value is read at its place in the record (``record_index``), the output taken
# back around its exact dump (``rebuild``). The result's blob ref of such a record is
# always None: its output is inline.
_GEN_RESULT = record_index(GenerationCompletedEvent, "result")
_GEN_CANDIDATE = record_index(GenerationCompletedEvent, "candidate_id")
_GEN_INDEX = record_index(GenerationCompletedEvent, "candidate_index")
_RED_RESULT = record_index(ReductionCompletedEvent, "result")
_PARSE_RESULT = record_index(ParseCompletedEvent, "result")
_SCORE_METRIC = record_index(ScoreCompletedEvent, "metric_id")
_SCORE_VALUE = record_index(ScoreCompletedEvent, "score")


# ``rebuild`` written out in the handlers below, each class's shared fields set looked up
# once: four records per case, and the call and the lookup were a fifth of their cost.
_new_model = object.__new__
_GEN_FIELDS_SET = full_fields_set(GenerationResult)
_RED_FIELDS_SET = full_fields_set(ReducedCandidate)
_PARSE_FIELDS_SET = full_fields_set(ParsedOutput)
_SCORE_FIELDS_SET = full_fields_set(Score)


def _generation_record(fold: Fold, cs: CaseExecutionState, record: Any) -> None:
    result = _new_model(GenerationResult)
    SET_DICT(result, record[_GEN_RESULT])
    SET_FIELDS_SET(result, _GEN_FIELDS_SET)
    SET_EXTRA(result, None)
    SET_PRIVATE(result, None)
    # ``_put_generation`` of an output inline (no blob ref), written out.
    candidate_id: str = record[_GEN_CANDIDATE]
    index: int | None = record[_GEN_INDEX]
    fields = cs.__dict__
    fields["generated_candidates"][candidate_id] = result
    if index is not None:
        fields["generated_candidates_by_index"][index] = result
        if fields["generation_failure_keys_by_index"]:
            fields["generation_failure_keys_by_index"].pop(index, None)
    if fields["generated_candidate_blob_refs"]:
        fields["generated_candidate_blob_refs"].pop(candidate_id, None)
    if fields["generation_failures"]:
        fields["generation_failures"].pop(candidate_id, None)
    if fields["case_error"] is not None:
        clear_case_error(cs, 0)


def _reduction_record(fold: Fold, cs: CaseExecutionState, record: Any) -> None:
    output = _new_model(ReducedCandidate)
    SET_DICT(output, record[_RED_RESULT])
    SET_FIELDS_SET(output, _RED_FIELDS_SET)
    SET_EXTRA(output, None)
    SET_PRIVATE(output, None)
    # ``_put_reduction``, written out.
    fields = cs.__dict__
    fields["reduced_candidate"] = output
    fields["reduction_error"] = None
    cs.__pydantic_fields_set__.update(_REDUCTION_FIELDS)
    if fields["case_error"] is not None:
        clear_case_error(cs, 2)


def _parse_record(fold: Fold, cs: CaseExecutionState, record: Any) -> None:
    output = _new_model(ParsedOutput)
    SET_DICT(output, record[_PARSE_RESULT])
    SET_FIELDS_SET(output, _PARSE_FIELDS_SET)
    SET_EXTRA(output, None)
    SET_PRIVATE(output, None)
    # ``_put_parse``, written out.
    fields = cs.__dict__
    fields["parsed_output"] = output
    fields["parse_error"] = None
    cs.__pydantic_fields_set__.update(_PARSE_FIELDS)
    if fields["case_error"] is not None:
        clear_case_error(cs, 3)


def _score_record(fold: Fold, cs: CaseExecutionState, record: Any) -> None:
    score = _new_model(Score)
    SET_DICT(score, record[_SCORE_VALUE])
    SET_FIELDS_SET(score, _SCORE_FIELDS_SET)
    SET_EXTRA(score, None)
    SET_PRIVATE(score, None)
    # ``_put_score``, written out.
    fields = cs.__dict__
    fields["successful_scores"][record[_SCORE_METRIC]] = score
    if fields["score_failures"]:
        fields["score_failures"].pop(record[_SCORE_METRIC], None)
    if fields["case_error"] is not None:
        clear_case_error(cs, 4)


# By record class: the handler, and the position of the case key. Only successes that
# cannot add a failure (``CANNOT_ADD_A_FAILURE``) are here.
RECORD_HANDLERS: dict[type, tuple[Callable[[Fold, CaseExecutionState, Any], None], int]] = {
    cls: (handler, record_index(cls, "case_key"))
    for cls, handler in (
        (GenerationCompletedEvent, _generation_record),
        (ReductionCompletedEvent, _reduction_record),
        (ParseCompletedEvent, _parse_record),
        (ScoreCompletedEvent, _score_record),
    )
}
