"""The Themis pytest plugin (entry point ``pytest11: themis``): registry and store fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from themis.core.registry import Registry
    from themis.core.stores import InMemoryRunStore

__all__ = ["memory_store", "themis_registry"]


@pytest.fixture
def themis_registry() -> Iterator[Registry]:
    """An isolated registry (core components only, no entry points) made current for the test.

    Add your plugin with ``themis_registry.add_plugin(my_pkg.plugin, name="my_ns")`` or
    register components with ``themis_registry.register("metric", "local/x", X)``.
    """
    # Imported here so that merely having themis installed costs pytest nothing.
    from themis.core.registry import Registry, use_registry

    registry = Registry(autoload=False, env={})
    with use_registry(registry):
        yield registry


@pytest.fixture
def memory_store() -> Iterator[InMemoryRunStore]:
    """An initialized ``InMemoryRunStore``, closed after the test."""
    from themis.core.stores import InMemoryRunStore

    store = InMemoryRunStore()
    store.initialize()
    try:
        yield store
    finally:
        store.close()
