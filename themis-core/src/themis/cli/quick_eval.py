"""``themis quick-eval inline|file``: evaluate without writing a config (API §8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from themis.cli._runs import cli_errors, emit_json, exit_for_status, open_store, storage_from_spec
from themis.core.errors import ConfigError

if TYPE_CHECKING:
    from themis.core.models import Dataset

__all__ = ["register"]

ModelOption = Annotated[
    str, typer.Option("--model", metavar="ID", help="Generator id or import path.")
]
MetricOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metric",
        metavar="ID",
        help="Metric (repeatable); default builtin/exact_match.",
    ),
]
ParserOption = Annotated[str, typer.Option("--parser", metavar="ID", help="Parser id.")]
JudgeOption = Annotated[
    list[str] | None, typer.Option("--judge", metavar="ID", help="Judge model (repeatable).")
]
SamplesOption = Annotated[
    int, typer.Option("--samples", min=1, help="Candidates per case (>1 adds majority_vote).")
]
SeedOption = Annotated[
    list[int] | None,
    typer.Option("--seed", metavar="N", help="Seed of candidate i (repeatable, one per sample)."),
]
QuickStoreOption = Annotated[
    str,
    typer.Option(
        "--store", metavar="SPEC", help="Run store as BACKEND[:LOCATION], e.g. sqlite:runs/q.db."
    ),
]

DEFAULT_METRIC = "builtin/exact_match"


def register(app: typer.Typer) -> None:
    """Add the ``quick-eval`` command group to ``app``."""
    group = typer.Typer(
        name="quick-eval", help="Evaluate a model on one case or one file, no config needed."
    )
    group.command("inline")(inline)
    group.command("file")(file)
    app.add_typer(group)


def parse_value(text: str) -> Any:
    """``text`` as JSON, or the text itself when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _evaluate(
    dataset: Dataset,
    *,
    model: str,
    metrics: list[str] | None,
    parser: str,
    judges: list[str] | None,
    samples: int,
    seeds: list[int] | None,
    store: str,
) -> None:
    from themis.core._fold_speed import paused_gc

    # The run's modules, imported as start-up's are (see themis.cli.main).
    with paused_gc():
        from themis.core.evaluate import evaluate

    with cli_errors():
        storage = storage_from_spec(store)
        the_store = open_store(storage)
        try:
            result = evaluate(
                model=model,
                data=dataset,
                metric=list(metrics or [DEFAULT_METRIC]),
                parser=parser,
                judge=list(judges or []),
                samples=samples,
                seeds=list(seeds or []),
                storage=storage,
                store=the_store,
            )
            benchmark = the_store.get_projection(result.run_id, "benchmark_result") or {}
        finally:
            the_store.close()
    emit_json(
        {
            "run_id": result.run_id,
            "status": result.status.value,
            "metric_means": benchmark.get("metric_means", {}),
        },
        compact=True,
    )
    exit_for_status(result.status.value, strict=False)


def inline(
    input_value: Annotated[
        str,
        typer.Option(
            "--input", "--input-json", metavar="JSON", help="The case input (JSON, else text)."
        ),
    ],
    expected_output: Annotated[
        str | None,
        typer.Option(
            "--expected-output",
            "--expected-output-json",
            metavar="JSON",
            help="The expected output (JSON, else text).",
        ),
    ] = None,
    model: ModelOption = "builtin/demo_generator",
    metric: MetricOption = None,
    parser: ParserOption = "builtin/json_identity",
    judge: JudgeOption = None,
    samples: SamplesOption = 1,
    seed: SeedOption = None,
    store: QuickStoreOption = "memory",
) -> None:
    """Evaluate one case (dataset inline, case case-1); prints compact JSON."""
    from themis.core.models import Case, Dataset

    case = Case(
        case_id="case-1",
        input=parse_value(input_value),
        expected_output=None if expected_output is None else parse_value(expected_output),
    )
    dataset = Dataset(dataset_id="inline", cases=[case])
    _evaluate(
        dataset,
        model=model,
        metrics=metric,
        parser=parser,
        judges=judge,
        samples=samples,
        seeds=seed,
        store=store,
    )


def file(
    path_argument: Annotated[
        Path | None, typer.Argument(metavar="[PATH]", help="A JSONL file or a JSON list of rows.")
    ] = None,
    path_option: Annotated[
        Path | None, typer.Option("--path", metavar="PATH", help="The same as PATH.")
    ] = None,
    input_field: Annotated[
        str, typer.Option("--input-field", help="Row field holding the input.")
    ] = "input",
    expected_output_field: Annotated[
        str, typer.Option("--expected-output-field", help="Row field holding the expected output.")
    ] = "expected_output",
    case_id_field: Annotated[
        str, typer.Option("--case-id-field", help="Row field holding the case id (else case-N).")
    ] = "case_id",
    model: ModelOption = "builtin/demo_generator",
    metric: MetricOption = None,
    parser: ParserOption = "builtin/json_identity",
    judge: JudgeOption = None,
    samples: SamplesOption = 1,
    seed: SeedOption = None,
    store: QuickStoreOption = "memory",
) -> None:
    """Evaluate every row of a file (dataset id: the file's stem); prints compact JSON."""
    from themis.core.dataset_inputs import dataset_from_jsonl

    path = path_option or path_argument
    if path is None:
        raise ConfigError("themis quick-eval file needs the data file: quick-eval file PATH")
    if path_option is not None and path_argument is not None and path_option != path_argument:
        raise ConfigError("themis quick-eval file: give the file once, as PATH or as --path")
    with cli_errors():
        dataset = dataset_from_jsonl(
            path,
            dataset_id=path.stem,
            input_field=input_field,
            expected_output_field=expected_output_field,
            case_id_field=case_id_field,
        )
    _evaluate(
        dataset,
        model=model,
        metrics=metric,
        parser=parser,
        judges=judge,
        samples=samples,
        seeds=seed,
        store=store,
    )
