"""The ``themis`` command line: ``main()`` is the console script and ``python -m themis``."""

from __future__ import annotations

from themis.cli._app import main

__all__ = ["main"]
