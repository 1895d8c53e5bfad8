"""``themis inspect snapshot|state|events|trace|evaluation``: look inside a stored run."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from themis.cli._app import EXIT_FAILURE
from themis.cli._runs import (
    ConfigOption,
    RunIdOption,
    SetOption,
    StoreOption,
    StoreParamOption,
    cli_errors,
    emit_json,
    select_run,
)

__all__ = ["register"]


class TraceKind(StrEnum):
    generation = "generation"
    conversation = "conversation"
    evaluation = "evaluation"


CaseIdOption = Annotated[
    str | None, typer.Option("--case-id", metavar="ID", help="Only this case.")
]


def register(app: typer.Typer) -> None:
    """Add the ``inspect`` command group to ``app``."""
    group = typer.Typer(name="inspect", help="Look inside a stored run.", no_args_is_help=True)
    group.command("snapshot")(snapshot)
    group.command("state")(state)
    group.command("events")(events)
    group.command("trace")(trace)
    group.command("evaluation")(evaluation)
    app.add_typer(group)


def _projection(
    name: str,
    *,
    config: Any,
    sets: Any,
    store: Any,
    store_params: Any,
    run_id: Any,
) -> Any:
    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        return selected.store.get_projection(selected.run_id, name)


def snapshot(
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
) -> None:
    """Print the run's snapshot (identity, provenance, components, datasets) as JSON."""
    emit_json(
        _projection(
            "snapshot",
            config=config,
            sets=sets,
            store=store,
            store_params=store_params,
            run_id=run_id,
        )
    )


def state(
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
) -> None:
    """Print the run's ExecutionState (every case's folded state) as JSON."""
    emit_json(
        _projection(
            "execution_state",
            config=config,
            sets=sets,
            store=store,
            store_params=store_params,
            run_id=run_id,
        )
    )


def events(
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    event_types: Annotated[
        list[str] | None,
        typer.Option("--type", metavar="T", help="Only this event type (repeatable)."),
    ] = None,
    case_id: CaseIdOption = None,
    after_seq: Annotated[
        int | None, typer.Option("--after-seq", metavar="N", help="Only events after seq N.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", min=0, help="At most N events.")
    ] = None,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="One JSON event per line.")] = False,
) -> None:
    """Print the run's events in seq order (a JSON list, or JSONL)."""
    from themis.core.events import EVENT_TYPES

    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        unknown = sorted(set(event_types or ()) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(
                f"--type {', '.join(unknown)}: unknown event type; use one of "
                f"{', '.join(sorted(EVENT_TYPES))}"
            )
        found = selected.store.query_events(
            selected.run_id, after_seq=after_seq, event_types=event_types or None
        )
    payload = [
        event.to_dict()
        for event in found
        if case_id is None or getattr(event, "case_id", None) == case_id
    ]
    if limit is not None:
        payload = payload[:limit]
    if jsonl:
        for item in payload:
            typer.echo(json.dumps(item, sort_keys=True, separators=(",", ":")))
    else:
        emit_json(payload)


def trace(
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    case_id: CaseIdOption = None,
    candidate_id: Annotated[
        str | None, typer.Option("--candidate-id", metavar="ID", help="Only this candidate.")
    ] = None,
    kind: Annotated[
        TraceKind | None, typer.Option("--kind", help="Only this kind of trace.")
    ] = None,
) -> None:
    """Print the run's trace_view, filtered by case, candidate and kind."""
    view = _projection(
        "trace_view",
        config=config,
        sets=sets,
        store=store,
        store_params=store_params,
        run_id=run_id,
    )

    def keep(record: dict[str, Any]) -> bool:
        if case_id is not None and record.get("case_id") != case_id:
            return False
        return candidate_id is None or record.get("candidate_id") == candidate_id

    for name in TraceKind:
        key = f"{name.value}_traces"
        records = view.get(key, [])
        view[key] = [] if kind not in (None, name) else [r for r in records if keep(r)]
    emit_json(view)


def evaluation(
    case_id: Annotated[str, typer.Option("--case-id", metavar="ID", help="The case.")],
    metric_id: Annotated[str, typer.Option("--metric-id", metavar="ID", help="The metric.")],
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    dataset_id: Annotated[
        str | None,
        typer.Option("--dataset-id", metavar="ID", help="The case's dataset (else the first)."),
    ] = None,
) -> None:
    """Print one workflow metric's EvaluationExecution on one case."""
    from themis.core.inspection import get_evaluation_execution

    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        execution = get_evaluation_execution(
            selected.store,
            selected.run_id,
            case_id=case_id,
            metric_id=metric_id,
            dataset_id=dataset_id,
        )
        found_run = selected.run_id
    if execution is None:
        where = f" in dataset {dataset_id}" if dataset_id else ""
        typer.echo(
            f"error: no evaluation execution found for case {case_id}{where}, metric "
            f"{metric_id} in run {found_run}; only workflow (judge) metrics have one "
            "(list them with: themis inspect trace --kind evaluation)",
            err=True,
        )
        raise typer.Exit(EXIT_FAILURE)
    emit_json(execution.model_dump(mode="json"))
