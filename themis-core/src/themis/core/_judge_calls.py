"""A judge model behind the run's judge limits and retries, and the policy of those retries."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from themis.core._invoke import default_blocking, make_invoker
from themis.core._retry import RetryExhaustedError, RetryPolicy, call_with_retries
from themis.core.workflows import JudgeResponse

if TYPE_CHECKING:
    from themis.core._limits import RunLimits, TokenBucket
    from themis.core.config import RuntimeConfig

__all__ = ["GuardedJudge", "judge_retry_policy"]


def judge_retry_policy(runtime: RuntimeConfig | None) -> RetryPolicy:
    """The retry policy of judge calls under ``runtime`` (defaults when None)."""
    if runtime is None:
        from themis.core.config import RuntimeConfig

        runtime = RuntimeConfig()
    return RetryPolicy(
        attempts=runtime.judge_retry_attempts,
        delay=runtime.judge_retry_delay,
        backoff=runtime.judge_retry_backoff,
        max_delay=runtime.retry_max_delay,
        jitter=runtime.retry_jitter,
        retry_after_max=runtime.retry_after_max,
        timeout=runtime.judge_timeout,
    )


class GuardedJudge:
    """A judge model whose calls hold the judge limits and are retried per the policy.

    Attribute reads fall through to the wrapped model, so ``component_id``, ``version``,
    ``provider_key``, ``model_id`` and the like stay visible to selectors and runners.
    """

    def __init__(
        self,
        model: Any,
        *,
        policy: RetryPolicy,
        limits: RunLimits | None = None,
        thread_limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.model = model
        self.component_id: str = model.component_id
        self.version: str = str(model.version)
        raw = model.fingerprint
        self._fingerprint = str(raw() if callable(raw) else raw)
        self.provider_key: str | None = getattr(model, "provider_key", None)
        self._policy = policy
        self._limits = limits
        blocking = default_blocking(model, io_bound=True)
        is_async = inspect.iscoroutinefunction(model.judge)
        # A cheap sync judge runs inline: no thread hop and no hold on the global limiter.
        self._inline = not is_async and not blocking
        # With no timeout, an inline attempt is a plain call (a timeout could only fire
        # while an awaitable it returned is awaited, under the retry loop's deadline).
        self._direct = self._inline and policy.timeout is None
        self._blocking = blocking
        self._thread_limiter = thread_limiter
        self._invoke: Any = None

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (e.g. mid-copy): avoid endless recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def fingerprint(self) -> str:
        return self._fingerprint

    def _invoker(self) -> Any:
        if self._invoke is None:
            # Created lazily: a capacity limiter needs a running event loop.
            limiter = self._thread_limiter or anyio.CapacityLimiter(
                self._limits.runtime.max_concurrent_tasks if self._limits else 16
            )
            # Like a generator call, a hung blocking judge is abandoned on a timeout or
            # Ctrl-C: its thread cannot be interrupted, and waiting would defeat the timeout.
            self._invoke = make_invoker(
                self.model.judge,
                blocking=self._blocking,
                thread_limiter=limiter,
                abandon_on_cancel=True,
            )
        return self._invoke

    async def call(self, prompt: str, seed: int | None) -> tuple[Any, list[dict[str, Any]]]:
        """(reply, retry history); raises ``RetryExhaustedError`` once the policy gives up.

        The limits are held around each attempt but outside its timeout, so waiting for a
        slot or a rate-limit token never counts against ``judge_timeout``.
        """
        hold = self._hold()
        failed: list[Exception] = []
        if self._direct and hold is None:
            # The first attempt of an inline judge is called here: four coroutine frames
            # and a closure less per call. A failure goes to the retry loop as its attempt 1.
            try:
                reply = self.model.judge(prompt, seed=seed)
                if inspect.isawaitable(reply):
                    reply = await reply
            except Exception as exc:
                failed.append(exc)
            else:
                return reply, []
        invoke = self._invoker()

        async def attempt() -> Any:
            if failed:
                raise failed.pop()
            return await invoke(prompt, seed=seed)

        return await call_with_retries(attempt, self._policy, hold=hold)

    def _hold(self) -> Callable[[], AbstractAsyncContextManager[Any]] | None:
        limits = self._limits
        if limits is None:
            return None
        provider_key = self.provider_key
        if not self._inline:
            return lambda: limits.hold("evaluation", provider_key)
        # An inline call cannot overlap another, so only a rate limit can bind it.
        bucket = limits.buckets.get(provider_key) if provider_key else None
        return None if bucket is None else lambda: _token(bucket)

    async def judge(self, prompt: str, *, seed: int | None = None) -> Any:
        """The wrapped model's reply, through the judge limits and retries."""
        try:
            reply, history = await self.call(prompt, seed)
        except RetryExhaustedError as failure:
            raise failure.error from None
        if history and isinstance(reply, JudgeResponse):
            reply = reply.model_copy(update={"retry_history": history})
        return reply


@asynccontextmanager
async def _token(bucket: TokenBucket) -> AsyncIterator[None]:
    await bucket.acquire()
    yield
