"""Subjects a workflow metric judges: a candidate set, a trace or a conversation."""

from __future__ import annotations

from pydantic import Field, model_validator

from themis.core.base import HashableModel
from themis.core.models import ConversationTrace, GenerationResult, WorkflowTrace

__all__ = [
    "CandidateSetSubject",
    "ConversationSubject",
    "TraceSubject",
    "candidate_set_subject_for_llm_metric",
    "candidate_set_subject_for_selection_metric",
    "validate_candidate_set_for_llm_metric",
    "validate_candidate_set_for_selection_metric",
]


class CandidateSetSubject(HashableModel):
    candidates: list[GenerationResult] = Field(default_factory=list)

    @model_validator(mode="after")
    def _non_empty(self) -> CandidateSetSubject:
        if not self.candidates:
            raise ValueError("a candidate set subject needs at least one candidate")
        return self

    @property
    def size(self) -> int:
        return len(self.candidates)


class TraceSubject(HashableModel):
    trace: WorkflowTrace


class ConversationSubject(HashableModel):
    conversation: ConversationTrace


def validate_candidate_set_for_llm_metric(subject: CandidateSetSubject) -> CandidateSetSubject:
    if subject.size != 1:
        raise ValueError(f"an LLM metric judges exactly 1 candidate, got {subject.size}")
    return subject


def validate_candidate_set_for_selection_metric(
    subject: CandidateSetSubject,
) -> CandidateSetSubject:
    if subject.size < 2:
        raise ValueError(
            f"a selection metric needs at least 2 candidates, got {subject.size}; "
            "raise the candidate count (candidate_policy.num_samples)"
        )
    return subject


def candidate_set_subject_for_llm_metric(candidate: GenerationResult) -> CandidateSetSubject:
    return validate_candidate_set_for_llm_metric(CandidateSetSubject(candidates=[candidate]))


def candidate_set_subject_for_selection_metric(
    candidates: list[GenerationResult],
) -> CandidateSetSubject:
    return validate_candidate_set_for_selection_metric(CandidateSetSubject(candidates=candidates))
