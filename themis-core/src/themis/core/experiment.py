"""``Experiment``: the definition users write, and the only door into execution."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import Field, PrivateAttr

from themis.core._loop import loop_options
from themis.core.base import FrozenModel
from themis.core.config import (
    DatasetSource,
    EvaluationConfig,
    GenerationConfig,
    RuntimeConfig,
    StorageConfig,
)
from themis.core.models import Dataset

if TYPE_CHECKING:
    from themis.core._compile import CompiledComponents
    from themis.core.progress import RunProgress
    from themis.core.protocols import RunStore
    from themis.core.results import RunEstimate, RunResult
    from themis.core.snapshot import RunSnapshot

__all__ = ["Experiment"]

T = TypeVar("T")

_REPLAY_STAGES = ("reduce", "parse", "score", "judge")


def run_sync(factory: Callable[[], Awaitable[T]], twin: str) -> T:
    """Run an async call to completion, refusing to nest inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            f"this sync method was called inside a running event loop; await {twin}(...) instead"
        )
    backend = os.environ.get("THEMIS_ASYNC_BACKEND", "asyncio")

    results: list[T] = []

    async def main() -> None:
        # The value is handed out through a list, not as the main task's result: asyncio's
        # runner formats the repr of that task (result included) on its way out, and the
        # repr of a large RunResult costs seconds.
        results.append(await factory())

    anyio.run(main, backend=backend, backend_options=loop_options(backend))
    return results[0]


