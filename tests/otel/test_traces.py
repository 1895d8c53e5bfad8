"""OTelTracingProvider against the real SDK with an in-memory exporter."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from themis_otel import OTelTracingProvider

Drive = Any  # conftest's drive_run fixture: (provider) -> DrivenRun


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def reaches(span: ReadableSpan, root: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> bool:
    """Whether following ``span``'s parents leads to ``root``."""
    ids = {s.context.span_id: s for s in spans}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == root.context.span_id:
            return True
        current = ids.get(current.parent.span_id)
    return False


def single(spans: list[ReadableSpan]) -> ReadableSpan:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


@pytest.fixture
def provider(tracer_provider: TracerProvider) -> OTelTracingProvider:
    return OTelTracingProvider(tracer_provider)


def test_concurrent_cases_form_one_trace_under_the_run_span(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter, drive_run: Drive
) -> None:
    shape = drive_run(provider)
    spans = exporter.get_finished_spans()
    run = single(by_name(spans, "run"))
    assert {span.context.trace_id for span in spans} == {run.context.trace_id}
    stage_spans = [span for span in spans if span is not run]
    assert stage_spans and all(reaches(span, run, spans) for span in stage_spans)
    counts = {name: len(by_name(spans, name)) for name in ("generation", "reduction", "parse")}
    assert counts == {"generation": shape.cases, "reduction": shape.cases, "parse": shape.cases}
    assert len(by_name(spans, "score")) == shape.cases - 1


def test_stage_spans_are_children_of_the_run_span_not_of_each_other(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter, drive_run: Drive
) -> None:
    """The runtime opens no case span, so every stage span's parent is the run span itself."""
    drive_run(provider)
    spans = exporter.get_finished_spans()
    run = single(by_name(spans, "run"))
    parents = {span.parent.span_id for span in spans if span is not run and span.parent}
    assert parents == {run.context.span_id}


def test_each_case_spans_carry_their_own_case_id(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter, drive_run: Drive
) -> None:
    shape = drive_run(provider)
    spans = exporter.get_finished_spans()
    for case in range(shape.cases):
        case_id = f"c{case}"
        names = sorted(
            s.name for s in spans if (s.attributes or {}).get("themis.case_id") == case_id
        )
        expected = ["generation", "parse", "reduction"]
        if case_id != shape.failing_case_id:
            expected.append("score")
        assert names == sorted(expected), case_id


def test_failing_stage_span_is_error_with_an_exception_event(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter, drive_run: Drive
) -> None:
    shape = drive_run(provider)
    spans = exporter.get_finished_spans()
    errors = [s for s in spans if s.status.status_code is StatusCode.ERROR and s.name != "run"]
    failing = single(errors)
    assert failing.name == "parse"
    assert (failing.attributes or {})["themis.case_id"] == shape.failing_case_id
    assert failing.status.description == f"ValueError: case {shape.failing_case_id}: not JSON"
    assert (failing.attributes or {})["error.type"] == "ValueError"
    assert (failing.attributes or {})["themis.status"] == "error"
    event = single([e for e in failing.events if e.name == "exception"])  # type: ignore[arg-type]
    assert (event.attributes or {})["exception.type"] == "ValueError"
    assert "not JSON" in str((event.attributes or {})["exception.message"])


def test_run_span_is_the_root_and_carries_run_attributes(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter, drive_run: Drive
) -> None:
    shape = drive_run(provider)
    run = single(by_name(exporter.get_finished_spans(), "run"))
    assert run.parent is None
    assert dict(run.attributes or {}) == {
        "themis.run_id": shape.run_id,
        "themis.mode": "run",
        "themis.until_stage": "score",
        "themis.status": "error",
        "error.type": "_OTHER",
    }
    assert run.status.status_code is StatusCode.ERROR


