"""The pytest plugin that themis-core ships for component authors (entry point pytest11)."""

from __future__ import annotations

import pytest
from themis.core.registry import Registry, get_registry


def test_plugin_is_registered_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("themis")
    assert plugin is not None and plugin.__name__ == "themis.testing.pytest_plugin"


def test_themis_registry_has_autoload_off(themis_registry: Registry) -> None:
    assert get_registry() is themis_registry
    assert themis_registry.ids() == ["core/memory", "core/noop"]
    assert {p.status for p in themis_registry.plugins() if p.name != "core"} <= {"disabled"}


def test_themis_registry_is_fresh_for_each_test(themis_registry: Registry) -> None:
    themis_registry.register(
        "tracing_provider", "local/mine", "themis.core.tracing:NoOpTracingProvider"
    )
    assert "local/mine" in themis_registry.ids()


def test_themis_registry_after_registration_test_is_clean(themis_registry: Registry) -> None:
    assert "local/mine" not in themis_registry.ids()


def test_memory_store_is_initialized_and_usable(memory_store: object) -> None:
    from themis.core.stores import InMemoryRunStore

    assert isinstance(memory_store, InMemoryRunStore)
    ref = memory_store.store_blob(b"hello", "text/plain")
    assert memory_store.load_blob(ref) == ("text/plain", b"hello")
    assert memory_store.list_runs() == []
