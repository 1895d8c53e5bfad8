"""OpenTelemetry tracing for Themis runs: ``OTelTracingProvider`` and the ``otel`` plugin.

``OTelTracingProvider`` is resolved lazily so that loading the plugin (which imports this
package first) does not import OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from themis_otel import plugin

if TYPE_CHECKING:
    from themis_otel.provider import OTelTracingProvider

__all__ = ["OTelTracingProvider", "plugin"]


def __getattr__(name: str) -> Any:
    if name == "OTelTracingProvider":
        from themis_otel.provider import OTelTracingProvider

        globals()[name] = OTelTracingProvider
        return OTelTracingProvider
    raise AttributeError(f"module 'themis_otel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
