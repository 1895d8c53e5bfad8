"""Domain models: datasets and cases, and what each pipeline stage produces."""

from __future__ import annotations

import datetime as _dt

from pydantic import Field, model_validator

from themis.core.base import HashableModel, JSONValue

__all__ = [
    "Case",
    "ConversationTrace",
    "Dataset",
    "GenerationResult",
    "Message",
    "ParsedOutput",
    "ReducedCandidate",
    "Score",
    "ScoreError",
    "TraceStep",
    "WorkflowTrace",
]


class Case(HashableModel):
    """One dataset row."""

    case_id: str
    input: JSONValue
    expected_output: JSONValue = None
    metadata: dict[str, str] = Field(default_factory=dict)


class Dataset(HashableModel):
    """An ordered collection of cases; ``compute_hash()`` is its content fingerprint."""

    dataset_id: str
    cases: list[Case] = Field(default_factory=list)
    revision: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_case_ids(self) -> Dataset:
        seen: set[str] = set()
        for case in self.cases:
            if case.case_id in seen:
                raise ValueError(
                    f"dataset {self.dataset_id!r} repeats case_id {case.case_id!r}; "
                    "case ids must be unique within a dataset"
                )
            seen.add(case.case_id)
        return self


class Message(HashableModel):
    """One turn of a conversation."""

    role: str
    content: JSONValue


class TraceStep(HashableModel):
    """One step of a generator's or workflow's trace."""

    step_name: str
    step_type: str
    input: dict[str, JSONValue] = Field(default_factory=dict)
    output: dict[str, JSONValue] = Field(default_factory=dict)
    metadata: dict[str, JSONValue] = Field(default_factory=dict)
    timestamp: _dt.datetime | None = None


class GenerationResult(HashableModel):
    """What a generator returns for one candidate."""

    candidate_id: str
    final_output: JSONValue
    trace: list[TraceStep] | None = None
    conversation: list[Message] | None = None
    artifacts: dict[str, JSONValue] | None = None
    token_usage: dict[str, int] | None = None
    latency_ms: float | None = None


class ReducedCandidate(HashableModel):
    """The single candidate a reducer (or the pass-through) keeps for a case."""

    candidate_id: str
    source_candidate_ids: list[str] = Field(default_factory=list)
    final_output: JSONValue
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class ParsedOutput(HashableModel):
    """A parser's reading of the reduced output."""

    value: JSONValue
    format: str | None = None
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class Score(HashableModel):
    """A metric's value for one case; ``value >= 1.0`` reports as correct."""

    metric_id: str
    value: float
    details: dict[str, JSONValue] = Field(default_factory=dict)


class ScoreError(HashableModel):
    """A metric's explanation of why it could not score a case."""

    metric_id: str
    reason: str
    retryable: bool = False
    details: dict[str, JSONValue] = Field(default_factory=dict)


class WorkflowTrace(HashableModel):
    trace_id: str
    steps: list[TraceStep] = Field(default_factory=list)


class ConversationTrace(HashableModel):
    trace_id: str
    messages: list[Message] = Field(default_factory=list)
