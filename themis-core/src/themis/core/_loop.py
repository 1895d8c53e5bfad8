"""The event loop Themis makes for its synchronous calls: timers that fire on time, and
callbacks scheduled without the stock loop's layers of Python calls."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import heapq
import itertools
import math
import selectors
import sys
import time
from asyncio import base_events, events, format_helpers, futures
from asyncio.log import logger as asyncio_logger
from collections.abc import Callable
from contextvars import Context
from typing import Any

__all__ = ["loop_options"]

_copy_context = contextvars.copy_context
_heappush = heapq.heappush
_heappop = heapq.heappop
_monotonic = time.monotonic
_new = object.__new__
# The stock loop's limits, and the callback of every ``asyncio.sleep``'s timer (private
# names of asyncio, the same in Python 3.11 to 3.13).
_base: Any = base_events
_MAXIMUM_SELECT_TIMEOUT: float = _base.MAXIMUM_SELECT_TIMEOUT
_MIN_SCHEDULED_TIMER_HANDLES: int = _base._MIN_SCHEDULED_TIMER_HANDLES
_MIN_CANCELLED_TIMER_HANDLES_FRACTION: float = _base._MIN_CANCELLED_TIMER_HANDLES_FRACTION
_SET_RESULT_UNLESS_CANCELLED: Any = getattr(futures, "_set_result_unless_cancelled")  # noqa: B009


# How long the loop must have nothing to do for an idle callback to run (``call_when_idle``).
IDLE_GAP = 0.001


class Handle(events.Handle):
    """``asyncio.Handle``, made by the loop below without the stock ``__init__``'s calls.

    Only a loop that is not in debug mode makes these (a debug loop makes the stock ones,
    with their source tracebacks); everything but how they are made is the stock class's.
    """

    __slots__ = ()


class TimerHandle(events.TimerHandle):
    """``asyncio.TimerHandle``, made in one call and cancelled in one.

    ``asyncio.sleep`` makes one per call and cancels it when the sleep ends (a no-op by
    then, through three Python calls in the stock class).
    """

    __slots__ = ()

    def cancel(self) -> None:
        timer: Any = self
        if not timer._cancelled:
            loop: Any = timer._loop
            if loop._debug:
                super().cancel()
                return
            # BaseEventLoop._timer_handle_cancelled, then Handle.cancel outside debug mode.
            if timer._scheduled:
                loop._timer_cancelled_count += 1
            timer._cancelled = True
            timer._callback = None
            timer._args = None


# Handles whose ``_run`` is the stock one: the loop runs their callback itself.
_PLAIN_HANDLES = frozenset({Handle, TimerHandle, events.Handle, events.TimerHandle})


class LeanSelectorEventLoop(asyncio.SelectorEventLoop):
    """A selector loop that schedules and runs callbacks with fewer Python calls.

    Every model call that sleeps or waits on a socket goes through ``call_later``,
    ``call_soon`` and ``create_future`` (the timer, the future it resolves, the task
    wake-up that schedules), and through ``_run_once``. The stock ones spend a dozen
    Python calls on each sleep: timer handles compared by their Python ``__lt__`` about
    twenty times on the loop's heap, handles made through two ``__init__`` and a
    ``get_debug()``, each callback run through ``Handle._run``. Here the heap holds
    ``(when, sequence, handle)`` tuples, compared in C (timers due at the same time run
    in the order they were scheduled), handles are filled in place, and a stock handle's
    callback is run by the loop, with ``Handle._run``'s error reporting. Callbacks run in
    the same order, with the same contexts, as on the stock loop. In debug mode handles
    are the stock ones, made and run by the stock code.
    """

    # BaseEventLoop's own attributes, which the stubs leave out (annotations only).
    _debug: bool
    _closed: bool
    _stopping: bool
    _ready: collections.deque[Any]
    _scheduled: list[tuple[float, int, Any]]
    _timer_cancelled_count: int
    _clock_resolution: float
    _current_handle: Any
    _selector: Any

    def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
        super().__init__(selector)
        self._timer_sequence = itertools.count()
        # Callbacks to run when the loop next has nothing to do for a while (see
        # ``call_when_idle``).
        self._idle: collections.deque[Any] = collections.deque()
        # A C callable: Future(loop=self) with no Python frame around it.
        self.create_future = functools.partial(asyncio.Future, loop=self)  # type: ignore[method-assign]

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Context | None = None
    ) -> Any:
        if self._debug:
            debug_handle: Any = super().call_soon(callback, *args, context=context)
            # Its source traceback ends where call_soon was called, as the stock one does.
            if debug_handle._source_traceback:
                del debug_handle._source_traceback[-1]
            return debug_handle
        if self._closed:
            raise RuntimeError("Event loop is closed")
        handle: Any = _new(Handle)
        handle._context = _copy_context() if context is None else context
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> Any:
        if delay is None:
            raise TypeError("delay must not be None")
        if self._debug:
            # Its source traceback ends where call_later was called, as the stock one does.
            debug_timer = self._debug_timer(self.time() + delay, callback, args, context)
            if debug_timer._source_traceback:
                del debug_timer._source_traceback[-1]
            return debug_timer
        if self._closed:
            raise RuntimeError("Event loop is closed")
        # The timer is made here rather than through call_at, as the stock loop does: the
        # extra call (and its *args) cost 1.8K instructions per sleep, 7% of a sleep.
        # BaseEventLoop.time() is time.monotonic().
        when = _monotonic() + delay
        timer: Any = _new(TimerHandle)
        timer._context = _copy_context() if context is None else context
        timer._loop = self
        timer._callback = callback
        timer._args = args
        timer._cancelled = False
        timer._repr = None
        timer._source_traceback = None
        timer._when = when
        _heappush(self._scheduled, (when, next(self._timer_sequence), timer))
        timer._scheduled = True
        return timer

    def call_at(  # type: ignore[override]
        self,
        when: float,
        callback: Callable[..., object],
        *args: Any,
        context: Context | None = None,
    ) -> Any:
        if when is None:
            raise TypeError("when cannot be None")
        if self._debug:
            debug_timer = self._debug_timer(when, callback, args, context)
            if debug_timer._source_traceback:
                del debug_timer._source_traceback[-1]
            return debug_timer
        if self._closed:
            raise RuntimeError("Event loop is closed")
        timer: Any = _new(TimerHandle)
        timer._context = _copy_context() if context is None else context
        timer._loop = self
        timer._callback = callback
        timer._args = args
        timer._cancelled = False
        timer._repr = None
        timer._source_traceback = None
        timer._when = when
        _heappush(self._scheduled, (when, next(self._timer_sequence), timer))
        timer._scheduled = True
        return timer

    def call_when_idle(self, callback: Callable[..., object], *args: Any) -> Any:
        """Schedule ``callback(*args)`` for a turn of the loop that has nothing else to do:
        no callback ready and no timer due within ``IDLE_GAP`` seconds. Work that can wait
        (a fold of the events written so far) then runs in the gaps model calls leave,
        without making a timer that is due late. Returns its handle (``cancel()`` works).
        """
        handle: Any = self.call_soon(callback, *args)
        # Taken back off the ready queue: it waits in the idle one instead.
        self._ready.pop()
        self._idle.append(handle)
        return handle

    def _debug_timer(self, when: float, callback: Any, args: Any, context: Any) -> Any:
        """``BaseEventLoop.call_at`` in debug mode, on this loop's heap."""
        self._check_closed()  # type: ignore[attr-defined]
        self._check_thread()  # type: ignore[attr-defined]
        self._check_callback(callback, "call_at")  # type: ignore[attr-defined]
        timer: Any = events.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        _heappush(self._scheduled, (when, next(self._timer_sequence), timer))
        timer._scheduled = True
        return timer

    def _run_once(self) -> None:
        """``BaseEventLoop._run_once`` on a heap of tuples: one full iteration of the loop.

        Runs every callback ready when it starts (not those they schedule), after one poll
        for I/O and moving the timers that are due to the ready queue.
        """
        scheduled = self._scheduled
        sched_count = len(scheduled)
        if (
            sched_count > _MIN_SCHEDULED_TIMER_HANDLES
            and self._timer_cancelled_count / sched_count > _MIN_CANCELLED_TIMER_HANDLES_FRACTION
        ):
            # Remove the cancelled timers when they are too many.
            kept = []
            for entry in scheduled:
                if entry[2]._cancelled:
                    entry[2]._scheduled = False
                else:
                    kept.append(entry)
            heapq.heapify(kept)
            self._scheduled = scheduled = kept
            self._timer_cancelled_count = 0
        else:
            # Remove the cancelled timers at the head of the heap.
            while scheduled and scheduled[0][2]._cancelled:
                self._timer_cancelled_count -= 1
                _heappop(scheduled)[2]._scheduled = False

        ready = self._ready
        timeout = None
        if ready or self._stopping:
            timeout = 0.0
        elif scheduled:
            timeout = min(max(0.0, scheduled[0][0] - self.time()), _MAXIMUM_SELECT_TIMEOUT)
        if self._idle and timeout != 0.0 and (timeout is None or timeout >= IDLE_GAP):
            # Nothing to do for a while: the idle callback runs in this turn.
            ready.append(self._idle.popleft())
            timeout = 0.0

        event_list = self._selector.select(timeout)
        self._process_events(event_list)  # type: ignore[attr-defined]
        event_list = None  # Breaks cycles when an exception occurs.

        # The timers that are due.
        end_time = self.time() + self._clock_resolution
        while scheduled:
            if scheduled[0][0] >= end_time:
                break
            timer = _heappop(scheduled)[2]
            timer._scheduled = False
            ready.append(timer)

        ntodo = len(ready)
        if self._debug:
            for _ in range(ntodo):
                handle = ready.popleft()
                if handle._cancelled:
                    continue
                try:
                    self._current_handle = handle
                    t0 = self.time()
                    handle._run()
                    dt = self.time() - t0
                    if dt >= self.slow_callback_duration:
                        asyncio_logger.warning(
                            "Executing %s took %.3f seconds",
                            _base._format_handle(handle),
                            dt,
                        )
                finally:
                    self._current_handle = None
            handle = None  # Breaks cycles when an exception occurs.
            return
        popleft = ready.popleft
        for _ in range(ntodo):
            handle = popleft()
            if handle._cancelled:
                continue
            if type(handle) not in _PLAIN_HANDLES:
                handle._run()
                continue
            # Handle._run, without its frame.
            callback = handle._callback
            args = handle._args
            try:
                if callback is _SET_RESULT_UNLESS_CANCELLED and len(args) == 2:
                    # asyncio.sleep's timer; the future's callbacks keep their own contexts.
                    future = args[0]
                    if not future.cancelled():
                        future.set_result(args[1])
                else:
                    handle._context.run(callback, *args)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                _report(self, handle, callback, args, exc)
        handle = None  # Breaks cycles when an exception occurs.


def _report(
    loop: asyncio.AbstractEventLoop, handle: Any, callback: Any, args: Any, exc: BaseException
) -> None:
    """What ``Handle._run`` reports when a callback raises (outside debug mode)."""
    source = format_helpers._format_callback_source(callback, args)
    context: dict[str, Any] = {
        "message": f"Exception in callback {source}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)


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
        return LeanSelectorEventLoop(PreciseEpollSelector())


def loop_options(backend: str) -> dict[str, Any]:
    """``anyio.run``'s ``backend_options`` for a loop Themis creates itself.

    On Linux with asyncio: a selector loop with ``PreciseEpollSelector``. Elsewhere the
    defaults (kqueue and IOCP already take finer timeouts than a millisecond).
    """
    if backend == "asyncio" and sys.platform == "linux" and hasattr(selectors, "EpollSelector"):
        return {"loop_factory": _new_loop}
    return {}
