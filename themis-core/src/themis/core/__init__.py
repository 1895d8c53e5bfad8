"""The Themis core: protocols, models, registry, planner, orchestrator and event log.

Every public name of the submodules is available here. Names resolve lazily, so that
``import themis`` stays fast and imports only what a program uses.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# Submodules whose ``__all__`` is re-exported here, in the order of API.md §1.2.
SUBMODULES: tuple[str, ...] = (
    "base",
    "models",
    "prompts",
    "config",
    "contexts",
    "subjects",
    "workflows",
    "protocols",
    "experiment",
    "evaluate",
    "events",
    "results",
    "snapshot",
    "read_models",
    "projections",
    "stores",
    "bundles",
    "planner",
    "workflow_runner",
    "tracing",
    "registry",
    "hookspecs",
    "errors",
    "inspection",
    "reporter",
    "stats",
    "quickcheck",
    "config_loading",
    "dataset_inputs",
    "case_refs",
    "security",
    "logs",
    "progress",
)

_index: dict[str, str] | None = None


def _name_index() -> dict[str, str]:
    global _index
    if _index is None:
        index: dict[str, str] = {}
        for module in SUBMODULES:
            for name in getattr(importlib.import_module(f"themis.core.{module}"), "__all__", ()):
                index.setdefault(name, module)
        _index = index
    return _index


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = _name_index().get(name)
    if module is None:
        raise AttributeError(f"module 'themis.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"themis.core.{module}"), name)
    globals()[name] = value
    return value


# Submodules named like the function they define: importing the submodule would make the
# package attribute the module, so ``from themis.core import evaluate`` gave a module.
_SHADOWED = frozenset({"evaluate", "quickcheck"})


class _CoreModule(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _CoreModule


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_name_index()))
