"""P8: tracing overhead, the P1 run traced by ``OTelTracingProvider`` into a real SDK
``TracerProvider`` with a ``BatchSpanProcessor`` (``--variant otel``), or not traced at all
(``--variant untraced``, the baseline). ``run.py`` puts the two side by side and adds
``overhead_ratio`` = traced wall / untraced wall.

The exporter is the SDK's machinery up to the wire: the batch processor's queue and worker
thread hand batches of finished ``ReadableSpan`` objects to ``CountingSpanExporter``, which
reads each span's name, trace and parent, and sends nothing anywhere. The timed wall
includes ``force_flush()`` after the run, so every span has been exported when the clock
stops.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import _common as common

VARIANTS = ("otel", "untraced")


def counting_exporter() -> Any:
    """A ``SpanExporter`` that tallies what it is given: names, traces and parents."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingSpanExporter(SpanExporter):
        def __init__(self) -> None:
            self._lock = threading.Lock()
            self.reset()

        def reset(self) -> None:
            with self._lock:
                self.names: Counter[str] = Counter()
                self.traces: set[int] = set()
                self.parents: Counter[int | None] = Counter()
                self.roots: list[tuple[int, int]] = []
                self.batches = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with self._lock:
                self.batches += 1
                for span in spans:
                    context = span.context
                    self.names[span.name] += 1
                    self.traces.add(context.trace_id)
                    parent = span.parent
                    self.parents[parent.span_id if parent is not None else None] += 1
                    if parent is None:
                        self.roots.append((context.trace_id, context.span_id))
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    return CountingSpanExporter()


def span_check(exporter: Any, n: int, candidates: int, metrics: int) -> dict[str, Any]:
    """What was exported, and whether it is exactly one run's trace: a run span and, under
    it, a ``generation`` span per candidate and a ``score`` span per metric of each case."""
    expected = {"run": 1, "generation": n * candidates, "score": n * metrics}
    exported = sum(exporter.names.values())
    roots = exporter.roots
    nested = False
    if len(roots) == 1:
        trace_id, run_span_id = roots[0]
        children = exporter.parents.get(run_span_id, 0)
        nested = exporter.traces == {trace_id} and children == exported - 1
    return {
        "spans_exported": exported,
        "spans_expected": sum(expected.values()),
        "spans_by_name": dict(sorted(exporter.names.items())),
        "export_batches": exporter.batches,
        "spans_ok": dict(exporter.names) == expected and nested,
    }


def main() -> None:
    args = common.arguments(__doc__ or "", n=10_000, variant="otel")
    if args.variant not in VARIANTS:
        raise SystemExit(f"--variant must be one of {', '.join(VARIANTS)}, got {args.variant!r}")
    experiment = common.experiment(args.n, runtime=common.runtime_settings(args))
    experiment.compile()  # not timed: the scenario measures the run call only
    common.warm_up()
    from themis.core.stores import InMemoryRunStore

    facts: dict[str, Any] = {}
    if args.variant == "untraced":
        store = InMemoryRunStore()
        result, wall = common.timed(lambda: experiment.run(store=store))
    else:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from themis_otel import OTelTracingProvider

        exporter = counting_exporter()
        # The SDK's documented defaults, pinned so that OTEL_BSP_* in the environment cannot
        # change the scenario. A full queue drops spans; the span check below would say so.
        processor = BatchSpanProcessor(
            exporter, max_queue_size=2048, schedule_delay_millis=5000, max_export_batch_size=512
        )
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(processor)
        tracing = OTelTracingProvider(tracer_provider=tracer_provider)
        # The first traced run imports and builds the SDK's lazy parts (resource, id
        # generator, the tracer): out of the figures, like the untraced warm-up.
        common.experiment(2).run(store=InMemoryRunStore(), tracing_provider=tracing)
        tracer_provider.force_flush()
        exporter.reset()

        def traced_run() -> Any:
            value = experiment.run(store=store, tracing_provider=tracing)
            if not tracer_provider.force_flush():
                raise SystemExit("P8: force_flush timed out; the spans were not all exported")
            return value

        store = InMemoryRunStore()
        result, wall = common.timed(traced_run)
        candidates = experiment.generation.candidate_count()
        facts = span_check(exporter, args.n, candidates, len(experiment.evaluation.metrics))
        tracer_provider.shutdown()
    check = common.check_result(result, args.n)
    if facts:
        check["ok"] = check["ok"] and facts.pop("spans_ok")
    common.emit(
        common.line(
            "P8",
            args.variant,
            n=args.n,
            wall_s=wall,
            concurrency=experiment.runtime.max_concurrent_tasks,
            **facts,
            **check,
        )
    )


if __name__ == "__main__":
    main()
