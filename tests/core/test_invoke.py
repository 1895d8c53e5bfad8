"""make_invoker: a sync component's result is awaited exactly when it is awaitable."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import anyio
from themis.core._invoke import make_invoker


class _Later:
    """An awaitable that is not a coroutine: ``inspect.isawaitable`` asks the ABC."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        yield from anyio.sleep(0).__await__()
        return self.value


def test_plain_results_run_inline_and_awaitables_are_awaited_whatever_came_before() -> None:
    replies: list[Any] = [1, "two", _Later(3), 4, _Later("five")]

    def method() -> Any:
        return replies.pop(0)

    invoke = make_invoker(method, blocking=False, thread_limiter=anyio.CapacityLimiter(1))

    async def main() -> list[Any]:
        return [await invoke() for _ in range(5)]

    # The plain types seen first are remembered as never awaitable; that must not stop a
    # later awaitable of another type from being awaited.
    assert anyio.run(main) == [1, "two", 3, 4, "five"]
