"""The ``themis`` command line: ``main()`` is the console script and ``python -m themis``."""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``themis`` command line on ``argv`` (default ``sys.argv[1:]``) and exit."""
    from themis.core._fold_speed import paused_gc

    # Start-up imports some 500 modules and builds a hundred pydantic classes, objects that
    # live as long as the process: a collection during it scans them and finds nothing.
    with paused_gc():
        from themis.cli._app import build_app, run

        app = build_app()
    atexit.unregister(_skip_exit_scans)  # once, however often main() runs in a process
    atexit.register(_skip_exit_scans)
    sys.exit(run(app, argv))


def _skip_exit_scans() -> None:
    # The interpreter's exit collects the whole heap three times over (4% of a quick-eval's
    # instructions, more of its time), though what is old by then is mostly start-up's
    # modules and classes. The young generation, where a command's garbage is, is still
    # collected (and its finalizers run); the rest is frozen, so the exit's scans pass it by.
    gc.collect(1)
    gc.freeze()
