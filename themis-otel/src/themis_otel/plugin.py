"""Entry-point module (group ``themis``): registers the ``otel/tracer`` tracing provider.

Importing it must stay cheap, so it names the provider by import path and never imports
OpenTelemetry itself.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from themis.core.hookspecs import DoctorCheck, hookimpl

if TYPE_CHECKING:
    from themis.core.registry import ComponentRegistrar

__all__ = ["doctor_checks", "register_components"]

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


@hookimpl
def register_components(registry: ComponentRegistrar) -> None:
    """Register ``otel/tracer`` (alias ``otel``)."""
    registry.tracing_provider(
        "otel/tracer",
        "themis_otel.provider:OTelTracingProvider",
        aliases=("otel",),
        summary="OpenTelemetry spans for runs and stages; OTLP/HTTP export from OTEL_* env",
    )


@hookimpl
def doctor_checks() -> list[DoctorCheck]:
    """Say where spans go, and flag an OTLP protocol this exporter does not speak."""
    endpoint = next((name for name in _ENDPOINTS if os.environ.get(name, "").strip()), None)
    if endpoint is None:
        return [
            DoctorCheck(
                name="otel.export",
                status="ok",
                message="no OTLP endpoint set: spans go to the application's global tracer "
                "provider if it set one, else nowhere; set OTEL_EXPORTER_OTLP_ENDPOINT to "
                "export them over OTLP/HTTP",
            )
        ]
    protocol = next((os.environ[n] for n in _PROTOCOLS if os.environ.get(n, "").strip()), "")
    if protocol.strip().lower() not in ("", "http/protobuf"):
        return [
            DoctorCheck(
                name="otel.export",
                status="warn",
                message=f"{endpoint} is set but the OTLP protocol is {protocol.strip()!r}; "
                "themis-otel exports over http/protobuf (usually port 4318), so point the "
                "endpoint at an OTLP/HTTP receiver",
            )
        ]
    return [
        DoctorCheck(
            name="otel.export",
            status="ok",
            message=f"spans are exported over OTLP/HTTP to the endpoint in {endpoint}",
        )
    ]
