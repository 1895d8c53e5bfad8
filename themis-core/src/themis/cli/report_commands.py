"""``themis quickcheck``, ``report`` and ``compare`` (API §8, §9)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from rich.table import Table

from themis.cli._app import print_table
from themis.cli._runs import (
    ConfigOption,
    RunIdOption,
    SetOption,
    StoreOption,
    StoreParamOption,
    cli_errors,
    emit_json,
    load_experiment,
    open_store,
    select_run,
    storage_from_spec,
)
from themis.core.errors import ConfigError, RunNotFoundError

if TYPE_CHECKING:
    from themis.core.config import StorageConfig

__all__ = ["register"]

log = structlog.get_logger(__name__)


class CompareFormat(StrEnum):
    json = "json"
    table = "table"
    markdown = "markdown"


class TestKind(StrEnum):
    permutation = "permutation"
    sign = "sign"


def register(app: typer.Typer) -> None:
    """Add ``quickcheck``, ``report`` and ``compare`` to ``app``."""
    app.command("quickcheck")(quickcheck)
    app.command("report")(report)
    app.command("compare")(compare)


def quickcheck(
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
) -> None:
    """Print a stored run's status, case counts and metric means as JSON."""
    from themis.core.quickcheck import quickcheck as check

    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        payload = check(selected.store, selected.run_id)
    emit_json(payload)


def report(
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="markdown, json, csv, html, latex, or a report_format plugin.",
        ),
    ] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", metavar="FILE", help="Write here, not stdout.")
    ] = None,
) -> None:
    """Render a stored run's report (Markdown by default)."""
    from themis.core.reporter import Reporter

    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        rendered = Reporter(selected.store).export(selected.run_id, format)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(rendered, bytes):
                output.write_bytes(rendered)
            else:
                output.write_text(rendered, encoding="utf-8")
            log.info("cli.report_written", run_id=selected.run_id, path=str(output))
            return
    if isinstance(rendered, bytes):
        sys.stdout.buffer.write(rendered)
        sys.stdout.buffer.flush()
    else:
        typer.echo(rendered, nl=not rendered.endswith("\n"))


@contextlib.contextmanager
def _side(
    label: str,
    *,
    config: Path | None,
    run_id: str | None,
    store: str | None,
    store_params: list[str] | None,
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The benchmark result and snapshot of one side of a comparison."""
    if (config is None) == (run_id is None):
        raise ConfigError(
            f"compare needs the {label} run once: --{label}-config PATH or --{label} RUN_ID"
        )
    storage: StorageConfig
    if config is not None:
        experiment = load_experiment(config, None)
        run_id = experiment.compile().run_id
        storage = storage_from_spec(store, store_params) if store else experiment.storage
    else:
        spec = store or os.environ.get("THEMIS_STORE")
        if not spec:
            raise ConfigError(
                f"--{label} {run_id} needs a store: --store SPEC (or set THEMIS_STORE)"
            )
        storage = storage_from_spec(spec, store_params)
    assert run_id is not None
    opened = open_store(storage)
    try:
        benchmark = opened.get_projection(run_id, "benchmark_result")
        snapshot = opened.get_projection(run_id, "snapshot")
        if benchmark is None or snapshot is None:
            raise RunNotFoundError(
                f"Unknown run_id: {run_id} ({label}); store {storage.store!r} does not hold it"
            )
        yield benchmark, snapshot
    finally:
        opened.close()


def _fingerprints(snapshot: dict[str, Any]) -> list[tuple[str, str]]:
    refs = snapshot.get("identity", {}).get("dataset_refs", [])
    return [(ref["dataset_id"], ref["fingerprint"]) for ref in refs]


def _rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for metric_id, m in result["metrics"].items():
        rows.append(
            [
                metric_id,
                str(m["pairs"]),
                f"{m['wins']}/{m['losses']}/{m['ties']}",
                f"{m['baseline_mean']:.4f}",
                f"{m['candidate_mean']:.4f}",
                f"{m['mean_delta']:+.4f}",
                f"[{m['ci_lower']:+.4f}, {m['ci_upper']:+.4f}]",
                f"{m['p_value']:.4g}",
                str(m["excluded_errors"]),
            ]
        )
    return rows


def _headers(result: dict[str, Any]) -> list[str]:
    ci = f"{result['confidence'] * 100:g}% CI"
    p_label = f"p ({result['test']})"
    return ["Metric", "Pairs", "W/L/T", "Baseline", "Candidate", "Delta", ci, p_label, "Errors"]


def compare(
    baseline_config: Annotated[
        Path | None, typer.Option("--baseline-config", metavar="P", help="Baseline config.")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", metavar="RUN_ID", help="Baseline run id.")
    ] = None,
    candidate_config: Annotated[
        Path | None, typer.Option("--candidate-config", metavar="P", help="Candidate config.")
    ] = None,
    candidate: Annotated[
        str | None, typer.Option("--candidate", metavar="RUN_ID", help="Candidate run id.")
    ] = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    metric_ids: Annotated[
        list[str] | None,
        typer.Option("--metric-id", metavar="ID", help="Only this metric (repeatable)."),
    ] = None,
    test: Annotated[TestKind, typer.Option("--test", help="Significance test.")] = (
        TestKind.permutation
    ),
    resamples: Annotated[int, typer.Option("--resamples", min=1)] = 10_000,
    permutations: Annotated[int, typer.Option("--permutations", min=1)] = 10_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    confidence: Annotated[float, typer.Option("--confidence", min=0.0, max=1.0)] = 0.95,
    format: Annotated[CompareFormat, typer.Option("--format")] = CompareFormat.json,
) -> None:
    """Compare two runs case by case: mean delta, bootstrap CI and p-value per metric."""
    from themis.core.stats import StatsEngine

    with cli_errors():
        engine = StatsEngine(
            resamples=resamples, permutations=permutations, confidence=confidence, seed=seed
        )
        with (
            _side(
                "baseline",
                config=baseline_config,
                run_id=baseline,
                store=store,
                store_params=store_params,
            ) as (base_result, base_snapshot),
            _side(
                "candidate",
                config=candidate_config,
                run_id=candidate,
                store=store,
                store_params=store_params,
            ) as (cand_result, cand_snapshot),
        ):
            if _fingerprints(base_snapshot) != _fingerprints(cand_snapshot):
                typer.echo(
                    "warning: the two runs' dataset fingerprints differ, so they were not "
                    "evaluated on the same data; only cases present in both are paired",
                    err=True,
                )
            result = engine.paired_compare(
                base_result, cand_result, metric_ids=metric_ids, test=test.value
            )
    if format is CompareFormat.json:
        emit_json(result)
        return
    headers, rows = _headers(result), _rows(result)
    if format is CompareFormat.markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        typer.echo("\n".join(lines))
        return
    table = Table(title=f"{result['baseline_run_id'][:12]} → {result['candidate_run_id'][:12]}")
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    print_table(table)
