"""The event loop of Themis's synchronous calls: a selector whose timeouts are not rounded up
to whole milliseconds, and that still watches its file descriptors."""

from __future__ import annotations

import asyncio
import selectors
import socket
import sys
import time
from typing import Any

import pytest
from themis.core._loop import loop_options
from themis.core.config import EvaluationConfig, GenerationConfig
from themis.core.experiment import Experiment
from themis.core.models import Case, Dataset, GenerationResult
from themis.core.stores import InMemoryRunStore

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="the precise selector is for epoll, which is Linux-only"
)


@linux_only
def test_a_timeout_with_a_fraction_of_a_millisecond_is_waited_in_full() -> None:
    from themis.core._loop import PreciseEpollSelector

    with PreciseEpollSelector() as selector:
        for timeout in (0.0004, 0.0021, 0.0107):
            start = time.monotonic()
            assert selector.select(timeout) == []
            assert time.monotonic() - start >= timeout


@linux_only
def test_a_ready_descriptor_ends_the_wait_at_once() -> None:
    from themis.core._loop import PreciseEpollSelector

    left, right = socket.socketpair()
    with left, right, PreciseEpollSelector() as selector:
        selector.register(left, selectors.EVENT_READ, "left")
        right.send(b"x")
        start = time.monotonic()
        ready = selector.select(30.0)
        assert [(key.data, events) for key, events in ready] == [("left", selectors.EVENT_READ)]
        assert time.monotonic() - start < 30.0


def test_the_loop_option_is_given_only_where_it_applies() -> None:
    assert loop_options("trio") == {}
    if sys.platform == "linux":
        loop = loop_options("asyncio")["loop_factory"]()
        try:
            assert type(loop._selector).__name__ == "PreciseEpollSelector"  # type: ignore[attr-defined]
        finally:
            loop.close()


