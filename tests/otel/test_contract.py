"""The TracingProviderContract suite, applied to the OTel and the no-op providers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from themis.core.protocols import TracingProvider
from themis.core.tracing import NoOpTracingProvider
from themis.testing import TracingProviderContract
from themis_otel import OTelTracingProvider


class TestOTelTracingProviderContract(TracingProviderContract):
    @pytest.fixture
    def provider(self, tracer_provider: TracerProvider) -> TracingProvider:
        return OTelTracingProvider(tracer_provider)

    def test_the_suite_exported_every_span_it_opened(
        self, provider: TracingProvider, exporter: InMemorySpanExporter
    ) -> None:
        """Not part of the contract: proves the suite's big test really drives this provider."""
        self.test_nested_spans_in_concurrent_tasks_never_raise(provider)
        assert len(exporter.get_finished_spans()) == 1 + 200 * 5


class TestOTelTracingProviderWithNothingConfiguredContract(TracingProviderContract):
    @pytest.fixture
    def provider(self) -> TracingProvider:
        return OTelTracingProvider()


class TestNoOpTracingProviderContract(TracingProviderContract):
    @pytest.fixture
    def provider(self) -> TracingProvider:
        return NoOpTracingProvider()


def test_noop_provider_returns_the_noop_span_and_has_an_identity() -> None:
    provider = NoOpTracingProvider()
    assert provider.start_span("run", {"run_id": "r"}) == "noop"
    assert provider.end_span("noop", "ok") is None
    assert (provider.component_id, provider.version) == ("core/noop", "1.0")
    assert provider.fingerprint() == NoOpTracingProvider().fingerprint()
    assert len(provider.fingerprint()) == 64


_BROKEN_PROVIDER_TESTS = textwrap.dedent(
    """
    import pytest

    from themis.testing import TracingProviderContract


    class StrictAboutStatus:
        def start_span(self, name, attributes):
            return name

        def end_span(self, span, status):
            if status not in ("ok", "error"):
                raise ValueError(status)


    class TestStrictAboutStatus(TracingProviderContract):
        @pytest.fixture
        def provider(self):
            return StrictAboutStatus()
    """
)


def test_the_contract_fails_a_provider_that_raises_on_an_unknown_status(tmp_path: Path) -> None:
    """The suite can fail: run it, in a child pytest, on a provider that breaks one rule."""
    test_file = tmp_path / "test_broken_provider.py"
    test_file.write_text(_BROKEN_PROVIDER_TESTS)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:themis",
            str(test_file),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout, done.stdout
    assert "test_unknown_status_ends_the_span_without_raising" in done.stdout
