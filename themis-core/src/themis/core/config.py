"""Configuration models: what to generate, how to evaluate, where to store, how to run."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from themis.core.base import HashableModel, JSONValue
from themis.core.logs import get_logger
from themis.core.prompts import PromptSpec

__all__ = [
    "ComponentSpec",
    "DatasetSource",
    "EvaluationConfig",
    "GenerationConfig",
    "RuntimeConfig",
    "StorageConfig",
]

log = get_logger(__name__)

STAGE_CONCURRENCY_KEYS = frozenset(
    {"generation", "selection", "reduction", "parsing", "scoring", "evaluation"}
)


class ComponentSpec(HashableModel):
    """A component named by registry id (``id``) or import path (``target``), with params."""

    id: str | None = None
    target: str | None = None
    params: dict[str, JSONValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exactly_one(self) -> ComponentSpec:
        if (self.id is None) == (self.target is None):
            raise ValueError(
                "a component spec needs exactly one of 'id' (a registry id such as "
                "'builtin/bleu') or 'target' (an import path such as 'pkg.module:Class')"
            )
        return self


class DatasetSource(HashableModel):
    """A dataset loaded from a JSONL file (or a JSON list of rows) at compile time."""

    dataset_id: str
    path: str
    revision: str | None = None
    input_field: str = "input"
    expected_output_field: str = "expected_output"
    case_id_field: str = "case_id"
    metadata: dict[str, str] = Field(default_factory=dict)


class GenerationConfig(HashableModel):
    generator: Any
    candidate_policy: dict[str, JSONValue] = Field(default_factory=dict)
    prompt_spec: PromptSpec | None = None
    selector: Any = None
    reducer: Any = None

    def candidate_count(self) -> int:
        """The largest positive int among the count keys of the policy, or 1."""
        counts = [
            value
            for key in ("num_samples", "pass_k", "best_of", "self_consistency_count")
            if isinstance(value := self.candidate_policy.get(key), int)
            and not isinstance(value, bool)
            and value > 0
        ]
        return max(counts, default=1)


class EvaluationConfig(HashableModel):
    metrics: list[Any] = Field(default_factory=list)
    parsers: list[Any] = Field(default_factory=list)
    judge_models: list[Any] = Field(default_factory=list)
    prompt_spec: PromptSpec | None = None
    judge_config: dict[str, JSONValue] = Field(default_factory=dict)
    workflow_overrides: dict[str, JSONValue] = Field(default_factory=dict)


class StorageConfig(HashableModel):
    """Where runs are stored; provenance only, never part of ``run_id``."""

    store: str = "memory"
    parameters: dict[str, JSONValue] = Field(default_factory=dict)


class RuntimeConfig(HashableModel):
    """How a run executes; provenance only, changing it never changes ``run_id``."""

    max_concurrent_tasks: int = Field(default=32, ge=1)
    stage_concurrency: dict[str, int] = Field(default_factory=dict)
    provider_concurrency: dict[str, int] = Field(default_factory=dict)
    provider_rate_limits: dict[str, float] = Field(default_factory=dict)
    generation_retry_attempts: int = 3
    generation_retry_delay: float = 1.0
    generation_retry_backoff: float = 2.0
    judge_retry_attempts: int = 3
    judge_retry_delay: float = 1.0
    judge_retry_backoff: float = 2.0
    retry_max_delay: float = 60.0
    retry_jitter: float = Field(default=0.1, ge=0.0, le=1.0)
    retry_after_max: float = 300.0
    generation_timeout: float | None = None
    judge_timeout: float | None = None
    store_retry_attempts: int = 5
    store_retry_delay: float = 0.05
    existing_run_policy: Literal["auto", "resume", "error", "rerun"] = "auto"
    event_batch_size: int = Field(default=256, ge=1)
    event_flush_interval: float = Field(default=0.25, gt=0)
    inline_payload_limit: int = Field(default=262144, ge=0)
    stage_cache: bool = True
    tracing_provider: str | None = None
    subscribers: list[str] = Field(default_factory=list)
    queue_root: str | None = None
    batch_root: str | None = None

    @field_validator("stage_concurrency")
    @classmethod
    def _known_stages(cls, value: dict[str, int]) -> dict[str, int]:
        for key, limit in value.items():
            if key not in STAGE_CONCURRENCY_KEYS:
                raise ValueError(
                    f"unknown stage {key!r} in stage_concurrency; "
                    f"use one of {sorted(STAGE_CONCURRENCY_KEYS)}"
                )
            if limit < 1:
                raise ValueError(f"stage_concurrency[{key!r}] must be at least 1, got {limit}")
        return value

    @field_validator("provider_concurrency")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        for key, limit in value.items():
            if limit < 1:
                raise ValueError(f"provider_concurrency[{key!r}] must be at least 1, got {limit}")
        return value

    @model_validator(mode="after")
    def _clamp_and_warn(self) -> RuntimeConfig:
        # Clamp retry settings as documented rather than rejecting them.
        for prefix in ("generation", "judge"):
            attempts = f"{prefix}_retry_attempts"
            object.__setattr__(self, attempts, max(1, getattr(self, attempts)))
            delay = f"{prefix}_retry_delay"
            object.__setattr__(self, delay, max(0.0, getattr(self, delay)))
            backoff = f"{prefix}_retry_backoff"
            object.__setattr__(self, backoff, max(1.0, getattr(self, backoff)))
        if self.queue_root or self.batch_root:
            log.warning("runtime.unused_setting", fields=["queue_root", "batch_root"])
        return self

    def stage_limit(self, stage: str) -> int:
        return self.stage_concurrency.get(stage, self.max_concurrent_tasks)
