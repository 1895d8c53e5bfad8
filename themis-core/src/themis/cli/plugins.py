"""``themis plugins`` / ``plugins list`` / ``plugins doctor`` (API §7.8)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from themis.cli._app import EXIT_FAILURE, print_table

__all__ = ["register"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_STATUS_STYLE = {"loaded": "green", "ok": "green", "warn": "yellow", "failed": "red", "fail": "red"}


def register(app: typer.Typer) -> None:
    """Add the ``plugins`` command group to ``app``."""
    plugins_app = typer.Typer(
        name="plugins",
        help="List the installed plugins and check their health.",
        invoke_without_command=True,
    )
    plugins_app.callback(invoke_without_command=True)(_plugins)
    plugins_app.command("list")(list_plugins)
    plugins_app.command("doctor")(doctor)
    app.add_typer(plugins_app)


def _plugins(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the installed plugins (the same as ``themis plugins list``)."""
    if ctx.invoked_subcommand is None:
        list_plugins(as_json)


def list_plugins(as_json: JsonOption = False) -> None:
    """List every discovered plugin: distribution, version, status and components."""
    from themis.core.registry import get_registry

    details = get_registry().plugin_details()
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in details], indent=2))
        return
    table = _table("Plugin", "Distribution", "Version", "Status", "Components")
    for detail in details:
        if detail.status == "loaded":
            counts = Counter(str(c.kind) for c in detail.components)
            aliases: dict[str, list[str]] = {}
            for component in detail.components:
                aliases.setdefault(str(component.kind), []).extend(component.aliases)
            summary = ", ".join(
                f"{kind} {n}" + (f" (alias {', '.join(aliases[kind])})" if aliases[kind] else "")
                for kind, n in counts.items()
            )
            summary = summary or "no components"
        elif detail.status == "failed":
            summary = detail.error or ""
        else:
            summary = detail.reason or ""
        table.add_row(
            detail.name,
            detail.distribution or "-",
            detail.version or "-",
            Text(detail.status, style=_STATUS_STYLE.get(detail.status, "yellow")),
            summary,
        )
    print_table(table)


def doctor(as_json: JsonOption = False) -> None:
    """Load every plugin, import and check every component, run the plugins' own checks."""
    from themis.core._registry_doctor import run_doctor
    from themis.core.registry import get_registry

    checks = run_doctor(get_registry())
    if as_json:
        typer.echo(json.dumps([c.model_dump(mode="json") for c in checks], indent=2))
    else:
        table = _table("Check", "Status", "Message")
        for check in checks:
            table.add_row(
                check.name, Text(check.status, style=_STATUS_STYLE[check.status]), check.message
            )
        print_table(table)
        failed = sum(c.status == "fail" for c in checks)
        warned = sum(c.status == "warn" for c in checks)
        typer.echo(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(EXIT_FAILURE)


def _table(*columns: str) -> Table:
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns[:-1]:
        table.add_column(column, no_wrap=True)
    table.add_column(columns[-1], overflow="fold")
    return table
