"""Stage metrics derived from spans, through the OpenTelemetry metrics API."""

from __future__ import annotations

from opentelemetry import metrics

__all__ = ["StageMetrics"]

# Seconds, doubling from 10 ms to ~80 s: the range of a cheap parser up to a slow model call
# (the same boundaries the GenAI conventions advise for gen_ai.client.operation.duration).
_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))


class StageMetrics:
    """A duration histogram and an outcome counter per span name; no-ops without a provider."""

    def __init__(self, meter_provider: metrics.MeterProvider | None, name: str, version: str):
        # The global provider is a proxy until one is set, so unset means cheap no-op instruments.
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(name, version)
        self._duration = meter.create_histogram(
            "themis.stage.duration",
            unit="s",
            description="Duration of each Themis run and stage span.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._outcomes = meter.create_counter(
            "themis.stage.outcomes",
            unit="{span}",
            description="Themis run and stage spans ended, by outcome (ok, error or other).",
        )

    def record(self, stage: str, outcome: str, seconds: float) -> None:
        """Record one ended span of ``stage``."""
        attributes = {"themis.stage": stage, "themis.status": outcome}
        self._duration.record(seconds, attributes)
        self._outcomes.add(1, attributes)
