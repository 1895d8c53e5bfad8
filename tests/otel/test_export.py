"""Zero-config export: OTLP/HTTP to a real receiver on 127.0.0.1 when the OTEL_* env asks for it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from themis_otel import OTelTracingProvider

Drive = Any  # conftest's drive_run fixture: (provider) -> DrivenRun
Receiver = Any  # conftest's OtlpReceiver


def attribute(span: Any, key: str) -> Any:
    for item in span.attributes:
        if item.key == key:
            return getattr(item.value, item.value.WhichOneof("value"))
    raise KeyError(key)


def export_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("OtelBatch"))


def test_otlp_endpoint_env_exports_every_span_over_http(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: Receiver, drive_run: Drive
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    provider = OTelTracingProvider()
    shape = drive_run(provider)
    assert provider.force_flush() is True

    spans = otlp_receiver.spans()
    assert set(otlp_receiver.paths) == {"/v1/traces"}
    names = sorted(span.name for span in spans)
    expected = ["run"] + ["generation", "reduction", "parse"] * shape.cases
    expected += ["score"] * (shape.cases - 1)
    assert names == sorted(expected)
    assert len({span.trace_id for span in spans}) == 1
    run = next(span for span in spans if span.name == "run")
    assert run.parent_span_id == b""
    assert attribute(run, "themis.run_id") == shape.run_id
    assert {span.parent_span_id for span in spans if span.name != "run"} == {run.span_id}
    failing = [span for span in spans if span.status.code == span.status.STATUS_CODE_ERROR]
    assert sorted(span.name for span in failing) == ["parse", "run"]
    parse = next(span for span in failing if span.name == "parse")
    assert [event.name for event in parse.events] == ["exception"]
    assert otlp_receiver.resource_attributes()["service.name"] == "themis"


def test_traces_endpoint_env_is_used_as_the_full_url(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: Receiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{otlp_receiver.endpoint}/custom")
    provider = OTelTracingProvider()
    provider.end_span(provider.start_span("run", {"run_id": "r"}), "ok")
    assert provider.force_flush() is True
    assert otlp_receiver.paths == ["/custom"]
    assert [span.name for span in otlp_receiver.spans()] == ["run"]


def test_resource_comes_from_the_standard_env(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: Receiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nightly-evals")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci")
    provider = OTelTracingProvider()
    provider.end_span(provider.start_span("run", {"run_id": "r"}), "ok")
    provider.force_flush()
    resource = otlp_receiver.resource_attributes()
    assert resource["service.name"] == "nightly-evals"
    assert resource["deployment.environment"] == "ci"


def test_instances_share_one_exporting_provider_per_environment(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: Receiver
) -> None:
    """A provider per run must not leak a batch-export thread per run."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    first = OTelTracingProvider().tracer_provider
    threads = export_threads()
    second = OTelTracingProvider().tracer_provider
    assert isinstance(first, TracerProvider) and second is first
    assert export_threads() == threads


def test_without_an_endpoint_no_exporter_is_installed_and_nothing_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Other OTEL_* settings alone do not ask for export.
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nightly-evals")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-token=abc")
    threads = export_threads()
    provider = OTelTracingProvider()
    span = provider.start_span("run", {"run_id": "r"})
    recording = getattr(span, "span").is_recording()  # noqa: B009
    provider.end_span(span, "ok")
    assert provider.force_flush() is True
    assert not isinstance(provider.tracer_provider, TracerProvider)
    assert provider.tracer_provider is trace.get_tracer_provider()
    assert recording is False
    assert export_threads() == threads


@pytest.mark.parametrize(
    ("variable", "value"), [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")]
)
def test_env_that_disables_tracing_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: Receiver, variable: str, value: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv(variable, value)
    provider = OTelTracingProvider()
    provider.end_span(provider.start_span("run", {"run_id": "r"}), "ok")
    provider.force_flush()
    assert not isinstance(provider.tracer_provider, TracerProvider)
    assert otlp_receiver.requests == []


def test_a_given_tracer_provider_wins_over_the_env(
    monkeypatch: pytest.MonkeyPatch,
    otlp_receiver: Receiver,
    tracer_provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    provider = OTelTracingProvider(tracer_provider)
    provider.end_span(provider.start_span("run", {"run_id": "r"}), "ok")
    assert provider.force_flush() is True
    assert provider.tracer_provider is tracer_provider
    assert [span.name for span in exporter.get_finished_spans()] == ["run"]
    assert otlp_receiver.requests == []


_GLOBAL_PROVIDER_SCRIPT = textwrap.dedent(
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from themis_otel import OTelTracingProvider

    exporter = InMemorySpanExporter()
    app_provider = TracerProvider()
    app_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(app_provider)

    provider = OTelTracingProvider()
    provider.end_span(provider.start_span("run", {"run_id": "r"}), "ok")
    provider.force_flush()
    assert provider.tracer_provider is app_provider
    print(",".join(span.name for span in exporter.get_finished_spans()))
    """
)


def test_an_application_global_provider_wins_over_the_env(otlp_receiver: Receiver) -> None:
    """Run in a child process: the global provider can be set only once per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_receiver.endpoint
    done = subprocess.run(
        [sys.executable, "-c", _GLOBAL_PROVIDER_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "run"
    assert otlp_receiver.requests == []
