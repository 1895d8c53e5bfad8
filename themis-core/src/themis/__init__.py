"""Themis: reproducible evaluations of LLM systems.

Every public name resolves on first access, so ``import themis`` stays fast and never
imports a plugin. ``__all__`` lists the core names; ``SqliteRunStore`` and
``sqlite_store`` live in the themis-store-sqlite plugin and are left out of it, so
``from themis import *`` never needs a plugin.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static types for the lazily resolved names below
    from themis.core.bundles import (
        export_evaluation_bundle,
        export_generation_bundle,
        export_parse_bundle,
        export_reduction_bundle,
        export_run_bundle,
        export_score_bundle,
        import_evaluation_bundle,
        import_generation_bundle,
        import_parse_bundle,
        import_reduction_bundle,
        import_run_bundle,
        import_score_bundle,
    )
    from themis.core.config import RuntimeConfig
    from themis.core.evaluate import evaluate, evaluate_async
    from themis.core.experiment import Experiment
    from themis.core.hookspecs import hookimpl
    from themis.core.inspection import (
        get_evaluation_execution,
        get_execution_state,
        get_run_snapshot,
    )
    from themis.core.prompts import PromptSpec
    from themis.core.protocols import RunStore
    from themis.core.quickcheck import quickcheck
    from themis.core.reporter import Reporter, snapshot_report
    from themis.core.results import RunEstimate, RunResult, RunStatus
    from themis.core.snapshot import RunSnapshot
    from themis.core.stats import StatsEngine
    from themis.core.stores import InMemoryRunStore

# Public names and the core module that defines each. They are resolved on first access
# so that ``import themis`` costs almost nothing; ``from themis import X`` imports only
# what X needs.
_PUBLIC: dict[str, str] = {
    "Experiment": "themis.core.experiment",
    "evaluate": "themis.core.evaluate",
    "evaluate_async": "themis.core.evaluate",
    "PromptSpec": "themis.core.prompts",
    "RuntimeConfig": "themis.core.config",
    "RunSnapshot": "themis.core.snapshot",
    "RunResult": "themis.core.results",
    "RunStatus": "themis.core.results",
    "RunEstimate": "themis.core.results",
    "RunStore": "themis.core.protocols",
    "InMemoryRunStore": "themis.core.stores",
    "Reporter": "themis.core.reporter",
    "snapshot_report": "themis.core.reporter",
    "StatsEngine": "themis.core.stats",
    "quickcheck": "themis.core.quickcheck",
    "get_run_snapshot": "themis.core.inspection",
    "get_execution_state": "themis.core.inspection",
    "get_evaluation_execution": "themis.core.inspection",
    "hookimpl": "themis.core.hookspecs",
    **{
        f"{verb}_{kind}_bundle": "themis.core.bundles"
        for verb in ("export", "import")
        for kind in ("generation", "reduction", "parse", "score", "evaluation", "run")
    },
}

__all__ = [
    "Experiment",
    "InMemoryRunStore",
    "PromptSpec",
    "Reporter",
    "RunEstimate",
    "RunResult",
    "RunSnapshot",
    "RunStatus",
    "RunStore",
    "RuntimeConfig",
    "StatsEngine",
    "__version__",
    "evaluate",
    "evaluate_async",
    "export_evaluation_bundle",
    "export_generation_bundle",
    "export_parse_bundle",
    "export_reduction_bundle",
    "export_run_bundle",
    "export_score_bundle",
    "get_evaluation_execution",
    "get_execution_state",
    "get_run_snapshot",
    "hookimpl",
    "import_evaluation_bundle",
    "import_generation_bundle",
    "import_parse_bundle",
    "import_reduction_bundle",
    "import_run_bundle",
    "import_score_bundle",
    "quickcheck",
    "snapshot_report",
]

# Lazy root name -> (module, attribute, distribution, extra of themis-eval that installs it).
_LAZY: dict[str, tuple[str, str, str, str]] = {
    "SqliteRunStore": ("themis_store_sqlite", "SqliteRunStore", "themis-store-sqlite", "sqlite"),
    "sqlite_store": ("themis_store_sqlite", "sqlite_store", "themis-store-sqlite", "sqlite"),
}


def _version() -> str:
    # Resolved on first access: importlib.metadata alone would be most of the cost of
    # ``import themis``.
    import importlib.metadata

    try:
        return importlib.metadata.version("themis-core")
    except importlib.metadata.PackageNotFoundError:  # a source tree without metadata
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        version = globals()["__version__"] = _version()
        return version
    home = _PUBLIC.get(name)
    if home is not None:
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value
    lazy = _LAZY.get(name)
    if lazy is None:
        raise AttributeError(f"module 'themis' has no attribute {name!r}")
    module_name, attribute, distribution, extra = lazy
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the plugin is installed but one of its own imports is missing
        from themis.core.errors import MissingPluginError

        raise MissingPluginError(name, distribution, extra) from None
    value = getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | set(_LAZY) | {"__version__"})
