"""``import themis`` stays light, the lazy plugin names behave, the core imports no plugin."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import themis
from themis.core.errors import MissingPluginError

CORE_SRC = Path(__file__).resolve().parents[2] / "themis-core" / "src"
SIBLINGS = ("themis_builtins", "themis_store_sqlite", "themis_otel", "themis_openai")


def modules_after(code: str) -> list[str]:
    """The ``sys.modules`` keys after running ``code`` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_themis_loads_no_plugin_no_cli_stack_no_opentelemetry() -> None:
    modules = modules_after("import themis")
    assert [m for m in modules if m.startswith("themis_")] == []
    for heavy in ("typer", "click", "rich", "opentelemetry"):
        assert [m for m in modules if m == heavy or m.startswith(f"{heavy}.")] == [], heavy
    assert "themis.cli" not in modules


def test_star_import_needs_no_plugin() -> None:
    modules = modules_after("from themis import *")
    assert [m for m in modules if m.startswith("themis_")] == []


def test_lazy_names_are_listed_by_dir_but_not_in_all() -> None:
    assert {"SqliteRunStore", "sqlite_store"} <= set(dir(themis))
    assert not {"SqliteRunStore", "sqlite_store"} & set(themis.__all__)
    assert {"__version__", "hookimpl"} <= set(themis.__all__)


def test_version_comes_from_the_installed_distribution() -> None:
    assert themis.__version__ == importlib.metadata.version("themis-core")


def test_hookimpl_is_the_core_marker() -> None:
    from themis.core.hookspecs import hookimpl

    assert themis.hookimpl is hookimpl


def test_lazy_name_resolves_from_the_plugin_when_installed() -> None:
    import themis_store_sqlite

    assert themis.sqlite_store is themis_store_sqlite.sqlite_store
    assert themis.SqliteRunStore is themis_store_sqlite.SqliteRunStore


def test_lazy_name_without_its_plugin_raises_missing_plugin_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules is Python's own way to make an import fail.
    monkeypatch.setitem(sys.modules, "themis_store_sqlite", None)
    for cached in ("sqlite_store", "SqliteRunStore"):  # resolved earlier in this process
        monkeypatch.delitem(themis.__dict__, cached, raising=False)
    with pytest.raises(MissingPluginError) as info:
        themis.sqlite_store  # noqa: B018
    error = info.value
    assert isinstance(error, ImportError)
    assert (error.name, error.distribution, error.extra) == (
        "sqlite_store",
        "themis-store-sqlite",
        "sqlite",
    )
    assert 'pip install "themis-eval[sqlite]"' in str(error)
    with pytest.raises(MissingPluginError):
        hasattr(themis, "SqliteRunStore")


def test_unknown_root_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        themis.no_such_name  # noqa: B018


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_core_never_imports_a_plugin_package() -> None:
    offenders = {
        str(path.relative_to(CORE_SRC)): sorted(
            name for name in imported_modules(path) if name.split(".")[0] in SIBLINGS
        )
        for path in sorted(CORE_SRC.rglob("*.py"))
    }
    assert {file: names for file, names in offenders.items() if names} == {}
    assert len(offenders) > 20  # the scan really walked the core's sources


def test_the_import_scan_sees_every_import_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import themis_otel\n"
        "from themis_builtins.metrics import ExactMatch\n"
        "def f():\n"
        "    import importlib\n"
        "    importlib.import_module('themis_store_sqlite')\n"
    )
    assert {"themis_otel", "themis_builtins.metrics", "themis_store_sqlite"} <= imported_modules(
        sample
    )


def test_logging_loads_structlog_on_the_first_event_only() -> None:
    # The SQLite store's writer process imports the store and logs nothing: structlog (and
    # through structlog.dev, rich) would add 0.1-0.2 s to its start.
    code = (
        "import themis_store_sqlite._writer_process, themis_store_sqlite.store\n"
        "import sys\n"
        "print(sorted(m for m in ('structlog', 'rich') if m in sys.modules))\n"
        "from themis.core.logs import get_logger\n"
        "get_logger('themis.test').warning('lazy.event', answer=42)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "[]"
    # Unconfigured, the event still reaches stderr through the stdlib fallback.
    assert "event='lazy.event'" in result.stderr and "answer=42" in result.stderr
    modules = modules_after(code)
    assert "structlog" in modules
