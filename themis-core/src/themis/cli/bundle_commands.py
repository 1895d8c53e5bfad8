"""``themis export`` and ``themis import``: move a stage's results, or a whole run, as files."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer

from themis.cli._runs import (
    ConfigOption,
    RunIdOption,
    SetOption,
    StoreOption,
    StoreParamOption,
    cli_errors,
    emit_json,
    open_store,
    select_run,
    storage_from_spec,
)
from themis.core.errors import ConfigError

__all__ = ["register"]

log = structlog.get_logger(__name__)


class BundleKind(StrEnum):
    generation = "generation"
    reduction = "reduction"
    parse = "parse"
    score = "score"
    evaluation = "evaluation"
    run = "run"


class StageKind(StrEnum):
    generation = "generation"
    reduction = "reduction"
    parse = "parse"
    score = "score"
    evaluation = "evaluation"


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``import`` to ``app``."""
    app.command("export")(export)
    app.command("import")(import_)


def export(
    kind: Annotated[BundleKind, typer.Argument(help="What to export; a run bundle is JSONL.")],
    config: ConfigOption = None,
    sets: SetOption = None,
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    run_id: RunIdOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", metavar="FILE", help="Write here (default stdout)."),
    ] = None,
) -> None:
    """Export a stage bundle (JSON) or the whole run (JSON Lines)."""
    from themis.core import bundles

    with (
        cli_errors(),
        select_run(
            config=config, sets=sets, store=store, store_params=store_params, run_id=run_id
        ) as selected,
    ):
        if kind is BundleKind.run:
            if output is not None:
                output.parent.mkdir(parents=True, exist_ok=True)
            count = bundles.export_run_bundle(selected.store, selected.run_id, output or sys.stdout)
            log.info("cli.exported", run_id=selected.run_id, kind="run", events=count)
            return
        exporter = getattr(bundles, f"export_{kind.value}_bundle")
        bundle = exporter(selected.store, selected.run_id)
        text = json.dumps(bundle.model_dump(mode="json"), indent=2, sort_keys=True)
        if output is None:
            typer.echo(text)
            return
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")
        log.info("cli.exported", run_id=selected.run_id, kind=kind.value, path=str(output))


def _read_bundle(path: Path) -> dict[str, Any] | None:
    """The bundle as a JSON object, or None for a JSON Lines run bundle."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except ValueError:
        first = text.lstrip().split("\n", 1)[0]
        try:
            header = json.loads(first)
        except ValueError:
            raise ConfigError(
                f"{path} is neither a JSON bundle nor a JSON Lines run bundle; "
                "export one with: themis export KIND --output FILE"
            ) from None
        if isinstance(header, dict) and header.get("bundle_kind") == "run":
            return None
        raise ConfigError(f"{path}: the first line is not a run bundle header") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a bundle is a JSON object, got {type(data).__name__}")
    return None if data.get("bundle_kind") == "run" else data


def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A bundle written by export.")],
    store: StoreOption = None,
    store_params: StoreParamOption = None,
    kind: Annotated[
        StageKind | None,
        typer.Option("--kind", help="The kind of a bundle that has no bundle_kind."),
    ] = None,
) -> None:
    """Import a bundle into a store; prints {run_id, bundle_kind, records}."""
    from themis.core.bundles import import_bundle, import_run_bundle

    with cli_errors():
        spec = store or os.environ.get("THEMIS_STORE")
        if not spec:
            raise ConfigError("themis import needs a target store: --store SPEC (or THEMIS_STORE)")
        data = _read_bundle(file)
        the_store = open_store(storage_from_spec(spec, store_params))
        try:
            if data is None:
                result = import_run_bundle(the_store, file)
            else:
                result = import_bundle(the_store, data, kind=kind.value if kind else None)
        finally:
            the_store.close()
    emit_json(
        {"run_id": result.run_id, "bundle_kind": result.bundle_kind, "records": result.records}
    )
