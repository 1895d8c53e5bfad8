"""Logging set-up for the command line; the library itself never configures logging."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO, cast

import structlog

from themis.core.errors import ConfigError

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "configure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console")


def configure_logging(
    level: str | None = None, fmt: str | None = None, *, stream: TextIO | None = None
) -> None:
    """Send structlog events to ``stream`` (stderr): JSON unless it is a terminal.

    ``level`` and ``fmt`` default to ``THEMIS_LOG_LEVEL`` (else ``info``) and
    ``THEMIS_LOG_FORMAT`` (else ``console`` on a TTY, ``json`` otherwise).
    """
    # PrintLogger only calls write() and flush(), which the proxy provides.
    target = cast(TextIO, _CurrentStderr()) if stream is None else stream
    level = (level or os.environ.get("THEMIS_LOG_LEVEL") or "info").strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"unknown log level {level!r} (THEMIS_LOG_LEVEL or --log-level); "
            f"use one of {', '.join(LOG_LEVELS)}"
        )
    is_tty = target.isatty()
    fmt = (fmt or os.environ.get("THEMIS_LOG_FORMAT") or ("console" if is_tty else "json")).lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(
            f"unknown log format {fmt!r} (THEMIS_LOG_FORMAT or --log-format); use json or console"
        )
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=is_tty)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if fmt == "json" else _keep,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=target),
        # Loggers are module globals created at import time, before this runs; caching
        # would pin them to whatever configuration was current when first used.
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at write time, not the object it was at configure time.

    Test runners swap ``sys.stderr`` and close their replacement afterwards; a logger
    bound to the replacement would then fail on every later write.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def _keep(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    # The console renderer formats exceptions itself (and prettier than format_exc_info).
    return event_dict
