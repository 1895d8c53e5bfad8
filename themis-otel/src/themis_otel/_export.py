"""Zero-config export: an SDK tracer provider built from the standard ``OTEL_*`` variables."""

from __future__ import annotations

import os
import threading

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from themis.core.logs import get_logger

__all__ = ["DEFAULT_SERVICE_NAME", "ENDPOINT_VARIABLES", "env_tracer_provider"]

log = get_logger(__name__)

DEFAULT_SERVICE_NAME = "themis"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

# One provider per distinct OTEL_* environment, shared by every OTelTracingProvider in the
# process: each run building its own would leak a batch-export thread per run.
_BUILT: dict[tuple[tuple[str, str], ...], TracerProvider] = {}
_LOCK = threading.Lock()


def _env_flag(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def _resource() -> Resource:
    """The resource the standard variables describe, named "themis" unless they name it."""
    detected = OTELResourceDetector().detect()
    if detected.attributes.get(SERVICE_NAME):
        return Resource.create()
    return Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME})


def env_tracer_provider() -> TracerProvider | None:
    """The OTLP/HTTP-exporting provider the environment asks for, or ``None`` when it asks none."""
    if _env_flag("OTEL_SDK_DISABLED") == "true" or _env_flag("OTEL_TRACES_EXPORTER") == "none":
        return None
    configured = [name for name in ENDPOINT_VARIABLES if os.environ.get(name, "").strip()]
    if not configured:
        return None
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("OTEL_")))
    with _LOCK:
        provider = _BUILT.get(key)
        if provider is None:
            provider = TracerProvider(resource=_resource())
            # The exporter reads endpoint, headers, timeout and compression from the env.
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            _BUILT[key] = provider
            log.info(
                "otel.exporter_configured",
                exporter="otlp_http",
                endpoint_variables=configured,
                service_name=provider.resource.attributes.get(SERVICE_NAME),
            )
    return provider
