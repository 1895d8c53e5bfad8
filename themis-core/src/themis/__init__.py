"""Themis: reproducible evaluations of LLM systems.

The names in ``__all__`` are imported eagerly. ``SqliteRunStore`` and ``sqlite_store``
live in the themis-store-sqlite plugin and are resolved on first access, so that
``import themis`` never imports a plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from themis.core.hookspecs import hookimpl

try:
    __version__ = importlib.metadata.version("themis-core")
except importlib.metadata.PackageNotFoundError:  # a source tree without installed metadata
    __version__ = "0+unknown"

# --- eager public names (the lead fills this block) ---------------------------------

# -----------------------------------------------------------------------------------

__all__ = ["__version__", "hookimpl"]

# Lazy root name -> (module, attribute, distribution, extra of themis-eval that installs it).
_LAZY: dict[str, tuple[str, str, str, str]] = {
    "SqliteRunStore": ("themis_store_sqlite", "SqliteRunStore", "themis-store-sqlite", "sqlite"),
    "sqlite_store": ("themis_store_sqlite", "sqlite_store", "themis-store-sqlite", "sqlite"),
}


def __getattr__(name: str) -> Any:
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
    return sorted(set(globals()) | set(_LAZY))
