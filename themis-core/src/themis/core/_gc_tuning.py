"""Young-generation garbage collection made rarer while runs execute."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["fewer_collections"]

# Allocations between two young collections while a run executes (CPython's default: 700).
RUN_THRESHOLD = 10_000

_lock = threading.Lock()
_active = 0
_saved: tuple[int, ...] | None = None


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's first threshold for the block; the outermost block restores it.

    A run allocates a few hundred objects per case and keeps most of them (events, the
    folded state), so at the default threshold the collector runs every few cases and
    keeps promoting and rescanning survivors: measured, a third of a 50,000-case run.
    At 10,000 the collector still runs (cycles are still freed) but 14 times less often.
    The threshold is the process's: concurrent runs share one raise, counted here, and a
    threshold someone else changed meanwhile is left alone.
    """
    global _active, _saved
    with _lock:
        if _active == 0:
            current = gc.get_threshold()
            if 0 < current[0] < RUN_THRESHOLD:
                _saved = current
                gc.set_threshold(RUN_THRESHOLD, *current[1:])
            else:
                _saved = None
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                if gc.get_threshold()[0] == RUN_THRESHOLD:
                    gc.set_threshold(*_saved)
                _saved = None
