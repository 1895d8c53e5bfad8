"""The ``sqlite`` plugin: exact exports, its registration, and the store it builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import themis_store_sqlite
from themis.core.config import StorageConfig
from themis.core.protocols import RunStore
from themis.core.registry import Registry, use_registry
from themis.core.stores import BaseRunStore, create_run_store
from themis_store_sqlite import SqliteRunStore, plugin


def test_exports_are_exactly_the_public_names() -> None:
    assert sorted(themis_store_sqlite.__all__) == ["SqliteRunStore", "plugin", "sqlite_store"]


def test_the_store_is_a_run_store_built_on_the_base() -> None:
    store = SqliteRunStore(":memory:")
    assert isinstance(store, RunStore)
    assert isinstance(store, BaseRunStore)
    assert store.blocking is True


def test_the_plugin_registers_sqlite_store_with_its_alias() -> None:
    registry = Registry(autoload=False)
    registry.add_plugin(plugin, name="sqlite", distribution="themis-store-sqlite")
    info = registry.describe("sqlite/store")
    assert info.kind == "store"
    assert list(info.aliases) == ["sqlite"]
    assert info.target == "themis_store_sqlite.store:sqlite_store"


def test_storage_config_parameters_build_a_store_at_that_path(tmp_path: Path) -> None:
    registry = Registry(autoload=False)
    registry.add_plugin(plugin, name="sqlite", distribution="themis-store-sqlite")
    path = tmp_path / "nested" / "runs.sqlite3"
    storage = StorageConfig(store="sqlite", parameters={"path": str(path), "busy_timeout_s": 2.5})
    with use_registry(registry):
        store = create_run_store(storage)
    try:
        assert isinstance(store, SqliteRunStore)
        assert store.path == str(path)
        assert store.busy_timeout_s == 2.5
        store.initialize()
        assert path.is_file()  # sqlite_store created the missing directory
    finally:
        store.close()


def test_the_installed_entry_point_resolves_the_alias(tmp_path: Path) -> None:
    """Through the real entry point, as a user's config file reaches it."""
    path = str(tmp_path / "r.db")
    code = (
        "from themis.core.config import StorageConfig\n"
        "from themis.core.stores import create_run_store\n"
        f"config = StorageConfig(store='sqlite', parameters={{'path': {path!r}}})\n"
        "store = create_run_store(config)\n"
        "print(type(store).__module__, type(store).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "themis_store_sqlite.store SqliteRunStore"


def test_the_doctor_check_reports_the_sqlite_library() -> None:
    (check,) = plugin.doctor_checks()
    assert check.name == "sqlite/library"
    assert check.status == "ok"


def test_importing_the_package_leaves_the_store_and_sqlite3_unloaded_until_used() -> None:
    """Every ``themis`` command loads every plugin, and so this package: its store (and
    ``sqlite3``) load on first use of a name that needs them."""
    code = (
        "import sys, themis_store_sqlite\n"
        "assert 'themis_store_sqlite.store' not in sys.modules\n"
        "assert 'sqlite3' not in sys.modules\n"
        "from themis_store_sqlite import SqliteRunStore\n"
        "assert 'themis_store_sqlite.store' in sys.modules\n"
        "assert themis_store_sqlite.sqlite_store.__module__ == 'themis_store_sqlite.store'\n"
        "print(SqliteRunStore.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SqliteRunStore"
