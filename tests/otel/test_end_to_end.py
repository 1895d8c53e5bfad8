"""A real Experiment run traced by OTelTracingProvider into the real SDK's in-memory exporter."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from themis import Experiment
from themis.core import experiment as experiment_module
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.contexts import GenerateContext
from themis.core.errors import NonRetryableError
from themis.core.models import Case, Dataset, GenerationResult
from themis_otel import OTelTracingProvider

CASES = 8


class HostedModel:
    """A live generator that names its provider and model, reports tokens, and fails on c3."""

    component_id = "test/hosted_model"
    version = "1.0"
    provider_key = "acme-cloud"
    model_id = "acme-large-2"

    def fingerprint(self) -> str:
        return "hosted-model"

    async def generate(self, case: Case, ctx: GenerateContext) -> GenerationResult:
        if case.case_id == "c3":
            raise NonRetryableError("model refused c3")
        return GenerationResult(
            candidate_id=ctx.candidate_id or f"{case.case_id}-candidate-0",
            final_output=case.expected_output,
            token_usage={"input_tokens": 7, "output_tokens": 2},
        )


def experiment(*, reducer: str | None = None, samples: int = 1) -> Experiment:
    return Experiment(
        generation=GenerationConfig(
            generator="builtin/demo_generator",
            candidate_policy={"num_samples": samples},
            reducer=reducer,
        ),
        evaluation=EvaluationConfig(
            metrics=["builtin/exact_match"], parsers=["builtin/json_identity"]
        ),
        datasets=[
            Dataset(
                dataset_id="d",
                cases=[Case(case_id=f"c{i}", input=i, expected_output=i) for i in range(CASES)],
            )
        ],
    )


def test_the_root_package_exports_the_experiment_used_here() -> None:
    """The public door, ``from themis import Experiment``, is the runtime's own class."""
    assert Experiment is experiment_module.Experiment


def ancestors(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> list[int]:
    ids = {s.context.span_id: s for s in spans}
    chain: list[int] = []
    parent = span.parent
    while parent is not None:
        chain.append(parent.span_id)
        parent_span = ids.get(parent.span_id)
        parent = parent_span.parent if parent_span is not None else None
    return chain


@pytest.fixture
def traced_run(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> tuple[Any, tuple[ReadableSpan, ...]]:
    result = experiment().run(tracing_provider=OTelTracingProvider(tracer_provider))
    return result, exporter.get_finished_spans()


def test_a_run_exports_one_span_per_stage_under_the_run_span(
    traced_run: tuple[Any, tuple[ReadableSpan, ...]],
) -> None:
    result, spans = traced_run
    # No reducer is configured, so no reduction span: the runtime's pass-through runs no
    # component (API §3.6 opens a reduction span per reducer call).
    names = sorted(span.name for span in spans if span.name != "reduction")
    assert names == sorted(["run"] + ["generation", "parse", "score"] * CASES)
    [run] = [span for span in spans if span.name == "run"]
    assert run.parent is None
    assert (run.attributes or {})["themis.run_id"] == result.run_id
    assert {span.context.trace_id for span in spans} == {run.context.trace_id}
    for span in spans:
        if span is not run:
            assert run.context.span_id in ancestors(span, spans), span.name


def test_a_configured_reducer_gets_a_span_per_case_over_every_candidate(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracing = OTelTracingProvider(tracer_provider)
    result = experiment(reducer="builtin/majority_vote", samples=2).run(tracing_provider=tracing)
    spans = exporter.get_finished_spans()
    counts = {name: sum(1 for s in spans if s.name == name) for name in {s.name for s in spans}}
    assert counts == {
        "run": 1,
        "generation": 2 * CASES,
        "reduction": CASES,
        "parse": CASES,
        "score": CASES,
    }
    [run] = [span for span in spans if span.name == "run"]
    assert (run.attributes or {})["themis.run_id"] == result.run_id
    candidates = {
        (span.attributes or {})["themis.candidate_index"]
        for span in spans
        if span.name == "generation"
    }
    assert candidates == {0, 1}
    assert all(run.context.span_id in ancestors(span, spans) for span in spans if span is not run)


def test_every_stage_span_names_its_case_and_succeeded(
    traced_run: tuple[Any, tuple[ReadableSpan, ...]],
) -> None:
    _, spans = traced_run
    stage_spans = [span for span in spans if span.name != "run"]
    case_ids = {(span.attributes or {})["themis.case_id"] for span in stage_spans}
    assert case_ids == {f"c{i}" for i in range(CASES)}
    assert all(span.status.status_code is not StatusCode.ERROR for span in spans)
    assert all((span.attributes or {})["themis.status"] == "ok" for span in spans)
    scores = [span for span in stage_spans if span.name == "score"]
    assert {(span.attributes or {})["themis.metric_id"] for span in scores} == {
        "builtin/exact_match"
    }
    generations = [span for span in stage_spans if span.name == "generation"]
    assert {(span.attributes or {})["gen_ai.operation.name"] for span in generations} == {
        "generate_content"
    }


def test_run_logs_carry_the_run_spans_trace_id(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The core's own run.started event is correlated with the trace, with no global setup."""
    events: list[dict[str, Any]] = []

    def capture(_logger: object, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        events.append(dict(event_dict))
        raise structlog.DropEvent

    previous = structlog.get_config()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, capture],
        cache_logger_on_first_use=False,
    )
    try:
        result = experiment().run(tracing_provider=OTelTracingProvider(tracer_provider))
    finally:
        structlog.configure(**previous)
    [run] = [span for span in exporter.get_finished_spans() if span.name == "run"]
    [started] = [event for event in events if event["event"] == "run.started"]
    assert started["run_id"] == result.run_id
    assert started["trace_id"] == f"{run.context.trace_id:032x}"
    assert started["span_id"] == f"{run.context.span_id:016x}"


def test_a_failing_generation_is_an_error_span_and_a_model_call_carries_genai_keys(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    run_config = experiment()
    hosted = run_config.model_copy(update={"generation": GenerationConfig(generator=HostedModel())})
    hosted.run(tracing_provider=OTelTracingProvider(tracer_provider))
    spans = exporter.get_finished_spans()
    generations = {
        (span.attributes or {})["themis.case_id"]: span
        for span in spans
        if span.name == "generation"
    }
    failed = generations.pop("c3")
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "themis.core.errors.NonRetryableError"
    [event] = [event for event in failed.events if event.name == "exception"]
    assert "model refused c3" in str((event.attributes or {})["exception.message"])
    ok = generations["c0"]
    attributes = dict(ok.attributes or {})
    assert attributes["gen_ai.request.model"] == "acme-large-2"
    assert attributes["gen_ai.provider.name"] == "acme-cloud"
    assert attributes["gen_ai.usage.input_tokens"] == 7
    assert attributes["gen_ai.usage.output_tokens"] == 2
    [run] = [span for span in spans if span.name == "run"]
    assert run.status.status_code is StatusCode.ERROR  # partial_failure
    assert not [
        s
        for s in spans
        if (s.attributes or {}).get("themis.case_id") == "c3" and s.name != "generation"
    ]
