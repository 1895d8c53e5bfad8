"""Call a component method the cheapest correct way: inline, awaited, or in a thread."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

__all__ = ["Invoker", "make_invoker"]

Invoker = Callable[..., Awaitable[Any]]


def make_invoker(
    method: Callable[..., Any],
    *,
    blocking: bool,
    thread_limiter: anyio.CapacityLimiter,
    abandon_on_cancel: bool = False,
) -> Invoker:
    """An async callable for ``method``: coroutines are awaited, blocking sync calls go to a
    worker thread, and cheap sync calls run inline with no thread hop.

    ``abandon_on_cancel`` lets a timeout or Ctrl-C stop waiting for a thread call; the
    thread runs on and its result is dropped (a hung provider call cannot be interrupted).
    """
    if inspect.iscoroutinefunction(method):
        return method

    if blocking:

        async def in_thread(*args: Any, **kwargs: Any) -> Any:
            call = functools.partial(method, *args, **kwargs) if kwargs else method
            result = await anyio.to_thread.run_sync(
                call,
                *(() if kwargs else args),
                limiter=thread_limiter,
                abandon_on_cancel=abandon_on_cancel,
            )
            if inspect.isawaitable(result):
                result = await result
            return result

        return in_thread

    async def inline(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        if type(result) not in _NEVER_AWAITABLE and _awaitable(result):
            result = await result
        return result

    # A caller on the hot path may call the method itself, skipping this coroutine, and
    # then await the result only when ``maybe_awaitable`` says so.
    inline.inline_method = method  # type: ignore[attr-defined]
    return inline


def maybe_awaitable(result: Any) -> bool:
    """Whether an inline method's ``result`` must be awaited (as ``inline`` does)."""
    return type(result) not in _NEVER_AWAITABLE and _awaitable(result)


# The types of results seen not to be awaitable. ``inspect.isawaitable`` asks the
# ``Awaitable`` ABC about any object that is not a coroutine, a slow check to repeat for
# every case's score; generator objects are left out (whether one is awaitable is a flag
# of its code, not of its type).
_NEVER_AWAITABLE: set[type] = set()


def _awaitable(result: Any) -> bool:
    if inspect.isawaitable(result):
        return True
    if type(result) is not types.GeneratorType:
        _NEVER_AWAITABLE.add(type(result))
    return False


def default_blocking(component: Any, *, io_bound: bool) -> bool:
    """A component's declared ``blocking``, else True for generators and judges only."""
    declared = getattr(component, "blocking", None)
    if isinstance(declared, bool):
        return declared
    return io_bound
