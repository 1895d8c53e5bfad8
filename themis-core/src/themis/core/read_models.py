"""Read models: the benchmark table, the event timeline and the trace view of a run."""

from __future__ import annotations

import datetime as _dt
from typing import Literal

from pydantic import Field

from themis.core.base import FrozenModel, JSONValue
from themis.core.workflows import EvaluationExecution

__all__ = [
    "BenchmarkResult",
    "BenchmarkScoreRow",
    "ConversationTraceRecord",
    "EvaluationTraceRecord",
    "GenerationTraceRecord",
    "TimelineEntry",
    "TimelineView",
    "TraceView",
]

Outcome = Literal["correct", "incorrect", "error"]

# The benchmark-row error categories; the first matching one decides a row (API §2.10).
ERROR_CATEGORIES: tuple[str, ...] = (
    "generation_failure",
    "selection_failure",
    "reduction_failure",
    "parse_failure",
    "case_failure",
    "parse_null",
    "parse_invalid",
    "evaluation_failure",
    "evaluation_partial_failure",
    "score_failure",
)


class BenchmarkScoreRow(FrozenModel):
    """One (case, metric) outcome; an error row has ``value=None`` and an error category."""

    case_id: str
    dataset_id: str | None = None
    case_key: str
    metric_id: str
    value: float | None = None
    candidate_id: str | None = None
    outcome: Outcome
    error_category: str | None = None
    error_message: str | None = None
    details: dict[str, JSONValue] = Field(default_factory=dict)


class BenchmarkResult(FrozenModel):
    """Every finished (case, metric) row of a run, with per-metric summaries."""

    run_id: str
    dataset_ids: list[str] = Field(default_factory=list)
    metric_ids: list[str] = Field(default_factory=list)
    total_cases: int = 0
    completed_cases: int = 0
    failed_cases: int = 0
    score_rows: list[BenchmarkScoreRow] = Field(default_factory=list)
    metric_means: dict[str, float] = Field(default_factory=dict)
    outcome_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    error_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    metric_aggregates: dict[str, float] = Field(default_factory=dict)


class TimelineEntry(FrozenModel):
    """One event of the log, reduced to what a timeline shows; ``index`` is its ``seq``."""

    index: int
    event_type: str
    occurred_at: _dt.datetime
    case_id: str | None = None
    dataset_id: str | None = None
    case_key: str | None = None
    candidate_id: str | None = None
    metric_id: str | None = None


class TimelineView(FrozenModel):
    """Every event of a run in log order, history included."""

    run_id: str
    entries: list[TimelineEntry] = Field(default_factory=list)


class GenerationTraceRecord(FrozenModel):
    """The trace steps a generator returned for one candidate."""

    case_id: str
    dataset_id: str | None = None
    case_key: str
    candidate_id: str
    trace_id: str
    steps: list[dict[str, JSONValue]] = Field(default_factory=list)


class ConversationTraceRecord(FrozenModel):
    """The conversation a generator returned for one candidate."""

    case_id: str
    dataset_id: str | None = None
    case_key: str
    candidate_id: str
    trace_id: str
    messages: list[dict[str, JSONValue]] = Field(default_factory=list)


class EvaluationTraceRecord(FrozenModel):
    """What one workflow metric did for one case."""

    case_id: str
    dataset_id: str | None = None
    case_key: str
    metric_id: str
    candidate_id: str | None = None
    execution: EvaluationExecution


class TraceView(FrozenModel):
    """The latest generation, conversation and evaluation traces of a run, in log order."""

    run_id: str
    generation_traces: list[GenerationTraceRecord] = Field(default_factory=list)
    conversation_traces: list[ConversationTraceRecord] = Field(default_factory=list)
    evaluation_traces: list[EvaluationTraceRecord] = Field(default_factory=list)
