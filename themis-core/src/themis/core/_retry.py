"""Retry policy for generator and judge calls: classification, Retry-After, backoff."""

from __future__ import annotations

import datetime as _dt
import email.utils
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

__all__ = ["RetryExhaustedError", "RetryPolicy", "call_with_retries", "classify", "retry_after_of"]

T = TypeVar("T")

# The jitter must never influence results, so it has its own unseeded generator.
_JITTER = random.Random()


def _status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def classify(exc: BaseException) -> tuple[bool, str | None]:
    """(retryable, reason) for an exception raised by a generator or judge call."""
    explicit = getattr(exc, "retryable", None)
    if isinstance(explicit, bool):
        return explicit, "explicit"
    if isinstance(exc, TimeoutError):
        return True, "timeout"
    if isinstance(exc, ConnectionError):
        return True, "connection"
    code = _status_code(exc)
    if code in (408, 429):
        return True, "rate_limit"
    if code is not None and 500 <= code <= 599:
        return True, "server_error"
    return False, None


def _parse_retry_after(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return max(0.0, float(value))
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, (when - _dt.datetime.now(_dt.UTC)).total_seconds())


def _header(headers: Any, name: str) -> Any:
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None:
        value = getter(name.lower())
    return value


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait, from ``retry_after_s`` or a Retry-After header."""
    explicit = getattr(exc, "retry_after_s", None)
    if explicit is not None:
        return _parse_retry_after(explicit)
    response = getattr(exc, "response", None)
    for headers in (getattr(response, "headers", None), getattr(exc, "headers", None)):
        value = _header(headers, "Retry-After")
        if value is not None:
            return _parse_retry_after(value)
    return None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1
    retry_after_max: float = 300.0
    timeout: float | None = None

    def delay_before(self, attempt: int) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        base = min(self.max_delay, self.delay * self.backoff ** (attempt - 1))
        if self.jitter:
            base *= _JITTER.uniform(1 - self.jitter, 1 + self.jitter)
        return base


class RetryExhaustedError(Exception):
    """The last error of a call that will not be retried, with the history of attempts."""

    def __init__(self, error: BaseException, history: list[dict[str, Any]], retryable: bool):
        super().__init__(str(error))
        self.error = error
        self.history = history
        self.retryable = retryable


async def call_with_retries(
    call: Callable[..., Awaitable[T]],
    policy: RetryPolicy,
    *,
    hold: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    args: tuple[Any, ...] = (),
    failed: Exception | None = None,
) -> tuple[T, list[dict[str, Any]]]:
    """Run ``call(*args)`` until it succeeds or the policy gives up; return (result, history).

    ``hold`` gives the limits each attempt holds. They are entered before the timeout
    starts, so waiting for a slot or a rate-limit token never counts against it.
    ``failed`` is the error of a first attempt the caller made itself (awaited straight,
    with no ``hold`` and no timeout, so that a call that succeeds costs no coroutine of
    this one): it is handled as this loop would have handled it, then the loop goes on.
    """
    history: list[dict[str, Any]] = []
    attempt = 0
    timeout = policy.timeout
    if failed is not None:
        attempt = 1
        await _after_failure(failed, attempt, policy, history)
    while True:
        attempt += 1
        try:
            # Written out rather than through a helper: this is every model call's path,
            # and each coroutine frame costs about as much as an instant component.
            if hold is None:
                if timeout is None:
                    result = await call(*args)
                else:
                    with anyio.fail_after(timeout):
                        result = await call(*args)
            else:
                async with hold():
                    if timeout is None:
                        result = await call(*args)
                    else:
                        with anyio.fail_after(timeout):
                            result = await call(*args)
            return result, history
        except Exception as exc:
            await _after_failure(exc, attempt, policy, history)


async def _after_failure(
    exc: Exception, attempt: int, policy: RetryPolicy, history: list[dict[str, Any]]
) -> None:
    """Record attempt ``attempt``'s error ``exc`` in ``history``, then wait before the next
    attempt, or raise ``RetryExhaustedError`` when the policy gives up."""
    retryable, reason = classify(exc)
    retry_after = retry_after_of(exc) if retryable else None
    if retry_after is not None and retry_after > policy.retry_after_max:
        retryable = False
    entry: dict[str, Any] = {
        "attempt": attempt,
        "error_type": type(exc).__name__,
        "error_message": str(exc) or type(exc).__name__,
        "reason": reason,
        "delay_s": 0.0,
    }
    if retry_after is not None:
        entry["retry_after_s"] = retry_after
    history.append(entry)
    if not retryable or attempt >= policy.attempts:
        raise RetryExhaustedError(exc, history, retryable) from exc
    delay = policy.delay_before(attempt)
    if retry_after is not None:
        delay = max(delay, retry_after)
    entry["delay_s"] = round(delay, 6)
    await anyio.sleep(delay)
