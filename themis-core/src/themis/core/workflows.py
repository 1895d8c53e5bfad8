"""Judge-workflow records: calls, prompts, responses, judgments and whole executions."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from themis.core.base import HashableModel, JSONValue
from themis.core.models import ConversationTrace, Score, WorkflowTrace

__all__ = [
    "AggregationResult",
    "EvaluationExecution",
    "JudgeCall",
    "JudgeResponse",
    "ParsedJudgment",
    "RenderedJudgePrompt",
    "WorkflowFailure",
    "build_prompt_template_context",
]


class JudgeCall(HashableModel):
    call_id: str
    judge_model_id: str
    judge_index: int | None = None
    dimension_id: str | None = None
    repeat_index: int = 0
    candidate_indices: list[int] = Field(default_factory=list)
    effective_seed: int | None = None
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class RenderedJudgePrompt(HashableModel):
    prompt_id: str
    content: str
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class JudgeResponse(HashableModel):
    judge_model_id: str = ""
    judge_model_version: str = ""
    judge_model_fingerprint: str = ""
    effective_seed: int | None = None
    raw_response: str
    token_usage: dict[str, int] = Field(default_factory=dict)
    latency_ms: float | None = None
    provider_request_id: str | None = None
    retry_history: list[dict[str, JSONValue]] = Field(default_factory=list)
    conversation_trace: ConversationTrace | None = None


class ParsedJudgment(HashableModel):
    label: str
    score: float | None = None
    rationale: str | None = None
    details: dict[str, JSONValue] = Field(default_factory=dict)


class AggregationResult(HashableModel):
    method: str
    value: JSONValue
    details: dict[str, JSONValue] = Field(default_factory=dict)


class WorkflowFailure(HashableModel):
    call_id: str | None = None
    step_id: str
    step_type: str
    error_message: str
    retry_history: list[dict[str, JSONValue]] = Field(default_factory=list)


class EvaluationExecution(HashableModel):
    """Everything one workflow metric did for one case: calls, prompts, replies, scores."""

    execution_id: str
    subject_kind: Literal["candidate_set", "trace", "conversation"]
    status: Literal["completed", "partial_failure"] = "completed"
    judge_calls: list[JudgeCall] = Field(default_factory=list)
    rendered_prompts: list[RenderedJudgePrompt] = Field(default_factory=list)
    judge_responses: list[JudgeResponse] = Field(default_factory=list)
    parsed_judgments: list[ParsedJudgment] = Field(default_factory=list)
    scores: list[Score] = Field(default_factory=list)
    failures: list[WorkflowFailure] = Field(default_factory=list)
    aggregation_output: AggregationResult | None = None
    trace: WorkflowTrace


def _output_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def build_prompt_template_context(
    subject: Any, ctx: Any, call: JudgeCall | None = None
) -> dict[str, Any]:
    """The variables a judge prompt template may use for ``subject`` under ``ctx``."""
    candidates = list(getattr(subject, "candidates", []) or [])
    outputs = [_output_text(c.final_output) for c in candidates]
    indices = list(call.candidate_indices) if call is not None else []
    if len(indices) >= 2 and max(indices) < len(outputs):
        a, b = outputs[indices[0]], outputs[indices[1]]
    elif len(outputs) >= 2:
        a, b = outputs[0], outputs[1]
    else:
        a = b = ""
    parsed = getattr(ctx, "parsed_output", None)
    case = getattr(ctx, "case", None)
    return {
        "candidate_output": outputs[0] if outputs else "",
        "candidate_a_output": a,
        "candidate_b_output": b,
        "dataset_id": getattr(ctx, "dataset_id", None),
        "case_key": getattr(ctx, "case_key", None),
        "case_input": case.input if case is not None else None,
        "parsed_output": parsed.value if parsed is not None else None,
        "judge_config": dict(getattr(ctx, "judge_config", {}) or {}),
        "workflow_config": dict(getattr(ctx, "eval_workflow_config", {}) or {}),
    }
