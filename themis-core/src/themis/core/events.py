"""Run events: the append-only log every result, projection and resume is folded from."""

from __future__ import annotations

import datetime as _dt
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from themis.core.base import HashableModel, JSONValue

__all__ = [
    "EVENT_TYPES",
    "CaseFailedEvent",
    "CaseRunEvent",
    "EvaluationCompletedEvent",
    "EvaluationFailedEvent",
    "GenerationCompletedEvent",
    "GenerationFailedEvent",
    "ParseCompletedEvent",
    "ParseFailedEvent",
    "ReductionCompletedEvent",
    "ReductionFailedEvent",
    "ReplayStartedEvent",
    "RunCompletedEvent",
    "RunEvent",
    "RunFailedEvent",
    "RunStartedEvent",
    "ScoreCompletedEvent",
    "ScoreFailedEvent",
    "SelectionCompletedEvent",
    "SelectionFailedEvent",
    "StepCompletedEvent",
    "StepFailedEvent",
    "StepStartedEvent",
    "event_from_dict",
    "utc_now",
]

Stage = Literal["generate", "reduce", "parse", "score", "judge"]


_now = _dt.datetime.now
_UTC = _dt.UTC


def utc_now() -> _dt.datetime:
    # Bound once: every event takes a timestamp, and the two module lookups were half
    # of this call's cost.
    return _now(_UTC)


