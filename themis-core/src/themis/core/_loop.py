"""The event loop Themis makes for its synchronous calls: timers that fire on time."""

from __future__ import annotations

import asyncio
import math
import selectors
import sys
import time
from typing import Any

__all__ = ["loop_options"]


if hasattr(selectors, "EpollSelector"):

    class PreciseEpollSelector(selectors.EpollSelector):
        """An epoll selector whose timeouts end within microseconds, not up to 1 ms late.

        ``epoll_wait`` counts whole milliseconds, so the stock selector rounds every timeout
        up: a timer (a model call's ``asyncio.sleep``, a rate limiter's pacing) fires 0.5 ms
        late on average, and a run of waves of model calls pays it every wave. This one
        waits the whole milliseconds on epoll and the fraction left with ``time.sleep``
        (nanosecond resolution), then polls once without waiting. Readiness during that
        fraction is seen at its end, never later than the stock rounding would have.
        """

        def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
            if timeout is None or timeout <= 0:
                return super().select(timeout)
            deadline = time.monotonic() + timeout
            whole = math.floor(timeout * 1e3) * 1e-3
            if whole > 0:
                ready = super().select(whole)
                if ready:
                    return ready
            rest = deadline - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            return super().select(0)

    def _new_loop() -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(PreciseEpollSelector())


def loop_options(backend: str) -> dict[str, Any]:
    """``anyio.run``'s ``backend_options`` for a loop Themis creates itself.

    On Linux with asyncio: a selector loop with ``PreciseEpollSelector``. Elsewhere the
    defaults (kqueue and IOCP already take finer timeouts than a millisecond).
    """
    if backend == "asyncio" and sys.platform == "linux" and hasattr(selectors, "EpollSelector"):
        return {"loop_factory": _new_loop}
    return {}
