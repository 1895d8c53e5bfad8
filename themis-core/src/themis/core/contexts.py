"""Per-call contexts handed to components: which run, which case, which seed."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from themis.core.base import HashableModel, JSONValue
from themis.core.models import Case, ParsedOutput
from themis.core.prompts import PromptSpec
from themis.core.snapshot import ComponentRef

__all__ = [
    "EvalScoreContext",
    "GenerateContext",
    "ParseContext",
    "ReduceContext",
    "ScoreContext",
    "SelectContext",
]


class _Context(HashableModel):
    run_id: str
    dataset_id: str | None = None
    case_key: str | None = None
    metadata: dict[str, JSONValue] = Field(default_factory=dict)


class GenerateContext(_Context):
    case_id: str
    seed: int | None = None
    prompt_spec: PromptSpec | None = None
    candidate_index: int = 0
    candidate_id: str = ""


class SelectContext(_Context):
    case_id: str
    candidate_ids: list[str] = Field(default_factory=list)
    seed: int | None = None
    # Live judge models (wrapped with the judge limits and retries); not part of any hash.
    judge_models: list[Any] = Field(default_factory=list, exclude=True)


class ReduceContext(_Context):
    case_id: str
    candidate_ids: list[str] = Field(default_factory=list)
    seed: int | None = None


class ParseContext(_Context):
    case_id: str
    candidate_id: str


class ScoreContext(_Context):
    case: Case
    parsed_output: ParsedOutput
    seed: int | None = None
    dataset_metadata: dict[str, str] = Field(default_factory=dict)


class EvalScoreContext(ScoreContext):
    judge_model_refs: list[ComponentRef] = Field(default_factory=list)
    judge_seed: int | None = None
    prompt_spec: PromptSpec | None = None
    judge_config: dict[str, JSONValue] = Field(default_factory=dict)
    eval_workflow_config: dict[str, JSONValue] = Field(default_factory=dict)