class RunEvent(HashableModel):
    """Base of every event; unknown fields from newer schemas survive a round trip."""

    model_config = ConfigDict(frozen=True, extra="allow", arbitrary_types_allowed=True)

    # Run-level events are flushed at once and delivered before any case hook (§3.5).
    run_scoped: ClassVar[bool] = True

    schema_version: str = "1"
    event_type: str
    run_id: str
    occurred_at: _dt.datetime = Field(default_factory=utc_now)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-mode dump used by stores and bundles."""
        return self.model_dump(mode="json")


class CaseRunEvent(RunEvent):
    """An event that belongs to one case."""

    run_scoped: ClassVar[bool] = False

    case_id: str
    dataset_id: str | None = None
    case_key: str | None = None


class RunStartedEvent(RunEvent):
    event_type: Literal["run_started"] = "run_started"
    mode: Literal["fresh", "resume"] = "fresh"
    until_stage: Stage = "judge"
    provenance: dict[str, JSONValue] = Field(default_factory=dict)


class RunCompletedEvent(RunEvent):
    event_type: Literal["run_completed"] = "run_completed"
    completed_through_stage: Stage = "judge"


class RunFailedEvent(RunEvent):
    event_type: Literal["run_failed"] = "run_failed"
    error_message: str
    error_type: str | None = None
    cancelled: bool = False


class ReplayStartedEvent(RunEvent):
    event_type: Literal["replay_started"] = "replay_started"
    stage: Literal["reduce", "parse", "score", "judge"]
    metric_ids: list[str] | None = None


class GenerationCompletedEvent(CaseRunEvent):
    event_type: Literal["generation_completed"] = "generation_completed"
    candidate_id: str
    candidate_index: int | None = None
    seed: int | None = None
    provider_key: str | None = None
    result: dict[str, JSONValue] | None = None
    result_blob_ref: str | None = None
    cache_hit: bool = False
    source_run_id: str | None = None


class GenerationFailedEvent(CaseRunEvent):
    event_type: Literal["generation_failed"] = "generation_failed"
    candidate_id: str
    candidate_index: int | None = None
    error_message: str
    retry_history: list[dict[str, JSONValue]] = Field(default_factory=list)
    error_type: str | None = None
    retryable: bool | None = None


class SelectionCompletedEvent(CaseRunEvent):
    event_type: Literal["selection_completed"] = "selection_completed"
    candidate_ids: list[str]
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class SelectionFailedEvent(CaseRunEvent):
    event_type: Literal["selection_failed"] = "selection_failed"
    error_message: str


class ReductionCompletedEvent(CaseRunEvent):
    event_type: Literal["reduction_completed"] = "reduction_completed"
    candidate_id: str
    source_candidate_ids: list[str] = Field(default_factory=list)
    result: dict[str, JSONValue] | None = None
    result_blob_ref: str | None = None
    cache_hit: bool = False
    source_run_id: str | None = None


class ReductionFailedEvent(CaseRunEvent):
    event_type: Literal["reduction_failed"] = "reduction_failed"
    error_message: str


class ParseCompletedEvent(CaseRunEvent):
    event_type: Literal["parse_completed"] = "parse_completed"
    candidate_id: str
    result: dict[str, JSONValue] | None = None
    result_blob_ref: str | None = None
    cache_hit: bool = False
    source_run_id: str | None = None


class ParseFailedEvent(CaseRunEvent):
    event_type: Literal["parse_failed"] = "parse_failed"
    candidate_id: str | None = None
    error_message: str


class ScoreCompletedEvent(CaseRunEvent):
    event_type: Literal["score_completed"] = "score_completed"
    candidate_id: str | None = None
    metric_id: str
    score: dict[str, JSONValue]
    cache_hit: bool = False
    source_run_id: str | None = None


class ScoreFailedEvent(CaseRunEvent):
    event_type: Literal["score_failed"] = "score_failed"
    candidate_id: str | None = None
    metric_id: str
    error: dict[str, JSONValue]


class EvaluationCompletedEvent(CaseRunEvent):
    event_type: Literal["evaluation_completed"] = "evaluation_completed"
    candidate_id: str | None = None
    metric_id: str
    execution: dict[str, JSONValue] | None = None
    execution_blob_ref: str | None = None
    cache_hit: bool = False
    source_run_id: str | None = None


class EvaluationFailedEvent(CaseRunEvent):
    event_type: Literal["evaluation_failed"] = "evaluation_failed"
    candidate_id: str | None = None
    metric_id: str
    error_message: str


class CaseFailedEvent(CaseRunEvent):
    """An internal error that belongs to no component stopped the case."""

    event_type: Literal["case_failed"] = "case_failed"
    stage: str
    error_message: str
    error_type: str | None = None


class _StepEvent(RunEvent):
    # Step events are run-scoped in the schema but usually name their case and metric.
    run_scoped: ClassVar[bool] = False

    workflow_id: str
    step_id: str
    step_type: str
    case_id: str | None = None
    dataset_id: str | None = None
    case_key: str | None = None
    metric_id: str | None = None


class StepStartedEvent(_StepEvent):
    event_type: Literal["step_started"] = "step_started"


class StepCompletedEvent(_StepEvent):
    event_type: Literal["step_completed"] = "step_completed"
    details: dict[str, JSONValue] = Field(default_factory=dict)


class StepFailedEvent(_StepEvent):
    event_type: Literal["step_failed"] = "step_failed"
    error_message: str
    retry_history: list[dict[str, JSONValue]] = Field(default_factory=list)


EVENT_TYPES: dict[str, type[RunEvent]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        RunStartedEvent,
        RunCompletedEvent,
        RunFailedEvent,
        ReplayStartedEvent,
        GenerationCompletedEvent,
        GenerationFailedEvent,
        SelectionCompletedEvent,
        SelectionFailedEvent,
        ReductionCompletedEvent,
        ReductionFailedEvent,
        ParseCompletedEvent,
        ParseFailedEvent,
        ScoreCompletedEvent,
        ScoreFailedEvent,
        EvaluationCompletedEvent,
        EvaluationFailedEvent,
        CaseFailedEvent,
        StepStartedEvent,
        StepCompletedEvent,
        StepFailedEvent,
    )
}


def event_from_dict(payload: dict[str, Any]) -> RunEvent:
    """Rebuild an event from its JSON dump; an unknown ``event_type`` raises ``KeyError``."""
    cls = EVENT_TYPES[payload["event_type"]]
    return cls.model_validate(payload)