@linux_only
def test_a_run_called_synchronously_runs_on_the_precise_loop() -> None:
    seen: list[str] = []

    class Sleeper:
        component_id = "test/sleeper"
        version = "1"

        def fingerprint(self) -> str:
            return "sleeper"

        async def generate(self, case: Case, ctx: Any) -> GenerationResult:
            loop = asyncio.get_running_loop()
            seen.append(type(loop._selector).__name__)  # type: ignore[attr-defined]
            await asyncio.sleep(0.0015)
            return GenerationResult(candidate_id=ctx.candidate_id, final_output=case.input)

    experiment = Experiment(
        generation=GenerationConfig(generator=Sleeper()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[
            Dataset(
                dataset_id="d",
                cases=[
                    Case(case_id=f"c{i}", input=str(i), expected_output=str(i)) for i in range(5)
                ],
            )
        ],
    )
    result = experiment.run(store=InMemoryRunStore())
    assert result.progress.completed_cases == 5
    assert seen == ["PreciseEpollSelector"] * 5


# -- the lean loop: the stock loop's behaviour with fewer Python calls -----------------------


def _lean_loop() -> asyncio.AbstractEventLoop:
    from themis.core._loop import LeanSelectorEventLoop

    return LeanSelectorEventLoop()


def _both_loops() -> list[Any]:
    return [asyncio.SelectorEventLoop, _lean_loop]


@linux_only
def test_a_run_called_synchronously_runs_on_the_lean_loop() -> None:
    from themis.core._loop import LeanSelectorEventLoop

    loop = loop_options("asyncio")["loop_factory"]()
    try:
        assert isinstance(loop, LeanSelectorEventLoop)
    finally:
        loop.close()


def _schedule_and_record(loop: asyncio.AbstractEventLoop, plan: list[tuple[str, int]]) -> list[int]:
    """Run ``plan`` (kind, n) on ``loop``: which callbacks ran, in order."""
    ran: list[int] = []
    handles: list[Any] = []
    base = loop.time()
    for index, (kind, n) in enumerate(plan):
        if kind == "soon":
            handles.append(loop.call_soon(ran.append, index))
        elif kind == "later":
            handles.append(loop.call_later(n * 0.0001, ran.append, index))
        elif kind == "at":
            handles.append(loop.call_at(base + n * 0.0001, ran.append, index))
        elif kind == "past":
            handles.append(loop.call_at(base - 1 - n * 0.0001, ran.append, index))
        elif kind == "cancel" and handles:
            handles[n % len(handles)].cancel()
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    return ran


@pytest.mark.parametrize("seed", range(30))
def test_callbacks_run_in_the_stock_loops_order(seed: int) -> None:
    import random

    rng = random.Random(seed)
    plan: list[tuple[str, int]] = []
    used: set[tuple[str, int]] = set()
    for _ in range(rng.randint(1, 300)):
        kind = rng.choice(["soon", "later", "at", "past", "cancel"])
        n = rng.randint(0, 40)
        if kind in ("later", "at", "past"):
            # Distinct times: the stock loop leaves the order of equal times undefined.
            while (kind, n) in used or ((kind == "at") and ("later", n) in used):
                n += 1
            used.add((kind, n))
        plan.append((kind, n))
    orders = []
    for make in _both_loops():
        loop = make()
        try:
            orders.append(_schedule_and_record(loop, plan))
        finally:
            loop.close()
    # call_later measures from its own call, so a "later" and an "at" timer of one n may
    # swap; every other callback runs in one order on both loops.
    stock, lean = orders
    assert sorted(stock) == sorted(lean)
    timed = {i for i, (kind, _) in enumerate(plan) if kind in ("later", "at")}
    assert [i for i in stock if i not in timed] == [i for i in lean if i not in timed]


def test_timers_due_at_one_time_run_in_the_order_they_were_scheduled() -> None:
    loop = _lean_loop()
    try:
        ran: list[int] = []
        when = loop.time() + 0.001
        for i in range(50):
            loop.call_at(when, ran.append, i)
        loop.call_at(when + 0.001, loop.stop)
        loop.run_forever()
        assert ran == list(range(50))
    finally:
        loop.close()


def test_many_cancelled_timers_are_dropped_from_the_heap() -> None:
    loop: Any = _lean_loop()
    try:
        ran: list[int] = []
        timers = [loop.call_later(60 + i, ran.append, i) for i in range(300)]
        for timer in timers[:200]:
            timer.cancel()
            timer.cancel()  # a second cancel counts nothing
        assert loop._timer_cancelled_count == 200
        loop.call_soon(loop.stop)
        loop.run_forever()
        # More than half cancelled: the heap keeps only the live ones.
        assert len(loop._scheduled) == 100
        assert loop._timer_cancelled_count == 0
        assert all(not t._scheduled for t in timers[:200])
        assert all(t._scheduled for t in timers[200:])
        assert [t.when() for t in timers[200:]] == [entry[0] for entry in sorted(loop._scheduled)]
        assert ran == []
    finally:
        loop.close()


def test_a_cancelled_timer_at_the_head_is_dropped_and_never_runs() -> None:
    loop: Any = _lean_loop()
    try:
        ran: list[str] = []
        first = loop.call_later(0.001, ran.append, "first")
        loop.call_later(0.002, ran.append, "second")
        first.cancel()
        assert first.cancelled()
        loop.call_later(0.005, loop.stop)
        loop.run_forever()
        assert ran == ["second"]
        assert loop._timer_cancelled_count == 0
        assert loop._scheduled == []
    finally:
        loop.close()


@pytest.mark.parametrize("make", _both_loops())
def test_a_failing_callback_is_reported_as_the_stock_loop_does(make: Any) -> None:
    loop = make()
    try:
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))

        def boom(value: int) -> None:
            raise ValueError(value)

        handles = [loop.call_soon(boom, 1), loop.call_later(0.0001, boom, 2)]
        loop.call_later(0.005, loop.stop)
        loop.run_forever()
        assert [type(c["exception"]) for c in reported] == [ValueError, ValueError]
        assert [c["handle"] for c in reported] == handles
        assert [c["message"].split(" at ")[0] for c in reported] == [
            "Exception in callback test_a_failing_callback_is_reported_as_the_stock_loop_does"
            f".<locals>.boom({n})"
            for n in (1, 2)
        ]
        assert all("source_traceback" not in c for c in reported)
    finally:
        loop.close()


