"""``themis run``, ``resume``, ``replay``, ``rejudge`` and ``estimate`` (API §8)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from themis.cli._app import cli_state
from themis.cli._progress import generation_progress
from themis.cli._runs import (
    ConfigOption,
    RunIdOption,
    SetOption,
    StoreOption,
    StoreParamOption,
    cli_errors,
    emit_json,
    exit_for_status,
    load_experiment,
    metric_means,
    open_store,
    parse_assignments,
    select_run,
    storage_from_spec,
)
from themis.core.errors import ConfigError

if TYPE_CHECKING:
    from themis.core.experiment import Experiment
    from themis.core.protocols import RunStore
    from themis.core.results import RunResult

__all__ = ["register"]

log = structlog.get_logger(__name__)


class Stage(StrEnum):
    generate = "generate"
    reduce = "reduce"
    parse = "parse"
    score = "score"
    judge = "judge"


class Policy(StrEnum):
    auto = "auto"
    resume = "resume"
    error = "error"
    rerun = "rerun"


class ReplayStage(StrEnum):
    reduce = "reduce"
    parse = "parse"
    score = "score"
    judge = "judge"


UntilStageOption = Annotated[
    Stage, typer.Option("--until-stage", help="Stop every case after this stage.")
]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Exit 3 when the run ends partial_failure.")
]
MetricIdOption = Annotated[
    list[str] | None,
    typer.Option("--metric-id", metavar="ID", help="Only this metric (repeatable)."),
]


def register(app: typer.Typer) -> None:
    """Add the run commands to ``app``."""
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("replay")(replay)
    app.command("rejudge")(rejudge)
    app.command("estimate")(estimate)


def _config_path(positional: Path | None, option: Path | None, command: str) -> Path:
    if positional is not None and option is not None and positional != option:
        raise ConfigError(f"themis {command}: give the config once, as PATH or as --config PATH")
    path = option or positional
    if path is None:
        raise ConfigError(f"themis {command} needs a config: themis {command} --config PATH")
    return path


def _result_payload(result: RunResult, store: RunStore) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "status": result.status.value,
        "completed_through_stage": result.completed_through_stage,
        "progress": result.progress.model_dump(mode="json"),
        "metric_means": metric_means(store, result.run_id),
    }


def _generation_total(experiment: Experiment) -> int:
    return experiment.estimate().planned_generation_tasks


def run(
    ctx: typer.Context,
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[PATH]", help="The experiment config.")
    ] = None,
    config: ConfigOption = None,
    sets: SetOption = None,
    until_stage: UntilStageOption = Stage.judge,
    policy: Annotated[
        Policy | None,
        typer.Option("--policy", help="What to do when the run is already stored."),
    ] = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    max_concurrency: Annotated[
        int | None,
        typer.Option("--max-concurrency", min=1, help="At most this many concurrent calls."),
    ] = None,
    strict: StrictOption = False,
) -> None:
    """Run an experiment config and print its status, progress and metric means."""
    quiet = cli_state(ctx).quiet
    with cli_errors():
        path = _config_path(config_path, config, "run")
        experiment = load_experiment(path, sets)
        updates: dict[str, Any] = {}
        if policy is not None:
            updates["existing_run_policy"] = policy.value
        if max_concurrency is not None:
            updates["max_concurrent_tasks"] = max_concurrency
        runtime = experiment.runtime.model_validate({**experiment.runtime.model_dump(), **updates})
        storage = storage_from_spec(store, store_params) if store else experiment.storage
        experiment.compile()
        the_store = open_store(storage)
        try:
            with generation_progress(_generation_total(experiment), quiet=quiet) as subscribers:
                result = experiment.run(
                    until_stage=until_stage.value,
                    runtime=runtime,
                    store=the_store,
                    subscribers=subscribers,
                )
            payload = _result_payload(result, the_store)
        finally:
            the_store.close()
    emit_json(payload)
    exit_for_status(payload["status"], strict=strict)


def _experiment_for(selected: Any) -> Experiment:
    from themis.cli._rebuild import experiment_from_snapshot

    if selected.experiment is not None:
        experiment: Experiment = selected.experiment
        return experiment
    snapshot = selected.store.load_snapshot(selected.run_id)
    return experiment_from_snapshot(snapshot)


def resume(
    ctx: typer.Context,
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    until_stage: UntilStageOption = Stage.judge,
    strict: StrictOption = False,
) -> None:
    """Execute a stored run's remaining and failed work."""
    quiet = cli_state(ctx).quiet
    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        experiment = _experiment_for(selected)
        log.info("cli.resume", run_id=selected.run_id, store=selected.storage.store)
        with generation_progress(_generation_total(experiment), quiet=quiet) as subscribers:
            result = experiment.resume(
                until_stage=until_stage.value, store=selected.store, subscribers=subscribers
            )
        payload = _result_payload(result, selected.store)
    emit_json(payload)
    exit_for_status(payload["status"], strict=strict)


def _replay(
    *,
    config: Path | None,
    sets: list[str] | None,
    store: str | None,
    store_params: list[str] | None,
    run_id: str | None,
    stage: str,
    metric_ids: list[str] | None,
) -> None:
    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        experiment = _experiment_for(selected)
        result = experiment.replay(
            stage=stage, metric_ids=list(metric_ids) if metric_ids else None, store=selected.store
        )
        payload: dict[str, Any] = {
            "run_id": result.run_id,
            "status": result.status.value,
            "metric_means": metric_means(selected.store, result.run_id),
        }
    emit_json(payload)
    exit_for_status(payload["status"], strict=False)


def replay(
    stage: Annotated[ReplayStage, typer.Option("--stage", help="Recompute from this stage down.")],
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    metric_ids: MetricIdOption = None,
) -> None:
    """Recompute a stored run from a stage on, without calling the generator."""
    _replay(
        config=config,
        sets=sets,
        store=store,
        store_params=store_params,
        run_id=run_id,
        stage=stage.value,
        metric_ids=metric_ids,
    )


def rejudge(
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    metric_ids: MetricIdOption = None,
) -> None:
    """Re-run the workflow (judge) metrics of a stored run (replay --stage judge)."""
    _replay(
        config=config,
        sets=sets,
        store=store,
        store_params=store_params,
        run_id=run_id,
        stage="judge",
        metric_ids=metric_ids,
    )


def estimate(
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[PATH]", help="The experiment config.")
    ] = None,
    config: ConfigOption = None,
    sets: SetOption = None,
    assume: Annotated[
        list[str] | None,
        typer.Option(
            "--assume",
            metavar="K=V",
            help="Override an estimate assumption (repeatable), e.g. chars_per_token=3.",
        ),
    ] = None,
) -> None:
    """Count planned tasks and estimate tokens without running anything (RunEstimate JSON)."""
    from themis.core.planner import DEFAULT_ASSUMPTIONS

    with cli_errors():
        path = _config_path(config_path, config, "estimate")
        assumptions = parse_assignments(assume, "--assume")
        for key, value in assumptions.items():
            if key not in DEFAULT_ASSUMPTIONS:
                raise ConfigError(
                    f"--assume {key}: unknown assumption; use one of "
                    f"{', '.join(sorted(DEFAULT_ASSUMPTIONS))}"
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"--assume {key}={value!r}: the value must be a number")
        experiment = load_experiment(path, sets)
        result = experiment.estimate(assumptions=assumptions or None)
    emit_json(result.model_dump(mode="json"))
