"""``evaluate()``: one call from model, data and metric to a result (layer 1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from themis.core.config import EvaluationConfig, GenerationConfig, RuntimeConfig, StorageConfig
from themis.core.dataset_inputs import dataset_from_inline
from themis.core.experiment import Experiment, run_sync
from themis.core.models import Dataset

if TYPE_CHECKING:
    from themis.core.protocols import RunStore
    from themis.core.results import RunResult

__all__ = ["evaluate", "evaluate_async"]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _datasets(data: Any) -> list[Dataset]:
    items = _as_list(data)
    if items and all(isinstance(item, Dataset) for item in items):
        return items
    if items and all(isinstance(item, Mapping) for item in items):
        return [dataset_from_inline(items)]
    raise TypeError(
        "data must be a Dataset, a sequence of Datasets, or a sequence of mappings "
        "such as [{'input': ..., 'expected_output': ...}]"
    )


def _experiment(
    *,
    model: Any,
    data: Any,
    metric: Any,
    parser: Any = None,
    judge: Any = None,
    samples: int = 1,
    reducer: Any = None,
    storage: StorageConfig | None = None,
    runtime: RuntimeConfig | None = None,
    seeds: Sequence[int] | None = None,
    workflow_overrides: Mapping[str, Any] | None = None,
    judge_config: Mapping[str, Any] | None = None,
    environment_metadata: Mapping[str, str] | None = None,
    themis_version: str | None = None,
    python_version: str | None = None,
    platform: str | None = None,
) -> Experiment:
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if reducer is None and samples > 1:
        reducer = "builtin/majority_vote"
    return Experiment(
        generation=GenerationConfig(
            generator=model,
            candidate_policy={"num_samples": samples} if samples > 1 else {},
            reducer=reducer,
        ),
        evaluation=EvaluationConfig(
            metrics=_as_list(metric),
            parsers=_as_list(parser),
            judge_models=_as_list(judge),
            judge_config=dict(judge_config or {}),
            workflow_overrides=dict(workflow_overrides or {}),
        ),
        storage=storage or StorageConfig(),
        runtime=runtime or RuntimeConfig(),
        datasets=list(_datasets(data)),
        seeds=list(seeds or []),
        environment_metadata=dict(environment_metadata or {}),
        themis_version=themis_version,
        python_version=python_version,
        platform=platform,
    )


async def evaluate_async(
    *,
    model: Any,
    data: Any,
    metric: Any,
    parser: Any = None,
    judge: Any = None,
    samples: int = 1,
    reducer: Any = None,
    storage: StorageConfig | None = None,
    runtime: RuntimeConfig | None = None,
    seeds: Sequence[int] | None = None,
    workflow_overrides: Mapping[str, Any] | None = None,
    judge_config: Mapping[str, Any] | None = None,
    environment_metadata: Mapping[str, str] | None = None,
    themis_version: str | None = None,
    python_version: str | None = None,
    platform: str | None = None,
    store: RunStore | None = None,
    subscribers: Sequence[Any] | None = None,
    tracing_provider: Any = None,
) -> RunResult:
    """Evaluate ``model`` on ``data`` with ``metric``; the same run_id as the Experiment."""
    experiment = _experiment(
        model=model,
        data=data,
        metric=metric,
        parser=parser,
        judge=judge,
        samples=samples,
        reducer=reducer,
        storage=storage,
        runtime=runtime,
        seeds=seeds,
        workflow_overrides=workflow_overrides,
        judge_config=judge_config,
        environment_metadata=environment_metadata,
        themis_version=themis_version,
        python_version=python_version,
        platform=platform,
    )
    return await experiment.run_async(
        store=store, subscribers=subscribers, tracing_provider=tracing_provider
    )


def evaluate(
    *,
    model: Any,
    data: Any,
    metric: Any,
    parser: Any = None,
    judge: Any = None,
    samples: int = 1,
    reducer: Any = None,
    storage: StorageConfig | None = None,
    runtime: RuntimeConfig | None = None,
    seeds: Sequence[int] | None = None,
    workflow_overrides: Mapping[str, Any] | None = None,
    judge_config: Mapping[str, Any] | None = None,
    environment_metadata: Mapping[str, str] | None = None,
    themis_version: str | None = None,
    python_version: str | None = None,
    platform: str | None = None,
    store: RunStore | None = None,
    subscribers: Sequence[Any] | None = None,
    tracing_provider: Any = None,
) -> RunResult:
    """Sync twin of ``evaluate_async``."""
    return run_sync(
        lambda: evaluate_async(
            model=model,
            data=data,
            metric=metric,
            parser=parser,
            judge=judge,
            samples=samples,
            reducer=reducer,
            storage=storage,
            runtime=runtime,
            seeds=seeds,
            workflow_overrides=workflow_overrides,
            judge_config=judge_config,
            environment_metadata=environment_metadata,
            themis_version=themis_version,
            python_version=python_version,
            platform=platform,
            store=store,
            subscribers=subscribers,
            tracing_provider=tracing_provider,
        ),
        "evaluate_async",
    )