@pytest.mark.parametrize("make", _both_loops())
def test_callbacks_run_in_their_context(make: Any) -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    loop = make()
    try:
        seen: list[str] = []
        var.set("copied")
        loop.call_soon(lambda: seen.append(var.get()))
        # Due well after the call_at below even when the process is held up between them.
        loop.call_later(0.005, lambda: seen.append(var.get()))
        given = contextvars.Context()
        given.run(var.set, "given")
        loop.call_soon(lambda: seen.append(var.get()), context=given)
        loop.call_at(loop.time(), lambda: seen.append(var.get()), context=given)
        var.set("changed later")
        loop.call_later(0.05, loop.stop)
        loop.run_forever()
        assert seen == ["copied", "given", "given", "copied"]
    finally:
        loop.close()


def test_sleeps_and_their_cancellation_on_the_lean_loop() -> None:
    async def main() -> list[str]:
        out: list[str] = []

        async def sleeper(name: str, delay: float) -> None:
            await asyncio.sleep(delay)
            out.append(name)

        slow = asyncio.ensure_future(sleeper("slow", 10))
        tasks = [asyncio.ensure_future(sleeper(f"s{i}", 0.001 * (5 - i))) for i in range(5)]
        await asyncio.sleep(0.002)
        slow.cancel()
        await asyncio.gather(*tasks)
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await asyncio.sleep(0.0001, result="value") == "value"
        return out

    loop = _lean_loop()
    try:
        assert loop.run_until_complete(main()) == ["s4", "s3", "s2", "s1", "s0"]
        assert loop._scheduled == []  # type: ignore[attr-defined]
    finally:
        loop.close()


def test_a_sleep_on_the_lean_loop_runs_no_handle_method(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncio import events

    calls: list[str] = []
    original_run = events.Handle._run
    original_lt = events.TimerHandle.__lt__

    def counted_run(self: Any) -> None:
        calls.append("_run")
        original_run(self)

    def counted_lt(self: Any, other: Any) -> bool:
        calls.append("__lt__")
        return original_lt(self, other)  # type: ignore[no-any-return]

    monkeypatch.setattr(events.Handle, "_run", counted_run)
    monkeypatch.setattr(events.TimerHandle, "__lt__", counted_lt)

    async def main() -> None:
        await asyncio.gather(*(asyncio.sleep(0.0001 * i) for i in range(1, 20)))

    for make, expect_calls in ((asyncio.SelectorEventLoop, True), (_lean_loop, False)):
        calls.clear()
        loop = make()
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()
        assert bool(calls) is expect_calls


def test_a_closed_lean_loop_refuses_callbacks() -> None:
    loop = _lean_loop()
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_later(1, print)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_at(1, print)
    with pytest.raises(TypeError):
        loop.call_later(None, print)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", _both_loops())
def test_the_lean_loop_in_debug_mode_makes_stock_handles_with_their_tracebacks(make: Any) -> None:
    from asyncio import events

    loop = make()
    loop.set_debug(True)
    try:
        ran: list[str] = []
        soon = loop.call_soon(ran.append, "soon")
        later = loop.call_later(0.0001, ran.append, "later")
        at = loop.call_at(loop.time(), ran.append, "at")
        cancelled = loop.call_later(0.0001, ran.append, "cancelled")
        cancelled.cancel()
        for handle in (soon, later, at):
            assert type(handle) in (events.Handle, events.TimerHandle)
            # The traceback ends in this test, where the callback was scheduled.
            assert handle._source_traceback[-1].name == (  # type: ignore[attr-defined]
                "test_the_lean_loop_in_debug_mode_makes_stock_handles_with_their_tracebacks"
            )
        loop.call_later(0.005, loop.stop)
        loop.run_forever()
        assert sorted(ran) == ["at", "later", "soon"]
    finally:
        loop.close()
