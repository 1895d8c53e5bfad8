"""Rebuild a stored run's ``Experiment`` from its snapshot, for resume and replay by run id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from themis.core.errors import ConfigError

if TYPE_CHECKING:
    from themis.core.experiment import Experiment
    from themis.core.snapshot import RunSnapshot

__all__ = ["experiment_from_snapshot"]


def _indexed(slot: str, name: str) -> int | None:
    prefix = f"{name}["
    if slot.startswith(prefix) and slot.endswith("]"):
        return int(slot[len(prefix) : -1])
    return None


def experiment_from_snapshot(snapshot: RunSnapshot) -> Experiment:
    """An experiment that compiles to ``snapshot.run_id``, its components rebuilt from specs.

    Each slot's component is re-created from the spec in ``provenance.components`` (a
    registry id or an import path with its params). A slot that held a live Python object
    cannot be rebuilt: that raises ``ConfigError`` asking for ``--config``.
    """
    from themis.core.config import (
        EvaluationConfig,
        GenerationConfig,
        RuntimeConfig,
        StorageConfig,
    )
    from themis.core.experiment import Experiment

    run_id = snapshot.run_id
    provenance = snapshot.provenance
    live = [c.slot for c in provenance.components if c.source == "object" or c.spec is None]
    if live:
        raise ConfigError(
            f"run {run_id} was built from live Python objects ({', '.join(live)}), which "
            "cannot be rebuilt from the store; pass --config PATH with a config that "
            "compiles to this run"
        )
    specs: dict[str, Any] = {}
    lists: dict[str, dict[int, Any]] = {"parsers": {}, "metrics": {}, "judge_models": {}}
    for component in provenance.components:
        for name, slots in lists.items():
            index = _indexed(component.slot, name)
            if index is not None:
                slots[index] = component.spec
                break
        else:
            specs[component.slot] = component.spec
    refs = snapshot.component_refs
    expected = {"parsers": refs.parsers, "metrics": refs.metrics, "judge_models": refs.judge_models}
    for name, slots in lists.items():
        if sorted(slots) != list(range(len(expected[name]))):
            raise ConfigError(
                f"run {run_id}: provenance.components does not record every {name} slot, so "
                "the run cannot be rebuilt from the store; pass --config PATH"
            )
    if "generator" not in specs:
        raise ConfigError(
            f"run {run_id}: provenance.components records no generator; pass --config PATH"
        )
    identity = snapshot.identity

    def ordered(name: str) -> list[Any]:
        return [lists[name][i] for i in range(len(lists[name]))]

    experiment = Experiment(
        generation=GenerationConfig(
            generator=specs["generator"],
            candidate_policy=dict(identity.candidate_policy),
            prompt_spec=identity.generation_prompt_spec,
            selector=specs.get("selector"),
            reducer=specs.get("reducer"),
        ),
        evaluation=EvaluationConfig(
            metrics=ordered("metrics"),
            parsers=ordered("parsers"),
            judge_models=ordered("judge_models"),
            prompt_spec=identity.evaluation_prompt_spec,
            judge_config=dict(identity.judge_config),
            workflow_overrides=dict(identity.workflow_overrides),
        ),
        storage=provenance.storage or StorageConfig(),
        runtime=provenance.runtime or RuntimeConfig(),
        datasets=list(snapshot.datasets),
        seeds=list(identity.seeds),
        environment_metadata=dict(provenance.environment_metadata),
    )
    rebuilt = experiment.compile().run_id
    if rebuilt != run_id:
        raise ConfigError(
            f"the components rebuilt from run {run_id}'s provenance compile to another run "
            f"({rebuilt}): an installed plugin's version or behaviour changed since; install "
            "the distributions recorded in its provenance, or pass --config PATH"
        )
    return experiment
