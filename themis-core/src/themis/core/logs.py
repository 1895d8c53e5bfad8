"""Loggers for Themis and its plugins that stay quiet until the application decides.

When the application (or the ``themis`` CLI) has configured structlog, events go through
that configuration. Otherwise they go to the stdlib ``logging`` logger of the same name,
so an unconfigured program sees warnings and errors on stderr and nothing on stdout —
the library never configures logging itself.

structlog is imported on the first event logged, not with this module: importing it
loads ``structlog.dev`` and, where it is installed, ``rich`` (about 0.1-0.2 s), which a
process that logs nothing (the SQLite store's writer process, a quick CLI command) should
not pay for. An application that configured structlog has imported it already.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

__all__ = ["ThemisLogger", "get_logger"]


@functools.cache
def _fallback(name: str) -> Any:
    import structlog

    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


class ThemisLogger:
    """A key-value logger that resolves its backend at each call (see module docstring)."""

    __slots__ = ("_bound", "_name")

    def __init__(self, name: str, bound: dict[str, Any] | None = None) -> None:
        self._name = name
        self._bound = bound or {}

    def bind(self, **values: Any) -> ThemisLogger:
        return ThemisLogger(self._name, {**self._bound, **values})

    def _target(self) -> Any:
        # Not imported yet means not configured yet (see the module docstring).
        structlog = sys.modules.get("structlog")
        if structlog is not None and structlog.is_configured():
            target = structlog.get_logger(self._name)
        else:
            target = _fallback(self._name)
        return target.bind(**self._bound) if self._bound else target

    def debug(self, event: str, **values: Any) -> None:
        self._target().debug(event, **values)

    def info(self, event: str, **values: Any) -> None:
        self._target().info(event, **values)

    def warning(self, event: str, **values: Any) -> None:
        self._target().warning(event, **values)

    warn = warning

    def error(self, event: str, **values: Any) -> None:
        self._target().error(event, **values)

    def exception(self, event: str, **values: Any) -> None:
        self._target().exception(event, **values)

    def critical(self, event: str, **values: Any) -> None:
        self._target().critical(event, **values)


def get_logger(name: str) -> ThemisLogger:
    """The logger to use in Themis and in plugins: ``log = get_logger(__name__)``."""
    return ThemisLogger(name)
