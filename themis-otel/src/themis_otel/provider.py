"""``OTelTracingProvider``: Themis run and stage spans as OpenTelemetry spans."""

from __future__ import annotations

import contextvars
import importlib.metadata
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)
from themis.core.base import content_hash
from themis.core.logs import get_logger

from themis_otel._attributes import (
    GENAI_SPANS,
    genai_attributes,
    genai_usage_attributes,
    themis_attributes,
)
from themis_otel._export import env_tracer_provider
from themis_otel._metrics import StageMetrics

__all__ = ["OTelTracingProvider"]

log = get_logger(__name__)

try:
    _VERSION = importlib.metadata.version("themis-otel")
except importlib.metadata.PackageNotFoundError:  # a source tree without metadata
    _VERSION = "0+unknown"


@dataclass(slots=True, eq=False)
class _SpanHandle:
    """What ``start_span`` hands the runtime: the span plus what ``end_span`` must undo."""

    span: trace.Span
    name: str
    context_token: contextvars.Token[otel_context.Context]
    log_tokens: tuple[contextvars.Token[Any], ...]
    started: float
    exception: BaseException | None = None
    ended: bool = field(default=False)


def _is_configured(provider: trace.TracerProvider) -> bool:
    """Whether someone installed a real tracer provider (not the API's proxy or no-op)."""
    return not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # a broken __str__ still gets its type named
        message = ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class OTelTracingProvider:
    """A ``TracingProvider`` that nests Themis spans in the current OpenTelemetry context.

    ``tracer_provider`` defaults to the global one; when that is unset and an
    ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is, spans are exported over OTLP/HTTP.
    ``meter_provider`` (default: the global one) receives the stage metrics.
    """

    component_id = "otel/tracer"
    version = "1.0"

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        tracer_name: str = "themis",
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._given = tracer_provider
        self._tracer_name = tracer_name
        self._meter_provider = meter_provider
        # Resolved on first use, so a global provider installed after construction still counts.
        self._provider: trace.TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        self._metrics: StageMetrics | None = None
        self._lock = threading.Lock()
        # structlog's own context variables behind ``trace_id`` and ``span_id`` (found on
        # the first span), and the last trace id in hex: every span binds them for the logs.
        self._log_vars: tuple[contextvars.ContextVar[Any], contextvars.ContextVar[Any]] | None = (
            None
        )
        self._trace_hex: tuple[int, str] = (0, "")

    def fingerprint(self) -> str:
        """Hash of the constructor parameters that change what is emitted."""
        return content_hash({"component_id": self.component_id, "tracer_name": self._tracer_name})

    @property
    def tracer_provider(self) -> trace.TracerProvider:
        """The provider spans go to: the given one, the global one, or one built from the env."""
        self._resolve()
        assert self._provider is not None
        return self._provider

    def _resolve(self) -> trace.Tracer:
        tracer = self._tracer
        if tracer is not None:
            return tracer
        with self._lock:
            if self._tracer is None:
                provider = self._given
                if provider is None:
                    provider = trace.get_tracer_provider()
                    if not _is_configured(provider):
                        provider = env_tracer_provider() or provider
                self._provider = provider
                self._metrics = StageMetrics(self._meter_provider, self._tracer_name, _VERSION)
                self._tracer = provider.get_tracer(self._tracer_name, _VERSION)
            return self._tracer

    def start_span(self, name: str, attributes: dict[str, object]) -> object:
        """Start ``name`` as a child of the current context and make it current for this task."""
        tracer = self._tracer or self._resolve()
        given: Mapping[str, object] = (
            attributes if type(attributes) is dict or isinstance(attributes, Mapping) else {}
        )
        mapped = themis_attributes(given)
        if name in GENAI_SPANS:
            mapped.update(genai_attributes(name, given))
        # INTERNAL, not CLIENT: the span wraps a component call; a model client's own
        # instrumentation, if any, adds the CLIENT span beneath it.
        span = tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=mapped)
        context_token = otel_context.attach(trace.set_span_in_context(span))
        span_context = span.get_span_context()
        log_tokens: tuple[contextvars.Token[Any], ...] = ()
        if span_context.is_valid:
            log_tokens = self._bind_log_ids(span_context.trace_id, span_context.span_id)
        return _SpanHandle(span, name, context_token, log_tokens, time.perf_counter())

    def _bind_log_ids(self, trace_id: int, span_id: int) -> tuple[contextvars.Token[Any], ...]:
        """Bind ``trace_id`` and ``span_id`` for structlog; the tokens that undo it.

        Same effect as ``structlog.contextvars.bind_contextvars``, which is what finds the two
        variables on the first span; after that they are set directly, and ``trace_id`` only
        when its value changes (a stage span's trace is its run's, already bound).
        """
        trace_hex = self._trace_hex
        if trace_hex[0] != trace_id:
            trace_hex = self._trace_hex = (trace_id, format(trace_id, "032x"))
        span_hex = format(span_id, "016x")
        log_vars = self._log_vars
        if log_vars is None:
            tokens = structlog.contextvars.bind_contextvars(trace_id=trace_hex[1], span_id=span_hex)
            self._log_vars = (tokens["trace_id"].var, tokens["span_id"].var)
            return (tokens["trace_id"], tokens["span_id"])
        trace_var, span_var = log_vars
        if trace_var.get(None) == trace_hex[1]:
            return (span_var.set(span_hex),)
        return (trace_var.set(trace_hex[1]), span_var.set(span_hex))

    def record_exception(self, span: object, exc: BaseException) -> None:
        """Add an ``exception`` event to ``span``; its type becomes the error status later."""
        if not isinstance(span, _SpanHandle) or not isinstance(exc, BaseException):
            log.warning("otel.record_exception_ignored", span_type=type(span).__name__)
            return
        span.exception = exc
        if not span.ended:
            span.span.record_exception(exc)

    def set_attributes(self, span: object, attributes: dict[str, object]) -> None:
        """Add attributes (token usage among them) to a span that is still open."""
        if not isinstance(span, _SpanHandle) or not isinstance(attributes, Mapping):
            log.warning("otel.set_attributes_ignored", span_type=type(span).__name__)
            return
        if span.ended:
            return
        mapped = themis_attributes(attributes)
        if span.name in GENAI_SPANS:
            mapped.update(genai_attributes(span.name, attributes))
            mapped.update(genai_usage_attributes(attributes))
        span.span.set_attributes(mapped)

    def end_span(self, span: object, status: str) -> None:
        """End ``span`` as ``"ok"`` or ``"error"``, and restore the context it replaced.

        Any other status string ends the span with status UNSET and a warning.
        """
        if not isinstance(span, _SpanHandle):
            log.warning("otel.end_span_ignored", span_type=type(span).__name__)
            return
        if span.ended:
            log.debug("otel.span_already_ended", span=span.name)
            return
        span.ended = True
        otel_span = span.span
        if status == "error":
            outcome = "error"
            exc = span.exception
            otel_span.set_attribute("error.type", _error_type(exc) if exc else "_OTHER")
            otel_span.set_status(Status(StatusCode.ERROR, _describe(exc) if exc else None))
        elif status == "ok":
            # Left UNSET: OTel reserves OK for operators; themis.status says what happened.
            outcome = "ok"
        else:
            outcome = "other"
            log.warning("otel.unknown_status", span=span.name, status=str(status)[:64])
        otel_span.set_attribute(
            "themis.status", outcome if outcome != "other" else str(status)[:64]
        )
        otel_span.end()
        if span.log_tokens:
            try:
                for token in span.log_tokens:
                    token.var.reset(token)
            except (ValueError, RuntimeError):  # ended outside the task that started it
                log.debug("otel.log_context_not_restored", span=span.name)
        # Never raises: OTel logs a detach from a foreign context instead.
        otel_context.detach(span.context_token)
        if self._metrics is not None:
            self._metrics.record(span.name, outcome, time.perf_counter() - span.started)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every ended span now; ``True`` when there was nothing to flush or it worked."""
        self._resolve()
        flush = getattr(self._provider, "force_flush", None)
        if flush is None:
            return True
        return bool(flush(timeout_millis))
