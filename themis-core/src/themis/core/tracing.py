"""The default tracing provider, which records nothing (the core never imports OpenTelemetry)."""

from __future__ import annotations

from themis.core.base import content_hash

__all__ = ["NoOpTracingProvider"]


class NoOpTracingProvider:
    """A ``TracingProvider`` whose spans are the string ``"noop"`` and cost nothing."""

    component_id = "core/noop"
    version = "1.0"

    def fingerprint(self) -> str:
        """Constant: the provider has no parameters."""
        return content_hash({"component_id": self.component_id})

    def start_span(self, name: str, attributes: dict[str, object]) -> object:
        """Return the span ``"noop"``."""
        return "noop"

    def end_span(self, span: object, status: str) -> None:
        """Do nothing."""
