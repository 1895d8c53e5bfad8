"""Compile an experiment: resolve components, validate, build identity and provenance."""

from __future__ import annotations

import functools
import importlib.metadata
import platform as _platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from themis.core.base import JSONValue, hash_with_items
from themis.core.config import DatasetSource
from themis.core.dataset_inputs import dataset_from_jsonl
from themis.core.errors import ConfigError
from themis.core.models import Dataset
from themis.core.planner import candidate_count_of
from themis.core.security import sanitize_mapping
from themis.core.snapshot import (
    ComponentProvenance,
    ComponentRef,
    ComponentRefs,
    DatasetRef,
    RunIdentity,
    RunProvenance,
    RunSnapshot,
)

if TYPE_CHECKING:
    from themis.core.experiment import Experiment

__all__ = ["CompiledComponents", "compile_experiment", "component_ref", "metric_kind_of"]


@dataclass(frozen=True)
class CompiledComponents:
    """The live component instances a snapshot was compiled from."""

    generator: Any
    selector: Any = None
    reducer: Any = None
    parsers: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    judge_models: list[Any] = field(default_factory=list)
    metric_kinds: list[str] = field(default_factory=list)
    # Per dataset, by its id and fingerprint, the SHA-256 digests of its cases' content
    # hashes in order (32 bytes each), worked out with the fingerprint: a run's stage-cache
    # keys take them instead of hashing every case again.
    case_digests: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def slots(self) -> list[tuple[str, Any]]:
        pairs: list[tuple[str, Any]] = [("generator", self.generator)]
        if self.selector is not None:
            pairs.append(("selector", self.selector))
        if self.reducer is not None:
            pairs.append(("reducer", self.reducer))
        pairs += [(f"parsers[{i}]", c) for i, c in enumerate(self.parsers)]
        pairs += [(f"metrics[{i}]", c) for i, c in enumerate(self.metrics)]
        pairs += [(f"judge_models[{i}]", c) for i, c in enumerate(self.judge_models)]
        return pairs


def component_ref(component: Any) -> ComponentRef:
    """The identity triple of a live component."""
    fingerprint = component.fingerprint
    return ComponentRef(
        component_id=component.component_id,
        version=str(component.version),
        fingerprint=str(fingerprint() if callable(fingerprint) else fingerprint),
    )


def metric_kind_of(metric: Any) -> str:
    """``metric_family`` when declared, else the first protocol the metric satisfies."""
    family = getattr(metric, "metric_family", None)
    if family in ("pure", "llm", "selection", "trace"):
        return str(family)
    if callable(getattr(metric, "score", None)):
        return "pure"
    if callable(getattr(metric, "build_workflow", None)):
        return "llm"
    return "pure"


