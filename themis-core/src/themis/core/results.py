"""Run results: the execution state folded from a run's events, and its case and run results."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from themis.core._case_list import CaseList
from themis.core._construct import SET_DICT, SET_EXTRA, SET_FIELDS_SET, SET_PRIVATE
from themis.core._fold import (
    CANNOT_ADD_A_FAILURE,
    CASE_HANDLERS,
    STAGE_RANK,
    Fold,
    PayloadLoader,
    case_key_of,
    clear_metrics,
)
from themis.core._fold_speed import EMPTY, NO_CASE_ERROR, paused_gc, set_case_error_rank
from themis.core.base import FrozenModel, JSONValue
from themis.core.models import (
    Case,
    GenerationResult,
    ParsedOutput,
    ReducedCandidate,
    Score,
    ScoreError,
)
from themis.core.workflows import EvaluationExecution

if TYPE_CHECKING:
    from themis.core.events import RunEvent
    from themis.core.snapshot import RunSnapshot

__all__ = [
    "CaseExecutionState",
    "CaseResult",
    "ExecutionState",
    "GenerationWorkItem",
    "ProgressSnapshot",
    "RunEstimate",
    "RunResult",
    "RunStatus",
]


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL_FAILURE = "partial_failure"
    FAILED = "failed"


class ProgressSnapshot(FrozenModel):
    """How many cases of a run are completed, failed, and (derived) still pending."""

    total_cases: int = 0
    completed_cases: int = 0
    failed_cases: int = 0

    @property
    def pending_cases(self) -> int:
        return max(0, self.total_cases - self.completed_cases - self.failed_cases)


class GenerationWorkItem(FrozenModel):
    """One planned generator call: a case and a candidate index with its seed."""

    run_id: str
    dataset_id: str
    case: Case
    case_id: str
    case_key: str
    candidate_index: int
    candidate_id: str
    seed: int | None = None


class CaseExecutionState(BaseModel):
    """Everything the log says about one case; mutated in place by ``ExecutionState``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    generated_candidates: dict[str, GenerationResult] = Field(default_factory=dict)
    generated_candidates_by_index: dict[int, GenerationResult] = Field(default_factory=dict)
    generated_candidate_blob_refs: dict[str, str] = Field(default_factory=dict)
    generation_failures: dict[str, str] = Field(default_factory=dict)
    generation_failure_keys_by_index: dict[int, str] = Field(default_factory=dict)
    selected_candidate_ids: list[str] | None = None
    selection_metadata: dict[str, JSONValue] = Field(default_factory=dict)
    selection_error: str | None = None
    reduced_candidate: ReducedCandidate | None = None
    reduction_error: str | None = None
    parsed_output: ParsedOutput | None = None
    parse_error: str | None = None
    evaluation_executions: dict[str, EvaluationExecution] = Field(default_factory=dict)
    evaluation_execution_blob_refs: dict[str, str] = Field(default_factory=dict)
    evaluation_failures: dict[str, str] = Field(default_factory=dict)
    successful_scores: dict[str, Score] = Field(default_factory=dict)
    score_failures: dict[str, ScoreError] = Field(default_factory=dict)
    case_error: str | None = None

    # The pipeline stage ``case_error`` came from; a later success at that stage or
    # further down clears it (see ``clear_case_error``).
    _case_error_rank: int = PrivateAttr(default=0)

    @property
    def scores(self) -> dict[str, Score | ScoreError]:
        """Every metric's latest outcome, success or failure, keyed by metric id."""
        return {**self.score_failures, **self.successful_scores}

    @property
    def has_failure(self) -> bool:
        """Whether any failure is recorded, a workflow execution's own failures included."""
        return bool(
            self.generation_failures
            or self.selection_error is not None
            or self.reduction_error is not None
            or self.parse_error is not None
            or self.evaluation_failures
            or self.score_failures
            or self.case_error is not None
            or (
                self.evaluation_executions
                and any(_execution_failed(e) for e in self.evaluation_executions.values())
            )
        )


_new_model = object.__new__


# A fields set naming every field, shared by the case states the fold makes, so that
# pydantic's ``__setattr__`` adding a name to it changes nothing.
_ALL_CASE_FIELDS: set[str] = set(CaseExecutionState.model_fields)


# A new case state's fields: what a successful case never writes to is shared (see
# ``Shared``); ``_new_case_state`` gives each state its own of the three containers every
# case fills.
_NEW_CASE_STATE: dict[str, Any] = {
    "generated_candidates": None,
    "generated_candidates_by_index": None,
    "generated_candidate_blob_refs": EMPTY,
    "generation_failures": EMPTY,
    "generation_failure_keys_by_index": EMPTY,
    "selected_candidate_ids": None,
    "selection_metadata": EMPTY,
    "selection_error": None,
    "reduced_candidate": None,
    "reduction_error": None,
    "parsed_output": None,
    "parse_error": None,
    "evaluation_executions": EMPTY,
    "evaluation_execution_blob_refs": EMPTY,
    "evaluation_failures": EMPTY,
    "successful_scores": None,
    "score_failures": EMPTY,
    "case_error": None,
}


