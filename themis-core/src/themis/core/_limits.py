"""Concurrency limits of a run: global, per stage, per provider, and provider rate limits."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from themis.core._invoke import Invoker
from themis.core.config import RuntimeConfig

__all__ = ["RunLimits", "Slot", "TokenBucket"]


class TokenBucket:
    """Spaces calls so that a provider never exceeds ``requests_per_minute``.

    Calls are let through one interval apart, measured from the moment each is let
    through, so any 60-second window holds at most ``requests_per_minute`` of them.
    """

    def __init__(self, requests_per_minute: float) -> None:
        self._interval = 60.0 / requests_per_minute
        self._next_slot = -math.inf
        # Callers queue on this lock (FIFO): only the one at its head sleeps for a slot.
        self.turn = anyio.Lock()

    @property
    def requests_per_minute(self) -> float:
        return 60.0 / self._interval

    def retune(self, requests_per_minute: float) -> None:
        if requests_per_minute > 0:
            self._interval = 60.0 / requests_per_minute

    async def wait(self) -> None:
        """Sleep until the next slot is due; call it holding ``turn``."""
        delay = self._next_slot - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)

    def take(self) -> None:
        """Let one call through now and schedule the next slot one interval later."""
        self._next_slot = max(anyio.current_time(), self._next_slot) + self._interval

    async def acquire(self) -> None:
        """Wait for the next slot and take it."""
        async with self.turn:
            await self.wait()
            self.take()


class Slot:
    """``async with`` one token of ``limiter``, taken without a trip through the loop if free.

    anyio's ``async with limiter`` always yields once (a shielded checkpoint) even when a
    token is free; once per component call that costs more than an instant component.
    When no token is free, or others queue already, the wait is anyio's own, so waiters
    keep their order. The slot borrows on its own behalf, so make one per hold: anyio's
    default borrower is the current task, and asking the loop for it on every take and
    every release cost more (a system call for the process id each time, on Python 3.11)
    than the rest of the slot.
    """

    __slots__ = ("limiter",)

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self.limiter = limiter

    async def __aenter__(self) -> None:
        try:
            self.limiter.acquire_on_behalf_of_nowait(self)
        except anyio.WouldBlock:
            await self.limiter.acquire_on_behalf_of(self)

    async def __aexit__(self, *exc_info: object) -> None:
        self.limiter.release_on_behalf_of(self)


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
        """Hold the provider, stage and global limiters, then take a rate-limit token.

        Every caller takes the limiters in this one order, narrowest first, so a call
        queued on a narrow limiter or on its provider's next rate-limit slot holds no
        global slot and a throttled provider never starves the others. The token is
        taken last, right before the call, so calls start at least one interval apart.
        """
        bucket = None
        if provider_key is not None:
            provider_limiter = self.provider.get(provider_key)
            if provider_limiter is not None:
                await stack.enter_async_context(provider_limiter)
            bucket = self.buckets.get(provider_key)
        if bucket is None:
            await self._enter_shared(stack, stage)
            return
        async with bucket.turn:
            await bucket.wait()
            await self._enter_shared(stack, stage)
            bucket.take()

    async def _enter_shared(self, stack: AsyncExitStack, stage: str) -> None:
        stage_limiter = self.stage.get(stage)
        if stage_limiter is not None:
            await stack.enter_async_context(Slot(stage_limiter))
        await stack.enter_async_context(Slot(self.global_limiter))

    @asynccontextmanager
    async def hold(self, stage: str, provider_key: str | None) -> AsyncIterator[None]:
        """``enter`` as a context manager: the limits of one generator or judge call."""
        async with AsyncExitStack() as stack:
            await self.enter(stack, stage, provider_key)
            yield

    def limit(self, invoke: Invoker, stage: str, *, hold_global: bool = True) -> Invoker:
        """``invoke`` holding its stage limiter and, unless told not to, the global one."""
        limiter = self.stage.get(stage)
        global_limiter = self.global_limiter if hold_global else None
        if limiter is None and global_limiter is None:
            return invoke

        async def limited(*args: Any, **kwargs: Any) -> Any:
            async with AsyncExitStack() as stack:
                if limiter is not None:
                    await stack.enter_async_context(Slot(limiter))
                if global_limiter is not None:
                    await stack.enter_async_context(Slot(global_limiter))
                return await invoke(*args, **kwargs)

        return limited
