"""structlog events carry the current span's trace_id and span_id, with no global setup."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from themis_otel import OTelTracingProvider


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    """structlog set up as an app would (merge_contextvars first), capturing every event."""
    events: list[dict[str, Any]] = []

    def capture(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        events.append(dict(event_dict))
        raise structlog.DropEvent

    previous = structlog.get_config()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    yield events
    structlog.contextvars.clear_contextvars()
    structlog.configure(**previous)


@pytest.fixture
def provider(tracer_provider: TracerProvider) -> OTelTracingProvider:
    return OTelTracingProvider(tracer_provider)


def ids_of(span: object) -> tuple[str, str]:
    context = getattr(span, "span").get_span_context()  # noqa: B009
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def test_events_inside_a_span_carry_its_trace_and_span_ids(
    provider: OTelTracingProvider, captured: list[dict[str, Any]]
) -> None:
    log = structlog.get_logger("app")
    run = provider.start_span("run", {"run_id": "r"})
    log.info("inside")
    provider.end_span(run, "ok")
    log.info("after")
    trace_id, span_id = ids_of(run)
    assert len(trace_id) == 32 and len(span_id) == 16
    assert (captured[0]["trace_id"], captured[0]["span_id"]) == (trace_id, span_id)
    assert "trace_id" not in captured[1] and "span_id" not in captured[1]


def test_ending_a_child_span_restores_the_parents_ids(
    provider: OTelTracingProvider, captured: list[dict[str, Any]]
) -> None:
    log = structlog.get_logger("app")
    run = provider.start_span("run", {"run_id": "r"})
    parse = provider.start_span("parse", {"case_id": "c1"})
    log.info("in-parse")
    provider.end_span(parse, "ok")
    log.info("back-in-run")
    provider.end_span(run, "ok")
    assert captured[0]["span_id"] == ids_of(parse)[1]
    assert captured[1]["span_id"] == ids_of(run)[1]
    assert captured[0]["trace_id"] == captured[1]["trace_id"] == ids_of(run)[0]


def test_values_bound_before_the_span_are_restored_and_run_id_is_untouched(
    provider: OTelTracingProvider, captured: list[dict[str, Any]]
) -> None:
    structlog.contextvars.bind_contextvars(run_id="r1", trace_id="from-the-app")
    run = provider.start_span("run", {"run_id": "r1"})
    provider.end_span(run, "ok")
    structlog.get_logger("app").info("after")
    assert captured[0]["trace_id"] == "from-the-app"
    assert captured[0]["run_id"] == "r1"
    assert "span_id" not in captured[0]


def test_a_second_run_logs_its_own_trace_id(
    provider: OTelTracingProvider, captured: list[dict[str, Any]]
) -> None:
    log = structlog.get_logger("app")
    for run_id in ("r1", "r2"):
        run = provider.start_span("run", {"run_id": run_id})
        parse = provider.start_span("parse", {"case_id": "c1"})
        log.info("in-parse")
        provider.end_span(parse, "ok")
        provider.end_span(run, "ok")
        assert captured[-1]["trace_id"] == ids_of(run)[0]
        assert captured[-1]["span_id"] == ids_of(parse)[1]
    assert captured[0]["trace_id"] != captured[1]["trace_id"]


def test_concurrent_case_tasks_each_log_their_own_span(
    provider: OTelTracingProvider, captured: list[dict[str, Any]], exporter: InMemorySpanExporter
) -> None:
    log = structlog.get_logger("app")

    async def case_task(case: int) -> None:
        span = provider.start_span("parse", {"case_id": f"c{case}"})
        await anyio.sleep(0.001 * (8 - case))  # every task's span is open at once
        log.info("parsing", case_id=f"c{case}")
        provider.end_span(span, "ok")

    async def body() -> None:
        run = provider.start_span("run", {"run_id": "r"})
        async with anyio.create_task_group() as cases:
            for case in range(8):
                cases.start_soon(case_task, case)
        provider.end_span(run, "ok")

    anyio.run(body)
    exported = {
        (span.attributes or {})["themis.case_id"]: f"{span.context.span_id:016x}"
        for span in exporter.get_finished_spans()
        if span.name == "parse"
    }
    logged = {event["case_id"]: event["span_id"] for event in captured}
    assert logged == exported and len(set(logged.values())) == 8


def test_no_ids_are_bound_when_spans_are_not_recorded(captured: list[dict[str, Any]]) -> None:
    """With no tracer provider configured anywhere, there are no ids worth logging."""
    provider = OTelTracingProvider()
    run = provider.start_span("run", {"run_id": "r"})
    structlog.get_logger("app").info("inside")
    provider.end_span(run, "ok")
    assert "trace_id" not in captured[0] and "span_id" not in captured[0]