def _new_case_state() -> CaseExecutionState:
    """``CaseExecutionState()`` without pydantic calling seventeen default factories.

    One per case in every fold; built as ``trusted`` would, minus its generic handling,
    from a copy of ``_NEW_CASE_STATE`` (a copy of a dict costs less than a display of it).
    """
    state = _new_model(CaseExecutionState)
    fields = _NEW_CASE_STATE.copy()
    fields["generated_candidates"] = {}
    fields["generated_candidates_by_index"] = {}
    fields["successful_scores"] = {}
    SET_DICT(state, fields)
    SET_FIELDS_SET(state, _ALL_CASE_FIELDS)
    SET_EXTRA(state, None)
    SET_PRIVATE(state, NO_CASE_ERROR)
    return state


def _execution_failed(execution: EvaluationExecution) -> bool:
    return execution.status != "completed" or bool(execution.failures)


class ExecutionState(BaseModel):
    """A run's state, folded from its event log one event at a time (API §2.9)."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    status: RunStatus = RunStatus.PENDING
    completed_through_stage: str | None = None
    case_states: dict[str, CaseExecutionState] = Field(default_factory=dict)

    _fold: Fold = PrivateAttr(default_factory=Fold)

    def model_post_init(self, context: Any, /) -> None:
        self._fold.failed_keys = {k for k, cs in self.case_states.items() if cs.has_failure}

    @classmethod
    def from_events(
        cls,
        run_id: str,
        events: Iterable[RunEvent],
        *,
        snapshot: RunSnapshot | None = None,
        load_payload: PayloadLoader | None = None,
    ) -> ExecutionState:
        """Fold ``events`` in order.

        ``snapshot`` tells which metrics are workflow metrics (for ``replay_started`` with
        stage ``judge``); ``load_payload`` resolves payloads stored as blobs.
        """
        state = cls(run_id=run_id)
        fold = state._fold
        fold.load_payload = load_payload
        if snapshot is not None:
            refs = snapshot.component_refs.metrics
            fold.workflow_metric_ids = frozenset(
                ref.component_id
                for ref, kind in zip(refs, snapshot.metric_kinds, strict=False)
                if kind != "pure"
            )
        apply = state.apply_event
        with paused_gc():
            for event in events:
                apply(event)
        return state

    @property
    def until_stage(self) -> str:
        """The ``until_stage`` of the latest ``run_started`` or ``run_completed``."""
        return self._fold.until_stage

    def apply_event(self, event: RunEvent) -> ExecutionState:
        """Fold one event into this state in place and return it; unknown events are ignored."""
        event_type = event.event_type
        if event_type in CASE_HANDLERS:
            self.apply_case_event(event, event_type, case_key_of(event))
        else:
            run_handler = _RUN_HANDLERS.get(event_type)
            if run_handler is not None:
                private = self.__pydantic_private__
                assert private is not None
                run_handler(self, private["_fold"], event)
        return self

    def apply_case_event(self, event: RunEvent, event_type: str, key: str) -> None:
        """``apply_event`` of a case event whose type and case key the caller has at hand."""
        private = self.__pydantic_private__
        assert private is not None
        fold: Fold = private["_fold"]
        case_handler = CASE_HANDLERS[event_type]
        case_state = self.case_states.get(key)
        if case_state is None:
            case_state = self.case_states[key] = _new_case_state()
        case_handler(fold, case_state, event)
        failed_keys = fold.failed_keys
        if event_type in CANNOT_ADD_A_FAILURE:
            # A success only ever removes a failure, so only a failed case needs a look.
            if key in failed_keys and not case_state.has_failure:
                failed_keys.discard(key)
            return
        if case_state.has_failure:
            failed_keys.add(key)
            if self.status is RunStatus.COMPLETED:
                self.status = RunStatus.PARTIAL_FAILURE
        else:
            failed_keys.discard(key)


# Run-level events.


def _run_started(state: ExecutionState, fold: Fold, event: Any) -> None:
    state.status = RunStatus.RUNNING
    fold.until_stage = getattr(event, "until_stage", "judge")


def _run_completed(state: ExecutionState, fold: Fold, event: Any) -> None:
    stage = getattr(event, "completed_through_stage", "judge")
    state.completed_through_stage = stage
    fold.until_stage = stage
    state.status = RunStatus.PARTIAL_FAILURE if fold.failed_keys else RunStatus.COMPLETED


def _run_failed(state: ExecutionState, fold: Fold, event: Any) -> None:
    state.status = RunStatus.FAILED


def _replay_started(state: ExecutionState, fold: Fold, event: Any) -> None:
    state.status = RunStatus.RUNNING
    stage: str = event.stage
    metric_ids: list[str] | None = getattr(event, "metric_ids", None)
    rank = STAGE_RANK.get(stage, 0)
    named = None if metric_ids is None else set(metric_ids)
    for case_state in state.case_states.values():
        if stage == "reduce":
            case_state.selected_candidate_ids = None
            case_state.selection_metadata = {}
            case_state.selection_error = None
            case_state.reduced_candidate = None
            case_state.reduction_error = None
        if stage in ("reduce", "parse"):
            case_state.parsed_output = None
            case_state.parse_error = None
            clear_metrics(case_state, None)
        elif stage == "score":
            clear_metrics(case_state, named)
        elif stage == "judge":
            if named is not None:
                clear_metrics(case_state, named)
            else:
                # Workflow metrics are the snapshot's, plus any this case evaluated (which
                # keeps the fold right when no snapshot was given).
                clear_metrics(
                    case_state,
                    set(fold.workflow_metric_ids)
                    | case_state.evaluation_executions.keys()
                    | case_state.evaluation_failures.keys(),
                )
        if case_state.case_error is not None and case_state._case_error_rank >= rank:
            case_state.case_error = None
            set_case_error_rank(case_state, 0)
    fold.failed_keys = {k for k, cs in state.case_states.items() if cs.has_failure}


_RUN_HANDLERS: dict[str, Callable[[ExecutionState, Fold, Any], None]] = {
    "run_started": _run_started,
    "run_completed": _run_completed,
    "run_failed": _run_failed,
    "replay_started": _replay_started,
}


# A score or a score error. Each forbids the other's fields, so at most one member can accept
# an input: tried in order, the union stops at the first that does, where pydantic's smart
# mode would validate both to compare them (a tenth of reading a stored result back).
_Outcome = Annotated[Score | ScoreError, Field(union_mode="left_to_right")]


class CaseResult(FrozenModel):
    """One case's outcome, as ``RunResult`` shows it."""

    case_id: str
    dataset_id: str | None = None
    case_key: str
    generated_candidates: list[GenerationResult] = Field(default_factory=list)
    generated_candidate_blob_refs: dict[str, str] = Field(default_factory=dict)
    generation_failures: dict[str, str] = Field(default_factory=dict)
    reduced_candidate: ReducedCandidate | None = None
    reduction_error: str | None = None
    parsed_output: ParsedOutput | None = None
    parse_error: str | None = None
    evaluation_executions: list[EvaluationExecution] = Field(default_factory=list)
    evaluation_execution_blob_refs: dict[str, str] = Field(default_factory=dict)
    evaluation_failures: dict[str, str] = Field(default_factory=dict)
    scores: list[_Outcome] = Field(default_factory=list)
    case_error: str | None = None