@functools.cache
def _git_commit(cwd: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@functools.cache
def _platform_facts() -> tuple[str, str]:
    return _platform.python_version(), _platform.platform()


@functools.cache
def _dist_version(name: str) -> str | None:
    # Cached: each lookup scans every entry of sys.path for metadata (2-3 ms a compile for
    # themis-core, pydantic and anyio), and what is installed does not change under a run.
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def themis_version() -> str:
    return _dist_version("themis-core") or "0+unknown"


class _Resolver:
    """Resolves each slot through the registry, recording where the component came from."""

    def __init__(self) -> None:
        from themis.core.registry import get_registry

        self.registry = get_registry()
        self.provenance: list[ComponentProvenance] = []

    def __call__(self, kind: str, ref: Any, slot: str) -> Any:
        from themis.core._contracts import check_component

        component, prov = self.registry.resolve_with_provenance(kind, ref, slot=slot)
        check_component(component, kind, slot)
        self.provenance.append(prov)
        return component


def _load_datasets(entries: Sequence[Dataset | DatasetSource]) -> list[Dataset]:
    datasets: list[Dataset] = []
    for entry in entries:
        if isinstance(entry, DatasetSource):
            datasets.append(
                dataset_from_jsonl(
                    Path(entry.path),
                    dataset_id=entry.dataset_id,
                    revision=entry.revision,
                    input_field=entry.input_field,
                    expected_output_field=entry.expected_output_field,
                    case_id_field=entry.case_id_field,
                    metadata=entry.metadata,
                )
            )
        else:
            datasets.append(entry)
    seen: set[str] = set()
    for dataset in datasets:
        if dataset.dataset_id in seen:
            raise ConfigError(
                f"datasets: two datasets share the id {dataset.dataset_id!r}; "
                "dataset ids must be unique within an experiment"
            )
        seen.add(dataset.dataset_id)
    return datasets


def _validate(experiment: Experiment, components: CompiledComponents) -> None:
    generation, evaluation = experiment.generation, experiment.evaluation
    policy = generation.candidate_policy
    count = candidate_count_of(policy)
    if policy.get("self_consistency") and not policy.get("self_consistency_count"):
        raise ConfigError(
            "generation.candidate_policy: self_consistency is set without "
            "self_consistency_count; add the number of samples to vote over"
        )
    if len(evaluation.parsers) > 1:
        raise ConfigError(
            f"evaluation.parsers: only one parser is supported, got {len(evaluation.parsers)}"
        )
    if count > 1 and components.reducer is None and components.selector is None:
        raise ConfigError(
            f"generation: {count} candidates per case need a reducer or a selector "
            "(for example reducer='builtin/majority_vote')"
        )
    has_judges = bool(components.judge_models)
    for i, (metric, kind) in enumerate(
        zip(components.metrics, components.metric_kinds, strict=True)
    ):
        if kind != "pure" and not has_judges:
            raise ConfigError(
                f"evaluation.metrics[{i}]: {metric.component_id} is a {kind} metric and needs "
                "a judge model; add one to evaluation.judge_models"
            )
        if kind == "selection" and count < 2:
            raise ConfigError(
                f"evaluation.metrics[{i}]: selection metric {metric.component_id} needs at "
                "least 2 candidates; set generation.candidate_policy.num_samples >= 2"
            )
    for slot, component in components.slots():
        if getattr(component, "requires_judges", False) and not has_judges:
            raise ConfigError(
                f"{slot}: {component.component_id} requires judge models; "
                "add one to evaluation.judge_models"
            )
    if experiment.seeds and len(experiment.seeds) != count:
        raise ConfigError(
            f"seeds: {len(experiment.seeds)} seeds given for {count} candidates per case; "
            "give exactly one seed per candidate index"
        )


def _provider_metadata(components: CompiledComponents) -> dict[str, JSONValue]:
    def describe(component: Any) -> dict[str, JSONValue]:
        found = {
            key: getattr(component, key)
            for key in ("provider_key", "model_id", "endpoint")
            if isinstance(getattr(component, key, None), str)
        }
        return found

    metadata: dict[str, JSONValue] = {}
    if described := describe(components.generator):
        metadata["generator"] = described
    for i, judge in enumerate(components.judge_models):
        if described := describe(judge):
            metadata[f"judge_model:{i}"] = described
    return metadata


def _dependency_versions(provenance: list[ComponentProvenance]) -> dict[str, str]:
    import pydantic

    # pydantic states its own version; reading its metadata would cost a sys.path scan.
    versions = {"themis-core": themis_version(), "pydantic": pydantic.VERSION}
    if (version := _dist_version("anyio")) is not None:
        versions["anyio"] = version
    for prov in provenance:
        if prov.distribution and prov.distribution_version:
            versions[prov.distribution] = prov.distribution_version
    return versions


def _resolve_components(experiment: Experiment) -> tuple[CompiledComponents, _Resolver]:
    resolve = _Resolver()
    generation, evaluation = experiment.generation, experiment.evaluation
    generator = resolve("generator", generation.generator, "generator")
    selector = (
        resolve("selector", generation.selector, "selector")
        if generation.selector is not None
        else None
    )
    reducer = (
        resolve("reducer", generation.reducer, "reducer")
        if generation.reducer is not None
        else None
    )
    parsers = [resolve("parser", p, f"parsers[{i}]") for i, p in enumerate(evaluation.parsers)]
    metrics = [resolve("metric", m, f"metrics[{i}]") for i, m in enumerate(evaluation.metrics)]
    judges = [
        resolve("judge_model", j, f"judge_models[{i}]")
        for i, j in enumerate(evaluation.judge_models)
    ]
    components = CompiledComponents(
        generator=generator,
        selector=selector,
        reducer=reducer,
        parsers=parsers,
        metrics=metrics,
        judge_models=judges,
        metric_kinds=[metric_kind_of(m) for m in metrics],
    )
    return components, resolve


def _sanitized(value: Mapping[str, Any], path: str) -> dict[str, Any]:
    return sanitize_mapping(value, path=path)


def compile_experiment(experiment: Experiment) -> tuple[RunSnapshot, CompiledComponents]:
    """Resolve, validate, sanitise and hash ``experiment`` into an immutable snapshot."""
    components, resolver = _resolve_components(experiment)
    datasets = _load_datasets(experiment.datasets)
    _validate(experiment, components)
    generation, evaluation = experiment.generation, experiment.evaluation
    refs = ComponentRefs(
        generator=component_ref(components.generator),
        selector=component_ref(components.selector) if components.selector else None,
        reducer=component_ref(components.reducer) if components.reducer else None,
        parsers=[component_ref(p) for p in components.parsers],
        metrics=[component_ref(m) for m in components.metrics],
        judge_models=[component_ref(j) for j in components.judge_models],
    )
    dataset_refs = []
    for dataset in datasets:
        fingerprint, digests = hash_with_items(dataset, "cases")
        dataset_refs.append(
            DatasetRef(
                dataset_id=dataset.dataset_id, revision=dataset.revision, fingerprint=fingerprint
            )
        )
        components.case_digests[(dataset.dataset_id, fingerprint)] = digests
    identity = RunIdentity(
        dataset_refs=dataset_refs,
        generator_ref=refs.generator,
        selector_ref=refs.selector,
        reducer_ref=refs.reducer,
        parser_refs=refs.parsers,
        metric_refs=refs.metrics,
        judge_model_refs=refs.judge_models,
        candidate_policy=_sanitized(generation.candidate_policy, "generation.candidate_policy"),
        generation_prompt_spec=generation.prompt_spec,
        evaluation_prompt_spec=evaluation.prompt_spec,
        judge_config=_sanitized(evaluation.judge_config, "evaluation.judge_config"),
        workflow_overrides=_sanitized(
            evaluation.workflow_overrides, "evaluation.workflow_overrides"
        ),
        seeds=list(experiment.seeds),
    )
    python_version, platform_name = _platform_facts()
    storage = experiment.storage.model_copy(
        update={"parameters": _sanitized(experiment.storage.parameters, "storage.parameters")}
    )
    provenance = RunProvenance(
        themis_version=experiment.themis_version or themis_version(),
        python_version=experiment.python_version or python_version,
        platform=experiment.platform or platform_name,
        git_commit=(
            experiment.git_commit
            if experiment.git_commit is not None
            else _git_commit(str(Path.cwd()))
        ),
        dependency_versions=experiment.dependency_versions
        or _dependency_versions(resolver.provenance),
        provider_metadata=_sanitized(
            experiment.provider_metadata or _provider_metadata(components), "provider_metadata"
        ),
        storage=storage,
        runtime=experiment.runtime,
        environment_metadata=_sanitized(experiment.environment_metadata, "environment_metadata"),
        components=resolver.provenance,
        plugins=resolver.registry.plugins(),
    )
    snapshot = RunSnapshot(
        identity=identity,
        provenance=provenance,
        component_refs=refs,
        datasets=datasets,
        metric_kinds=components.metric_kinds,
    )
    return snapshot, components
