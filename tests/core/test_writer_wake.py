"""The event writer is woken once per full batch, not once per event past the first."""

from __future__ import annotations

from typing import Any

import anyio
from themis.core._observers import Observers
from themis.core._writer import EventWriter
from themis.core.events import RunStartedEvent
from themis.core.stores import InMemoryRunStore


class CountingEvent:
    """Stands in for the writer's wake event and counts the times it is set."""

    def __init__(self) -> None:
        self.sets = 0

    def set(self) -> None:
        self.sets += 1


def writer(batch_size: int) -> EventWriter:
    return EventWriter(
        InMemoryRunStore(),
        "run-1",
        next_seq=0,
        batch_size=batch_size,
        flush_interval=60.0,
        retry_attempts=1,
        retry_delay=0.0,
        observers=Observers([], None),
    )


def event() -> Any:
    return RunStartedEvent(run_id="run-1")


def test_emit_wakes_the_writer_once_per_full_batch() -> None:
    # Producers that never suspend keep the writer task from running; each event they
    # emit past a full batch used to set the wake event again (two calls per event).
    w = writer(batch_size=4)
    spy = CountingEvent()
    w._wake = spy  # type: ignore[assignment]
    for _ in range(3):
        w.emit(event())
    assert spy.sets == 0
    w.emit(event())
    assert spy.sets == 1
    for _ in range(7):
        w.emit(event())
    assert spy.sets == 2  # at 8 events, not at each of 5..11
    w.emit(event())
    assert spy.sets == 3


def test_full_batches_are_written_without_waiting_for_the_interval() -> None:
    async def main() -> list[int]:
        w = writer(batch_size=4)
        store = w._store
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            for _ in range(9):
                w.emit(event())
            # The flush interval is a minute: only the wake of a full batch gets these out.
            with anyio.fail_after(10):
                while w.last_seq < 8:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        return [e.seq or 0 for e in store.query_events("run-1")]

    seqs = anyio.run(main)
    assert seqs[:8] == list(range(1, 9))


def test_producers_wait_for_room_only_when_the_writer_is_far_behind() -> None:
    async def main() -> tuple[bool, bool, int]:
        w = writer(batch_size=2)  # high water: 4 batches, 8 events
        for _ in range(7):
            w.emit(event())
        below = w.backpressure() is None
        w.emit(event())
        wait = w.backpressure()
        assert wait is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            with anyio.fail_after(10):
                await wait  # returns once the writer has taken the backlog
            tg.cancel_scope.cancel()
        return below, w.backpressure() is None, w.last_seq

    below, after, written = anyio.run(main)
    assert below and after
    assert written == 8