def _dumps_cases(info: SerializationInfo) -> bool:
    """Whether a dump with these options writes any of ``RunResult.cases``."""
    include, exclude = info.include, info.exclude
    if include is not None and "cases" not in include:
        return False
    if isinstance(exclude, set) and "cases" in exclude:
        return False
    return not (isinstance(exclude, dict) and exclude.get("cases") is True)  # type: ignore[comparison-overlap]


class RunResult(FrozenModel):
    """A run's status, progress and every case in snapshot order.

    ``cases`` may be a ``CaseList`` (``themis.core._case_list``): a list whose cases a
    SQLite run kept compressed, made models when it is first used as a list.
    """

    run_id: str
    status: RunStatus
    completed_through_stage: str | None = None
    progress: ProgressSnapshot = Field(default_factory=ProgressSnapshot)
    cases: list[CaseResult] = Field(default_factory=list)

    # pydantic-core reads a list's storage directly, not through its methods: a
    # ``CaseList`` is loaded before it is dumped or validated.
    @field_validator("cases", mode="before")
    @classmethod
    def _load_cases(cls, value: Any) -> Any:
        if type(value) is CaseList:
            value.load()
        return value

    # No return annotation: pydantic then keeps the model's own JSON schema for a dump
    # (one of ``Any`` would make it untyped).
    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo):  # type: ignore[no-untyped-def]
        cases = self.__dict__.get("cases")
        if type(cases) is CaseList and not cases.loaded and _dumps_cases(info):
            cases.load()
        return handler(self)


class RunEstimate(FrozenModel):
    """Planned task counts and token estimates for a run, before it executes."""

    run_id: str
    total_cases: int = 0
    candidate_count: int = 0
    metric_count: int = 0
    pure_metric_count: int = 0
    workflow_metric_count: int = 0
    planned_generation_tasks: int = 0
    planned_selection_tasks: int = 0
    planned_reduction_tasks: int = 0
    planned_parse_tasks: int = 0
    planned_score_tasks: int = 0
    planned_judge_calls: int = 0
    estimated_generation_input_tokens: int = 0
    estimated_generation_output_tokens: int = 0
    estimated_judge_prompt_tokens: int = 0
    estimated_judge_output_tokens: int = 0
    estimated_total_tokens: int = 0
    assumptions: dict[str, JSONValue] = Field(default_factory=dict)
