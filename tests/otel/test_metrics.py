"""Stage metrics derived from spans, read back through the real SDK's in-memory metric reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import TracerProvider
from themis_otel import OTelTracingProvider

Drive = Any  # conftest's drive_run fixture: (provider) -> DrivenRun


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def collected(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


def by_stage_and_status(metric: Metric) -> dict[tuple[str, str], Any]:
    return {
        (str(point.attributes["themis.stage"]), str(point.attributes["themis.status"])): point
        for point in metric.data.data_points
        if point.attributes is not None
    }


def test_stage_outcomes_are_counted_per_stage_and_status(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    drive_run: Drive,
) -> None:
    shape = drive_run(OTelTracingProvider(tracer_provider, meter_provider=meter_provider))
    points = by_stage_and_status(collected(reader)["themis.stage.outcomes"])
    counts = {key: point.value for key, point in points.items()}
    assert all(isinstance(point, NumberDataPoint) for point in points.values())
    assert counts == {
        ("run", "error"): 1,
        ("generation", "ok"): shape.cases,
        ("reduction", "ok"): shape.cases,
        ("parse", "ok"): shape.cases - 1,
        ("parse", "error"): 1,
        ("score", "ok"): shape.cases - 1,
    }


def test_stage_durations_are_a_histogram_in_seconds(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    drive_run: Drive,
) -> None:
    shape = drive_run(OTelTracingProvider(tracer_provider, meter_provider=meter_provider))
    metric = collected(reader)["themis.stage.duration"]
    assert metric.unit == "s"
    points = by_stage_and_status(metric)
    generation = points[("generation", "ok")]
    assert isinstance(generation, HistogramDataPoint)
    assert generation.count == shape.cases
    # Each generation slept at least 1 ms, and none should take anywhere near a minute.
    assert 0.001 <= generation.min and generation.max < 60
    run = points[("run", "error")]
    assert run.sum >= generation.max
    assert generation.explicit_bounds[0] == pytest.approx(0.01)
