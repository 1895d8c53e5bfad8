"""``TracingProviderContract``: the behaviour every ``TracingProvider`` owes the runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from themis.core.protocols import TracingProvider

__all__ = ["TracingProviderContract"]

# The spans the runtime opens (API §3.6), with attributes shaped as it sends them.
SPAN_TABLE: dict[str, dict[str, object]] = {
    "run": {"run_id": "r" * 64, "mode": "run", "until_stage": "score"},
    "generation": {
        "case_id": "c1",
        "dataset_id": "d",
        "case_key": "k" * 64,
        "candidate_index": 0,
        "component_id": "builtin/demo_generator",
        "seed": 42,
        "provider_key": "demo",
        "model_id": "demo-1",
    },
    "selection": {"case_id": "c1", "dataset_id": "d", "case_key": "k" * 64},
    "reduction": {"case_id": "c1", "dataset_id": "d", "case_key": "k" * 64},
    "parse": {"case_id": "c1", "dataset_id": "d", "case_key": "k" * 64},
    "score": {"case_id": "c1", "metric_id": "builtin/exact_match", "dataset_id": "d"},
    "judge": {"case_id": "c1", "metric_id": "builtin/llm_rubric", "dataset_id": "d"},
}


def _run(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` as one anyio task, the way the runtime calls a provider."""
    anyio.run(body)


class TracingProviderContract:
    """Subclass in a test module and override the ``provider`` fixture to run the suite.

    It pins what the runtime relies on:

    - ``start_span`` and ``end_span`` are called in the same task, with status ``"ok"``
      or ``"error"``; neither raises, for every span name and attribute of API §3.6.
    - Attribute values may be ``str``, ``int``, ``float`` or ``bool``, and the dict may be empty.
    - Spans nest (run, then stages inside it) across hundreds of concurrent tasks.
    - ``record_exception(span, exc)``, ``set_attributes(span, attributes)`` and
      ``force_flush()`` are optional; when present they are called as the runtime does.
    - ``end_span`` with any other status string must not raise either: the runtime only
      sends ``"ok"`` and ``"error"``, but an observer never breaks a run, so a provider
      treats an unknown status as it likes (unset, or error) and still ends the span.
    - The identity triple is not required: a tracing provider is provenance, never part
      of ``run_id``.
    """

    @pytest.fixture
    def provider(self) -> TracingProvider:
        """Override: return a fresh provider under test."""
        pytest.fail("override the `provider` fixture to return the TracingProvider under test")

    def test_satisfies_the_tracing_provider_protocol(self, provider: TracingProvider) -> None:
        assert isinstance(provider, TracingProvider)

    def test_span_ends_ok_in_the_task_that_started_it(self, provider: TracingProvider) -> None:
        async def body() -> None:
            span = provider.start_span("run", dict(SPAN_TABLE["run"]))
            await anyio.sleep(0)
            provider.end_span(span, "ok")

        _run(body)

    def test_span_ends_error_in_the_task_that_started_it(self, provider: TracingProvider) -> None:
        async def body() -> None:
            span = provider.start_span("parse", dict(SPAN_TABLE["parse"]))
            await anyio.sleep(0)
            provider.end_span(span, "error")

        _run(body)

    def test_every_span_of_the_span_table_starts_and_ends(self, provider: TracingProvider) -> None:
        async def body() -> None:
            run = provider.start_span("run", dict(SPAN_TABLE["run"]))
            for name, attributes in SPAN_TABLE.items():
                if name != "run":
                    provider.end_span(provider.start_span(name, dict(attributes)), "ok")
            provider.end_span(run, "ok")

        _run(body)

    @pytest.mark.parametrize(
        "value",
        ["text", "", 0, -7, 2**62, 1.5, float("-inf"), True, False],
        ids=[
            "str",
            "empty-str",
            "zero",
            "negative-int",
            "big-int",
            "float",
            "inf",
            "true",
            "false",
        ],
    )
    def test_accepts_every_allowed_attribute_type(
        self, provider: TracingProvider, value: object
    ) -> None:
        async def body() -> None:
            span = provider.start_span("score", {"case_id": "c1", "value": value})
            provider.end_span(span, "ok")

        _run(body)

    def test_accepts_empty_attributes(self, provider: TracingProvider) -> None:
        async def body() -> None:
            provider.end_span(provider.start_span("selection", {}), "ok")

        _run(body)

    def test_record_exception_is_optional_and_precedes_an_error_end(
        self, provider: TracingProvider
    ) -> None:
        record = getattr(provider, "record_exception", None)
        if record is None:
            return  # optional: the runtime checks for it with getattr
        assert callable(record)

        async def body() -> None:
            span = provider.start_span("generation", dict(SPAN_TABLE["generation"]))
            try:
                raise RuntimeError("generator exploded")
            except RuntimeError as exc:
                record(span, exc)
            provider.end_span(span, "error")

        _run(body)

    def test_set_attributes_is_optional_and_takes_token_usage(
        self, provider: TracingProvider
    ) -> None:
        set_attributes = getattr(provider, "set_attributes", None)
        if set_attributes is None:
            return  # optional: the runtime checks for it with getattr
        assert callable(set_attributes)

        async def body() -> None:
            span = provider.start_span("generation", dict(SPAN_TABLE["generation"]))
            set_attributes(span, {"input_tokens": 12, "output_tokens": 3})
            provider.end_span(span, "ok")

        _run(body)

    def test_force_flush_is_optional_and_callable_after_a_run(
        self, provider: TracingProvider
    ) -> None:
        flush = getattr(provider, "force_flush", None)
        if flush is None:
            return  # optional: the runtime checks for it with getattr
        assert callable(flush)

        async def body() -> None:
            provider.end_span(provider.start_span("run", dict(SPAN_TABLE["run"])), "ok")

        _run(body)
        flush()

    def test_unknown_status_ends_the_span_without_raising(self, provider: TracingProvider) -> None:
        async def body() -> None:
            span = provider.start_span("reduction", dict(SPAN_TABLE["reduction"]))
            provider.end_span(span, "cancelled")

        _run(body)

    def test_nested_spans_in_concurrent_tasks_never_raise(self, provider: TracingProvider) -> None:
        """A run span, then 200 case tasks whose candidates run in child tasks of their own."""

        async def candidate(case: int, index: int) -> None:
            attributes = dict(SPAN_TABLE["generation"], case_id=f"c{case}", candidate_index=index)
            span = provider.start_span("generation", attributes)
            await anyio.sleep(0)  # let every other task open its spans in between
            provider.end_span(span, "ok")

        async def case_task(case: int) -> None:
            async with anyio.create_task_group() as candidates:
                for index in range(2):
                    candidates.start_soon(candidate, case, index)
            for stage in ("reduction", "parse", "score"):
                span = provider.start_span(stage, dict(SPAN_TABLE[stage], case_id=f"c{case}"))
                await anyio.sleep(0)
                provider.end_span(span, "error" if case % 7 == 0 else "ok")

        async def body() -> None:
            run = provider.start_span("run", dict(SPAN_TABLE["run"]))
            async with anyio.create_task_group() as cases:
                for case in range(200):
                    cases.start_soon(case_task, case)
            provider.end_span(run, "ok")

        _run(body)
