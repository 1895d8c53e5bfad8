"""Fixtures for the themis-otel tests: the real SDK, and a real OTLP/HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from themis.core.protocols import TracingProvider

RUN_ID = "f" * 64
CASES = 8
FAILING_CASE = 3


@pytest.fixture(autouse=True)
def _no_ambient_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment with no OTEL_* settings and no proxy for 127.0.0.1."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """An SDK provider exporting synchronously to ``exporter``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@dataclass
class OtlpReceiver:
    """What a real OTLP/HTTP receiver was sent."""

    endpoint: str
    paths: list[str] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)

    def spans(self) -> list[ProtoSpan]:
        return [
            span
            for request in self.requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def resource_attributes(self) -> dict[str, str]:
        return {
            attribute.key: attribute.value.string_value
            for request in self.requests
            for resource_spans in request.resource_spans
            for attribute in resource_spans.resource.attributes
        }


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A stdlib HTTP server on 127.0.0.1:<free port> that decodes POST /v1/traces."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = OtlpReceiver(endpoint=f"http://127.0.0.1:{server.server_address[1]}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            with lock:
                receiver.paths.append(self.path)
                receiver.requests.append(request)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output clean

    server.RequestHandlerClass = Handler
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="otlp-receiver",
        daemon=True,
    )
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
    thread.join()


async def run_like_the_runtime(provider: TracingProvider) -> None:
    """A run span, then CASES concurrent case tasks opening their stage spans the way the runtime
    does; case FAILING_CASE fails at parse and so never scores, and the run ends "error"."""

    def optional(name: str) -> Callable[..., object] | None:
        method = getattr(provider, name, None)
        return method if callable(method) else None

    async def case_task(case: int) -> None:
        common: dict[str, object] = {"case_id": f"c{case}", "dataset_id": "d", "case_key": "k"}
        generation = provider.start_span(
            "generation",
            {
                **common,
                "candidate_index": 0,
                "component_id": "builtin/demo_generator",
                "seed": 1000 + case,
                "provider_key": "demo",
                "model_id": "demo-model",
            },
        )
        await anyio.sleep(0.001 * (CASES - case))  # finish out of start order
        set_attributes = optional("set_attributes")
        if set_attributes is not None:
            set_attributes(generation, {"input_tokens": 10 + case, "output_tokens": case})
        provider.end_span(generation, "ok")
        for stage in ("reduction", "parse", "score"):
            attributes = (
                dict(common, metric_id="builtin/exact_match") if stage == "score" else common
            )
            span = provider.start_span(stage, dict(attributes))
            await anyio.sleep(0)
            if stage == "parse" and case == FAILING_CASE:
                record = optional("record_exception")
                try:
                    raise ValueError(f"case c{case}: not JSON")
                except ValueError as exc:
                    if record is not None:
                        record(span, exc)
                provider.end_span(span, "error")
                return
            provider.end_span(span, "ok")

    run = provider.start_span("run", {"run_id": RUN_ID, "mode": "run", "until_stage": "score"})
    async with anyio.create_task_group() as cases:
        for case in range(CASES):
            cases.start_soon(case_task, case)
    provider.end_span(run, "error")  # partial_failure ends the run span "error"


@dataclass(frozen=True)
class DrivenRun:
    """The shape of the run ``drive_run`` simulated, for assertions."""

    run_id: str = RUN_ID
    cases: int = CASES
    failing_case_id: str = f"c{FAILING_CASE}"


@pytest.fixture
def drive_run() -> Callable[[TracingProvider], DrivenRun]:
    """Drive a provider through ``run_like_the_runtime`` on a fresh event loop."""

    def drive(provider: TracingProvider) -> DrivenRun:
        body: Callable[[], Awaitable[None]] = lambda: run_like_the_runtime(provider)  # noqa: E731
        anyio.run(body)
        return DrivenRun()

    return drive
