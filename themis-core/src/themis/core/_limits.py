"""Concurrency limits of a run: global, per stage, per provider, and provider rate limits."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio

from themis.core.config import RuntimeConfig

__all__ = ["RunLimits", "TokenBucket"]


class TokenBucket:
    """Spaces calls so that a provider never exceeds ``requests_per_minute``."""

    def __init__(self, requests_per_minute: float) -> None:
        self._interval = 60.0 / requests_per_minute
        self._next_slot = 0.0
        self._lock = anyio.Lock()

    @property
    def requests_per_minute(self) -> float:
        return 60.0 / self._interval

    def retune(self, requests_per_minute: float) -> None:
        if requests_per_minute > 0:
            self._interval = 60.0 / requests_per_minute

    async def acquire(self) -> None:
        async with self._lock:
            now = anyio.current_time()
            if self._next_slot > now:
                await anyio.sleep(self._next_slot - now)
                now = self._next_slot
            self._next_slot = now + self._interval


class RunLimits:
    """The limiters one execution shares; a limiter that can never bind is left out."""

    def __init__(self, runtime: RuntimeConfig) -> None:
        self.runtime = runtime
        self.global_limiter = anyio.CapacityLimiter(runtime.max_concurrent_tasks)
        self.thread_limiter = anyio.CapacityLimiter(runtime.max_concurrent_tasks)
        # A stage limiter as wide as the global one never binds: every call holds both.
        self.stage = {
            stage: anyio.CapacityLimiter(limit)
            for stage, limit in runtime.stage_concurrency.items()
            if limit < runtime.max_concurrent_tasks
        }
        self.provider = {
            key: anyio.CapacityLimiter(limit)
            for key, limit in runtime.provider_concurrency.items()
            if limit < runtime.max_concurrent_tasks
        }
        self.buckets = {
            key: TokenBucket(rpm) for key, rpm in runtime.provider_rate_limits.items() if rpm > 0
        }

    def retune(self, provider_key: str | None, requests_per_minute: Any) -> None:
        """Apply a generator's ``rate_limit.requests_per_minute`` hint to its provider."""
        if provider_key is None or not isinstance(requests_per_minute, (int, float)):
            return
        if requests_per_minute <= 0:
            return
        bucket = self.buckets.get(provider_key)
        if bucket is None:
            self.buckets[provider_key] = TokenBucket(float(requests_per_minute))
        else:
            bucket.retune(float(requests_per_minute))

    async def enter(self, stack: AsyncExitStack, stage: str, provider_key: str | None) -> None:
        """Hold the global, stage and provider limiters, then take a rate-limit token."""
        await stack.enter_async_context(self.global_limiter)
        stage_limiter = self.stage.get(stage)
        if stage_limiter is not None:
            await stack.enter_async_context(stage_limiter)
        if provider_key is not None:
            provider_limiter = self.provider.get(provider_key)
            if provider_limiter is not None:
                await stack.enter_async_context(provider_limiter)
            bucket = self.buckets.get(provider_key)
            if bucket is not None:
                await bucket.acquire()
