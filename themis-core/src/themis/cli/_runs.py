"""Shared by the run commands: selecting a run (config or store + id), output, exit codes."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from themis.cli._app import EXIT_FAILURE, EXIT_PARTIAL
from themis.core.errors import ConfigError, RunNotFoundError, ThemisError

if TYPE_CHECKING:
    from themis.core.config import StorageConfig
    from themis.core.experiment import Experiment
    from themis.core.protocols import RunStore

__all__ = [
    "ConfigOption",
    "RunIdOption",
    "SelectedRun",
    "SetOption",
    "StoreOption",
    "StoreParamOption",
    "cli_errors",
    "emit_json",
    "exit_for_status",
    "load_experiment",
    "metric_means",
    "open_store",
    "parse_assignments",
    "select_run",
    "storage_from_spec",
]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", metavar="PATH", help="Experiment config (.yaml/.toml); the run comes from it."
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="K=V",
        help="Override a config key (repeatable), e.g. seeds=[1].",
    ),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="SPEC",
        help="Run store as BACKEND[:LOCATION], e.g. sqlite:runs/themis.sqlite3 "
        "(default $THEMIS_STORE).",
    ),
]
StoreParamOption = Annotated[
    list[str] | None,
    typer.Option("--store-param", metavar="K=V", help="A store parameter (repeatable)."),
]
RunIdOption = Annotated[str | None, typer.Option("--run-id", metavar="ID", help="The run id.")]


def emit_json(value: Any, *, compact: bool = False) -> None:
    """Print JSON on stdout: indented with sorted keys, or compact on one line."""
    if compact:
        typer.echo(json.dumps(value, sort_keys=True, separators=(",", ":")))
    else:
        typer.echo(json.dumps(value, indent=2, sort_keys=True))


def exit_for_status(status: str, *, strict: bool) -> None:
    """Exit 1 for a failed run, 3 for partial_failure with ``--strict``, else return."""
    if status == "failed":
        raise typer.Exit(EXIT_FAILURE)
    if status == "partial_failure" and strict:
        raise typer.Exit(EXIT_PARTIAL)


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn plain library errors into ThemisErrors so ``main`` prints one line, no traceback."""
    try:
        yield
    except (ThemisError, typer.Exit, typer.Abort):
        raise
    except (ValueError, LookupError) as exc:
        # ValueError is what the library raises for invalid requests (a usage error).
        raise ConfigError(str(exc)) from exc
    except OSError as exc:
        raise ThemisError(f"{exc}; check the path and its permissions") from exc


def parse_assignments(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``k=v`` strings as a dict; each value parsed as YAML (``3`` is an int, ``a`` a str)."""
    if not items:
        # Most calls have none; importing PyYAML was 5% of quick-eval's instructions.
        return {}
    import yaml  # type: ignore[import-untyped, unused-ignore]

    parsed: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {item!r} must look like key=value")
        try:
            parsed[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML ({exc})") from exc
    return parsed


def storage_from_spec(spec: str, params: Sequence[str] | None = None) -> StorageConfig:
    """``BACKEND[:LOCATION]`` plus ``--store-param`` pairs as a ``StorageConfig``."""
    from themis.core.config import StorageConfig

    backend, sep, location = spec.partition(":")
    backend = backend.strip()
    if not backend:
        raise ConfigError(
            f"store spec {spec!r} names no backend; write BACKEND[:LOCATION], "
            "e.g. sqlite:runs/themis.sqlite3 or memory"
        )
    parameters = parse_assignments(params, "--store-param")
    if sep and location:
        path = location if location == ":memory:" else str(Path(location).expanduser().resolve())
        parameters.setdefault("path", path)
    return StorageConfig(store=backend, parameters=parameters)


def open_store(storage: StorageConfig) -> RunStore:
    """Create and initialise the store ``storage`` names."""
    from themis.core._fold_speed import paused_gc

    # The stores' modules (the first call imports them), as start-up's (see themis.cli.main).
    with paused_gc():
        from themis.core.stores import create_run_store

    store = create_run_store(storage)
    store.initialize()
    return store


def load_experiment(config: Path, sets: Sequence[str] | None) -> Experiment:
    """The experiment in ``config`` with the ``--set`` overrides applied."""
    from themis.core.experiment import Experiment

    return Experiment.from_config(config, overrides=list(sets or []))


def metric_means(store: RunStore, run_id: str) -> dict[str, float]:
    """The run's mean per metric, from its stored benchmark projection."""
    benchmark = store.get_projection(run_id, "benchmark_result") or {}
    return dict(benchmark.get("metric_means") or {})


def _is_memory(storage: StorageConfig) -> bool:
    return storage.store in ("memory", "core/memory")


@dataclass
class SelectedRun:
    """A run chosen on the command line, its open store, and the experiment if a config named it."""

    run_id: str
    store: RunStore
    storage: StorageConfig
    experiment: Experiment | None = None

    def require_stored(self) -> None:
        """Raise ``RunNotFoundError`` (with a hint) unless the store holds the run."""
        if self.store.load_snapshot(self.run_id) is not None:
            return
        hint = (
            "; a memory store keeps runs only inside one process, so point --store (or the "
            "config's storage) at a persistent store such as sqlite:runs/themis.sqlite3"
            if _is_memory(self.storage)
            else " (check the run id and the store it was written to)"
        )
        raise RunNotFoundError(
            f"Unknown run_id: {self.run_id}; store {self.storage.store!r} does not hold it{hint}"
        )


@contextlib.contextmanager
def select_run(
    *,
    config: Path | None,
    sets: Sequence[str] | None,
    store: str | None,
    store_params: Sequence[str] | None,
    run_id: str | None,
    require_stored: bool = True,
) -> Iterator[SelectedRun]:
    """Open the run named by ``--config [--set]`` or by ``--store SPEC --run-id ID``."""
    experiment = None
    if config is not None:
        experiment = load_experiment(config, sets)
        compiled_id = experiment.compile().run_id
        if run_id is not None and run_id != compiled_id:
            raise ConfigError(
                f"--run-id {run_id} does not match the run {compiled_id} that {config} "
                "compiles to; give either --config or --store with --run-id"
            )
        run_id = compiled_id
        storage = (
            storage_from_spec(store, store_params) if store is not None else experiment.storage
        )
    else:
        if sets:
            raise ConfigError("--set needs --config: it overrides keys of a config file")
        spec = store or os.environ.get("THEMIS_STORE")
        if run_id is None or not spec:
            raise ConfigError(
                "choose a run: --config PATH, or --store SPEC --run-id ID "
                "(--store defaults to $THEMIS_STORE)"
            )
        storage = storage_from_spec(spec, store_params)
    opened = open_store(storage)
    try:
        selected = SelectedRun(run_id=run_id, store=opened, storage=storage, experiment=experiment)
        if require_stored:
            selected.require_stored()
        yield selected
    finally:
        opened.close()