class Experiment(FrozenModel):
    """A full evaluation definition: what to generate, how to score, where to store."""

    generation: GenerationConfig
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    datasets: list[Dataset | DatasetSource] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    environment_metadata: dict[str, str] = Field(default_factory=dict)
    themis_version: str | None = None
    python_version: str | None = None
    platform: str | None = None
    git_commit: str | None = None
    dependency_versions: dict[str, str] = Field(default_factory=dict)
    provider_metadata: dict[str, Any] = Field(default_factory=dict)

    _compiled: tuple[RunSnapshot, CompiledComponents] | None = PrivateAttr(default=None)

    # ------------------------------------------------------------------ compile
    def compile(self) -> RunSnapshot:
        """Resolve, validate and hash; cached, so later changes to inputs are ignored."""
        return self._compile()[0]

    def _compile(self) -> tuple[RunSnapshot, CompiledComponents]:
        if self._compiled is None:
            from themis.core._compile import compile_experiment

            self._compiled = compile_experiment(self)
        return self._compiled

    @classmethod
    def from_config(cls, path: str | Path, *, overrides: list[str] | None = None) -> Experiment:
        """Load an experiment from a YAML or TOML file, with dot-list overrides."""
        from themis.core.config_loading import load_experiment_config

        return load_experiment_config(path, overrides=overrides)

    def estimate(self, *, assumptions: dict[str, float] | None = None) -> RunEstimate:
        """Validate, then count planned tasks and estimate tokens."""
        from themis.core.planner import Planner

        snapshot, components = self._compile()
        judges = len(components.judge_models)
        per_case = 0
        for metric, kind in zip(components.metrics, components.metric_kinds, strict=True):
            if kind == "pure":
                continue
            estimator = getattr(metric, "estimated_judge_calls", None)
            per_case += int(estimator(judges)) if callable(estimator) else judges
        if snapshot.component_refs.selector is not None and (
            snapshot.component_refs.selector.component_id == "builtin/best_of_n"
        ):
            per_case += (Planner().candidate_count(snapshot) - 1) * judges
        return Planner().estimate(snapshot, assumptions=assumptions, judge_calls_per_case=per_case)

    # ---------------------------------------------------------------- execution
    def _store_for(self, store: RunStore | None, *, replay: bool) -> tuple[RunStore, bool]:
        if store is not None:
            return store, False
        if replay and self.storage.store in ("memory", "core/memory"):
            raise ValueError(
                "replay needs the stored run, but storage is memory and no store= was given; "
                "pass the store that holds the run (store=...)"
            )
        from themis.core.stores import create_run_store

        return create_run_store(self.storage), self.storage.store not in ("memory", "core/memory")

    def _observers(
        self, runtime: RuntimeConfig, subscribers: Sequence[Any] | None, tracing_provider: Any
    ) -> tuple[list[Any], Any]:
        resolved = list(subscribers or [])
        if runtime.subscribers or (tracing_provider is None and runtime.tracing_provider):
            from themis.core.registry import get_registry

            registry = get_registry()
            resolved += [registry.resolve("subscriber", s) for s in runtime.subscribers]
            if tracing_provider is None and runtime.tracing_provider:
                tracing_provider = registry.resolve("tracing_provider", runtime.tracing_provider)
        return resolved, tracing_provider

    async def _execute(
        self,
        *,
        until_stage: str = "judge",
        runtime: RuntimeConfig | None = None,
        store: RunStore | None = None,
        subscribers: Sequence[Any] | None = None,
        tracing_provider: Any = None,
        workflow_runner: Any = None,
        policy: str | None = None,
        require_stored: bool = False,
        replay: Any = None,
        progress: RunProgress | None = None,
    ) -> RunResult:
        from themis.core._runtime import execute

        snapshot, components = self._compile()
        effective = runtime or self.runtime
        if runtime is not None:
            snapshot = snapshot.model_copy(
                update={"provenance": snapshot.provenance.model_copy(update={"runtime": runtime})}
            )
        observers, tracer = self._observers(effective, subscribers, tracing_provider)
        the_store, owned = self._store_for(store, replay=replay is not None)
        try:
            return await execute(
                snapshot,
                components,
                store=the_store,
                runtime=effective,
                subscribers=observers,
                tracing_provider=tracer,
                workflow_runner=workflow_runner,
                until_stage=until_stage,
                policy=policy,
                require_stored=require_stored,
                replay=replay,
                progress=progress,
            )
        finally:
            if owned:
                the_store.close()

    async def run_async(
        self,
        *,
        until_stage: str = "judge",
        runtime: RuntimeConfig | None = None,
        store: RunStore | None = None,
        subscribers: Sequence[Any] | None = None,
        tracing_provider: Any = None,
        workflow_runner: Any = None,
        progress: RunProgress | None = None,
    ) -> RunResult:
        """Run the experiment (or resume it, or return the stored result; see the policy)."""
        return await self._execute(
            until_stage=until_stage,
            runtime=runtime,
            store=store,
            subscribers=subscribers,
            tracing_provider=tracing_provider,
            workflow_runner=workflow_runner,
            progress=progress,
        )

    def run(
        self,
        *,
        until_stage: str = "judge",
        runtime: RuntimeConfig | None = None,
        store: RunStore | None = None,
        subscribers: Sequence[Any] | None = None,
        tracing_provider: Any = None,
        workflow_runner: Any = None,
        progress: RunProgress | None = None,
    ) -> RunResult:
        """Sync twin of ``run_async``."""
        return run_sync(
            lambda: self.run_async(
                until_stage=until_stage,
                runtime=runtime,
                store=store,
                subscribers=subscribers,
                tracing_provider=tracing_provider,
                workflow_runner=workflow_runner,
                progress=progress,
            ),
            "Experiment.run_async",
        )

    async def resume_async(
        self,
        *,
        until_stage: str = "judge",
        runtime: RuntimeConfig | None = None,
        store: RunStore | None = None,
        subscribers: Sequence[Any] | None = None,
        tracing_provider: Any = None,
        workflow_runner: Any = None,
        progress: RunProgress | None = None,
    ) -> RunResult:
        """Continue a stored run: remaining and failed work; ``RunNotFoundError`` if none."""
        return await self._execute(
            until_stage=until_stage,
            runtime=runtime,
            store=store,
            subscribers=subscribers,
            tracing_provider=tracing_provider,
            workflow_runner=workflow_runner,
            progress=progress,
            policy="resume",
            require_stored=True,
        )

    def resume(
        self,
        *,
        until_stage: str = "judge",
        runtime: RuntimeConfig | None = None,
        store: RunStore | None = None,
        subscribers: Sequence[Any] | None = None,
        tracing_provider: Any = None,
        workflow_runner: Any = None,
        progress: RunProgress | None = None,
    ) -> RunResult:
        """Sync twin of ``resume_async``."""
        return run_sync(
            lambda: self.resume_async(
                until_stage=until_stage,
                runtime=runtime,
                store=store,
                subscribers=subscribers,
                tracing_provider=tracing_provider,
                workflow_runner=workflow_runner,
                progress=progress,
            ),
            "Experiment.resume_async",
        )

    async def replay_async(
        self,
        *,
        stage: str,
        metric_ids: list[str] | None = None,
        runtime: RuntimeConfig | None = None,
        store: RunStore | None = None,
        subscribers: Sequence[Any] | None = None,
        tracing_provider: Any = None,
        workflow_runner: Any = None,
        progress: RunProgress | None = None,
    ) -> RunResult:
        """Recompute from ``stage`` down on the stored generations; never calls the generator."""
        from themis.core._runtime import Replay

        if stage not in _REPLAY_STAGES:
            raise ValueError(f"replay stage must be one of {list(_REPLAY_STAGES)}, got {stage!r}")
        if metric_ids is not None and stage in ("reduce", "parse"):
            raise ValueError(
                f"metric_ids cannot be combined with stage={stage!r}: that stage recomputes "
                "every metric; use stage='score' or 'judge' to restrict metrics"
            )
        if metric_ids is not None:
            known = {ref.component_id for ref in self.compile().component_refs.metrics}
            unknown = [m for m in metric_ids if m not in known]
            if unknown:
                raise ValueError(
                    f"metric_ids {unknown} are not metrics of this experiment; "
                    f"choose from {sorted(known)}"
                )
        return await self._execute(
            runtime=runtime,
            store=store,
            subscribers=subscribers,
            tracing_provider=tracing_provider,
            workflow_runner=workflow_runner,
            progress=progress,
            replay=Replay(stage=stage, metric_ids=list(metric_ids) if metric_ids else None),
        )

    def replay(
        self,
        *,
        stage: str,
        metric_ids: list[str] | None = None,
        runtime: RuntimeConfig | None = None,
        store: RunStore | None = None,
        subscribers: Sequence[Any] | None = None,
        tracing_provider: Any = None,
        workflow_runner: Any = None,
        progress: RunProgress | None = None,
    ) -> RunResult:
        """Sync twin of ``replay_async``."""
        return run_sync(
            lambda: self.replay_async(
                stage=stage,
                metric_ids=metric_ids,
                runtime=runtime,
                store=store,
                subscribers=subscribers,
                tracing_provider=tracing_provider,
                workflow_runner=workflow_runner,
                progress=progress,
            ),
            "Experiment.replay_async",
        )

    async def rejudge_async(
        self, *, metric_ids: list[str] | None = None, **kwargs: Any
    ) -> RunResult:
        """``replay_async(stage="judge", ...)``: re-run workflow metrics on stored outputs."""
        return await self.replay_async(stage="judge", metric_ids=metric_ids, **kwargs)

    def rejudge(self, *, metric_ids: list[str] | None = None, **kwargs: Any) -> RunResult:
        """Sync twin of ``rejudge_async``."""
        return self.replay(stage="judge", metric_ids=metric_ids, **kwargs)
