"""Entry-point module (group ``themis``): registers the SQLite run store as ``sqlite/store``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from themis.core.hookspecs import DoctorCheck, hookimpl

if TYPE_CHECKING:
    from themis.core.registry import ComponentRegistrar

__all__ = ["doctor_checks", "register_components"]

# WAL with the busy-wait on BEGIN IMMEDIATE that the store relies on, and RETURNING-free SQL,
# work on every SQLite from 3.22 (2018) on.
_MIN_SQLITE = (3, 22, 0)


@hookimpl
def register_components(registry: ComponentRegistrar) -> None:
    """Register ``sqlite/store`` (alias ``sqlite``); its kwargs come from ``parameters``."""
    registry.store(
        "sqlite/store",
        "themis_store_sqlite.store:sqlite_store",
        aliases=("sqlite",),
        summary=(
            "durable SQLite run store (WAL, batched commits); "
            "params: path, busy_timeout_s, writer_process"
        ),
    )


@hookimpl
def doctor_checks() -> list[DoctorCheck]:
    """Check that the SQLite library Python links against is recent enough."""
    # Imported here: every command loads this module, and only the doctor needs sqlite3.
    import sqlite3

    version = sqlite3.sqlite_version_info
    shown = ".".join(map(str, version))
    if version < _MIN_SQLITE:
        needed = ".".join(map(str, _MIN_SQLITE))
        return [
            DoctorCheck(
                name="sqlite/library",
                status="fail",
                message=f"SQLite {shown} is older than {needed}; use a Python built with a "
                "newer SQLite",
            )
        ]
    return [DoctorCheck(name="sqlite/library", status="ok", message=f"SQLite {shown}")]
