"""The compiled, immutable definition of a run: identity (hashed) and provenance (recorded)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, computed_field, model_validator

from themis.core.base import FrozenModel, HashableModel, JSONValue
from themis.core.events import RunEvent
from themis.core.models import Dataset
from themis.core.prompts import PromptSpec

if TYPE_CHECKING:
    from themis.core.results import ExecutionState

__all__ = [
    "ComponentProvenance",
    "ComponentRef",
    "ComponentRefs",
    "DatasetRef",
    "PluginInfo",
    "RunIdentity",
    "RunProvenance",
    "RunSnapshot",
    "StoredRun",
]


class ComponentRef(HashableModel):
    """The identity triple of a component as hashed into a run."""

    component_id: str
    version: str
    fingerprint: str


class DatasetRef(HashableModel):
    dataset_id: str
    revision: str | None = None
    fingerprint: str


class ComponentRefs(FrozenModel):
    generator: ComponentRef
    selector: ComponentRef | None = None
    reducer: ComponentRef | None = None
    parsers: list[ComponentRef] = Field(default_factory=list)
    metrics: list[ComponentRef] = Field(default_factory=list)
    judge_models: list[ComponentRef] = Field(default_factory=list)


class PluginInfo(FrozenModel):
    """One discovered plugin and what became of it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None
    status: Literal["loaded", "failed", "blocked", "disabled"] = "loaded"
    error: str | None = None


class ComponentProvenance(FrozenModel):
    """Where the component in one slot came from, so a run can be rebuilt later."""

    slot: str
    component_id: str
    source: Literal["registry", "import_path", "object"]
    spec: str | dict[str, JSONValue] | None = None
    python_class: str
    plugin: str | None = None
    distribution: str | None = None
    distribution_version: str | None = None


class RunIdentity(HashableModel):
    """Everything that defines a run logically; its hash is the ``run_id``."""

    schema_version: str = "1"
    dataset_refs: list[DatasetRef] = Field(default_factory=list)
    generator_ref: ComponentRef
    selector_ref: ComponentRef | None = None
    reducer_ref: ComponentRef | None = None
    parser_refs: list[ComponentRef] = Field(default_factory=list)
    metric_refs: list[ComponentRef] = Field(default_factory=list)
    judge_model_refs: list[ComponentRef] = Field(default_factory=list)
    candidate_policy: dict[str, JSONValue] = Field(default_factory=dict)
    generation_prompt_spec: PromptSpec | None = None
    evaluation_prompt_spec: PromptSpec | None = None
    judge_config: dict[str, JSONValue] = Field(default_factory=dict)
    workflow_overrides: dict[str, JSONValue] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=list)


class RunProvenance(FrozenModel):
    """Recorded with a run, never hashed: versions, platform, storage, runtime, sources."""

    themis_version: str = ""
    python_version: str = ""
    platform: str = ""
    git_commit: str | None = None
    dependency_versions: dict[str, str] = Field(default_factory=dict)
    provider_metadata: dict[str, JSONValue] = Field(default_factory=dict)
    storage: Any = None  # StorageConfig; typed loosely to avoid an import cycle with config
    runtime: Any = None  # RuntimeConfig
    environment_metadata: dict[str, str] = Field(default_factory=dict)
    components: list[ComponentProvenance] = Field(default_factory=list)
    plugins: list[PluginInfo] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _load_configs(cls, data: Any) -> Any:
        if isinstance(data, dict):
            from themis.core.config import RuntimeConfig, StorageConfig

            data = dict(data)
            if isinstance(data.get("storage"), dict):
                data["storage"] = StorageConfig.model_validate(data["storage"])
            if isinstance(data.get("runtime"), dict):
                data["runtime"] = RuntimeConfig.model_validate(data["runtime"])
        return data


MetricKind = Literal["pure", "llm", "selection", "trace"]


class RunSnapshot(FrozenModel):
    """A compiled experiment: identity, provenance, component refs and full dataset content."""

    identity: RunIdentity
    provenance: RunProvenance = Field(default_factory=RunProvenance)
    component_refs: ComponentRefs
    datasets: list[Dataset] = Field(default_factory=list)
    metric_kinds: list[MetricKind] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _drop_dumped_run_id(cls, data: Any) -> Any:
        # ``run_id`` is serialised for readers but always recomputed from the identity.
        if isinstance(data, dict) and "run_id" in data:
            data = {k: v for k, v in data.items() if k != "run_id"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @functools.cached_property
    def run_id(self) -> str:
        return self.identity.compute_hash()

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class StoredRun(FrozenModel):
    """A stored snapshot with its events."""

    snapshot: RunSnapshot
    events: list[RunEvent] = Field(default_factory=list)

    @property
    def execution_state(self) -> ExecutionState:
        from themis.core.results import ExecutionState

        return ExecutionState.from_events(self.snapshot.run_id, self.events)
