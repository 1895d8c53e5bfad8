"""Work that can wait runs in the loop's idle turns: ``call_when_idle`` on the lean loop, and
the writer's catch-up of the store's folder, which waits for one (P3 at 512)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from themis.core._loop import IDLE_GAP, LeanSelectorEventLoop, loop_options
from themis.core._observers import Observers
from themis.core._writer import IDLE_BATCHES, EventWriter
from themis.core.events import RunStartedEvent
from themis.core.stores import InMemoryRunStore

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="the lean loop is Themis's own on Linux only"
)


def lean_run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = loop_options("asyncio")["loop_factory"]()
    assert isinstance(loop, LeanSelectorEventLoop)
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


@linux_only
def test_an_idle_callback_waits_for_ready_callbacks_and_timers_due_soon() -> None:
    order: list[str] = []

    async def main() -> None:
        loop: Any = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_when_idle(lambda: (order.append("idle"), done.set_result(None)))
        loop.call_soon(order.append, "soon")
        # Due within IDLE_GAP: the loop is not idle until it has run.
        loop.call_later(IDLE_GAP / 4, order.append, "timer")
        await done

    lean_run(main)
    assert order == ["soon", "timer", "idle"]


@linux_only
def test_an_idle_callback_runs_before_a_timer_far_off_and_a_cancelled_one_never() -> None:
    order: list[str] = []

    async def main() -> None:
        loop: Any = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_when_idle(order.append, "cancelled").cancel()
        loop.call_later(30.0, order.append, "late")
        loop.call_when_idle(lambda: (order.append("idle"), done.set_result(None)))
        await done

    lean_run(main)
    assert order == ["idle"]


class CountingStore(InMemoryRunStore):
    """An in-memory store that counts the writer's catch-ups of its folder."""

    def __init__(self) -> None:
        super().__init__()
        self.catch_ups = 0

    def projection_folder(self, run_id: str) -> Any:
        self.catch_ups += 1
        return None


def writer(store: InMemoryRunStore) -> EventWriter:
    return EventWriter(
        store,
        "run-1",
        next_seq=0,
        batch_size=1000,
        flush_interval=60.0,
        retry_attempts=1,
        retry_delay=0.0,
        observers=Observers([], None),
    )


async def write_one(w: EventWriter) -> None:
    w.emit(RunStartedEvent(run_id="run-1"))
    await w.flush()


@linux_only
def test_the_writer_catches_up_at_once_first_then_in_an_idle_turn() -> None:
    store = CountingStore()

    async def main() -> list[int]:
        w = writer(store)
        seen = []
        await write_one(w)  # the first catch-up makes the folder: at once
        seen.append(store.catch_ups)
        await write_one(w)  # the loop is busy with this coroutine: it waits
        await write_one(w)
        seen.append(store.catch_ups)
        # An idle turn: one catch-up for both batches (a sleep is idle unless the process
        # was held up past its timer, so a few are allowed).
        for _ in range(50):
            await asyncio.sleep(IDLE_GAP * 5)
            if store.catch_ups > 1:
                break
        seen.append(store.catch_ups)
        return seen

    assert lean_run(main) == [1, 1, 2]


@linux_only
def test_a_loop_never_idle_still_catches_up_every_idle_batches() -> None:
    store = CountingStore()

    async def main() -> int:
        w = writer(store)
        await write_one(w)
        for _ in range(IDLE_BATCHES * 3):
            await write_one(w)
        return store.catch_ups

    # The first at once, then one for each IDLE_BATCHES + 1 batches that found no idle turn.
    assert lean_run(main) == 1 + (IDLE_BATCHES * 3) // (IDLE_BATCHES + 1)


@linux_only
def test_the_writer_s_waiting_catch_up_is_dropped_when_its_task_ends() -> None:
    store = CountingStore()

    async def main() -> int:
        w = writer(store)
        task = asyncio.get_running_loop().create_task(w.run())
        await write_one(w)
        await write_one(w)
        assert store.catch_ups == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(IDLE_GAP * 5)
        return store.catch_ups

    assert lean_run(main) == 1


def test_on_the_stock_loop_the_writer_catches_up_after_every_batch() -> None:
    store = CountingStore()

    async def main() -> int:
        w = writer(store)
        for _ in range(3):
            await write_one(w)
        return store.catch_ups

    assert asyncio.run(main()) == 3


def _snapshot(n: int) -> Any:
    from themis.core.config import EvaluationConfig, GenerationConfig
    from themis.core.experiment import Experiment
    from themis.core.models import Case, Dataset

    class Echo:
        component_id = "test/echo"
        version = "1.0"

        def fingerprint(self) -> str:
            return "echo"

        async def generate(self, case: Any, ctx: Any) -> Any:
            raise NotImplementedError

    return Experiment(
        generation=GenerationConfig(generator=Echo()),
        evaluation=EvaluationConfig(metrics=["builtin/exact_match"]),
        datasets=[
            Dataset(
                dataset_id="d",
                cases=[Case(case_id=f"c{i}", input="1", expected_output="1") for i in range(n)],
            )
        ],
        git_commit="test",
    ).compile()


@linux_only
def test_a_run_shape_made_on_the_lean_loop_works_out_its_cases_in_an_idle_turn() -> None:
    from themis.core._projection_cases import RunShape

    snapshot = _snapshot(5)

    async def main() -> tuple[bool, bool]:
        shape = RunShape(snapshot)
        before = "positions" in shape.__dict__
        for _ in range(50):
            await asyncio.sleep(IDLE_GAP * 5)
            if "positions" in shape.__dict__:
                break
        return before, "cases" in shape.__dict__ and "positions" in shape.__dict__

    assert lean_run(main) == (False, True)


def test_a_run_shape_made_with_no_loop_works_out_its_cases_when_used() -> None:
    from themis.core._projection_cases import RunShape

    shape = RunShape(_snapshot(3))
    assert "cases" not in shape.__dict__
    assert shape.positions == {"1:d:c0": 0, "1:d:c1": 1, "1:d:c2": 2}
