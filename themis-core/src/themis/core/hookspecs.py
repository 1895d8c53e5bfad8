"""The hook specifications a Themis plugin implements, and the markers to declare them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import pluggy

from themis.core.base import FrozenModel

if TYPE_CHECKING:
    from themis.core.registry import ComponentRegistrar

__all__ = ["DoctorCheck", "doctor_checks", "hookimpl", "hookspec", "register_components"]

PROJECT_NAME = "themis"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class DoctorCheck(FrozenModel):
    """One result of ``themis plugins doctor``: a named check, its status and what to do."""

    name: str
    status: Literal["ok", "warn", "fail"]
    message: str = ""


@hookspec
def register_components(registry: ComponentRegistrar) -> None:
    """Register this plugin's components into ``registry``, a registrar bound to the plugin.

    Called once, when the plugin is loaded. Register import-path strings
    (``"themis_acme.metrics:Rubric"``) so nothing heavy is imported until a component is
    used; every id must live in the plugin's namespace (``registry.namespace``).
    """


@hookspec
def doctor_checks() -> list[DoctorCheck]:
    """Return extra health checks for ``themis plugins doctor`` (credentials, services, ...).

    Optional. Each check should name what it looked at and, when it fails, how to fix it.
    """
    raise NotImplementedError  # a hookspec body never runs; pluggy only reads the signature
