"""The published wheels, installed as a user would: themis-core + themis-builtins only."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def load_venvs() -> ModuleType:
    """``tests/_venvs.py`` by path, shared with tests/plugins (the tests tree is no package)."""
    name = "themis_tests_venvs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "_venvs.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


venvs = load_venvs()


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # Same directory as tests/plugins uses, so one session builds the wheels once.
    wheelhouse = venvs.build_wheelhouse(tmp_path_factory.getbasetemp() / "wheelhouse")
    return venvs.make_venv(
        tmp_path_factory.mktemp("core-only") / "venv",
        wheelhouse,
        ["themis-core", "themis-builtins"],
    )


def test_wheels_install_only_what_was_asked(core_venv: Any) -> None:
    result = core_venv.themis("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert set(plugins) == {"core", "builtin"}
    assert plugins["builtin"]["status"] == "loaded"
    assert plugins["builtin"]["distribution"] == "themis-builtins"


def test_sqlite_store_without_the_plugin_names_the_extra(core_venv: Any) -> None:
    result = core_venv.python_c(
        "from themis import sqlite_store",
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("themis.core.errors.MissingPluginError: ")
    assert "sqlite_store" in last and "themis-store-sqlite" in last
    assert 'pip install "themis-eval[sqlite]"' in last


def test_import_themis_in_the_installed_wheel_loads_no_plugin(core_venv: Any) -> None:
    result = core_venv.python_c(
        "import sys, themis; print(sorted(m for m in sys.modules if m.startswith('themis_')))"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_cli_entry_points_work_from_the_wheel(core_venv: Any) -> None:
    for command in (
        [core_venv.bin / "themis", "--version"],
        [core_venv.python, "-m", "themis", "--version"],
        [core_venv.python, "-m", "themis.cli", "--version"],
    ):
        result = core_venv.run(*command)
        assert (result.returncode, result.stdout) == (0, "themis 0.1.0\n"), result.stderr


def test_one_case_evaluation_completes(core_venv: Any) -> None:
    result = core_venv.python_c(
        "import themis; r = themis.evaluate(model='builtin/demo_generator', "
        "data=[{'input': 'x', 'expected_output': 'x'}], metric='builtin/exact_match'); "
        "print(r.status.value)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "completed"
