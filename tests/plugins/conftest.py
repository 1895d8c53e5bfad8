"""Session fixtures: the workspace wheels and throwaway venvs with fixture plugins installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_venvs() -> ModuleType:
    """``tests/_venvs.py``, imported by path once (the tests tree is not a package)."""
    name = "themis_tests_venvs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "_venvs.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


venvs = load_venvs()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of every workspace package and every fixture plugin, built once per session."""
    return venvs.build_wheelhouse(tmp_path_factory.getbasetemp() / "wheelhouse")


@pytest.fixture(scope="session")
def zoo_venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path):
    """core + builtins + acme, plus a plugin that fails on import and one that trespasses."""
    return venvs.make_venv(
        tmp_path_factory.mktemp("zoo") / "venv",
        wheelhouse,
        [
            "themis-core",
            "themis-builtins",
            "themis-fixture-acme",
            "themis-fixture-broken",
            "themis-fixture-sneaky",
        ],
    )


@pytest.fixture(scope="session")
def dup_venv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path):
    """core + two distributions that both register ``acme/rubric``."""
    return venvs.make_venv(
        tmp_path_factory.mktemp("dup") / "venv",
        wheelhouse,
        ["themis-core", "themis-fixture-acme", "themis-fixture-acme-dup"],
    )
