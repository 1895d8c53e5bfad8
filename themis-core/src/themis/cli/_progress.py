"""A progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["generation_progress"]

_GENERATION_EVENTS = frozenset({"generation_completed", "generation_failed"})


class _GenerationTicker:
    """A subscriber that advances the bar once per finished generation."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def on_event(self, event: Any) -> None:
        if event.event_type in _GENERATION_EVENTS:
            self._progress.advance(self._task)


@contextlib.contextmanager
def generation_progress(total: int, *, quiet: bool) -> Iterator[list[Any]]:
    """Subscribers that draw generation progress on stderr; none when piped or quiet."""
    if quiet or total <= 0 or not sys.stderr.isatty():
        yield []
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from themis.cli._app import stderr_console

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as progress:
        task = progress.add_task("generating", total=total)
        yield [_GenerationTicker(progress, task)]
