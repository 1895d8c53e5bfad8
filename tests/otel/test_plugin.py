"""The themis-otel package face and its entry-point plugin."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
import themis_otel
from themis.core.registry import Registry
from themis.core.tracing import NoOpTracingProvider
from themis_otel import plugin


def test_package_exports_exactly_the_provider_and_the_plugin() -> None:
    assert themis_otel.__all__ == ["OTelTracingProvider", "plugin"]
    assert sorted(dir(themis_otel)) == ["OTelTracingProvider", "plugin"]
    assert themis_otel.OTelTracingProvider.__module__ == "themis_otel.provider"


def test_entry_point_otel_names_the_plugin_module() -> None:
    [entry_point] = importlib.metadata.entry_points(group="themis", name="otel")
    assert entry_point.value == "themis_otel.plugin"
    assert entry_point.load() is plugin


def test_registry_resolves_the_otel_alias_to_the_provider() -> None:
    registry = Registry(env={})
    info = registry.describe("otel/tracer")
    assert (info.kind, info.target) == (
        "tracing_provider",
        "themis_otel.provider:OTelTracingProvider",
    )
    assert (info.distribution, tuple(info.aliases)) == ("themis-otel", ("otel",))
    assert info.summary
    assert isinstance(registry.resolve("tracing_provider", "otel"), themis_otel.OTelTracingProvider)


def test_registry_passes_spec_params_to_the_provider() -> None:
    spec = {"id": "otel/tracer", "params": {"tracer_name": "nightly"}}
    provider = Registry(env={}).resolve("tracing_provider", spec)
    assert (
        provider.fingerprint()
        == themis_otel.OTelTracingProvider(tracer_name="nightly").fingerprint()
    )


def test_core_registers_the_noop_provider_under_its_alias() -> None:
    assert isinstance(Registry(env={}).resolve("tracing_provider", "noop"), NoOpTracingProvider)


def test_hooks_are_marked_as_themis_hook_implementations() -> None:
    for hook in (plugin.register_components, plugin.doctor_checks):
        assert hasattr(hook, "themis_impl"), hook.__name__


def test_loading_the_plugin_does_not_import_opentelemetry() -> None:
    """The registry loads every plugin for `themis plugins`; OTel must wait until it is used."""
    code = (
        "import sys, themis_otel.plugin, themis_otel; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_doctor_says_where_spans_go_without_an_endpoint() -> None:
    [check] = plugin.doctor_checks()
    assert check.status == "ok" and "OTEL_EXPORTER_OTLP_ENDPOINT" in check.message


def test_doctor_warns_when_the_endpoint_expects_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    [check] = plugin.doctor_checks()
    assert check.status == "warn" and "http/protobuf" in check.message


def test_doctor_is_ok_with_an_http_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    [check] = plugin.doctor_checks()
    assert check.status == "ok" and "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in check.message
