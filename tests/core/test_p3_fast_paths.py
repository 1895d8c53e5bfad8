"""The per-case shortcuts of issue 6 (P3 at 512) give what the general paths give."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from themis.core._retry import RetryExhaustedError, RetryPolicy, call_with_retries
from themis.core.errors import NonRetryableError, RetryableError

POLICY = RetryPolicy(attempts=3, delay=0.001, backoff=2.0, jitter=0.0)


def _scripted(outcomes: list[Exception | None]) -> tuple[Any, list[int]]:
    """An async call that raises or answers per attempt, counting its calls."""
    calls: list[int] = []

    async def call(value: str) -> str:
        calls.append(len(calls) + 1)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome
        return f"ok-{value}"

    return call, calls


def _retried(outcomes: list[Exception | None], *, first_here: bool) -> tuple[Any, list[int]]:
    """``call_with_retries`` over ``outcomes``; with ``first_here`` the first attempt is
    made by the caller and its error handed over with ``failed=``, as ``_generate`` does."""
    call, calls = _scripted(outcomes)

    async def main() -> Any:
        if not first_here:
            return await call_with_retries(call, POLICY, args=("x",))
        try:
            return await call("x"), []
        except Exception as first:
            return await call_with_retries(call, POLICY, args=("x",), failed=first)

    try:
        return anyio.run(main), calls
    except RetryExhaustedError as exc:
        return ("exhausted", exc.history, exc.retryable, type(exc.error).__name__), calls


@pytest.mark.parametrize(
    "outcomes",
    [
        [None],
        [RetryableError("flaky #1"), None],
        [RetryableError("flaky #1"), RetryableError("flaky #2"), None],
        [RetryableError("a"), RetryableError("b"), RetryableError("c")],
        [NonRetryableError("no")],
        [RetryableError("a"), NonRetryableError("no")],
        [TimeoutError(), None],
    ],
)
def test_a_first_attempt_made_by_the_caller_gives_the_same_result_and_history(
    outcomes: list[Exception | None],
) -> None:
    assert _retried(outcomes, first_here=True) == _retried(outcomes, first_here=False)


def test_a_failed_first_attempt_counts_against_the_attempts() -> None:
    once = RetryPolicy(attempts=1, delay=0.0, jitter=0.0)

    async def never(value: str) -> str:
        raise AssertionError("no attempt is left after the caller's own")

    async def main() -> Any:
        return await call_with_retries(never, once, args=("x",), failed=RetryableError("a"))

    with pytest.raises(RetryExhaustedError) as info:
        anyio.run(main)
    assert [h["attempt"] for h in info.value.history] == [1]
    assert info.value.retryable is True


def test_the_caller_s_first_attempt_is_attempt_one_of_the_history() -> None:
    (result, history), calls = _retried([RetryableError("a"), None], first_here=True)
    assert result == "ok-x" and calls == [1, 2]
    assert history == [
        {
            "attempt": 1,
            "error_type": "RetryableError",
            "error_message": "a",
            "reason": "explicit",
            "delay_s": 0.001,
        }
    ]