def test_ok_spans_leave_the_status_unset_and_say_ok(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    """OTel reserves status OK for operators; themis.status carries the outcome instead."""
    provider.end_span(provider.start_span("reduction", {"case_id": "c1"}), "ok")
    span = single(list(exporter.get_finished_spans()))
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["themis.status"] == "ok"


def test_error_without_a_recorded_exception_still_ends_error(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    provider.end_span(provider.start_span("parse", {"case_id": "c1"}), "error")
    span = single(list(exporter.get_finished_spans()))
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "_OTHER"
    assert not span.events


def test_error_type_of_a_non_builtin_exception_is_fully_qualified(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    span = provider.start_span("generation", {"case_id": "c1"})
    provider.record_exception(span, anyio.BrokenResourceError("gone"))
    provider.end_span(span, "error")
    ended = single(list(exporter.get_finished_spans()))
    assert (ended.attributes or {})["error.type"] == "anyio.BrokenResourceError"


def test_generation_span_carries_the_genai_conventions(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter, drive_run: Drive
) -> None:
    drive_run(provider)
    span = next(
        s
        for s in by_name(exporter.get_finished_spans(), "generation")
        if (s.attributes or {})["themis.case_id"] == "c2"
    )
    attributes = dict(span.attributes or {})
    assert {k: v for k, v in attributes.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.request.model": "demo-model",
        "gen_ai.provider.name": "demo",
        "gen_ai.system": "demo",
        "gen_ai.request.seed": 1002,
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 2,
    }
    assert attributes["themis.input_tokens"] == 12
    assert attributes["themis.model_id"] == "demo-model"
    assert attributes["themis.candidate_index"] == 0


def test_judge_span_is_a_genai_workflow_named_for_its_metric(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    span = provider.start_span(
        "judge",
        {"case_id": "c1", "metric_id": "builtin/llm_rubric", "model_id": "judge-1"},
    )
    provider.end_span(span, "ok")
    attributes = dict(single(list(exporter.get_finished_spans())).attributes or {})
    assert attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert attributes["gen_ai.workflow.name"] == "builtin/llm_rubric"
    assert attributes["gen_ai.request.model"] == "judge-1"
    assert "gen_ai.system" not in attributes  # no provider_key was given


def test_stages_that_call_no_model_get_no_genai_keys(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter, drive_run: Drive
) -> None:
    drive_run(provider)
    for span in exporter.get_finished_spans():
        if span.name not in ("generation", "judge"):
            assert not [k for k in span.attributes or {} if k.startswith("gen_ai.")], span.name


def test_attribute_values_are_made_safe_for_export(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    """None is dropped, homogeneous lists kept, huge ints and other objects stringified."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    span = provider.start_span(
        "score",
        {
            "case_id": "c1",
            "seed": None,
            "tags": ["a", "b"],
            "mixed": [1, "a"],
            "params": {"b": 2, "a": 1},
            "huge": 2**70,
            "hostile": Unprintable(),
            "blob": b"bytes",
            "long": {"text": "x" * 10_000},
        },
    )
    provider.end_span(span, "ok")
    attributes = dict(single(list(exporter.get_finished_spans())).attributes or {})
    assert "themis.seed" not in attributes
    assert "themis.hostile" not in attributes
    assert attributes["themis.tags"] == ("a", "b")
    assert attributes["themis.mixed"] == '[1, "a"]'
    assert attributes["themis.params"] == '{"a": 1, "b": 2}'
    assert attributes["themis.huge"] == str(2**70)
    assert attributes["themis.blob"] == "bytes"
    # Stringified values are capped (plain strings are left to OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT).
    assert str(attributes["themis.long"]).endswith("x…")
    assert len(str(attributes["themis.long"])) == 4097


def test_scalar_attribute_values_keep_their_types(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    """bool stays bool, int64 ints stay ints, a StrEnum becomes its value, an empty key goes."""

    class Mode(StrEnum):
        FRESH = "fresh"

    span = provider.start_span(
        "score",
        {
            "flag": True,
            "ratio": 0.5,
            "lowest": -(2**63),
            "too_low": -(2**63) - 1,
            "mode": Mode.FRESH,
            "": "nameless",
        },
    )
    provider.end_span(span, "ok")
    attributes = dict(single(list(exporter.get_finished_spans())).attributes or {})
    assert attributes["themis.flag"] is True
    assert attributes["themis.ratio"] == 0.5
    assert attributes["themis.lowest"] == -(2**63)
    assert attributes["themis.too_low"] == str(-(2**63) - 1)
    assert attributes["themis.mode"] == "fresh" and type(attributes["themis.mode"]) is str
    assert "themis." not in attributes and "nameless" not in attributes.values()


def test_run_span_nests_under_the_callers_current_span(
    provider: OTelTracingProvider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    with tracer_provider.get_tracer("app").start_as_current_span("nightly-eval") as outer:
        provider.end_span(provider.start_span("run", {"run_id": "r"}), "ok")
    run = single(by_name(exporter.get_finished_spans(), "run"))
    assert run.parent is not None and run.parent.span_id == outer.get_span_context().span_id


def test_end_span_restores_the_context_it_replaced(provider: OTelTracingProvider) -> None:
    before = trace.get_current_span()
    run = provider.start_span("run", {"run_id": "r"})
    stage = provider.start_span("parse", {"case_id": "c1"})
    assert trace.get_current_span() is getattr(stage, "span")  # noqa: B009
    provider.end_span(stage, "ok")
    assert trace.get_current_span() is getattr(run, "span")  # noqa: B009
    provider.end_span(run, "ok")
    assert trace.get_current_span() is before


def test_unknown_status_ends_the_span_unset_and_names_the_status(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    provider.end_span(provider.start_span("parse", {"case_id": "c1"}), "cancelled")
    span = single(list(exporter.get_finished_spans()))
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["themis.status"] == "cancelled"


def test_ending_a_span_twice_exports_it_once(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    span = provider.start_span("parse", {"case_id": "c1"})
    provider.end_span(span, "ok")
    provider.end_span(span, "error")
    ended = single(list(exporter.get_finished_spans()))
    assert ended.status.status_code is StatusCode.UNSET


def test_a_span_from_another_provider_is_ignored(
    provider: OTelTracingProvider, exporter: InMemorySpanExporter
) -> None:
    provider.end_span("noop", "ok")
    provider.record_exception("noop", ValueError("x"))
    provider.set_attributes("noop", {"input_tokens": 1})
    assert exporter.get_finished_spans() == ()


def test_tracer_name_is_the_instrumentation_scope(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    provider = OTelTracingProvider(tracer_provider, tracer_name="nightly")
    provider.end_span(provider.start_span("run", {"run_id": "r"}), "ok")
    span = single(list(exporter.get_finished_spans()))
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "nightly"


def test_identity_triple_names_the_registered_component(
    tracer_provider: TracerProvider,
) -> None:
    provider = OTelTracingProvider(tracer_provider)
    assert (provider.component_id, provider.version) == ("otel/tracer", "1.0")
    assert provider.fingerprint() == OTelTracingProvider().fingerprint()
    assert provider.fingerprint() != OTelTracingProvider(tracer_name="other").fingerprint()
